"""Peg MDGPS as `mbpl train --task peg --algorithm mdgps --test-conditions 10 --iterations 12
--seed S`, except that the policy's fitted variance never grows: each S-step keeps the minimum of
the newly fitted variance and the previous one (sixth and seventh sessions; not adopted).

    .venv/bin/python docs/experiments/peg_variance_cap.py S OUT
"""

import sys

import numpy as np

from mbpl_ros.cli import main
from mbpl_ros.gps import policy_opt

seed, out = sys.argv[1], sys.argv[2]
fit = policy_opt.fit_policy_variance
previous: list[np.ndarray] = []


def capped(*args, **kwargs):
    variance = fit(*args, **kwargs)
    if previous:
        variance = np.minimum(variance, previous[-1])
    previous.append(variance)
    return variance


policy_opt.fit_policy_variance = capped
main(["train", "--task", "peg", "--algorithm", "mdgps", "--test-conditions", "10",
      "--iterations", "12", "--seed", seed, "--out", out, "--quiet"])
