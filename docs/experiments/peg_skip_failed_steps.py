"""Peg MDGPS as `mbpl train --task peg --algorithm mdgps --test-conditions 10 --iterations 12
--seed S`, except that a condition whose mean sample cost rose by more than 50 since the previous
iteration (its last trust-region step failed) is left out of that iteration's S-step (eighth
session; not adopted, see docs/gps_experiments.md).

    .venv/bin/python docs/experiments/peg_skip_failed_steps.py S OUT
"""

import sys
from pathlib import Path

import numpy as np

from mbpl_ros.gps import algorithm as alg
from mbpl_ros.training.config import TrainConfig
from mbpl_ros.training.gps_loop import GPSSettings, train

seed, out = int(sys.argv[1]), Path(sys.argv[2])
fit_models, s_step_targets = alg._GPS._fit_models, alg._GPS._s_step_targets


def _fit_models(self, batches, costs, dynamics=None):
    dyn, quad, mean_cost = fit_models(self, batches, costs, dynamics)
    self._cost_before = getattr(self, "_cost_now", None)
    self._cost_now = np.asarray(mean_cost, dtype=float)
    return dyn, quad, mean_cost


def _s_step_targets(self, controllers, data):
    parts = s_step_targets(self, controllers, data)
    if self._cost_before is None:
        return parts
    keep = ~(self._cost_now > self._cost_before + 50.0)
    if not keep.any():
        return parts
    if not keep.all():
        print(f"S-step without conditions {np.flatnonzero(~keep).tolist()}: sample cost "
              f"{self._cost_before[~keep].round(1).tolist()} -> "
              f"{self._cost_now[~keep].round(1).tolist()}", flush=True)
    return [p for p, k in zip(parts, keep, strict=True) if k]


alg._GPS._fit_models, alg._GPS._s_step_targets = _fit_models, _s_step_targets
train(TrainConfig(task="peg", algorithm="mdgps", seed=seed, iterations=12, out=out,
                  progress=False), GPSSettings(test_conditions=10))
