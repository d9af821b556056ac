"""Visuomotor MDGPS on reach with the head blind to the pose layer's end-effector estimate.

    .venv/bin/python docs/experiments/visuomotor_head_without_ee_estimate.py SEED OUT

The README's visuomotor command (`mbpl train --task reach --algorithm mdgps --policy visuomotor
--conditions 8 --samples 5 --horizon 100 --iterations 14 --test-conditions 10 --seed SEED`), except
that the three pose-layer outputs that estimate the end effector's position (4-6 cm off on
held-out images) reach the head as zeros. The head still gets the target estimate, the vector
from the end effector (forward kinematics of q) to it, and q, qd. Pretraining still regresses
both positions. The question: does the head generalise better to held-out targets without an
input that varies with the arm in ways the 8 training conditions do not spread out?
"""

import sys
from pathlib import Path

import torch

from mbpl_ros.gps import networks
from mbpl_ros.training.config import TrainConfig
from mbpl_ros.training.gps_loop import GPSSettings, train

features = networks.VisuomotorNet.features


def features_without_ee(self, image: torch.Tensor) -> torch.Tensor:
    f = features(self, image)
    return torch.cat([f[:, :-3], torch.zeros_like(f[:, -3:])], dim=-1)


networks.VisuomotorNet.features = features_without_ee
seed, out = int(sys.argv[1]), Path(sys.argv[2])
train(TrainConfig(task="reach", algorithm="mdgps", seed=seed, iterations=14, conditions=8,
                  samples=5, horizon=100, out=out, progress=False),
      GPSSettings(policy="visuomotor", test_conditions=10))
