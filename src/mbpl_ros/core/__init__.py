"""LQR-FLM core: pure numpy/scipy/scikit-learn/torch, no ROS and no simulator.

Modules, in the order a training iteration uses them: :mod:`.state` (state layout),
:mod:`.samples` (trials), :mod:`.controllers` (linear-Gaussian controllers, initialisation,
exploration noise), :mod:`.prior` (GMM dynamics prior), :mod:`.dynamics` (per-step regression),
:mod:`.costs` (cost terms and expansions), :mod:`.lqr` (backward/forward passes, KL),
:mod:`.trajopt` (dual gradient descent, step adjustment), :mod:`.lqr_flm` (the algorithm object),
:mod:`.synthetic` (known linear systems for tests and benchmarks).
"""

from .controllers import LinearGaussianController, init_lqr, init_pd, smoothed_noise
from .costs import (
    ActionCost,
    ApproachPhase,
    AutodiffCost,
    Cost,
    CostExpansion,
    CostSum,
    Ramp,
    StateTargetCost,
    TaskCostWeights,
    ee_points_cost,
    joint_target_cost,
    peg_cost,
    reach_cost,
)
from .dynamics import (
    LinearGaussianDynamics,
    UnderdeterminedFitWarning,
    fit_dynamics,
    fit_dynamics_batch,
)
from .errors import (
    CheckpointError,
    CoreError,
    MismatchError,
    NonFiniteError,
    NotEnoughSamplesError,
    ShapeError,
)
from .lqr_flm import LQRFLM, IterationReport, LQRFLMConfig
from .prior import DynamicsPriorGMM, NIWPrior, PriorConfig
from .samples import SampleBatch
from .state import StateLayout
from .trajopt import DualConfig, QuadraticCost, optimize_trajectories, step_multiplier

__all__ = [
    "ApproachPhase",
    "LQRFLM",
    "ActionCost",
    "AutodiffCost",
    "CheckpointError",
    "CoreError",
    "Cost",
    "CostExpansion",
    "CostSum",
    "DualConfig",
    "DynamicsPriorGMM",
    "IterationReport",
    "LQRFLMConfig",
    "LinearGaussianController",
    "LinearGaussianDynamics",
    "MismatchError",
    "NIWPrior",
    "NonFiniteError",
    "NotEnoughSamplesError",
    "PriorConfig",
    "QuadraticCost",
    "Ramp",
    "SampleBatch",
    "ShapeError",
    "StateLayout",
    "StateTargetCost",
    "TaskCostWeights",
    "UnderdeterminedFitWarning",
    "ee_points_cost",
    "fit_dynamics",
    "fit_dynamics_batch",
    "init_lqr",
    "init_pd",
    "joint_target_cost",
    "optimize_trajectories",
    "peg_cost",
    "reach_cost",
    "smoothed_noise",
    "step_multiplier",
]
