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


def _sym(A: np.ndarray) -> np.ndarray:
    """Symmetric part of a stack of square matrices (..., n, n)."""
    return 0.5 * (A + np.swapaxes(A, -1, -2))


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
        condition whose Q_uu is not positive definite at some step is flagged in ``failed`` and
        carried on with Q_uu replaced by the identity, so the other conditions are unaffected.
    """
    M, T, D, _ = Cm.shape
    dX = Fm.shape[-2]
    dU = D - dX
    K = np.zeros((M, T, dU, dX))
    k = np.zeros((M, T, dU))
    Quu_all = np.zeros((M, T, dU, dU))
    failed = np.zeros(M, dtype=bool)
    Vxx = np.zeros((M, dX, dX))
    vx = np.zeros((M, dX))
    eye_u = np.eye(dU)
    for t in range(T - 1, -1, -1):
        Q = Cm[:, t]
        q = cv[:, t]
        if t < T - 1:
            F = Fm[:, t]
            FT = np.swapaxes(F, -1, -2)
            Q = Q + FT @ Vxx @ F
            q = q + _mv(FT, vx + _mv(Vxx, fv[:, t]))
        Q = _sym(Q)
        Quu = Q[:, dX:, dX:]
        ok = positive_definite(Quu)
        if not ok.all():
            failed |= ~ok
            Quu = np.where(ok[:, None, None], Quu, eye_u)
        rhs = np.concatenate([Q[:, dX:, :dX], q[:, dX:, None]], axis=-1)
        sol = np.linalg.solve(Quu, rhs)
        K[:, t] = -sol[..., :dX]
        k[:, t] = -sol[..., dX]
        Quu_all[:, t] = Quu
        Qxu = Q[:, :dX, dX:]
        Vxx = _sym(Q[:, :dX, :dX] + Qxu @ K[:, t])
        vx = q[:, :dX] + _mv(Qxu, k[:, t])
    return BackwardPassResult(K=K, k=k, Quu=Quu_all, Vxx=Vxx, vx=vx, failed=failed)


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

    Args:
        K: (M, T, dU, dX), k: (M, T, dU), covar: (M, T, dU, dU) controller.
        Fm: (M, T-1, dX, D), fv: (M, T-1, dX), dyn_covar: (M, T-1, dX, dX) dynamics.
        x0_mean: (M, dX), x0_covar: (M, dX, dX) initial state distribution.

    Returns:
        mu (M, T, D) and sigma (M, T, D, D).
    """
    M, T, dU, dX = K.shape
    D = dX + dU
    mu = np.empty((M, T, D))
    sigma = np.empty((M, T, D, D))
    mx = x0_mean
    Sx = x0_covar
    for t in range(T):
        Kt = K[:, t]
        KS = Kt @ Sx
        sigma[:, t, :dX, :dX] = Sx
        sigma[:, t, dX:, :dX] = KS
        sigma[:, t, :dX, dX:] = np.swapaxes(KS, -1, -2)
        sigma[:, t, dX:, dX:] = KS @ np.swapaxes(Kt, -1, -2) + covar[:, t]
        mu[:, t, :dX] = mx
        mu[:, t, dX:] = _mv(Kt, mx) + k[:, t]
        if t < T - 1:
            F = Fm[:, t]
            mx = _mv(F, mu[:, t]) + fv[:, t]
            Sx = _sym(F @ sigma[:, t] @ np.swapaxes(F, -1, -2) + dyn_covar[:, t])
    return mu, sigma


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
