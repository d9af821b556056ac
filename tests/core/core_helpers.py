"""Shared helpers of the core tests: small random linear-Gaussian problems."""

from __future__ import annotations

import numpy as np

from mbpl_ros.core.controllers import LinearGaussianController


def random_spd(rng: np.random.Generator, n: int, scale: float = 1.0, floor: float = 0.1):
    """A random symmetric positive definite (n, n) matrix."""
    A = rng.standard_normal((n, n))
    return scale * (A @ A.T / n + floor * np.eye(n))


def random_controller(rng: np.random.Generator, T: int, dX: int, dU: int,
                      gain: float = 0.3) -> LinearGaussianController:
    """A random linear-Gaussian controller."""
    K = gain * rng.standard_normal((T, dU, dX))
    k = rng.standard_normal((T, dU))
    covar = np.stack([random_spd(rng, dU, 0.5) for _ in range(T)])
    return LinearGaussianController(K, k, covar)
