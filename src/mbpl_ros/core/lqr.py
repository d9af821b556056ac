"""LQR primitives on time-varying linear-Gaussian models, batched over conditions.

Every function here works on *stacks*: a leading axis M (conditions) in front of the per-step
arrays, and loops in Python over time steps only, so M conditions cost little more than one.

Notation (per condition): z_t = [x_t; u_t] of size D = dX + dU;
dynamics   x_{t+1} ~ N(Fm_t z_t + fv_t, dyn_covar_t)       for t = 0..T-2;
controller u_t | x_t ~ N(K_t x_t + k_t, covar_t)             for t = 0..T-1;
cost       c_t(z) = cc_t + cv_t . z + 1/2 z^T Cm_t z          for t = 0..T-1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import lapack


def _mv(A: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Stacked matrix-vector product: A (..., n, m) @ v (..., m) -> (..., n)."""
    return np.matmul(A, v[..., None])[..., 0]


def positive_definite(A: np.ndarray) -> np.ndarray:
    """Which matrices of a stack (M, n, n) are positive definite (Cholesky succeeds); (M,) bool."""
    try:
        np.linalg.cholesky(A)
        return np.ones(A.shape[0], dtype=bool)
    except np.linalg.LinAlgError:
        pass
    ok = np.empty(A.shape[0], dtype=bool)
    for i, Ai in enumerate(A):
        try:
            np.linalg.cholesky(Ai)
            ok[i] = True
        except np.linalg.LinAlgError:
            ok[i] = False
    return ok


@dataclass(frozen=True)
class BackwardPassResult:
    """Result of :func:`backward_pass` for M conditions.

    Entries of a condition whose Q_uu lost positive definiteness are meaningless (``failed``).
    """

    K: np.ndarray
    """Feedback gains, (M, T, dU, dX)."""
    k: np.ndarray
    """Feed-forward terms, (M, T, dU)."""
    Quu: np.ndarray
    """Action block of the Q-function Hessian, (M, T, dU, dU); the controller precision."""
    Vxx: np.ndarray
    """Value function Hessian at t = 0, (M, dX, dX)."""
    vx: np.ndarray
    """Value function gradient at t = 0, (M, dX)."""
    failed: np.ndarray
    """(M,) bool: Q_uu was not positive definite at some step."""


def backward_pass(
    Fm: np.ndarray, fv: np.ndarray, Cm: np.ndarray, cv: np.ndarray
) -> BackwardPassResult:
    """Dynamic programming for the linear-quadratic problem of each condition.

    Args:
        Fm: (M, T-1, dX, D) dynamics matrices.
        fv: (M, T-1, dX) dynamics offsets.
        Cm: (M, T, D, D) cost Hessians.
        cv: (M, T, D) cost gradients (at z = 0).

    Returns:
        The gains minimising the expected cost-to-go, u_t = K_t x_t + k_t, and Q_uu per step. A
        condition whose Q_uu is not positive definite at some step is flagged in ``failed`` (its
        results are meaningless) and carried on as if Q_uu were the identity, so the other
        conditions are unaffected.
    """
    return backward_pass_augmented(augment_dynamics(Fm, fv), augment_cost(Cm, cv))


def augment_dynamics(Fm: np.ndarray, fv: np.ndarray) -> np.ndarray:
    """Dynamics on homogeneous coordinates: [1; x'] = F_aug [1; x; u]; (M, T-1, dX+1, D+1)."""
    M, n, dX, D = Fm.shape
    F = np.zeros((M, n, dX + 1, D + 1))
    F[..., 0, 0] = 1.0
    F[..., 1:, 0] = fv
    F[..., 1:, 1:] = Fm
    return F


def augment_cost(Cm: np.ndarray, cv: np.ndarray) -> np.ndarray:
    """Cost on homogeneous coordinates z_aug = [1; z]: 1/2 z_aug^T C z_aug = cv.z + 1/2 z^T Cm z.

    Returns (M, T, D+1, D+1); the constant term is left out.
    """
    M, T, D, _ = Cm.shape
    C = np.zeros((M, T, D + 1, D + 1))
    C[..., 1:, 0] = cv
    C[..., 0, 1:] = cv
    C[..., 1:, 1:] = Cm
    return C


