"""The global policy pi_theta(u | o) = N(mu_theta(o), covar): a network plus what it needs to run.

:class:`GaussianPolicy` wraps a network (:mod:`.networks`) with

- the observation it reads (:class:`ObservationSpec`): the named state entries taken from x
  (all of x for the state-based policy; only q, qd for the visuomotor one, which sees the target
  in the camera image instead), the joint names of the robot, and the image size;
- input and output normalisation (fitted on the first training data and then fixed, so a warm
  started network keeps its meaning);
- a state-independent diagonal action covariance (fitted by :mod:`.policy_opt`);
- :meth:`GaussianPolicy.act`, the guarded call for a robot: the action is only returned if the
  input and the network output are finite; otherwise it returns zero torque (the arm then holds
  against gravity under the drive's gravity compensation) with ``valid=False`` and the reason;
- checkpoints (:func:`save_policy`, :func:`load_policy`): ``torch.save`` of the state dict with
  the architecture and observation metadata; loading refuses a file made for another robot,
  observation layout or image size with a :class:`~mbpl_ros.core.errors.CheckpointError`
  that names both sides.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mbpl_ros.core.errors import CheckpointError, NonFiniteError, ShapeError
from mbpl_ros.core.state import StateLayout

from .networks import MLPNet, MLPSpec, VisuomotorNet, VisuomotorSpec, build_network

CHECKPOINT_FORMAT = "mbpl_ros.gps_policy"
CHECKPOINT_VERSION = 1


@dataclass(frozen=True)
class ObservationSpec:
    """What a policy observes: named state entries, the robot's joints, an optional image."""

    state_names: tuple[str, ...]
    """Names of the observed state entries, in order (a subset of StateLayout.names())."""
    state_indices: tuple[int, ...]
    """Their indices in the state vector x."""
    joint_names: tuple[str, ...]
    """Actuated joints of the robot, in action order."""
    image_size: tuple[int, int] | None = None
    """(height, width) of the RGB camera image, or None for a state-only policy."""

    @staticmethod
    def full_state(layout: StateLayout, joint_names: tuple[str, ...] | list[str]) -> (
        ObservationSpec
    ):
        """The state-based policy's observation: all of x."""
        names = layout.names()
        return ObservationSpec(tuple(names), tuple(range(len(names))), tuple(joint_names))

    @staticmethod
    def visuomotor(layout: StateLayout, joint_names: tuple[str, ...] | list[str],
                   image_size: tuple[int, int] = (64, 64)) -> ObservationSpec:
        """The visuomotor policy's observation: q, qd and the camera image (no target)."""
        names = layout.names()
        idx = tuple(range(2 * layout.n_joints))
        return ObservationSpec(tuple(names[i] for i in idx), idx, tuple(joint_names),
                               tuple(image_size))

    @property
    def dim(self) -> int:
        """Number of state entries observed."""
        return len(self.state_indices)

    def from_states(self, X: np.ndarray) -> np.ndarray:
        """Observed entries (..., dim) of states X (..., dX)."""
        return np.asarray(X)[..., list(self.state_indices)]

    def to_dict(self) -> dict:
        return {"state_names": list(self.state_names), "state_indices": list(self.state_indices),
                "joint_names": list(self.joint_names),
                "image_size": None if self.image_size is None else list(self.image_size)}

    @staticmethod
    def from_dict(d: dict) -> ObservationSpec:
        return ObservationSpec(tuple(d["state_names"]), tuple(int(i) for i in d["state_indices"]),
                               tuple(d["joint_names"]),
                               None if d["image_size"] is None else tuple(d["image_size"]))


@dataclass(frozen=True)
class PolicyAction:
    """Result of :meth:`GaussianPolicy.act`."""

    u: np.ndarray
    """(dU,) action to send: the policy's action, or zeros when ``valid`` is False."""
    valid: bool
    """False when the input or the network output was not finite (then ``u`` is zero)."""
    reason: str = ""
    """Why the action was replaced by zeros (empty when valid)."""


@dataclass
class Normalizer:
    """Affine normalisation z = (v - mean) / scale, per entry."""

    mean: np.ndarray
    scale: np.ndarray

    @staticmethod
    def fit(data: np.ndarray, floor: float = 1e-3) -> Normalizer:
        """From data (n, d): the mean and the standard deviation floored at ``floor``."""
        data = np.asarray(data, dtype=float).reshape(-1, np.asarray(data).shape[-1])
        return Normalizer(data.mean(axis=0), np.maximum(data.std(axis=0), floor))

    @staticmethod
    def identity(d: int) -> Normalizer:
        return Normalizer(np.zeros(d), np.ones(d))


