"""Neural policies in the executor: reading a policy file for trials, and the per-step actor.

Loading (:func:`load_trial_policy`) imports torch (seconds, the first time) and reads the file with
:func:`mbpl_ros.gps.policy.load_policy`, which refuses a file made for another robot or another
state layout; on top of that a file with non-finite parameters is refused, as a controller with
NaN gains is. It never runs in the control loop: the node calls it from a worker thread while it
validates the goal, and keeps what it loaded in a :class:`PolicyCache`.

Evaluation: the loop evaluates the policy once per policy step (at the step boundary; the action
is then held for dt, as for a linear-Gaussian controller). The state-based MLP is evaluated with
numpy in float64 from weights copied at load time: ~20 µs per step instead of ~300 µs for a torch
call, and no torch code in the loop thread at all. The copy is checked against the torch network
on probe inputs when loaded; if they disagree (a network this copy does not know), the torch call
is used instead and :attr:`LoadedPolicy.evaluator` says so.

Visuomotor policies (camera image + q, qd) are split in two at the feature points: the vision
layers (convolutions, spatial softmax, pose layer: :attr:`LoadedPolicy.vision`, torch, ~0.5 ms)
run on each camera frame as it arrives, outside the loop (:class:`FrameFeatures`, keyed by the
frame's stamp), and the fully connected head runs in the loop as numpy on [features, normalised
q, qd] (checked against the whole torch network on probe images and states at load, like the
MLP). The actor then needs, at step t, the features of the frame stamped exactly like x_t
(:meth:`PolicyActor.act_at`); the node makes sure the loop only sees a state once its frame's
features are there. The camera the file was trained with (:attr:`LoadedPolicy.camera`: image
size from the file, field of view and supersampling from its metadata or the run's summary.json)
is what the node compares with the camera that feeds it.

:class:`PolicyActor` is what a trial runs (:class:`~mbpl_ros.executor.trial.TrialActor`): the
observed state entries (and the frame's features) -> mean action (+ the trainer's pre-drawn noise
scaled by the policy's standard deviation). A non-finite observation or output, or a visuomotor
step without its frame, gives zero torque and is counted in ``faults`` (the trial reports and the
node logs them; a missing frame also sets :attr:`PolicyActor.missing_frame`, on which the node
aborts the trial): such a value never reaches the robot.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mbpl_ros.camera import CameraModel

PROBES = 64
"""Probe inputs on which the numpy copy of an MLP must match the torch network."""
IMAGE_PROBES = 8
"""Probe images (with states) on which the split visuomotor network must match the whole one."""


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
    mean_action: Callable[..., np.ndarray]
    """Observation (dO,) -> mean action (dU,), float64; a visuomotor policy's also takes the
    frame's features (F,) from :attr:`vision`: ``mean_action(obs, features)``."""
    evaluator: str
    """numpy (the copied MLP) or torch (the network itself)."""
    dt: float | None
    """Policy step the file was trained with (its metadata), s, if recorded."""
    description: str
    """One line for logs: file, network, observation."""
    image_size: tuple[int, int] | None = None
    """Visuomotor: (height, width) of the camera image it reads; None: a state-based policy."""
    vision: Callable[[np.ndarray], np.ndarray] | None = None
    """Visuomotor: image (H, W, 3) uint8 -> features (F,) float64 (torch: never in the loop)."""
    camera: CameraModel | None = None
    """Visuomotor: the camera it was trained with, where recorded (else only the size is known)."""
    camera_source: str = ""
    """Where :attr:`camera` was read from (the file's metadata or the run's summary.json)."""

    @property
    def is_visuomotor(self) -> bool:
        return self.image_size is not None


