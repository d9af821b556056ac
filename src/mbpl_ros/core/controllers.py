"""Time-varying linear-Gaussian controllers, their initialisations and exploration noise.

A controller is p(u_t | x_t) = N(K_t x_t + k_t, covar_t) for t = 0..T-1. Any nominal trajectory
(x_hat, u_hat) is folded into k_t = u_hat_t - K_t x_hat_t. Exploration noise can be drawn ahead of a
trial (temporally smoothed) and folded into k_t with :meth:`LinearGaussianController.fold_noise`,
so that the robot side executes a deterministic, exactly recorded controller.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import gaussian_filter1d

from .errors import NonFiniteError, ShapeError
from .lqr import backward_pass, positive_definite


@dataclass(frozen=True)
class LinearGaussianController:
    """p(u_t | x_t) = N(K_t x_t + k_t, covar_t), t = 0..T-1.

    The Cholesky factor and the inverse of ``covar`` are computed once on construction. Raises
    :class:`ShapeError` for inconsistent shapes, :class:`NonFiniteError` for NaN/inf, and
    ``ValueError`` if a covariance is not positive definite.
    """

    K: np.ndarray
    """Feedback gains, (T, dU, dX)."""
    k: np.ndarray
    """Feed-forward terms, (T, dU)."""
    covar: np.ndarray
    """Action noise covariances, (T, dU, dU), symmetric positive definite."""
    chol: np.ndarray = field(init=False, repr=False)
    """Lower Cholesky factors of ``covar``, (T, dU, dU): covar_t = chol_t chol_t^T."""
    precision: np.ndarray = field(init=False, repr=False)
    """Inverses of ``covar``, (T, dU, dU)."""

    def __post_init__(self) -> None:
        K = np.array(self.K, dtype=float)
        k = np.array(self.k, dtype=float)
        covar = np.array(self.covar, dtype=float)
        if K.ndim != 3:
            raise ShapeError.expected("LinearGaussianController.K", "(T, dU, dX)", K.shape)
        T, dU, _ = K.shape
        if k.shape != (T, dU):
            raise ShapeError.expected("LinearGaussianController.k", f"({T}, {dU})", k.shape)
        if covar.shape != (T, dU, dU):
            raise ShapeError.expected(
                "LinearGaussianController.covar", f"({T}, {dU}, {dU})", covar.shape
            )
        for name, arr in (("K", K), ("k", k), ("covar", covar)):
            if not np.all(np.isfinite(arr)):
                t = int(np.argwhere(~np.isfinite(arr))[0][0])
                raise NonFiniteError(
                    f"LinearGaussianController.{name}: expected finite values, found NaN/inf "
                    f"at step {t}"
                )
        covar = 0.5 * (covar + np.swapaxes(covar, -1, -2))
        ok = positive_definite(covar)
        if not ok.all():
            raise ValueError(
                "LinearGaussianController.covar: expected positive definite matrices, found "
                f"{int((~ok).sum())} that are not (first at step {int(np.argmin(ok))})"
            )
        chol = np.linalg.cholesky(covar)
        precision = np.linalg.inv(covar)
        precision = 0.5 * (precision + np.swapaxes(precision, -1, -2))
        for name, value in (("K", K), ("k", k), ("covar", covar), ("chol", chol)):
            value.setflags(write=False)
            object.__setattr__(self, name, value)
        precision.setflags(write=False)
        object.__setattr__(self, "precision", precision)

    @property
    def T(self) -> int:
        """Horizon."""
        return self.K.shape[0]

    @property
    def dU(self) -> int:
        """Action dimension."""
        return self.K.shape[1]

    @property
    def dX(self) -> int:
        """State dimension."""
        return self.K.shape[2]

    def act(self, t: int, x: np.ndarray, noise: np.ndarray | None = None) -> np.ndarray:
        """Action at step t: K_t x + k_t, plus chol_t @ noise when ``noise`` (dU,) is given.

        ``noise`` is standard normal (e.g. a row of :func:`smoothed_noise`), so the added term has
        covariance ``covar_t``.
        """
        if not 0 <= t < self.T:
            raise IndexError(f"act: expected 0 <= t < {self.T}, found t={t}")
        x = np.asarray(x, dtype=float)
        if x.shape != (self.dX,):
            raise ShapeError.expected("act: x", f"({self.dX},)", x.shape)
        u = self.K[t] @ x + self.k[t]
        if noise is not None:
            noise = np.asarray(noise, dtype=float)
            if noise.shape != (self.dU,):
                raise ShapeError.expected("act: noise", f"({self.dU},)", noise.shape)
            u = u + self.chol[t] @ noise
        return u

    def fold_noise(self, noise: np.ndarray) -> LinearGaussianController:
        """The controller with pre-sampled standard-normal noise (T, dU) folded into k.

        Its mean, u_t = K_t x_t + k_t + chol_t noise_t, is exactly what :meth:`act` with that noise
        returns; execute it without noise. The covariance is carried over unchanged (it describes
        the distribution the noise was drawn from, which the algorithm still needs).
        """
        noise = np.asarray(noise, dtype=float)
        if noise.shape != (self.T, self.dU):
            raise ShapeError.expected("fold_noise: noise", f"({self.T}, {self.dU})", noise.shape)
        k = self.k + np.einsum("tij,tj->ti", self.chol, noise)
        return LinearGaussianController(self.K, k, self.covar)

    @staticmethod
    def from_precision(
        K: np.ndarray, k: np.ndarray, precision: np.ndarray
    ) -> LinearGaussianController:
        """Build a controller from gains and the precision (inverse covariance) of its noise."""
        precision = np.asarray(precision, dtype=float)
        covar = np.linalg.inv(0.5 * (precision + np.swapaxes(precision, -1, -2)))
        return LinearGaussianController(K, k, covar)


def smoothed_noise(
    rng: np.random.Generator,
    T: int,
    dU: int,
    smooth_sigma: float,
    renormalize: bool = True,
) -> np.ndarray:
    """Temporally smoothed standard-normal noise, (T, dU).

    White noise is smoothed along time with a Gaussian kernel of standard deviation
    ``smooth_sigma`` steps (0 disables smoothing). Smoothing shrinks the variance; with
    ``renormalize`` each step is rescaled by the exact standard deviation of the filtered noise
    at that step (boundary effects included), so every entry is again N(0, 1) marginally.
    """
    if T < 1 or dU < 1 or smooth_sigma < 0:
        raise ValueError(
            f"smoothed_noise: expected T >= 1, dU >= 1, smooth_sigma >= 0, "
            f"found T={T}, dU={dU}, smooth_sigma={smooth_sigma}"
        )
    noise = rng.standard_normal((T, dU))
    if smooth_sigma == 0:
        return noise
    noise = gaussian_filter1d(noise, smooth_sigma, axis=0, mode="reflect")
    if renormalize:
        # Row t of the filter matrix W (noise_out = W noise_in) is filter(e_j)[t] over j.
        W = gaussian_filter1d(np.eye(T), smooth_sigma, axis=0, mode="reflect")
        noise /= np.sqrt(np.sum(W**2, axis=1))[:, None]
    return noise


def _broadcast(value: float | np.ndarray, n: int, name: str) -> np.ndarray:
    """A scalar or (n,) array as an (n,) float array."""
    arr = np.asarray(value, dtype=float)
    if arr.ndim == 0:
        return np.full(n, float(arr))
    if arr.shape != (n,):
        raise ShapeError.expected(name, f"scalar or ({n},)", arr.shape)
    return arr


def guess_joint_dynamics(
    dX: int, dU: int, dt: float, gains: np.ndarray, accel: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Double-integrator guess of the joint dynamics, used to build an initial controller.

    The state starts with dU joint positions then dU joint velocities (the
    :class:`~mbpl_ros.core.state.StateLayout` order). Each joint is a unit mass with input gain
    ``gains`` (rad/s^2 per unit action) and a constant acceleration ``accel``:
    q' = q + dt qd + dt^2 (g u + a),  qd' = qd + dt (g u + a). The remaining state entries are
    mapped to zero (unknown).

    Returns:
        Fm (dX, dX + dU) and fv (dX,).
    """
    if dX < 2 * dU:
        raise ShapeError(
            f"guess_joint_dynamics: expected dX >= 2 dU (positions then velocities), "
            f"found dX={dX}, dU={dU}"
        )
    I = np.eye(dU)
    Fm = np.zeros((dX, dX + dU))
    fv = np.zeros(dX)
    pos, vel, act = slice(0, dU), slice(dU, 2 * dU), slice(dX, dX + dU)
    Fm[pos, pos] = I
    Fm[pos, vel] = dt * I
    Fm[pos, act] = dt**2 * np.diag(gains)
    Fm[vel, vel] = I
    Fm[vel, act] = dt * np.diag(gains)
    fv[pos] = dt**2 * accel
    fv[vel] = dt * accel
    return Fm, fv