@dataclass
class GaussianPolicy:
    """pi(u | o) = N(mu(o), diag(variance)); see the module docstring."""

    network: MLPNet | VisuomotorNet
    observation: ObservationSpec
    obs_norm: Normalizer
    action_norm: Normalizer
    variance: np.ndarray
    """(dU,) action noise variances (the policy's own covariance is diag(variance))."""
    faults: int = field(default=0)
    """How many :meth:`act` calls returned a zero action because of non-finite values."""

    @property
    def dU(self) -> int:
        return self.network.spec.action_dim

    @property
    def is_visuomotor(self) -> bool:
        return isinstance(self.network, VisuomotorNet)

    @property
    def covar(self) -> np.ndarray:
        """(dU, dU) action covariance."""
        return np.diag(self.variance)

    def _forward(self, obs: torch.Tensor, image: torch.Tensor | None) -> torch.Tensor:
        """Mean action in physical units from raw observation tensors."""
        mean = torch.as_tensor(self.obs_norm.mean, dtype=torch.float32)
        scale = torch.as_tensor(self.obs_norm.scale, dtype=torch.float32)
        out = self.network((obs - mean) / scale, image, obs)
        a_mean = torch.as_tensor(self.action_norm.mean, dtype=torch.float32)
        a_scale = torch.as_tensor(self.action_norm.scale, dtype=torch.float32)
        return out * a_scale + a_mean

    def mean_actions(self, obs: np.ndarray, images: np.ndarray | None = None,
                     batch: int = 512) -> np.ndarray:
        """Mean actions (..., dU) for observations (..., dO) and images (..., H, W, 3) uint8."""
        obs = np.asarray(obs, dtype=np.float32)
        lead = obs.shape[:-1]
        flat = obs.reshape(-1, obs.shape[-1])
        imgs = None if images is None else np.asarray(images).reshape(-1, *np.shape(images)[-3:])
        out = np.empty((flat.shape[0], self.dU))
        self.network.eval()
        with torch.no_grad():
            for s in range(0, flat.shape[0], batch):
                img = None if imgs is None else to_image_tensor(imgs[s:s + batch])
                out[s:s + batch] = self._forward(torch.from_numpy(flat[s:s + batch]), img).numpy()
        return out.reshape(*lead, self.dU)

    def act(self, obs: np.ndarray, image: np.ndarray | None = None,
            noise: np.ndarray | None = None) -> PolicyAction:
        """The action for one observation; never returns NaN/inf.

        Args:
            obs: (dO,) observed state entries (:meth:`ObservationSpec.from_states`).
            image: (H, W, 3) uint8 camera image (visuomotor policies only).
            noise: optional (dU,) standard-normal noise; adds sqrt(variance) * noise.

        Returns:
            :class:`PolicyAction`. A non-finite input or output gives ``u = 0`` and
            ``valid=False`` (counted in :attr:`faults`): the command never reaches the robot.
            Wrong shapes raise :class:`ShapeError` (a wiring bug, not a runtime fault).
        """
        obs = np.asarray(obs, dtype=float)
        if obs.shape != (self.observation.dim,):
            raise ShapeError.expected("GaussianPolicy.act: obs", f"({self.observation.dim},)",
                                      obs.shape)
        zero = np.zeros(self.dU)
        if not np.all(np.isfinite(obs)):
            self.faults += 1
            return PolicyAction(zero, False, "non-finite observation")
        if self.is_visuomotor:
            size = self.observation.image_size
            if image is None or np.shape(image) != (*size, 3):
                raise ShapeError.expected("GaussianPolicy.act: image", f"({size[0]}, {size[1]}, 3)",
                                          np.shape(image) if image is not None else ())
        u = self.mean_actions(obs[None], None if image is None else np.asarray(image)[None])[0]
        if noise is not None:
            u = u + np.sqrt(self.variance) * np.asarray(noise, dtype=float)
        if not np.all(np.isfinite(u)):
            self.faults += 1
            return PolicyAction(zero, False, "non-finite network output")
        return PolicyAction(u, True)

    def act_strict(self, obs: np.ndarray, image: np.ndarray | None = None) -> np.ndarray:
        """:meth:`act` that raises :class:`NonFiniteError` instead of returning zeros."""
        a = self.act(obs, image)
        if not a.valid:
            raise NonFiniteError(f"GaussianPolicy: {a.reason}")
        return a.u


