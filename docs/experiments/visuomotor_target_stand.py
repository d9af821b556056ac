"""Vision pretraining with and without the reach target's stand: the target error on held-out
pretraining images and at reached goal poses, where the tool is in front of the ball.

    .venv/bin/python docs/experiments/visuomotor_target_stand.py SEED [stand|ball]

Renders the README visuomotor command's 6,000 pretraining images (`collect_pretraining_images`,
32x32, URDF camera) with the stand (`TaskSpec.reach()`, the default) or with the ball alone
(`stand=None`), pretrains the vision layers as the command does (4,000 steps, 10 % held out,
network initialised from SEED) and then reads the target from 2 images at each of up to 200
reached goal poses of fresh targets (IK goal + 0.02 rad per joint). The error is split into its
component along the camera's line of sight (from the URDF camera at (1.35, 0.55, 0.8) to the
point it looks at, (0.4, 0, 0.25)) and across it: one camera sees the ball's distance only in its
apparent size. Run the two variants side by side (one core each).
"""

import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from mbpl_ros.gps.policy import ObservationSpec, to_image_tensor
from mbpl_ros.gps.vision import pretrain_vision
from mbpl_ros.training.config import TrainConfig
from mbpl_ros.training.direct import condition_table, make_problem
from mbpl_ros.training.gps_loop import GPSSettings, collect_pretraining_images, visuomotor_network
from mbpl_sim import TaskSpec, make_sim
from mbpl_sim.base import DEFAULT_CAMERA_EYE, DEFAULT_CAMERA_LOOK_AT
from mbpl_sim.errors import TaskError
from mbpl_sim.tasks import goal_configuration

seed = int(sys.argv[1])
variant = sys.argv[2] if len(sys.argv) > 2 else "stand"
task = TaskSpec.reach() if variant == "stand" else TaskSpec.reach(stand=None)
torch.set_num_threads(1)
settings = GPSSettings(policy="visuomotor", test_conditions=10)
config = TrainConfig(task="reach", algorithm="mdgps", seed=seed, conditions=8, samples=5,
                     horizon=100, out=Path("unused"), progress=False)
sim = make_sim(config.backend, task=task, camera_fovy_deg=settings.camera_fovy_deg,
               camera_supersample=settings.camera_supersample)
problem = make_problem(config, np.random.default_rng(seed), sim)
start = time.perf_counter()
images, targets = collect_pretraining_images(sim, config, settings.pretrain_images,
                                             np.random.default_rng(seed + 2000),
                                             settings.image_size)
rng = np.random.default_rng(seed + 9000)
goal_images, goal_targets = [], []
for condition in condition_table(replace(config, conditions=200), sim, rng):
    try:
        goal = goal_configuration(sim.task, sim.description, condition)
    except TaskError:
        continue
    for _ in range(2):
        sim.reset(condition)
        q = np.clip(goal + rng.normal(0.0, 0.02, goal.shape), sim.description.lower,
                    sim.description.upper)
        sim.set_state(q, np.zeros_like(q))
        goal_images.append(sim.render(*settings.image_size[::-1]))
        goal_targets.append(condition.target_position)
goal_images, goal_targets = np.array(goal_images), np.array(goal_targets)
print(f"{variant}: rendered {len(images)} + {len(goal_images)} images in "
      f"{time.perf_counter() - start:.0f} s", flush=True)
layout = problem.builder.layout
spec = ObservationSpec.visuomotor(layout, tuple(sim.description.joint_names),
                                  settings.image_size)
net = visuomotor_network(spec, layout.action_dim, settings, seed, problem.builder.kinematics)
report = pretrain_vision(net.vision, images, targets, steps=settings.pretrain_steps, seed=seed,
                         holdout=0.1)
with torch.no_grad():
    pose = net.vision.pose(net.vision(to_image_tensor(goal_images))).numpy()
error = pose[:, :3] * np.array(report.target_scale[:3]) + np.array(report.target_mean[:3]) \
    - goal_targets
sight = DEFAULT_CAMERA_LOOK_AT - DEFAULT_CAMERA_EYE  # the URDF camera's pose too
sight /= np.linalg.norm(sight)
along = error @ sight
across = error - along[:, None] * sight
print(f"{variant}, seed {seed}: held-out pretraining images: target RMSE "
      f"{report.holdout_rmse * 100:.2f} cm; at reached goals: RMSE "
      f"{np.sqrt(np.mean(np.sum(error ** 2, axis=1))) * 100:.2f} cm, along the line of sight "
      f"mean {along.mean() * 100:+.2f} sd {along.std() * 100:.2f} cm, across it RMSE "
      f"{np.sqrt(np.mean(np.sum(across ** 2, axis=1))) * 100:.2f} cm "
      f"(pretraining {report.seconds:.0f} s)")
