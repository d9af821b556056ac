"""Time-varying linear-Gaussian dynamics fitted by regression with a NIW prior.

For every step t the joint Gaussian of y = [x_t; u_t; x_{t+1}] is estimated from the N samples of
the current iteration (maximum a posteriori under the prior of :mod:`.prior`, when given), and
conditioned on (x_t, u_t):  x_{t+1} ~ N(Fm_t [x_t; u_t] + fv_t, covar_t). All steps are solved
together as stacked linear algebra.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import NotEnoughSamplesError, ShapeError
from .prior import DynamicsPriorGMM, transition_points
from .samples import SampleBatch


class UnderdeterminedFitWarning(UserWarning):
    """A dynamics regression had fewer samples than unknowns and no prior to fill the gap."""


@dataclass(frozen=True)
class LinearGaussianDynamics:
    """x_{t+1} ~ N(Fm_t [x_t; u_t] + fv_t, covar_t) for t = 0..T-2, and x_0 ~ N(x0_mean, x0_covar).

    T-1 transitions: transition t maps step t to step t+1 of a horizon-T trajectory.
    """

    Fm: np.ndarray
    """(T-1, dX, dX + dU) linear part."""
    fv: np.ndarray
    """(T-1, dX) offset."""
    covar: np.ndarray
    """(T-1, dX, dX) noise covariance."""
    x0_mean: np.ndarray
    """(dX,) initial state mean."""
    x0_covar: np.ndarray
    """(dX, dX) initial state covariance."""

    def __post_init__(self) -> None:
        Fm = np.asarray(self.Fm, dtype=float)
        if Fm.ndim != 3 or Fm.shape[2] <= Fm.shape[1]:
            raise ShapeError.expected("LinearGaussianDynamics.Fm", "(T-1, dX, dX + dU)", Fm.shape)
        n, dX, _ = Fm.shape
        expected = {
            "fv": (n, dX),
            "covar": (n, dX, dX),
            "x0_mean": (dX,),
            "x0_covar": (dX, dX),
        }
        object.__setattr__(self, "Fm", Fm)
        for name, shape in expected.items():
            value = np.asarray(getattr(self, name), dtype=float)
            if value.shape != shape:
                raise ShapeError.expected(f"LinearGaussianDynamics.{name}", str(shape), value.shape)
            object.__setattr__(self, name, value)

    @property
    def T(self) -> int:
        """Horizon of the trajectories these dynamics describe (transitions + 1)."""
        return self.Fm.shape[0] + 1

    @property
    def dX(self) -> int:
        """State dimension."""
        return self.Fm.shape[1]

    @property
    def dU(self) -> int:
        """Action dimension."""
        return self.Fm.shape[2] - self.Fm.shape[1]

    def step(
        self, t: int, x: np.ndarray, u: np.ndarray, rng: np.random.Generator | None = None
    ) -> np.ndarray:
        """x_{t+1} given x_t, u_t: the mean, or a sample when ``rng`` is given."""
        mean = self.Fm[t] @ np.concatenate([x, u]) + self.fv[t]
        if rng is None:
            return mean
        return rng.multivariate_normal(mean, self.covar[t])


def fit_dynamics(
    batch: SampleBatch,
    prior: DynamicsPriorGMM | None = None,
    regularization: float = 1e-6,
    initial_state_var: float = 1e-6,
) -> LinearGaussianDynamics:
    """Fit per-step linear-Gaussian dynamics to N trajectories of one condition.

    The joint covariance of [x_t; u_t; x_{t+1}] at each step is the empirical one (N samples)
    combined with the prior's NIW (MAP estimate, :meth:`DynamicsPriorGMM.posterior`);
    ``regularization`` is added to its (x, u) block before conditioning. Without a prior,
    N <= dX + dU leaves the regression underdetermined: it then rests on the regularisation alone
    and an :class:`UnderdeterminedFitWarning` is issued.

    The initial state distribution is the sample mean and the diagonal of the sample variances,
    floored at ``initial_state_var``.

    Args:
        batch: N >= 2 trajectories, X (N, T, dX), U (N, T, dU).
        prior: fitted GMM prior, or None for plain (regularised) least squares.
        regularization: ridge on the (x, u) block of the joint covariance.
        initial_state_var: lower bound of the initial-state variances.
    """
    return fit_dynamics_batch([batch], prior, regularization, initial_state_var)[0]


def fit_dynamics_batch(
    batches: Sequence[SampleBatch],
    prior: DynamicsPriorGMM | None = None,
    regularization: float = 1e-6,
    initial_state_var: float = 1e-6,
) -> list[LinearGaussianDynamics]:
    """:func:`fit_dynamics` for several conditions, solved together where N agrees."""
    out: list[LinearGaussianDynamics | None] = [None] * len(batches)
    by_size: dict[int, list[int]] = {}
    for m, b in enumerate(batches):
        if b.N < 2:
            raise NotEnoughSamplesError(
                f"fit_dynamics: expected at least 2 samples per condition, found {b.N}"
                + (f" for condition {m}" if len(batches) > 1 else "")
            )
        by_size.setdefault(b.N, []).append(m)
    for idx in by_size.values():
        group = [batches[m] for m in idx]
        for m, dyn in zip(idx, _fit_group(group, prior, regularization, initial_state_var),
                          strict=True):
            out[m] = dyn
    return out


def _fit_group(batches: list[SampleBatch], prior: DynamicsPriorGMM | None,
               regularization: float, initial_state_var: float) -> list[LinearGaussianDynamics]:
    """The regression for conditions with the same N, T, dX, dU, stacked over (condition, t)."""
    first = batches[0]
    for b in batches[1:]:
        b.check_dims(first.T, first.dX, first.dU, "fit_dynamics")
    N, T, dX, dU = first.N, first.T, first.dX, first.dU
    B, steps, dXU = len(batches), T - 1, dX + dU
    # (B * (T-1), N, D): the N points of every (condition, step).
    Y = np.stack([np.swapaxes(transition_points(b.X, b.U), 0, 1) for b in batches])
    Y = Y.reshape(B * steps, N, -1)
    if prior is not None:
        mean, sigma = prior.posterior(Y)
    else:
        if N <= dXU:
            warnings.warn(
                f"fit_dynamics: {N} samples for {dXU} regressors and no prior; the fit rests on "
                f"the regularisation {regularization:g}",
                UnderdeterminedFitWarning,
                stacklevel=3,
            )
        mean = Y.mean(axis=1)
        diff = Y - mean[:, None, :]
        sigma = np.swapaxes(diff, -1, -2) @ diff / N
    sigma[:, :dXU, :dXU] += regularization * np.eye(dXU)
    cross = sigma[:, :dXU, dXU:]
    Fm = np.swapaxes(_solve_regression(sigma[:, :dXU, :dXU], cross, regularization), -1, -2)
    fv = mean[:, dXU:] - (Fm @ mean[:, :dXU, None])[..., 0]
    # Schur complement: Sigma_yy - Sigma_yz Sigma_zz^-1 Sigma_zy = Sigma_yy - Fm Sigma_zy.
    covar = sigma[:, dXU:, dXU:] - Fm @ cross
    covar = 0.5 * (covar + np.swapaxes(covar, -1, -2))
    shape = (B, steps)
    Fm, fv, covar = (a.reshape(*shape, *a.shape[1:]) for a in (Fm, fv, covar))
    result = []
    for i, b in enumerate(batches):
        x0 = b.X[:, 0]
        x0_covar = np.diag(np.maximum(x0.var(axis=0), initial_state_var))
        result.append(LinearGaussianDynamics(Fm[i], fv[i], covar[i], x0.mean(axis=0), x0_covar))
    return result


def _solve_regression(A: np.ndarray, B: np.ndarray, regularization: float) -> np.ndarray:
    """Solve the stacked normal equations A X = B, adding a ridge if A is singular."""
    try:
        return np.linalg.solve(A, B)
    except np.linalg.LinAlgError:
        ridge = max(regularization, 1e-12) * 10
        n = A.shape[-1]
        scale = np.trace(A, axis1=-2, axis2=-1)[:, None, None] / n + 1.0
        warnings.warn(
            "fit_dynamics: singular regression, retrying with a larger ridge "
            f"({ridge:g} relative); check for constant or duplicated state entries",
            UnderdeterminedFitWarning,
            stacklevel=4,
        )
        return np.linalg.solve(A + ridge * scale * np.eye(n), B)
