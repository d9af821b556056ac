"""Known linear-Gaussian systems and rollouts, for tests, benchmarks and notebooks.

x_{t+1} = A x_t + B u_t + c + G w_t, w_t ~ N(0, I): the true dynamics against which fitted
models and learned controllers can be checked.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .controllers import LinearGaussianController, smoothed_noise
from .dynamics import LinearGaussianDynamics
from .samples import SampleBatch
from .state import StateLayout


@dataclass(frozen=True)
class LinearSystem:
    """x' = A x + B u + c + G w, w ~ N(0, I)."""

    A: np.ndarray
    """(dX, dX) state matrix."""
    B: np.ndarray
    """(dX, dU) input matrix."""
    c: np.ndarray
    """(dX,) offset."""
    G: np.ndarray
    """(dX, r) noise factor; the noise covariance is G G^T."""

    @property
    def dX(self) -> int:
        """State dimension."""
        return self.A.shape[0]

    @property
    def dU(self) -> int:
        """Action dimension."""
        return self.B.shape[1]

    @property
    def noise_covar(self) -> np.ndarray:
        """(dX, dX) process noise covariance G G^T."""
        return self.G @ self.G.T

    def step(self, x: np.ndarray, u: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
        """Next state; noise-free when ``rng`` is None."""
        nxt = self.A @ x + self.B @ u + self.c
        if rng is not None:
            nxt = nxt + self.G @ rng.standard_normal(self.G.shape[1])
        return nxt

    def as_dynamics(self, T: int, x0_mean: np.ndarray, x0_covar: np.ndarray) -> (
        LinearGaussianDynamics
    ):
        """The same system as time-varying dynamics over horizon T."""
        Fm = np.tile(np.hstack([self.A, self.B]), (T - 1, 1, 1))
        return LinearGaussianDynamics(Fm, np.tile(self.c, (T - 1, 1)),
                                      np.tile(self.noise_covar, (T - 1, 1, 1)), x0_mean, x0_covar)


def random_linear_system(
    dX: int, dU: int, rng: np.random.Generator, spectral_radius: float = 0.95,
    noise_std: float = 0.01,
) -> LinearSystem:
    """A random stable system with full-rank noise: A scaled to ``spectral_radius``."""
    A = rng.standard_normal((dX, dX))
    A *= spectral_radius / np.max(np.abs(np.linalg.eigvals(A)))
    B = rng.standard_normal((dX, dU)) / np.sqrt(dX)
    c = 0.1 * rng.standard_normal(dX)
    return LinearSystem(A, B, c, noise_std * np.eye(dX))


def arm_like_system(
    layout: StateLayout, dt: float, rng: np.random.Generator, noise_std: float = 0.02,
) -> LinearSystem:
    """A stable linear stand-in for an arm, with the state structure of ``layout``.

    Each joint is a damped spring-mass driven by coupled torques (q' = q + dt qd,
    qd' = qd + dt (B u - kappa q - d qd)); the end-effector points are a fixed linear map of the
    joint positions, ee = J q + e0 (and their velocities J qd), so like on a real arm the state
    lies on a 2 n_joints-dimensional affine subspace. Process noise enters the joint velocities.
    """
    n, P = layout.n_joints, layout.n_points
    stiffness = rng.uniform(0.5, 2.0, n)
    damping = rng.uniform(1.0, 3.0, n)
    Bq = np.diag(rng.uniform(0.5, 2.0, n)) + 0.1 * rng.standard_normal((n, n))
    Az = np.block([
        [np.eye(n), dt * np.eye(n)],
        [-dt * np.diag(stiffness), np.eye(n) - dt * np.diag(damping)],
    ])
    Bz = np.vstack([np.zeros((n, n)), dt * Bq])
    J = 0.3 * rng.standard_normal((3 * P, n))
    e0 = 0.3 * rng.standard_normal(3 * P)
    # x = S z + s0 with z = [q; qd].
    S = np.zeros((layout.dim, 2 * n))
    S[layout.joint_positions, :n] = np.eye(n)
    S[layout.joint_velocities, n:] = np.eye(n)
    S[layout.ee_points, :n] = J
    S[layout.ee_velocities, n:] = J
    s0 = np.zeros(layout.dim)
    s0[layout.ee_points] = e0
    S_pinv = np.linalg.pinv(S)
    A = S @ Az @ S_pinv
    c = s0 - A @ s0
    Gz = np.vstack([np.zeros((n, n)), noise_std * np.sqrt(dt) * np.eye(n)])
    return LinearSystem(A, S @ Bz, c, S @ Gz)


def rollout(
    system: LinearSystem,
    controller: LinearGaussianController,
    x0: np.ndarray,
    rng: np.random.Generator,
    smooth_sigma: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """One trial: the controller's noise is pre-sampled (smoothed) and folded in, as on a robot.

    Returns:
        X (T, dX), U (T, dU).
    """
    T = controller.T
    executed = controller.fold_noise(smoothed_noise(rng, T, controller.dU, smooth_sigma))
    X = np.empty((T, system.dX))
    U = np.empty((T, system.dU))
    x = np.asarray(x0, dtype=float)
    for t in range(T):
        X[t] = x
        U[t] = executed.act(t, x)
        x = system.step(x, U[t], rng)
    return X, U


def collect(
    system: LinearSystem,
    controller: LinearGaussianController,
    x0: np.ndarray,
    n: int,
    rng: np.random.Generator,
    smooth_sigma: float = 0.0,
) -> SampleBatch:
    """``n`` trials from x0 as a :class:`SampleBatch`."""
    trials = [rollout(system, controller, x0, rng, smooth_sigma) for _ in range(n)]
    return SampleBatch(np.stack([X for X, _ in trials]), np.stack([U for _, U in trials]))