def backward_pass_augmented(F: np.ndarray, C: np.ndarray) -> BackwardPassResult:
    """:func:`backward_pass` on homogeneous coordinates (see :func:`augment_dynamics`,
    :func:`augment_cost`): the value function [1; x]^T V [1; x] / 2 carries gradient and
    Hessian in one matrix, so each step is three matrix products, a Cholesky test and a solve.
    """
    M, T, D1, _ = C.shape
    dX1 = F.shape[-2]  # dX + 1
    dU = D1 - dX1
    gains = np.empty((M, T, dU, dX1))  # [k | K]
    Quu_all = np.empty((M, T, dU, dU))
    failed = np.zeros(M, dtype=bool)
    V = np.zeros((M, dX1, dX1))
    # A failed condition carries on with made-up gains and may overflow; its result is
    # discarded, and a condition that overflows without failing is marked failed below.
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(T - 1, -1, -1):
            if t < T - 1:
                Ft = F[:, t]
                Q = C[:, t] + np.swapaxes(Ft, -1, -2) @ (V @ Ft)
            else:
                Q = C[:, t]
            Quu = Q[:, dX1:, dX1:]
            rhs = -Q[:, dX1:, :dX1]
            # LAPACK posv: Cholesky (fails unless Q_uu is positive definite) and solve in one.
            for m in range(M):
                if not failed[m]:
                    _, G, info = lapack.dposv(Quu[m], rhs[m], lower=1)
                if failed[m] or info != 0:  # not positive definite: carry on as if Q_uu were I
                    failed[m] = True
                    G = rhs[m]
                gains[m, t] = G
            Quu_all[:, t] = Quu
            V = Q[:, :dX1, :dX1] + Q[:, :dX1, dX1:] @ gains[:, t]
            V = 0.5 * (V + np.swapaxes(V, -1, -2))
    failed |= ~np.isfinite(gains).all(axis=(1, 2, 3))
    return BackwardPassResult(K=gains[..., 1:], k=gains[..., 0], Quu=Quu_all, Vxx=V[:, 1:, 1:],
                              vx=V[:, 1:, 0], failed=failed)


