"""Policy networks: a state-based MLP and a visuomotor network with a spatial softmax.

Both map an observation to the *mean* action in normalised units; :class:`~.policy.GaussianPolicy`
adds the input/output normalisation and the (state-independent) action covariance.

Visuomotor network (Levine, Finn et al. 2016)::

    image (B, 3, H, W) uint8 -> /255 - 0.5
      -> conv 5x5 stride 2 -> ReLU -> conv 3x3 -> ReLU -> conv 3x3      (B, C, H/2, W/2)
      -> spatial softmax: one distribution over pixels per channel      (B, C, H/2 * W/2)
      -> expected image coordinates of each channel, in [-1, 1]         (B, 2C) feature points
      -> standardised with the points' statistics over the pretraining images
      [-> pose layer: linear, (B, pose_dim) positions (target, ee) in normalised units]
      [+ target estimate - end effector by forward kinematics of q, m / kinematic_scale  (B, 3)]
      concatenated with the normalised joint state [q, qd]              (B, 2C [+ pose_dim] + 2n)
      -> fully connected -> ReLU -> fully connected -> ReLU -> linear   (B, dU)

The optional pose layer is the linear read-out that vision pretraining (:mod:`.vision`) trains to
regress the target and end-effector positions from the feature points; kept in the network it
hands the fully connected layers a 3-D estimate of where the target is. With few training
targets (a handful of GPS conditions) that estimate is what lets the policy interpolate to new
targets: the 2C feature points also vary along directions (arm links, lighting of the arm) the
few conditions never spread out, and the head's response to those is unconstrained.

The optional kinematic input (:class:`ChainKinematics`, ``VisuomotorSpec.kinematic_joints``) hands
the head the vector from the end effector to the target estimate: the end effector's world
position is computed from the measured q by the arm's forward kinematics (proprioception, as the
robot configuration in Levine et al. 2016), the target's from the pose layer. Without it the head
has to compare the target estimate with the pose layer's *visual* end-effector estimate (7 cm
held-out error, the tool is thin at 32x32) or learn the kinematics of 7 joints from the few
training conditions' states.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

import torch
from torch import nn


class SpatialSoftmax(nn.Module):
    """Expected 2-D image coordinates of each feature map.

    For feature maps f (B, C, H, W) and a learned temperature alpha (initially 1), each channel's
    softmax over pixels p_c(i, j) = exp(f_c(i, j) / alpha) / sum exp(f_c / alpha) gives the feature
    point (sum p_c x_j, sum p_c y_i). Pixel centres have x in [-1, 1] left to right and y in
    [-1, 1] top to bottom (x_j = -1 + (2 j + 1) / W ... on a W-wide map, the pixel centres).

    Output: (B, 2C), ordered [x_0, y_0, x_1, y_1, ...].
    """

    def __init__(self, height: int, width: int, temperature: float = 1.0,
                 learn_temperature: bool = True) -> None:
        super().__init__()
        xs = (2.0 * torch.arange(width, dtype=torch.float32) + 1.0) / width - 1.0
        ys = (2.0 * torch.arange(height, dtype=torch.float32) + 1.0) / height - 1.0
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        self.register_buffer("grid_x", grid_x.reshape(-1))
        self.register_buffer("grid_y", grid_y.reshape(-1))
        log_t = torch.tensor(float(temperature)).log()
        if learn_temperature:
            self.log_temperature = nn.Parameter(log_t)
        else:
            self.register_buffer("log_temperature", log_t)
        self.height, self.width = height, width

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        B, C, H, W = features.shape
        if (H, W) != (self.height, self.width):
            raise ValueError(f"SpatialSoftmax: expected {self.height}x{self.width} maps, "
                             f"found {H}x{W}")
        p = torch.softmax(features.reshape(B, C, H * W) / self.log_temperature.exp(), dim=-1)
        x = p @ self.grid_x
        y = p @ self.grid_y
        return torch.stack([x, y], dim=-1).reshape(B, 2 * C)


class ChainKinematics(nn.Module):
    """Forward kinematics of a serial chain in torch, as a product of exponentials.

    For joint positions q (B, n) the world position of a point p (3,) fixed to the last link is
    T(q) p with T(q) = exp([S_1] (q_1 - h_1)) ... exp([S_n] (q_n - h_n)) M: S_i (6,) = (v_i, w_i)
    is joint i's screw axis in the world frame at the home configuration h (unit w_i for a
    revolute joint, w_i = 0 and unit v_i for a prismatic one), M the link's world pose there.
    These are the columns of the world-frame joint Jacobian at h and the link pose at h, which
    :meth:`mbpl_ros.kinematics.ArmKinematics.screw_chain` reads from the arm's URDF model.

    Buffers (saved with the network, so the policy file carries the kinematics it was trained
    with): ``screws`` (n, 6) in chain order (base to tip), ``order`` (n,) the index in q of each
    chain joint, ``home_q`` (n,) in chain order, ``home`` (4, 4), ``point`` (3,) in the link frame.
    """

    def __init__(self, n_joints: int) -> None:
        super().__init__()
        self.register_buffer("screws", torch.zeros(n_joints, 6))
        self.register_buffer("order", torch.arange(n_joints))
        self.register_buffer("home_q", torch.zeros(n_joints))
        self.register_buffer("home", torch.eye(4))
        self.register_buffer("point", torch.zeros(3))

    @torch.no_grad()
    def set_chain(self, screws, order, home_q, home, point) -> None:
        """Copy the chain's parameters in (shapes as the buffers); checks that every screw is a
        revolute (unit w) or prismatic (w = 0, unit v) one."""
        screws = torch.as_tensor(screws, dtype=torch.float32)
        w_norm = screws[:, 3:].norm(dim=1)
        v_norm = screws[:, :3].norm(dim=1)
        ok = ((w_norm - 1.0).abs() < 1e-4) | ((w_norm < 1e-6) & ((v_norm - 1.0).abs() < 1e-4))
        if screws.shape != self.screws.shape or not bool(ok.all()):
            raise ValueError(f"ChainKinematics: expected {tuple(self.screws.shape)} unit "
                             f"revolute or prismatic screws, found {tuple(screws.shape)} with "
                             f"|w| {w_norm.tolist()}")
        self.screws.copy_(screws)
        self.order.copy_(torch.as_tensor(order, dtype=torch.long))
        self.home_q.copy_(torch.as_tensor(home_q, dtype=torch.float32))
        self.home.copy_(torch.as_tensor(home, dtype=torch.float32))
        self.point.copy_(torch.as_tensor(point, dtype=torch.float32))

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        """World position (B, 3) of the point for joint positions q (B, n) in the policy's
        joint order."""
        theta = q[:, self.order] - self.home_q
        # Apply the exponentials right to left to the point: p <- R_i p + t_i.
        p = (self.home[:3, :3] @ self.point + self.home[:3, 3]).expand(q.shape[0], 3)
        for i in range(self.screws.shape[0] - 1, -1, -1):
            v, w = self.screws[i, :3], self.screws[i, 3:]
            th = theta[:, i:i + 1]
            if float(w.norm()) < 0.5:                      # prismatic: a translation along v
                p = p + th * v
                continue
            # Rotation by th about the line through r = w x v (unit w) with direction w.
            r = torch.linalg.cross(w, v)
            d = p - r
            c, s = torch.cos(th), torch.sin(th)
            wd = (d * w).sum(dim=1, keepdim=True)
            d = d * c + torch.linalg.cross(w.expand_as(d), d, dim=1) * s + w * wd * (1.0 - c)
            # Plus the screw's translation along w (zero pitch for revolute joints: w . v = 0).
            p = d + r + w * float(w @ v) * th
        return p


@dataclass(frozen=True)
class MLPSpec:
    """Architecture of :class:`MLPNet` (saved in checkpoints)."""

    obs_dim: int
    action_dim: int
    hidden: tuple[int, ...] = (64, 64)


class MLPNet(nn.Module):
    """obs (B, obs_dim) -> mean action (B, action_dim), ReLU hidden layers."""

    def __init__(self, spec: MLPSpec) -> None:
        super().__init__()
        self.spec = spec
        layers: list[nn.Module] = []
        width = spec.obs_dim
        for h in spec.hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, spec.action_dim))
        self.body = nn.Sequential(*layers)

    def forward(self, obs: torch.Tensor, image: torch.Tensor | None = None,
                raw_obs: torch.Tensor | None = None) -> torch.Tensor:
        """Actions from normalised observations (``image`` and ``raw_obs``, the observations
        before normalisation, are what a visuomotor network reads; unused here)."""
        return self.body(obs)

    def spec_dict(self) -> dict:
        return {"kind": "mlp", **asdict(self.spec)}


@dataclass(frozen=True)
class VisuomotorSpec:
    """Architecture of :class:`VisuomotorNet` (saved in checkpoints)."""

    obs_dim: int
    """Joint-state inputs (2 n: q then qd)."""
    action_dim: int
    image_size: tuple[int, int] = (32, 32)
    """(height, width) of the camera image."""
    channels: int = 16
    """Channels of every conv layer; feature points = 2 * channels."""
    hidden: tuple[int, ...] = (64, 64)
    pose_dim: int = 0
    """Outputs of the pose layer (0: none); see the module docstring."""
    head_points: bool = True
    """Whether the fully connected head reads the feature points (it always reads the pose
    estimate when there is one)."""
    kinematic_joints: int = 0
    """Joints of the forward kinematics (:class:`ChainKinematics`) that gives the head the
    vector from the end effector to the pose layer's target estimate (its first three
    outputs); 0: no such input. Needs a pose layer; the first ``kinematic_joints`` observed
    entries must be q."""
    kinematic_scale: float = 0.1
    """That vector is handed to the head in units of this many metres."""

    def __post_init__(self) -> None:
        if self.pose_dim < 0 or (self.pose_dim == 0 and not self.head_points):
            raise ValueError(f"VisuomotorSpec: expected pose_dim >= 0 and the head to read "
                             f"points or a pose, found pose_dim={self.pose_dim}, "
                             f"head_points={self.head_points}")
        if self.kinematic_joints < 0 or (self.kinematic_joints and (
                self.pose_dim < 3 or self.kinematic_joints > self.obs_dim
                or not self.kinematic_scale > 0)):
            raise ValueError(f"VisuomotorSpec: kinematic_joints={self.kinematic_joints} needs a "
                             f"pose layer with a target (pose_dim >= 3, found {self.pose_dim}), "
                             f"at most obs_dim={self.obs_dim} joints and a positive scale "
                             f"(found {self.kinematic_scale})")


class VisionLayers(nn.Module):
    """The conv layers and spatial softmax: image (B, 3, H, W) uint8/float -> (B, 2C) points,
    standardised by :attr:`point_mean` / :attr:`point_scale` (identity until
    :meth:`standardize_points`), plus the optional pose layer (:meth:`pose`).

    Once :meth:`freeze` d, the points of each uint8 image are remembered (keyed by a digest of
    its pixels, up to :attr:`cache_limit` images): an S-step draws every sample image hundreds
    of times and the policy linearisation revisits the kept samples every iteration. Measured
    with ``mbpl bench policy`` (2,000 32x32 images, S-step of 300 minibatches of 128): S-step
    12.3 s -> 4.1 s, whole MDGPS iteration 20.9 s -> 10.4 s. Loading a state dict or
    re-standardising clears it.
    """

    cache_limit: int = 200_000
    """Images whose points a frozen instance remembers (~150 B each); past it, it starts over."""

    def __init__(self, image_size: tuple[int, int], channels: int, pose_dim: int = 0) -> None:
        super().__init__()
        H, W = image_size
        c = channels
        self.convs = nn.Sequential(
            nn.Conv2d(3, c, 5, stride=2, padding=2), nn.ReLU(),
            nn.Conv2d(c, c, 3, padding=1), nn.ReLU(),
            nn.Conv2d(c, c, 3, padding=1),
        )
        self.softmax = SpatialSoftmax((H + 1) // 2, (W + 1) // 2)
        self.register_buffer("point_mean", torch.zeros(2 * c))
        self.register_buffer("point_scale", torch.ones(2 * c))
        self.pose_layer = nn.Linear(2 * c, pose_dim) if pose_dim > 0 else None
        self._cache: dict[bytes, torch.Tensor] = {}
        self.register_load_state_dict_post_hook(lambda module, keys: module._cache.clear())

    @property
    def n_points(self) -> int:
        """Entries of the feature-point vector (2 C)."""
        return self.point_mean.shape[0]

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if image.dtype == torch.uint8 and self.cache_limit > 0 and self.frozen:
            return self._remembered_points(image)
        return self._points(image)

    def _points(self, image: torch.Tensor) -> torch.Tensor:
        x = image.float() / 255.0 - 0.5 if image.dtype == torch.uint8 else image
        return (self.softmax(self.convs(x)) - self.point_mean) / self.point_scale

    def _remembered_points(self, image: torch.Tensor) -> torch.Tensor:
        pixels = image.reshape(image.shape[0], -1).numpy()
        keys = [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in pixels]
        missing = [i for i, k in enumerate(keys) if k not in self._cache]
        if missing:
            if len(self._cache) + len(missing) > self.cache_limit:
                self._cache.clear()
            with torch.no_grad():
                points = self._points(image[missing])
            for i, p in zip(missing, points, strict=True):
                self._cache[keys[i]] = p.clone()
        return torch.stack([self._cache[k] for k in keys])

    def pose(self, points: torch.Tensor) -> torch.Tensor:
        """The pose layer's output for (standardised) feature points."""
        if self.pose_layer is None:
            raise ValueError("VisionLayers.pose: this network has no pose layer (pose_dim 0)")
        return self.pose_layer(points)

    @torch.no_grad()
    def standardize_points(self, images: torch.Tensor, batch: int = 256,
                           floor: float = 1e-3) -> None:
        """Set the point statistics from ``images`` (B, 3, H, W) without changing what the pose
        layer computes (its weights absorb the new affine map). The spatial softmax's points
        of a small object move over a few hundredths of the image; standardised, the fully
        connected layers see them on the same scale as the normalised joint state."""
        self._cache.clear()
        points = torch.cat([self._points(images[s:s + batch])
                            for s in range(0, images.shape[0], batch)])
        raw = points * self.point_scale + self.point_mean
        mean, scale = raw.mean(dim=0), raw.std(dim=0).clamp_min(floor)
        if self.pose_layer is not None:
            # pose = A z_old + b with z_old = (raw - m_old) / s_old; rewrite for z_new.
            A, b = self.pose_layer.weight, self.pose_layer.bias
            A_raw = A / self.point_scale
            b.copy_(b - A_raw @ self.point_mean + A_raw @ mean)
            A.copy_(A_raw * scale)
        self.point_mean.copy_(mean)
        self.point_scale.copy_(scale)
        self._cache.clear()

    def freeze(self) -> None:
        """Stop training these layers (the policy optimiser then skips them and no gradient
        is propagated through the convolutions)."""
        self.requires_grad_(False)
        self._cache.clear()

    @property
    def frozen(self) -> bool:
        return not any(p.requires_grad for p in self.parameters())


