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


@dataclass(frozen=True)
class ArmLikeSystem(LinearSystem):
    """A :class:`LinearSystem` whose state is an affine image x = S [q; qd] + s0 of joint states."""

    S: np.ndarray
    """(dX, 2 n_joints) embedding of the joint state."""
    s0: np.ndarray
    """(dX,) offset of the embedding (end-effector points at q = 0, minus their targets)."""

    def state(self, q: np.ndarray, qd: np.ndarray | None = None) -> np.ndarray:
        """The full state (dX,) of joint positions q and velocities qd (default 0)."""
        qd = np.zeros_like(q) if qd is None else qd
        return self.S @ np.concatenate([q, qd]) + self.s0


def arm_like_system(
    layout: StateLayout,
    dt: float,
    rng: np.random.Generator,
    noise_std: float = 0.02,
    sensor_std: float = 0.0,
) -> ArmLikeSystem:
    """A stable linear stand-in for an arm, with the state structure of ``layout``.

    Each joint is a damped spring-mass driven by coupled torques (q' = q + dt qd,
    qd' = qd + dt (B u - kappa q - d qd)); the end-effector points are a fixed linear map of the
    joint positions, ee = J q + e0 (and their velocities J qd), so like on a real arm the state
    lies on a 2 n_joints-dimensional affine subspace. Process noise (``noise_std``, per sqrt(s))
    enters the joint velocities; ``sensor_std`` adds independent noise to every state entry, which
    breaks that exact degeneracy the way the nonlinear kinematics and sensors of a real arm do.
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
    S = np.zeros((layout.dim, 2 * n))
    S[layout.joint_positions, :n] = np.eye(n)
    S[layout.joint_velocities, n:] = np.eye(n)
    S[layout.ee_points, :n] = J
    S[layout.ee_velocities, n:] = J
    s0 = np.zeros(layout.dim)
    s0[layout.ee_points] = e0
    A = S @ Az @ np.linalg.pinv(S)
    c = s0 - A @ s0
    Gz = np.vstack([np.zeros((n, n)), noise_std * np.sqrt(dt) * np.eye(n)])
    G = S @ Gz
    if sensor_std > 0:
        G = np.hstack([G, sensor_std * np.eye(layout.dim)])
    return ArmLikeSystem(A, S @ Bz, c, G, S, s0)


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
    """``n`` trials from x0 (as :func:`rollout`, all trials stepped together)."""
    T, dX, dU = controller.T, system.dX, system.dU
    noise = np.stack([smoothed_noise(rng, T, dU, smooth_sigma) for _ in range(n)])
    k = controller.k + np.einsum("tij,ntj->nti", controller.chol, noise)  # folded, per trial
    X = np.empty((n, T, dX))
    U = np.empty((n, T, dU))
    x = np.broadcast_to(np.asarray(x0, dtype=float), (n, dX))
    for t in range(T):
        X[:, t] = x
        U[:, t] = x @ controller.K[t].T + k[:, t]
        w = rng.standard_normal((n, system.G.shape[1]))
        x = x @ system.A.T + U[:, t] @ system.B.T + system.c + w @ system.G.T
    return SampleBatch(X, U)
