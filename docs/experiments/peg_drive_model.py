"""MDGPS on peg with an explicit torque-speed limit in the MuJoCo simulator: the ninth session's
experiment. The simulators now model the drives themselves (mbpl_sim.base), with the bound taken
at the end of each physics step instead; this script replaces that with the explicit version
below, to reproduce the ninth session's figures (docs/gps_experiments.md).

    .venv/bin/python docs/experiments/peg_drive_model.py SEED OUT

The same run as `mbpl train --task peg --algorithm mdgps --test-conditions 10 --iterations 12
--seed SEED --out OUT`, except that in every physics step each joint's torque is also bounded to
tmax (1 - qd / vmax) in the direction of motion and to -tmax (1 + qd / vmax) against it
(tmax, vmax: the URDF's effort and velocity limits), the linear torque-speed curve of a drive
whose no-load speed is the velocity limit, taken at the velocity at the start of the step. On the
wrist joints that overshoots (the curve's time constant is shorter than the step) and only the
actuators' ctrlrange keeps it bounded.
"""

import sys
from pathlib import Path

import mujoco
import numpy as np

from mbpl_ros.training.config import TrainConfig
from mbpl_ros.training.gps_loop import GPSSettings, train
from mbpl_sim import mujoco_backend


def step_with_drive_limits(self, torque: np.ndarray, n_steps: int) -> None:
    vmax = self.description.velocity_limits
    tmax = self.description.effort_limits
    for _ in range(n_steps):
        qd = self._data.qvel[self._dadr]
        upper = np.minimum(tmax, tmax * (1.0 - qd / vmax))
        lower = np.maximum(-tmax, -tmax * (1.0 + qd / vmax))
        self._data.ctrl[:] = np.minimum(np.maximum(torque, lower), upper)
        mujoco.mj_step(self._model, self._data)
    self._stale = True


mujoco_backend.MujocoSim._step = step_with_drive_limits
seed, out = int(sys.argv[1]), Path(sys.argv[2])
train(TrainConfig(task="peg", algorithm="mdgps", seed=seed, iterations=12, out=out,
                  progress=False), GPSSettings(test_conditions=10))
