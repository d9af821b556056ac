"""Pretraining the vision layers of the visuomotor policy.

As in Levine, Finn et al. (2016), the conv layers and spatial softmax are first trained to regress
positions of things in the scene (here the target and the end effector) from camera images of
random arm motions; a linear layer maps the feature points to the positions. That layer is the
network's pose layer when it has one (:class:`~.networks.VisuomotorSpec` ``pose_dim``), else a
throwaway. Afterwards the feature points are standardised over the same images
(:meth:`~.networks.VisionLayers.standardize_points`).

What made it learn here (measured on 32x32 MuJoCo images of the reach scene, 1,600 training
images): with the spatial softmax's temperature starting at 1, the random feature maps give
nearly uniform distributions over the pixels and the loss stayed at the regressor-of-the-mean
level for 2,000 steps (target error 16 cm); starting at 0.1 (sharper distributions, larger
gradients for the few pixels of the 2 cm target) it fell below 4 cm in 1,500 steps.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mbpl_ros.core.errors import ShapeError

from .networks import VisionLayers
from .policy import to_image_tensor


class PretrainingError(RuntimeError):
    """The vision layers did not learn to locate what they were pretrained on."""

    def __init__(self, message: str, errors: tuple[float, ...] = ()) -> None:
        super().__init__(message)
        self.errors = errors
        """The held-out error of each attempt."""


@dataclass(frozen=True)
class PretrainReport:
    rmse: float
    """Root mean square error of the first three regressed entries (the target position) on the
    training images, in the targets' units."""
    losses: tuple[float, ...]
    """Mean squared normalised error of each block of 100 steps."""
    seconds: float
    holdout_rmse: float | None = None
    """The same on the held-out images (None when none were held out)."""
    rmse_per_point: tuple[float, ...] = ()
    """Held-out (else training) RMSE of each consecutive triple of target columns."""
    target_mean: tuple[float, ...] = ()
    target_scale: tuple[float, ...] = ()
    """The read-out's units: targets = output * target_scale + target_mean (per column)."""


def pretrain_vision(vision: VisionLayers, images: np.ndarray, targets: np.ndarray,
                    steps: int = 1500, batch_size: int = 64, learning_rate: float = 3e-3,
                    seed: int = 0, holdout: float = 0.0,
                    initial_temperature: float | None = 0.1) -> PretrainReport:
    """Train ``vision`` (in place) plus a linear read-out to regress ``targets`` from ``images``.

    Args:
        images: (n, H, W, 3) uint8.
        targets: (n, k) positions to regress (e.g. the target's world position and the end
            effector's, m). With a pose layer of k outputs, that layer is the read-out.
        holdout: fraction of the images (the last ones) kept out of training to measure
            :attr:`PretrainReport.holdout_rmse`.
        initial_temperature: the spatial softmax's temperature at the start (None: keep it);
            see the module docstring.
    """
    images = np.asarray(images)
    targets = np.asarray(targets, dtype=float)
    if images.ndim != 4 or targets.ndim != 2 or images.shape[0] != targets.shape[0]:
        raise ShapeError(f"pretrain_vision: expected images (n, H, W, 3) and targets (n, k), "
                         f"found {images.shape} and {targets.shape}")
    if not 0.0 <= holdout < 1.0:
        raise ValueError(f"pretrain_vision: expected 0 <= holdout < 1, found {holdout}")
    start = time.perf_counter()
    n = images.shape[0]
    n_train = max(1, n - int(round(holdout * n)))
    train_t = targets[:n_train]
    mean, scale = train_t.mean(axis=0), np.maximum(train_t.std(axis=0), 1e-6)
    y = torch.as_tensor((targets - mean) / scale, dtype=torch.float32)
    k = targets.shape[1]
    layer = vision.pose_layer
    if layer is not None and layer.out_features != k:
        raise ShapeError(f"pretrain_vision: the pose layer has {layer.out_features} outputs, "
                         f"the targets {k} columns")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = layer if layer is not None else nn.Linear(vision.n_points, k)
        if initial_temperature is not None:
            with torch.no_grad():
                vision.softmax.log_temperature.fill_(math.log(initial_temperature))
    params = list(vision.parameters()) + ([] if layer is not None else list(head.parameters()))
    opt = torch.optim.Adam(params, lr=learning_rate)
    # Cosine decay to 5 %: the last steps refine the points instead of jittering them.
    schedule = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * k / max(1, steps))))
    gen = torch.Generator().manual_seed(seed)
    losses, block = [], []
    vision.train()
    for _ in range(steps):
        idx = torch.randint(0, n_train, (min(batch_size, n_train),), generator=gen)
        pred = head(vision(to_image_tensor(images[idx.numpy()])))
        loss = ((pred - y[idx]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
        block.append(float(loss.detach()))
        if len(block) == 100:
            losses.append(float(np.mean(block)))
            block = []
    vision.eval()
    with torch.no_grad():
        err = []
        for s in range(0, n, 256):
            pred = head(vision(to_image_tensor(images[s:s + 256]))).numpy() * scale + mean
            err.append(pred - targets[s:s + 256])
        err = np.concatenate(err)
        vision.standardize_points(to_image_tensor(images))

    def rmse(e: np.ndarray) -> float:
        return float(np.sqrt(np.mean(np.sum(e ** 2, axis=-1))))

    held = err[n_train:]
    per_point = held if len(held) else err[:n_train]
    return PretrainReport(
        rmse(err[:n_train, :3]), tuple(losses), time.perf_counter() - start,
        rmse(held[:, :3]) if len(held) else None,
        tuple(rmse(per_point[:, j:j + 3]) for j in range(0, k - k % 3, 3)),
        tuple(float(v) for v in mean), tuple(float(v) for v in scale))
