"""Policy networks: a state-based MLP and a visuomotor network with a spatial softmax.

Both map an observation to the *mean* action in normalised units; :class:`~.policy.GaussianPolicy`
adds the input/output normalisation and the (state-independent) action covariance.

Visuomotor network (Levine, Finn et al. 2016)::

    image (B, 3, H, W) uint8 -> /255 - 0.5
      -> conv 5x5 stride 2 -> ReLU -> conv 3x3 -> ReLU -> conv 3x3      (B, C, H/2, W/2)
      -> spatial softmax: one distribution over pixels per channel      (B, C, H/2 * W/2)
      -> expected image coordinates of each channel, in [-1, 1]         (B, 2C) feature points
      concatenated with the normalised joint state [q, qd]              (B, 2C + 2n)
      -> fully connected -> ReLU -> fully connected -> ReLU -> linear   (B, dU)
"""

from __future__ import annotations

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

    def forward(self, obs: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
        return self.body(obs)

    def spec_dict(self) -> dict:
        return {"kind": "mlp", **asdict(self.spec)}


@dataclass(frozen=True)
class VisuomotorSpec:
    """Architecture of :class:`VisuomotorNet` (saved in checkpoints)."""

    obs_dim: int
    """Joint-state inputs (2 n: q then qd)."""
    action_dim: int
    image_size: tuple[int, int] = (64, 64)
    """(height, width) of the camera image."""
    channels: int = 16
    """Channels of every conv layer; feature points = 2 * channels."""
    hidden: tuple[int, ...] = (64, 64)


class VisionLayers(nn.Module):
    """The conv layers and spatial softmax: image (B, 3, H, W) uint8/float -> (B, 2C) points."""

    def __init__(self, image_size: tuple[int, int], channels: int) -> None:
        super().__init__()
        H, W = image_size
        c = channels
        self.convs = nn.Sequential(
            nn.Conv2d(3, c, 5, stride=2, padding=2), nn.ReLU(),
            nn.Conv2d(c, c, 3, padding=1), nn.ReLU(),
            nn.Conv2d(c, c, 3, padding=1),
        )
        self.softmax = SpatialSoftmax((H + 1) // 2, (W + 1) // 2)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.float() / 255.0 - 0.5 if image.dtype == torch.uint8 else image
        return self.softmax(self.convs(x))


class VisuomotorNet(nn.Module):
    """(joint state (B, obs_dim), image (B, 3, H, W)) -> mean action (B, action_dim)."""

    def __init__(self, spec: VisuomotorSpec) -> None:
        super().__init__()
        self.spec = spec
        self.vision = VisionLayers(spec.image_size, spec.channels)
        layers: list[nn.Module] = []
        width = 2 * spec.channels + spec.obs_dim
        for h in spec.hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, spec.action_dim))
        self.head = nn.Sequential(*layers)

    def forward(self, obs: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
        if image is None:
            raise ValueError("VisuomotorNet: expected a camera image, found None")
        return self.head(torch.cat([self.vision(image), obs], dim=-1))

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
