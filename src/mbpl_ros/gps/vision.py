"""Pretraining the vision layers of the visuomotor policy.

As in Levine, Finn et al. (2016), the conv layers and spatial softmax are first trained to regress
the position of the task object (here the target) from camera images of random arm motions; a
linear layer maps the feature points to the position. The trained layers then initialise the
policy's vision layers, so that its feature points already track the target and the arm.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mbpl_ros.core.errors import ShapeError

from .networks import VisionLayers
from .policy import to_image_tensor


@dataclass(frozen=True)
class PretrainReport:
    rmse: float
    """Root mean square position error on the training images, in the targets' units."""
    losses: tuple[float, ...]
    """Mean squared normalised error of each block of 100 steps."""
    seconds: float


def pretrain_vision(vision: VisionLayers, images: np.ndarray, targets: np.ndarray,
                    steps: int = 1500, batch_size: int = 64, learning_rate: float = 3e-3,
                    seed: int = 0) -> PretrainReport:
    """Train ``vision`` (in place) plus a linear head to regress ``targets`` from ``images``.

    Args:
        images: (n, H, W, 3) uint8.
        targets: (n, k) positions to regress (e.g. the target's world position, m).
    """
    images = np.asarray(images)
    targets = np.asarray(targets, dtype=float)
    if images.ndim != 4 or targets.ndim != 2 or images.shape[0] != targets.shape[0]:
        raise ShapeError(f"pretrain_vision: expected images (n, H, W, 3) and targets (n, k), "
                         f"found {images.shape} and {targets.shape}")
    start = time.perf_counter()
    mean, scale = targets.mean(axis=0), np.maximum(targets.std(axis=0), 1e-6)
    y = torch.as_tensor((targets - mean) / scale, dtype=torch.float32)
    n_points = vision.convs[-1].out_channels * 2
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = nn.Linear(n_points, targets.shape[1])
    params = list(vision.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=learning_rate)
    gen = torch.Generator().manual_seed(seed)
    n = images.shape[0]
    losses, block = [], []
    vision.train()
    for _ in range(steps):
        idx = torch.randint(0, n, (min(batch_size, n),), generator=gen)
        pred = head(vision(to_image_tensor(images[idx.numpy()])))
        loss = ((pred - y[idx]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
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
    rmse = float(np.sqrt(np.mean(np.sum(np.concatenate(err) ** 2, axis=-1))))
    return PretrainReport(rmse, tuple(losses), time.perf_counter() - start)