def load_trial_policy(path: str | Path, joint_names: Sequence[str], state_names: Sequence[str],
                      threads: int = 1) -> LoadedPolicy:
    """Read ``path`` for this robot (``joint_names``) and state layout (``state_names``).

    Raises:
        PolicyLoadError: unreadable file, another robot / layout, non-finite parameters, a
            visuomotor network whose split evaluation does not match it.
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

    policy.network.eval()
    spec = policy.network.spec_dict()
    image_size = policy.observation.image_size
    vision, camera, camera_source = None, None, ""
    if image_size is None:
        mean_action, evaluator = _numpy_mlp(policy), "numpy"
        if mean_action is None or not _agrees(mean_action, policy):
            mean_action, evaluator = _torch_mean(policy), "torch"
    else:
        image_size = (int(image_size[0]), int(image_size[1]))
        vision = _vision_features(policy)
        mean_action, evaluator = _numpy_head(policy), "numpy head"
        if mean_action is None or not _head_agrees(mean_action, vision, policy):
            mean_action, evaluator = _torch_head(policy), "torch head"
        camera, camera_source = recorded_camera(path, extra, image_size)
    description = (f"{path}: {spec.get('kind')} {list(spec.get('hidden', []))}, observes "
                   f"{policy.observation.dim} of {len(state_names)} state entries"
                   + (f" and {image_size[0]}x{image_size[1]} camera images ("
                      + (f"{camera.describe()}, from {camera_source}" if camera else
                         "field of view not recorded") + "; vision on frame arrival)"
                      if image_size else "")
                   + f", {evaluator} evaluation" + (f", trained at dt {dt} s" if dt else ""))
    return LoadedPolicy(path, np.asarray(policy.observation.state_indices, dtype=np.intp),
                        len(state_names), policy.dU, np.sqrt(policy.variance), mean_action,
                        evaluator, dt, description, image_size, vision, camera, camera_source)


def recorded_camera(path: str | Path, extra: dict, image_size: tuple[int, int]) -> tuple[
    CameraModel | None, str
]:
    """The camera a visuomotor policy file was trained with: its metadata's ``camera_fovy_deg``
    and ``camera_supersample`` (``save_policy(..., camera_fovy_deg=..., camera_supersample=...)``)
    or else the GPS settings in the run's summary.json beside it (``mbpl train`` writes both
    files into one directory), with the file's image size; (None, "") where neither says.

    Raises:
        PolicyLoadError: recorded values that make no camera, or a summary.json whose visuomotor
            image size differs from the file's (then it describes another policy).
    """
    fovy, supersample, source = extra.get("camera_fovy_deg"), extra.get("camera_supersample"), \
        "the policy file's metadata"
    if extra.get("camera_eye") is not None:
        # A world camera pose (gps_loop GPSSettings.camera_eye) instead of the URDF's camera
        # frame: the camera model here has no pose to compare with the bridge's camera.
        raise PolicyLoadError(
            f"policy file {path} was trained with a world camera at {extra['camera_eye']} "
            f"looking at {extra.get('camera_look_at')}, not the URDF's camera frame; this "
            "executor cannot check that its camera is placed so")
    if fovy is None:
        summary = Path(path).with_name("summary.json")
        try:
            gps = json.loads(summary.read_text()).get("gps") or {}
        except (OSError, ValueError, AttributeError):
            gps = {}
        if gps.get("policy") == "visuomotor" and "camera_fovy_deg" in gps:
            if tuple(gps.get("image_size") or ()) != tuple(image_size):
                raise PolicyLoadError(
                    f"policy file {path}: {summary} describes a visuomotor policy with "
                    f"{gps.get('image_size')} images, the file one with {list(image_size)}")
            fovy, supersample = gps["camera_fovy_deg"], gps.get("camera_supersample", 1)
            source = str(summary)
    if fovy is None:
        return None, ""
    try:
        return CameraModel(int(image_size[0]), int(image_size[1]), float(fovy),
                           int(supersample if supersample is not None else 1)), source
    except (TypeError, ValueError) as err:
        raise PolicyLoadError(f"policy file {path}: its camera ({source}) is not one: {err}") \
            from err


def _numpy_stack(body) -> Callable[[np.ndarray], np.ndarray] | None:
    """The forward pass (float64) of a torch Sequential of Linear and ReLU layers, from copied
    weights, or None if it has any other layer."""
    from torch import nn

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

    def forward(z: np.ndarray) -> np.ndarray:
        for layer in layers:
            if layer is None:
                z = np.maximum(z, 0.0)
            else:
                z = layer[0] @ z + layer[1]
        return z

    return forward


def _normalizers(policy) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Observation mean and scale, action mean and scale, as float64 arrays."""
    return tuple(np.array(v, dtype=float) for v in (
        policy.obs_norm.mean, policy.obs_norm.scale, policy.action_norm.mean,
        policy.action_norm.scale))


def _numpy_mlp(policy) -> Callable[[np.ndarray], np.ndarray] | None:
    """The MLP's forward pass in numpy (float64), or None if the network is not a plain stack of
    Linear and ReLU layers."""
    body = _numpy_stack(getattr(policy.network, "body", None))
    if body is None:
        return None
    o_mean, o_scale, a_mean, a_scale = _normalizers(policy)

    def mean_action(obs: np.ndarray) -> np.ndarray:
        return body((obs - o_mean) / o_scale) * a_scale + a_mean

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