def to_image_tensor(images: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) uint8 tensor."""
    return torch.from_numpy(np.ascontiguousarray(np.asarray(images, dtype=np.uint8))).permute(
        0, 3, 1, 2)


def make_policy(observation: ObservationSpec, dU: int, hidden: tuple[int, ...] = (64, 64),
                channels: int = 16, seed: int = 0) -> GaussianPolicy:
    """A fresh policy (MLP for a state observation, visuomotor with an image), seeded."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if observation.image_size is None:
            net: MLPNet | VisuomotorNet = MLPNet(MLPSpec(observation.dim, dU, tuple(hidden)))
        else:
            net = VisuomotorNet(VisuomotorSpec(observation.dim, dU, observation.image_size,
                                               channels, tuple(hidden)))
    return GaussianPolicy(net, observation, Normalizer.identity(observation.dim),
                          Normalizer.identity(dU), np.ones(dU))


def save_policy(policy: GaussianPolicy, path: str | Path, **extra) -> Path:
    """Write the policy (state dict, architecture, observation metadata, normalisation)."""
    path = Path(path)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "network": policy.network.spec_dict(),
        "state_dict": policy.network.state_dict(),
        "observation": policy.observation.to_dict(),
        "obs_norm": [policy.obs_norm.mean.tolist(), policy.obs_norm.scale.tolist()],
        "action_norm": [policy.action_norm.mean.tolist(), policy.action_norm.scale.tolist()],
        "variance": policy.variance.tolist(),
        "extra": extra,
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_policy(path: str | Path, joint_names: list[str] | tuple[str, ...] | None = None,
                state_names: list[str] | tuple[str, ...] | None = None,
                image_size: tuple[int, int] | None | str = "any") -> GaussianPolicy:
    """Read a policy written by :func:`save_policy`, checking it fits the caller's robot.

    Args:
        joint_names: the robot's actuated joints in action order (None: not checked).
        state_names: the caller's state layout names (StateLayout.names()); the policy's observed
            entries must be found there at the same indices (None: not checked).
        image_size: the caller's camera (height, width); None for no camera; "any": not checked.

    Raises:
        CheckpointError: unreadable file, another format or version, or made for another robot,
            state layout or image size (the message names both).
    """
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as err:
        raise CheckpointError(f"policy file {path}: not found") from err
    except Exception as err:  # noqa: BLE001 - any unpickling failure is a bad file
        raise CheckpointError(f"policy file {path}: not a readable torch checkpoint ({err})") \
            from err
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"policy file {path}: expected format {CHECKPOINT_FORMAT!r}, found "
                              f"{payload.get('format') if isinstance(payload, dict) else 'other'}")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"policy file {path}: expected version {CHECKPOINT_VERSION}, found "
                              f"{payload.get('version')}")
    obs = ObservationSpec.from_dict(payload["observation"])
    if joint_names is not None and tuple(joint_names) != obs.joint_names:
        raise CheckpointError(
            f"policy file {path} was trained for joints {list(obs.joint_names)}; this robot has "
            f"{list(joint_names)}")
    if state_names is not None:
        names = list(state_names)
        found = [names[i] if i < len(names) else None for i in obs.state_indices]
        if found != list(obs.state_names):
            raise CheckpointError(
                f"policy file {path} observes state entries {list(obs.state_names)[:4]}... "
                f"({obs.dim} of them); this state layout has {names[:4]}... ({len(names)} "
                f"entries), which do not match")
    if image_size != "any":
        want = None if image_size is None else tuple(image_size)
        if want != obs.image_size:
            raise CheckpointError(f"policy file {path} expects camera images of size "
                                  f"{obs.image_size}; this setup gives {want}")
    net = build_network(payload["network"])
    net.load_state_dict(payload["state_dict"])
    return GaussianPolicy(net, obs, Normalizer(*(np.asarray(a) for a in payload["obs_norm"])),
                          Normalizer(*(np.asarray(a) for a in payload["action_norm"])),
                          np.asarray(payload["variance"], dtype=float))
