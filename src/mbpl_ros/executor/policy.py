"""Neural policies in the executor: reading a policy file for trials, and the per-step actor.

Loading (:func:`load_trial_policy`) imports torch (seconds, the first time) and reads the file with
:func:`mbpl_ros.gps.policy.load_policy`, which refuses a file made for another robot, another
state layout or a camera; on top of that a file with non-finite parameters is refused, as a
controller with NaN gains is. It never runs in the control loop: the node calls it from a worker
thread while it validates the goal, and keeps what it loaded in a :class:`PolicyCache`.

Evaluation: the loop evaluates the policy once per policy step (at the step boundary; the action
is then held for dt, as for a linear-Gaussian controller). The state-based MLP is evaluated with
numpy in float64 from weights copied at load time: ~20 µs per step instead of ~300 µs for a torch
call, and no torch code in the loop thread at all. The copy is checked against the torch network
on probe inputs when loaded; if they disagree (a network this copy does not know), the torch call
is used instead and :attr:`LoadedPolicy.evaluator` says so.

:class:`PolicyActor` is what a trial runs (:class:`~mbpl_ros.executor.trial.TrialActor`): the
observed state entries -> mean action (+ the trainer's pre-drawn noise scaled by the policy's
standard deviation). A non-finite observation or output gives zero torque and is counted in
``faults`` (the trial reports and the node logs them): such a value never reaches the robot.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PROBES = 64
"""Probe inputs on which the numpy copy of an MLP must match the torch network."""


class PolicyLoadError(ValueError):
    """A policy file that cannot run on this executor, with the reason."""


@dataclass(frozen=True)
class LoadedPolicy:
    """A policy file read and checked for this robot and state layout."""

    path: str
    state_indices: np.ndarray
    """Indices in x of the observed entries."""
    dX: int
    """Entries of the executor's state x."""
    dU: int
    std: np.ndarray
    """(dU,) standard deviation of the policy's action noise."""
    mean_action: Callable[[np.ndarray], np.ndarray]
    """Observation (dO,) -> mean action (dU,), float64."""
    evaluator: str
    """numpy (the copied MLP) or torch (the network itself)."""
    dt: float | None
    """Policy step the file was trained with (its metadata), s, if recorded."""
    description: str
    """One line for logs: file, network, observation."""


