"""The controller executor's logic without ROS: modes, safety filter, PD reset law, staleness
watchdog, trial stepping and neural policies for trials. ``mbpl_ros.nodes.controller_executor``
wraps it in a node; tests drive it directly with a simulated arm and a fake clock."""

from mbpl_ros.executor.core import (
    CancelTrial,
    EStop,
    Event,
    ExecutorConfig,
    ExecutorCore,
    FinishReset,
    Hold,
    Mode,
    ModeChanged,
    Release,
    Request,
    ResetFinished,
    SafetyAction,
    StartReset,
    StartTrial,
    StateSample,
    TrialFinished,
    TrialProgress,
)
from mbpl_ros.executor.pd import (
    MinimumJerkPath,
    PdGains,
    ResetLaw,
    ResetOutcome,
    ResetSettings,
)
from mbpl_ros.executor.policy import (
    FrameFeatures,
    LoadedPolicy,
    PolicyActor,
    PolicyCache,
    PolicyLoadError,
    load_trial_policy,
)
from mbpl_ros.executor.safety import SafetyFilter, SafetyFlags, SafetyLimits
from mbpl_ros.executor.trial import TrialActor, TrialResult, TrialRun, TrialSpec
from mbpl_ros.executor.watchdog import Freshness, StalenessWatchdog

__all__ = [
    "CancelTrial",
    "EStop",
    "Event",
    "ExecutorConfig",
    "ExecutorCore",
    "FinishReset",
    "FrameFeatures",
    "Freshness",
    "Hold",
    "LoadedPolicy",
    "MinimumJerkPath",
    "Mode",
    "ModeChanged",
    "PdGains",
    "PolicyActor",
    "PolicyCache",
    "PolicyLoadError",
    "Release",
    "Request",
    "ResetFinished",
    "ResetLaw",
    "ResetOutcome",
    "ResetSettings",
    "SafetyAction",
    "SafetyFilter",
    "SafetyFlags",
    "SafetyLimits",
    "StalenessWatchdog",
    "StartReset",
    "StartTrial",
    "StateSample",
    "TrialActor",
    "TrialFinished",
    "TrialProgress",
    "TrialResult",
    "TrialRun",
    "TrialSpec",
    "load_trial_policy",
]
