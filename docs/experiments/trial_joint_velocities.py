"""How fast the simulated arm's joints move in LQR-FLM training trials, against the URDF's
velocity limits (the drives' torque-speed curve, mbpl_sim.base, keeps a joint's own drive from
passing it; contacts and the other joints can).

    .venv/bin/python docs/experiments/trial_joint_velocities.py TASK SEED ITERATIONS

Runs `mbpl train --task TASK --seed SEED --iterations ITERATIONS` (direct loop, LQR-FLM) with the
simulator's step wrapped to record |qd| at every policy step, and prints the largest per joint
and the share of policy steps above each joint's limit.
"""

import sys
from pathlib import Path

import numpy as np

import mbpl_ros.training.direct as direct
from mbpl_ros.training.config import TrainConfig

speeds: list[np.ndarray] = []
make_sim = direct.make_sim


def recording_sim(*args, **kwargs):
    sim = make_sim(*args, **kwargs)
    step = sim.step

    def recorded_step(action, n_steps):
        applied = step(action, n_steps)
        speeds.append(np.abs(sim.joint_velocities()))
        return applied

    sim.step = recorded_step
    return sim


direct.make_sim = recording_sim
task, seed, iterations = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
direct.train(TrainConfig(task=task, seed=seed, iterations=iterations,
                         out=Path(f"/tmp/trial_joint_velocities_{task}_{seed}"), progress=False))
limits = make_sim("mujoco", task=task).description.velocity_limits
speed = np.array(speeds)
print(f"{len(speed)} policy steps; URDF velocity limits {limits.tolist()} rad/s")
print(f"largest |qd| per joint: {speed.max(axis=0).round(1).tolist()} rad/s")
print(f"share of steps above the limit: {(speed > limits).mean(axis=0).round(3).tolist()}")
