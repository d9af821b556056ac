"""Guided Policy Search: global neural-network policies trained from LQR-FLM local controllers.

Modules: :mod:`.networks` (MLP, visuomotor network with spatial softmax), :mod:`.policy` (the
Gaussian policy, its guarded ``act`` and checkpoints), :mod:`.policy_opt` (precision-weighted
supervised training, policy covariance), :mod:`.linearize` (policy linearisation with a GMM
policy prior), :mod:`.algorithm` (MDGPS, BADMM), :mod:`.vision` (pretraining the vision layers),
:mod:`.distill` (multi-policy distillation with soft targets). No ROS, no simulator.
"""

from .algorithm import BADMM, MDGPS, GPSConfig, GPSIterationReport, Observations
from .linearize import PolicyPriorConfig, PolicyPriorGMM, linearize_policy
from .networks import SpatialSoftmax
from .policy import (
    GaussianPolicy,
    ObservationSpec,
    PolicyAction,
    load_policy,
    make_policy,
    save_policy,
)
from .policy_opt import PolicyOptConfig, PolicyOptimizer, PolicyTargets

__all__ = [
    "BADMM",
    "MDGPS",
    "GPSConfig",
    "GPSIterationReport",
    "GaussianPolicy",
    "ObservationSpec",
    "Observations",
    "PolicyAction",
    "PolicyOptConfig",
    "PolicyOptimizer",
    "PolicyPriorConfig",
    "PolicyPriorGMM",
    "PolicyTargets",
    "SpatialSoftmax",
    "linearize_policy",
    "load_policy",
    "make_policy",
    "save_policy",
]