def init_lqr(
    x0: np.ndarray,
    dX: int,
    dU: int,
    dt: float,
    T: int,
    init_var: float = 1.0,
    stiffness: float = 1.0,
    stiffness_vel: float = 0.5,
    final_weight: float = 1.0,
    init_gains: float | np.ndarray = 1.0,
    init_acc: float | np.ndarray = 0.0,
) -> LinearGaussianController:
    """Initial controller: LQR that holds the joint part of x0 on a guessed double integrator.

    The cost per step is 1/2 (z - z0)^T W (z - z0) / init_var with z0 = [x0; 0] and
    W = diag(stiffness on joint positions, stiffness * stiffness_vel on joint velocities, 0 on the
    other state entries, 1 on the actions), multiplied by ``final_weight`` at the last step; the
    dynamics are :func:`guess_joint_dynamics`. The resulting noise covariance is about
    ``init_var`` times the identity (slightly less where feedback through the model adds
    curvature).

    Args:
        x0: (dX,) state to hold; positions then velocities first, as in StateLayout.
        dX, dU: state and action dimensions (dX >= 2 dU).
        dt: policy step, s.
        T: horizon.
        init_var: action noise variance scale.
        stiffness: weight on joint position error.
        stiffness_vel: velocity weight relative to ``stiffness``.
        final_weight: cost multiplier at the last step.
        init_gains: scalar or (dU,) input gains of the guessed model (e.g. 1 / joint inertia).
        init_acc: scalar or (dU,) constant accelerations of the guessed model.
    """
    x0 = np.asarray(x0, dtype=float)
    if x0.shape != (dX,):
        raise ShapeError.expected("init_lqr: x0", f"({dX},)", x0.shape)
    if init_var <= 0:
        raise ValueError(f"init_lqr: expected init_var > 0, found {init_var}")
    gains = _broadcast(init_gains, dU, "init_lqr: init_gains")
    accel = _broadcast(init_acc, dU, "init_lqr: init_acc")
    Fm, fv = guess_joint_dynamics(dX, dU, dt, gains, accel)
    weights = np.zeros(dX + dU)
    weights[:dU] = stiffness
    weights[dU : 2 * dU] = stiffness * stiffness_vel
    weights[dX:] = 1.0
    W = np.diag(weights) / init_var
    w = -W @ np.concatenate([x0, np.zeros(dU)])
    scale = np.ones(T)
    scale[-1] = final_weight
    Cm = scale[:, None, None] * W
    cv = scale[:, None] * w
    result = backward_pass(
        np.broadcast_to(Fm, (1, T - 1, *Fm.shape)),
        np.broadcast_to(fv, (1, T - 1, dX)),
        Cm[None],
        cv[None],
    )
    if result.failed[0]:
        raise ValueError(
            "init_lqr: expected a positive definite action cost, found a non-PD Q_uu "
            f"(stiffness={stiffness}, final_weight={final_weight})"
        )
    return LinearGaussianController.from_precision(result.K[0], result.k[0], result.Quu[0])