def _vision_features(policy) -> Callable[[np.ndarray], np.ndarray]:
    """Image (H, W, 3) uint8 -> the features the visuomotor head reads (F,)
    (:meth:`~mbpl_ros.gps.networks.VisuomotorNet.features`)."""
    import torch

    from mbpl_ros.gps.policy import to_image_tensor

    net = policy.network

    def features(image: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net.features(to_image_tensor(np.asarray(image)[None]))[0].double().numpy()

    return features


def _numpy_head(policy) -> Callable[[np.ndarray, np.ndarray], np.ndarray] | None:
    """The visuomotor head on (obs (dO,), features (F,)) in numpy (float64), or None if it is
    not a plain stack of Linear and ReLU layers."""
    head = _numpy_stack(getattr(policy.network, "head", None))
    if head is None:
        return None
    o_mean, o_scale, a_mean, a_scale = _normalizers(policy)
    extra = _numpy_kinematic_input(policy.network)

    def mean_action(obs: np.ndarray, features: np.ndarray) -> np.ndarray:
        parts = [features] + ([] if extra is None else [extra(obs, features)])
        return head(np.concatenate([*parts, (obs - o_mean) / o_scale])) * a_scale + a_mean

    return mean_action


def _numpy_kinematic_input(net) -> Callable[[np.ndarray, np.ndarray], np.ndarray] | None:
    """The visuomotor head's kinematic input in numpy (float64): the pose layer's target
    estimate minus the end effector placed by forward kinematics of q, in units of
    ``kinematic_scale`` (:meth:`~mbpl_ros.gps.networks.VisuomotorNet.head_output`); None for a
    network without one."""
    fk = getattr(net, "kinematics", None)
    if fk is None:
        return None
    screws, home_q = fk.screws.double().numpy(), fk.home_q.double().numpy()
    order = fk.order.numpy()
    home, point = fk.home.double().numpy(), fk.point.double().numpy()
    pose_dim, n = net.spec.pose_dim, net.spec.kinematic_joints
    t_mean = net.pose_mean.double().numpy()[:3]
    t_scale = net.pose_scale.double().numpy()[:3]
    unit = float(net.spec.kinematic_scale)

    def ee_position(q: np.ndarray) -> np.ndarray:
        theta = q[order] - home_q
        p = home[:3, :3] @ point + home[:3, 3]
        for i in range(len(theta) - 1, -1, -1):
            v, w = screws[i, :3], screws[i, 3:]
            if np.linalg.norm(w) < 0.5:
                p = p + theta[i] * v
                continue
            r = np.cross(w, v)
            d = p - r
            c, s = np.cos(theta[i]), np.sin(theta[i])
            d = d * c + np.cross(w, d) * s + w * (w @ d) * (1.0 - c)
            p = d + r + w * (w @ v) * theta[i]
        return p

    def kinematic_input(obs: np.ndarray, features: np.ndarray) -> np.ndarray:
        target = features[len(features) - pose_dim:][:3] * t_scale + t_mean
        return (target - ee_position(np.asarray(obs, dtype=float)[:n])) / unit

    return kinematic_input


def _torch_head(policy) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    import torch

    net = policy.network
    o_mean = torch.as_tensor(policy.obs_norm.mean, dtype=torch.float32)
    o_scale = torch.as_tensor(policy.obs_norm.scale, dtype=torch.float32)
    a_mean = torch.as_tensor(policy.action_norm.mean, dtype=torch.float32)
    a_scale = torch.as_tensor(policy.action_norm.scale, dtype=torch.float32)

    def mean_action(obs: np.ndarray, features: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            z = (torch.as_tensor(obs, dtype=torch.float32) - o_mean) / o_scale
            f = torch.as_tensor(features, dtype=torch.float32)
            raw = torch.as_tensor(obs, dtype=torch.float32)
            out = net.head_output(f[None], z[None], raw[None])[0]
            return (out * a_scale + a_mean).double().numpy()

    return mean_action


def _head_agrees(mean_action: Callable[[np.ndarray, np.ndarray], np.ndarray],
                 vision: Callable[[np.ndarray], np.ndarray], policy) -> bool:
    """Whether vision + head match the whole torch network on probe images and states."""
    rng = np.random.default_rng(0)
    h, w = policy.observation.image_size
    images = rng.integers(0, 256, (IMAGE_PROBES, h, w, 3), dtype=np.uint8)
    obs = policy.obs_norm.mean + 2.0 * policy.obs_norm.scale * rng.standard_normal(
        (IMAGE_PROBES, policy.observation.dim))
    reference = policy.mean_actions(obs, images)
    ours = np.stack([mean_action(o, vision(i)) for o, i in zip(obs, images, strict=True)])
    tolerance = 1e-4 * (1.0 + np.abs(reference).max())
    return bool(np.all(np.abs(ours - reference) <= tolerance))


class FrameFeatures:
    """The vision features of a trial's camera frames, by the frame's stamp (integer ns).

    :meth:`add` runs the vision layers (torch) in the caller's thread, as a frame arrives;
    :meth:`get` is what the loop thread reads. Frames of one publisher arrive in the order they
    were published (reliable DDS), and the simulator's clock restarts at every reset: a frame
    stamped before the newest one starts a new episode and drops what was kept (so a step is
    never paired with the frame of an earlier episode that happened to carry its stamp).
    Thread-safe.
    """

    def __init__(self, policy: LoadedPolicy, capacity: int = 256) -> None:
        if policy.vision is None:
            raise ValueError(f"FrameFeatures: {policy.path} is not a visuomotor policy")
        self.policy = policy
        self.capacity = capacity
        self._features: OrderedDict[int, np.ndarray] = OrderedDict()
        self._newest: int | None = None
        self._lock = threading.Lock()
        self.vision_s: list[float] = []
        """Seconds of each :meth:`add`'s vision pass."""

    def add(self, stamp_ns: int, image: np.ndarray) -> None:
        """Compute and keep the features of ``image`` (H, W, 3) uint8 stamped ``stamp_ns``."""
        if np.shape(image) != (*self.policy.image_size, 3):
            raise ValueError(f"FrameFeatures.add: expected ({self.policy.image_size[0]}, "
                             f"{self.policy.image_size[1]}, 3), found {np.shape(image)}")
        started = time.perf_counter()
        features = self.policy.vision(image)
        self.vision_s.append(time.perf_counter() - started)
        with self._lock:
            if self._newest is not None and stamp_ns < self._newest:
                self._features.clear()  # a new episode (see the class docstring)
            self._newest = stamp_ns
            self._features[stamp_ns] = features
            self._features.move_to_end(stamp_ns)
            while len(self._features) > self.capacity:
                self._features.popitem(last=False)

    def get(self, stamp_ns: int) -> np.ndarray | None:
        """The features of the frame stamped exactly ``stamp_ns``, or None."""
        with self._lock:
            return self._features.get(stamp_ns)

    def has(self, stamp_ns: int) -> bool:
        return self.get(stamp_ns) is not None


class PolicyActor:
    """One trial of a loaded policy: u_t = mean(x_t[observed] [, features of x_t's frame]) +
    std * noise_t (see the module docstring); never returns NaN/inf.

    A visuomotor policy needs ``frames`` (the trial's :class:`FrameFeatures`) and is stepped
    through :meth:`act_at`, which gets x_t's stamp; :meth:`act` (no stamp) gives it no frame."""

    def __init__(self, policy: LoadedPolicy, horizon: int,
                 noise: np.ndarray | None = None, frames: FrameFeatures | None = None) -> None:
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
        self.frames = frames
        self.missing_frame = ""
        """Visuomotor: why a step had no frame (the node aborts the trial on it); empty if none."""
        self.step_s: list[float] = []
        """Visuomotor: seconds of each step's evaluation in the loop (head, noise, checks)."""

    def act(self, t: int, x: np.ndarray) -> np.ndarray:
        if self.policy.is_visuomotor:
            return self._no_frame(t, None)
        return self._act(t, x, None)

    def act_at(self, t: int, x: np.ndarray, stamp_ns: int) -> np.ndarray:
        """:meth:`act` for the state x_t stamped ``stamp_ns`` (integer ns): a visuomotor policy
        reads the features of the frame with exactly that stamp."""
        if not self.policy.is_visuomotor:
            return self._act(t, x, None)
        started = time.perf_counter()
        features = None if self.frames is None else self.frames.get(int(stamp_ns))
        if features is None:
            return self._no_frame(t, stamp_ns)
        u = self._act(t, x, features)
        self.step_s.append(time.perf_counter() - started)
        return u

    def _no_frame(self, t: int, stamp_ns: int | None) -> np.ndarray:
        at = "without a stamp" if stamp_ns is None else f"stamped {stamp_ns * 1e-9:.6f} s"
        self.missing_frame = self.missing_frame or f"step {t}: no camera frame for the state {at}"
        return self._fault("no camera frame for this state")

    def _act(self, t: int, x: np.ndarray, features: np.ndarray | None) -> np.ndarray:
        obs = x if self._idx is None else x[self._idx]
        if not np.isfinite(obs.sum()):
            return self._fault("non-finite observation")
        u = self._mean(obs) if features is None else self._mean(obs, features)
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
