"""Visuomotor MDGPS on reach with a lower front camera instead of the URDF's camera frame.

    .venv/bin/python docs/experiments/visuomotor_front_camera.py SEED OUT

The README's visuomotor command (`mbpl train --task reach --algorithm mdgps --policy visuomotor
--conditions 8 --samples 5 --horizon 100 --iterations 14 --test-conditions 10 --seed SEED`) with
a world-fixed camera at (1.3, 0, 0.45) looking at (0.5, 0, 0.15): from there the target stays in
view when the arm reaches it, where the URDF camera sees the end effector cover it. Not the
default: the executor's camera check has no pose yet, so it refuses such policy files.
"""

import sys
from pathlib import Path

from mbpl_ros.training.config import TrainConfig
from mbpl_ros.training.gps_loop import GPSSettings, train

seed, out = int(sys.argv[1]), Path(sys.argv[2])
train(TrainConfig(task="reach", algorithm="mdgps", seed=seed, iterations=14, conditions=8,
                  samples=5, horizon=100, out=out, progress=False),
      GPSSettings(policy="visuomotor", test_conditions=10, camera_eye=(1.3, 0.0, 0.45),
                  camera_look_at=(0.5, 0.0, 0.15)))