class VisuomotorNet(nn.Module):
    """(joint state (B, obs_dim), image (B, 3, H, W)) -> mean action (B, action_dim)."""

    def __init__(self, spec: VisuomotorSpec) -> None:
        super().__init__()
        self.spec = spec
        self.vision = VisionLayers(spec.image_size, spec.channels, spec.pose_dim)
        layers: list[nn.Module] = []
        width = (2 * spec.channels if spec.head_points else 0) + spec.pose_dim + spec.obs_dim
        self.kinematics: ChainKinematics | None = None
        if spec.kinematic_joints:
            self.kinematics = ChainKinematics(spec.kinematic_joints)
            # The pose layer's units: pose_m = pose * pose_scale + pose_mean (set by pretraining).
            self.register_buffer("pose_mean", torch.zeros(spec.pose_dim))
            self.register_buffer("pose_scale", torch.ones(spec.pose_dim))
            width += 3
        for h in spec.hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, spec.action_dim))
        self.head = nn.Sequential(*layers)

    def features(self, image: torch.Tensor) -> torch.Tensor:
        """What the head reads of the image (B, F): the feature points (if ``head_points``),
        then the pose layer's estimate (if ``pose_dim``)."""
        points = self.vision(image)
        parts = [points] if self.spec.head_points else []
        if self.spec.pose_dim:
            parts.append(self.vision.pose(points))
        return torch.cat(parts, dim=-1)

    def head_output(self, features: torch.Tensor, obs: torch.Tensor,
                    raw_obs: torch.Tensor | None = None) -> torch.Tensor:
        """The head on the image ``features`` (B, F) (:meth:`features`) and the normalised
        observation ``obs`` (B, obs_dim); ``raw_obs`` (B, obs_dim), the observation before
        normalisation, is needed when the network has forward kinematics (its q)."""
        parts = [features]
        if self.kinematics is not None:
            if raw_obs is None:
                raise ValueError("VisuomotorNet: the kinematic input needs the raw observation "
                                 "(q), found None")
            target = features[:, -self.spec.pose_dim:][:, :3] * self.pose_scale[:3] \
                + self.pose_mean[:3]
            ee = self.kinematics(raw_obs[:, :self.spec.kinematic_joints])
            parts.append((target - ee) / self.spec.kinematic_scale)
        parts.append(obs)
        return self.head(torch.cat(parts, dim=-1))

    def forward(self, obs: torch.Tensor, image: torch.Tensor | None = None,
                raw_obs: torch.Tensor | None = None) -> torch.Tensor:
        if image is None:
            raise ValueError("VisuomotorNet: expected a camera image, found None")
        return self.head_output(self.features(image), obs, raw_obs)

    @torch.no_grad()
    def set_pose_units(self, mean, scale) -> None:
        """The pose layer's units (what pretraining normalised its targets with):
        metres = output * scale + mean, (pose_dim,) each."""
        if self.kinematics is None:
            raise ValueError("VisuomotorNet.set_pose_units: this network has no kinematic input")
        self.pose_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.pose_scale.copy_(torch.as_tensor(scale, dtype=torch.float32))

    def spec_dict(self) -> dict:
        return {"kind": "visuomotor", **asdict(self.spec)}


def build_network(spec: dict) -> MLPNet | VisuomotorNet:
    """The network described by ``spec`` (a ``spec_dict()``), freshly initialised."""
    spec = dict(spec)
    kind = spec.pop("kind")
    spec["hidden"] = tuple(spec["hidden"])
    if kind == "mlp":
        return MLPNet(MLPSpec(**spec))
    if kind == "visuomotor":
        spec["image_size"] = tuple(spec["image_size"])
        return VisuomotorNet(VisuomotorSpec(**spec))
    raise ValueError(f"network kind: expected mlp or visuomotor, found {kind!r}")