def state_marginals(
    K: np.ndarray,
    k: np.ndarray,
    covar: np.ndarray,
    Fm: np.ndarray,
    fv: np.ndarray,
    dyn_covar: np.ndarray,
    x0_mean: np.ndarray,
    x0_covar: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian state marginals p(x_t) = N(mu_t, sigma_t) of controller + dynamics.

    Under the closed loop x' = (Fx + Fu K) x + Fu k + f + Fu e + w, with e ~ N(0, covar) and
    w ~ N(0, dyn_covar), whose matrices are formed for all steps at once.

    Args:
        K: (M, T, dU, dX), k: (M, T, dU), covar: (M, T, dU, dU) controller.
        Fm: (M, T-1, dX, D), fv: (M, T-1, dX), dyn_covar: (M, T-1, dX, dX) dynamics.
        x0_mean: (M, dX), x0_covar: (M, dX, dX) initial state distribution.

    Returns:
        mu (M, T, dX) and sigma (M, T, dX, dX).
    """
    M, T, dU, dX = K.shape
    Fx, Fu = Fm[..., :dX], Fm[..., dX:]
    A = Fx + Fu @ K[:, :-1]
    b = _mv(Fu, k[:, :-1]) + fv
    W = Fu @ covar[:, :-1] @ np.swapaxes(Fu, -1, -2) + dyn_covar
    AT = np.swapaxes(A, -1, -2)
    mu = np.empty((M, T, dX))
    sigma = np.empty((M, T, dX, dX))
    mu[:, 0] = x0_mean
    sigma[:, 0] = x0_covar
    for t in range(T - 1):
        mu[:, t + 1] = _mv(A[:, t], mu[:, t]) + b[:, t]
        sigma[:, t + 1] = A[:, t] @ sigma[:, t] @ AT[:, t] + W[:, t]
    return mu, sigma


def joint_marginals(
    mu_x: np.ndarray, sigma_x: np.ndarray, K: np.ndarray, k: np.ndarray, covar: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """State-action marginals (M, T, D), (M, T, D, D) from state marginals and the controller."""
    dX = mu_x.shape[-1]
    D = dX + k.shape[-1]
    mu = np.concatenate([mu_x, _mv(K, mu_x) + k], axis=-1)
    KS = K @ sigma_x
    sigma = np.empty((*sigma_x.shape[:-2], D, D))
    sigma[..., :dX, :dX] = sigma_x
    sigma[..., dX:, :dX] = KS
    sigma[..., :dX, dX:] = np.swapaxes(KS, -1, -2)
    sigma[..., dX:, dX:] = KS @ np.swapaxes(K, -1, -2) + covar
    return mu, sigma


def forward_pass(
    K: np.ndarray,
    k: np.ndarray,
    covar: np.ndarray,
    Fm: np.ndarray,
    fv: np.ndarray,
    dyn_covar: np.ndarray,
    x0_mean: np.ndarray,
    x0_covar: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian state-action marginals p(z_t) = N(mu_t, sigma_t) of controller + dynamics.

    Same arguments as :func:`state_marginals`. Returns mu (M, T, D) and sigma (M, T, D, D).
    """
    mu_x, sigma_x = state_marginals(K, k, covar, Fm, fv, dyn_covar, x0_mean, x0_covar)
    return joint_marginals(mu_x, sigma_x, K, k, covar)


def expected_cost(
    cc: np.ndarray, cv: np.ndarray, Cm: np.ndarray, mu: np.ndarray, sigma: np.ndarray
) -> np.ndarray:
    """Expected quadratic cost per step under Gaussian marginals.

    E[c_t] = cc_t + cv_t . mu_t + 1/2 mu_t^T Cm_t mu_t + 1/2 tr(Cm_t sigma_t).

    Args:
        cc (M, T), cv (M, T, D), Cm (M, T, D, D): quadratic cost; mu (M, T, D), sigma (M, T, D, D).

    Returns:
        (M, T) expected cost per step.
    """
    quad = np.einsum("mti,mtij,mtj->mt", mu, Cm, mu)
    trace = np.einsum("mtij,mtji->mt", Cm, sigma)
    return cc + np.einsum("mti,mti->mt", cv, mu) + 0.5 * (quad + trace)


def conditional_kl(
    mu_x: np.ndarray,
    sigma_x: np.ndarray,
    K: np.ndarray,
    k: np.ndarray,
    covar: np.ndarray,
    K_ref: np.ndarray,
    k_ref: np.ndarray,
    precision_ref: np.ndarray,
) -> np.ndarray:
    """Per-step KL between two linear-Gaussian controllers, averaged over a state marginal.

    Returns E_{x ~ N(mu_x, sigma_x)} D_KL(N(K x + k, covar) || N(K_ref x + k_ref, covar_ref)) for
    every step. With p and p_ref sharing the dynamics and the initial state distribution, the sum
    over t is the trajectory divergence D_KL(p(tau) || p_ref(tau)) when (mu_x, sigma_x) are the
    state marginals of p.

    Args:
        mu_x: (M, T, dX), sigma_x: (M, T, dX, dX) state marginals of the first controller.
        K, k, covar: first controller, (M, T, dU, dX), (M, T, dU), (M, T, dU, dU).
        K_ref, k_ref, precision_ref: reference controller with its precision covar_ref^-1.

    Returns:
        (M, T) KL per step, clipped below at 0 against round-off.
    """
    dU = k.shape[-1]
    dK = K - K_ref
    dmean = _mv(dK, mu_x) + (k - k_ref)
    dK_S = dK @ sigma_x
    spread = np.einsum("mtij,mtjk,mtki->mt", precision_ref, dK_S, np.swapaxes(dK, -1, -2))
    mahal = np.einsum("mti,mtij,mtj->mt", dmean, precision_ref, dmean)
    trace = np.einsum("mtij,mtji->mt", precision_ref, covar)
    logdet_new = np.linalg.slogdet(covar)[1]
    logdet_ref = -np.linalg.slogdet(precision_ref)[1]
    kl = 0.5 * (trace - dU + logdet_ref - logdet_new + mahal + spread)
    return np.maximum(kl, 0.0)