def init_pd(
    x0: np.ndarray,
    dX: int,
    dU: int,
    T: int,
    pos_gains: float | np.ndarray = 10.0,
    vel_gains: float | np.ndarray = 1.0,
    init_var: float = 1.0,
    feedforward: float | np.ndarray = 0.0,
) -> LinearGaussianController:
    """Initial controller: PD on the joint positions of x0 plus Gaussian noise.

    u_t = -pos_gains (q - q0) - vel_gains qd + feedforward + N(0, init_var I), with the joint
    positions and velocities the first 2 dU state entries (StateLayout order).

    Args:
        x0: (dX,) state whose joint positions are held.
        dX, dU: dimensions (dX >= 2 dU).
        T: horizon.
        pos_gains: scalar or (dU,) proportional gains (action units per rad, e.g. N m/rad).
        vel_gains: scalar or (dU,) derivative gains (action units per rad/s).
        init_var: noise variance per action.
        feedforward: scalar or (dU,) constant action (e.g. gravity torques at q0).
    """
    x0 = np.asarray(x0, dtype=float)
    if x0.shape != (dX,):
        raise ShapeError.expected("init_pd: x0", f"({dX},)", x0.shape)
    if dX < 2 * dU:
        raise ShapeError(f"init_pd: expected dX >= 2 dU, found dX={dX}, dU={dU}")
    if init_var <= 0:
        raise ValueError(f"init_pd: expected init_var > 0, found {init_var}")
    kp = _broadcast(pos_gains, dU, "init_pd: pos_gains")
    kv = _broadcast(vel_gains, dU, "init_pd: vel_gains")
    ff = _broadcast(feedforward, dU, "init_pd: feedforward")
    K = np.zeros((dU, dX))
    K[:, :dU] = -np.diag(kp)
    K[:, dU : 2 * dU] = -np.diag(kv)
    k = kp * x0[:dU] + ff
    return LinearGaussianController(
        np.tile(K, (T, 1, 1)), np.tile(k, (T, 1)), np.tile(init_var * np.eye(dU), (T, 1, 1))
    )
