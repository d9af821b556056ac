"""Trajectory samples of one condition.

A sample is one executed trial: states x_0..x_{T-1} and the actions u_0..u_{T-1} applied after
observing them (u_t is held constant for one policy step of length dt).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import MismatchError, NonFiniteError, ShapeError


@dataclass(frozen=True)
class SampleBatch:
    """N trajectories of one condition, validated on construction.

    Raises :class:`ShapeError` for wrong shapes and :class:`NonFiniteError` (naming the first bad
    sample and step) for NaN/inf entries.
    """

    X: np.ndarray
    """States, shape (N, T, dX); X[i, t] is x_t of sample i."""
    U: np.ndarray
    """Actions, shape (N, T, dU); U[i, t] is the action applied at x_t."""

    def __post_init__(self) -> None:
        X = np.asarray(self.X, dtype=float)
        U = np.asarray(self.U, dtype=float)
        if X.ndim != 3:
            raise ShapeError.expected("SampleBatch.X", "(N, T, dX)", X.shape)
        if U.ndim != 3:
            raise ShapeError.expected("SampleBatch.U", "(N, T, dU)", U.shape)
        if U.shape[:2] != X.shape[:2]:
            raise ShapeError.expected(
                "SampleBatch.U", f"({X.shape[0]}, {X.shape[1]}, dU) to match X", U.shape
            )
        if X.shape[0] < 1 or X.shape[1] < 2:
            raise ShapeError.expected("SampleBatch.X", "(N >= 1, T >= 2, dX)", X.shape)
        for name, arr in (("X", X), ("U", U)):
            bad = ~np.isfinite(arr)
            if bad.any():
                i, t, j = (int(v) for v in np.argwhere(bad)[0])
                raise NonFiniteError(
                    f"SampleBatch.{name}: expected finite values, found {arr[i, t, j]} "
                    f"in sample {i}, step {t}, entry {j} ({int(bad.sum())} bad entries in all)"
                )
        object.__setattr__(self, "X", X)
        object.__setattr__(self, "U", U)

    @property
    def N(self) -> int:
        """Number of samples."""
        return self.X.shape[0]

    @property
    def T(self) -> int:
        """Horizon (steps per sample)."""
        return self.X.shape[1]

    @property
    def dX(self) -> int:
        """State dimension."""
        return self.X.shape[2]

    @property
    def dU(self) -> int:
        """Action dimension."""
        return self.U.shape[2]

    def check_dims(self, T: int, dX: int, dU: int, what: str = "SampleBatch") -> None:
        """Raise :class:`MismatchError` unless the batch has horizon T and dimensions dX, dU."""
        if (self.T, self.dX, self.dU) != (T, dX, dU):
            raise MismatchError(
                f"{what}: expected T={T}, dX={dX}, dU={dU}, "
                f"found T={self.T}, dX={self.dX}, dU={self.dU}"
            )

    @staticmethod
    def concatenate(batches: Sequence[SampleBatch]) -> SampleBatch:
        """Stack batches of the same horizon and dimensions along the sample axis."""
        if not batches:
            raise ValueError("SampleBatch.concatenate: expected at least one batch, found none")
        first = batches[0]
        for b in batches[1:]:
            b.check_dims(first.T, first.dX, first.dU, "SampleBatch.concatenate")
        return SampleBatch(
            np.concatenate([b.X for b in batches]), np.concatenate([b.U for b in batches])
        )