def load_trial_policy(path: str | Path, joint_names: Sequence[str], state_names: Sequence[str],
                      threads: int = 1) -> LoadedPolicy:
    """Read ``path`` for this robot (``joint_names``) and state layout (``state_names``).

    Raises:
        PolicyLoadError: unreadable file, another robot / layout, a camera policy (the executor
            has no images), non-finite parameters.
    """
    import torch  # here, not at module level: seconds to import, only for policy goals

    from mbpl_ros.core.errors import CheckpointError
    from mbpl_ros.gps.policy import load_policy

    if threads > 0 and torch.get_num_threads() != threads:
        # torch's own thread pool would compete with the control loop for the two cores
        torch.set_num_threads(threads)
    path = str(path)
    try:
        policy = load_policy(path, joint_names=list(joint_names), state_names=list(state_names),
                             image_size="any")
    except CheckpointError as err:
        raise PolicyLoadError(str(err)) from err
    if policy.observation.image_size is not None:
        raise PolicyLoadError(f"policy file {path} is a visuomotor policy (camera images of "
                              f"size {policy.observation.image_size}): the executor runs "
                              "state-based policies only")
    n = len(joint_names)
    if policy.dU != n:
        raise PolicyLoadError(f"policy file {path}: expected {n} actions (one torque per "
                              f"joint), found {policy.dU}")
    bad = [name for name, t in policy.network.state_dict().items()
           if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    arrays = {"obs_norm.mean": policy.obs_norm.mean, "obs_norm.scale": policy.obs_norm.scale,
              "action_norm.mean": policy.action_norm.mean,
              "action_norm.scale": policy.action_norm.scale, "variance": policy.variance}
    bad += [name for name, a in arrays.items() if not np.all(np.isfinite(a))]
    if bad:
        raise PolicyLoadError(f"policy file {path}: non-finite values in {bad}")
    if np.any(policy.variance < 0) or np.any(policy.obs_norm.scale == 0):
        raise PolicyLoadError(f"policy file {path}: negative variance or zero observation scale")
    extra = torch.load(path, map_location="cpu", weights_only=True).get("extra", {}) or {}
    dt = extra.get("dt")
    dt = float(dt) if isinstance(dt, int | float) and dt > 0 else None

    mean_action, evaluator = _numpy_mlp(policy), "numpy"
    if mean_action is None or not _agrees(mean_action, policy):
        mean_action, evaluator = _torch_mean(policy), "torch"
    spec = policy.network.spec_dict()
    description = (f"{path}: {spec.get('kind')} {list(spec.get('hidden', []))}, observes "
                   f"{policy.observation.dim} of {len(state_names)} state entries, "
                   f"{evaluator} evaluation" + (f", trained at dt {dt} s" if dt else ""))
    return LoadedPolicy(path, np.asarray(policy.observation.state_indices, dtype=np.intp),
                        len(state_names), policy.dU, np.sqrt(policy.variance), mean_action,
                        evaluator, dt, description)


def _numpy_mlp(policy) -> Callable[[np.ndarray], np.ndarray] | None:
    """The MLP's forward pass in numpy (float64), or None if the network is not a plain stack of
    Linear and ReLU layers."""
    from torch import nn

    body = getattr(policy.network, "body", None)
    if not isinstance(body, nn.Sequential):
        return None
    layers: list[tuple[np.ndarray, np.ndarray] | None] = []
    for module in body:
        if type(module) is nn.Linear:
            bias = module.bias.detach().double().numpy() if module.bias is not None \
                else np.zeros(module.out_features)
            layers.append((module.weight.detach().double().numpy().copy(), bias.copy()))
        elif type(module) is nn.ReLU:
            layers.append(None)
        else:
            return None
    o_mean = np.array(policy.obs_norm.mean, dtype=float)
    o_scale = np.array(policy.obs_norm.scale, dtype=float)
    a_mean = np.array(policy.action_norm.mean, dtype=float)
    a_scale = np.array(policy.action_norm.scale, dtype=float)

    def mean_action(obs: np.ndarray) -> np.ndarray:
        z = (obs - o_mean) / o_scale
        for layer in layers:
            if layer is None:
                z = np.maximum(z, 0.0)
            else:
                z = layer[0] @ z + layer[1]
        return z * a_scale + a_mean

    return mean_action


def _agrees(mean_action: Callable[[np.ndarray], np.ndarray], policy) -> bool:
    """Whether the numpy copy matches the torch network (float32) on probe observations."""
    rng = np.random.default_rng(0)
    obs = policy.obs_norm.mean + 2.0 * policy.obs_norm.scale * rng.standard_normal(
        (PROBES, policy.observation.dim))
    reference = policy.mean_actions(obs)
    ours = np.stack([mean_action(o) for o in obs])
    tolerance = 1e-4 * (1.0 + np.abs(reference).max())
    return bool(np.all(np.abs(ours - reference) <= tolerance))


def _torch_mean(policy) -> Callable[[np.ndarray], np.ndarray]:
    return lambda obs: policy.mean_actions(obs[None])[0]


class PolicyActor:
    """One trial of a loaded policy: u_t = mean(x_t[observed]) + std * noise_t (see the module
    docstring); never returns NaN/inf."""

    def __init__(self, policy: LoadedPolicy, horizon: int,
                 noise: np.ndarray | None = None) -> None:
        if horizon < 1:
            raise ValueError(f"horizon: expected >= 1, found {horizon}")
        if noise is not None and np.shape(noise) != (horizon, policy.dU):
            raise ValueError(f"noise: expected ({horizon}, {policy.dU}), found "
                             f"{np.shape(noise)}")
        self.policy = policy
        self.T, self.dX, self.dU = int(horizon), policy.dX, policy.dU
        idx = policy.state_indices
        self._idx = None if np.array_equal(idx, np.arange(self.dX)) else idx
        self._scaled_noise = None if noise is None else policy.std * np.asarray(noise, float)
        self._mean = policy.mean_action
        self._zero = np.zeros(self.dU)
        self.faults = 0
        self.last_fault = ""

    def act(self, t: int, x: np.ndarray) -> np.ndarray:
        obs = x if self._idx is None else x[self._idx]
        if not np.isfinite(obs.sum()):
            return self._fault("non-finite observation")
        u = self._mean(obs)
        if self._scaled_noise is not None:
            u = u + self._scaled_noise[t]
        if not np.isfinite(u.sum()):
            return self._fault("non-finite network output")
        return u

    def _fault(self, reason: str) -> np.ndarray:
        self.faults += 1
        self.last_fault = reason
        return self._zero.copy()


class PolicyCache:
    """Policies loaded from files, keyed by path and the file's modification time and size (a
    rewritten file is read again); the last ``size`` are kept. Thread-safe: filled from a worker
    thread, read from the ROS thread."""

    def __init__(self, joint_names: Sequence[str], state_names: Sequence[str], size: int = 4,
                 threads: int = 1) -> None:
        self.joint_names = list(joint_names)
        self.state_names = list(state_names)
        self.size = size
        self.threads = threads
        self._entries: OrderedDict[tuple, LoadedPolicy] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _key(path: str) -> tuple:
        try:
            st = os.stat(path)
        except FileNotFoundError as err:
            raise PolicyLoadError(f"policy file {path}: not found") from err
        except OSError as err:
            raise PolicyLoadError(f"policy file {path}: {err.strerror or err}") from err
        return (os.path.realpath(path), st.st_mtime_ns, st.st_size)

    def get(self, path: str) -> LoadedPolicy | None:
        """The loaded policy if this version of the file was loaded, else None."""
        key = self._key(path)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def load(self, path: str) -> LoadedPolicy:
        """Load (or find) ``path``. Raises PolicyLoadError."""
        entry = self.get(path)
        if entry is not None:
            return entry
        key = self._key(path)
        entry = load_trial_policy(path, self.joint_names, self.state_names, self.threads)
        with self._lock:
            self._entries[key] = entry
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return entry
