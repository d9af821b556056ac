"""LQR-FLM trajectory optimisation under a KL trust region, all conditions at once.

For each condition, given fitted dynamics, a quadratic cost model and the previous controller
p_bar, find the controller p minimising E_p[sum_t c_t] subject to D_KL(p(tau) || p_bar(tau)) <= eps.
The Lagrangian's minimiser for a multiplier eta is the maximum-entropy LQR solution of the
augmented cost c/eta - log p_bar(u|x) (:func:`kl_augmented_cost`); eta is found by dual gradient
descent, a bracketing search in log eta with the per-condition KL as the dual gradient.

Conditions are optimised together: each backward/forward pass runs on stacked arrays of all
conditions still searching, each with its own eta.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .controllers import LinearGaussianController
from .costs import Cost, CostExpansion
from .dynamics import LinearGaussianDynamics
from .errors import MismatchError
from .lqr import (
    augment_cost,
    augment_dynamics,
    backward_pass_augmented,
    conditional_kl,
    expected_cost,
    forward_pass,
    state_marginals,
)


@dataclass(frozen=True)
class QuadraticCost:
    """Quadratic cost model c_t(z) = cc_t + cv_t . z + 1/2 z^T Cm_t z, z = [x; u].

    Leading axes ``...`` (e.g. conditions) in front of the per-step arrays.
    """

    cc: np.ndarray
    """(..., T) constant."""
    cv: np.ndarray
    """(..., T, D) gradient at z = 0."""
    Cm: np.ndarray
    """(..., T, D, D) Hessian."""

    @staticmethod
    def stack(costs: Sequence[QuadraticCost]) -> QuadraticCost:
        """Stack single-condition models along a new leading axis."""
        return QuadraticCost(
            np.stack([c.cc for c in costs]),
            np.stack([c.cv for c in costs]),
            np.stack([c.Cm for c in costs]),
        )


def quadratic_cost_from_samples(
    cost: Cost, X: np.ndarray, U: np.ndarray
) -> tuple[QuadraticCost, np.ndarray]:
    """Average of the cost's quadratic expansions around N sample trajectories.

    Each expansion around z_hat (l, g, H) is rewritten about z = 0,
    cc = l - g.z_hat + 1/2 z_hat^T H z_hat, cv = g - H z_hat, Cm = H, and the N models are
    averaged.

    Args:
        cost: the cost.
        X: (N, T, dX) states, U: (N, T, dU) actions.

    Returns:
        The (T,)-step :class:`QuadraticCost` and the sample costs (N, T).
    """
    exp = cost.eval(X, U)
    return quadratic_cost_from_expansion(exp, X, U), exp.l


def quadratic_cost_from_expansion(
    exp: CostExpansion, X: np.ndarray, U: np.ndarray, rows: slice = slice(None)
) -> QuadraticCost:
    """:func:`quadratic_cost_from_samples` from an expansion already computed along X, U.

    ``rows`` selects the samples of ``exp`` that X (N, T, dX) and U (N, T, dU) are.
    """
    lx, lu, lxx, luu, lux = (a[rows] for a in (exp.lx, exp.lu, exp.lxx, exp.luu, exp.lux))
    dX = X.shape[-1]
    # H z per sample, by blocks: [lxx x + lux^T u; lux x + luu u].
    Hz_x = (lxx @ X[..., None])[..., 0] + (U[..., None, :] @ lux)[..., 0, :]
    Hz_u = (lux @ X[..., None])[..., 0] + (luu @ U[..., None])[..., 0]
    gz = np.sum(lx * X, axis=-1) + np.sum(lu * U, axis=-1)
    zHz = np.sum(Hz_x * X, axis=-1) + np.sum(Hz_u * U, axis=-1)
    cc = (exp.l[rows] - gz + 0.5 * zHz).mean(axis=0)
    cv = np.concatenate([(lx - Hz_x).mean(axis=0), (lu - Hz_u).mean(axis=0)], axis=-1)
    T, dU = U.shape[-2], U.shape[-1]
    Cm = np.empty((T, dX + dU, dX + dU))
    Cm[:, :dX, :dX] = lxx.mean(axis=0)
    Cm[:, dX:, dX:] = luu.mean(axis=0)
    mean_ux = lux.mean(axis=0)
    Cm[:, dX:, :dX] = mean_ux
    Cm[:, :dX, dX:] = np.swapaxes(mean_ux, -1, -2)
    return QuadraticCost(cc, cv, Cm)


@dataclass(frozen=True)
class StackedControllers:
    """Controllers of M conditions as stacked arrays."""

    K: np.ndarray
    """(M, T, dU, dX)."""
    k: np.ndarray
    """(M, T, dU)."""
    covar: np.ndarray
    """(M, T, dU, dU)."""
    precision: np.ndarray
    """(M, T, dU, dU)."""

    @staticmethod
    def of(controllers: Sequence[LinearGaussianController]) -> StackedControllers:
        """Stack single-condition controllers."""
        return StackedControllers(
            np.stack([c.K for c in controllers]),
            np.stack([c.k for c in controllers]),
            np.stack([c.covar for c in controllers]),
            np.stack([c.precision for c in controllers]),
        )

    def take(self, idx: np.ndarray) -> StackedControllers:
        """The controllers of conditions ``idx``."""
        return StackedControllers(self.K[idx], self.k[idx], self.covar[idx], self.precision[idx])


@dataclass(frozen=True)
class StackedDynamics:
    """Dynamics of M conditions as stacked arrays (see :class:`LinearGaussianDynamics`)."""

    Fm: np.ndarray
    fv: np.ndarray
    covar: np.ndarray
    x0_mean: np.ndarray
    x0_covar: np.ndarray

    @staticmethod
    def of(dynamics: Sequence[LinearGaussianDynamics]) -> StackedDynamics:
        """Stack single-condition dynamics."""
        return StackedDynamics(
            np.stack([d.Fm for d in dynamics]),
            np.stack([d.fv for d in dynamics]),
            np.stack([d.covar for d in dynamics]),
            np.stack([d.x0_mean for d in dynamics]),
            np.stack([d.x0_covar for d in dynamics]),
        )

    def take(self, idx: np.ndarray) -> StackedDynamics:
        """The dynamics of conditions ``idx``."""
        return StackedDynamics(self.Fm[idx], self.fv[idx], self.covar[idx], self.x0_mean[idx],
                               self.x0_covar[idx])


def marginals(ctrl: StackedControllers, dyn: StackedDynamics) -> tuple[np.ndarray, np.ndarray]:
    """State-action marginals (M, T, D), (M, T, D, D) of controllers under dynamics."""
    return forward_pass(ctrl.K, ctrl.k, ctrl.covar, dyn.Fm, dyn.fv, dyn.covar, dyn.x0_mean,
                        dyn.x0_covar)


def estimate_cost(
    ctrl: StackedControllers, dyn: StackedDynamics, cost: QuadraticCost
) -> np.ndarray:
    """Expected total cost (M,) of controllers under dynamics and a quadratic cost model."""
    mu, sigma = marginals(ctrl, dyn)
    return expected_cost(cost.cc, cost.cv, cost.Cm, mu, sigma).sum(axis=-1)


def trajectory_kl(
    new: StackedControllers, ref: StackedControllers, dyn: StackedDynamics
) -> np.ndarray:
    """D_KL(p(tau) || p_ref(tau)) per condition (M,), both under the same dynamics.

    The sum over steps of the action-conditional KL averaged over p's state marginals.
    """
    mu, sigma = state_marginals(new.K, new.k, new.covar, dyn.Fm, dyn.fv, dyn.covar,
                                dyn.x0_mean, dyn.x0_covar)
    per_step = conditional_kl(mu, sigma, new.K, new.k, new.covar, ref.K, ref.k, ref.precision)
    return per_step.sum(axis=-1)


def kl_penalty(prev: StackedControllers) -> np.ndarray:
    """-log p_bar(u|x) as a quadratic on z_aug = [1; x; u] (up to a constant), (M, T, D+1, D+1).

    -log p_bar(u|x) = 1/2 r^T P r + const with r = u - K x - k = R z_aug, R = [-k, -K, I], so its
    Hessian is R^T P R.
    """
    M, T, dU, dX = prev.K.shape
    R = np.concatenate([-prev.k[..., None], -prev.K, np.broadcast_to(np.eye(dU), (M, T, dU, dU))],
                       axis=-1)
    return np.swapaxes(R, -1, -2) @ prev.precision @ R


def kl_augmented_cost(
    cost: QuadraticCost, prev: StackedControllers, eta: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Hessian and gradient of c/eta - log p_bar(u|x) (up to a constant).

    Args:
        cost: (M, T, ...) quadratic cost model.
        prev: previous controllers with precisions P.
        eta: (M,) multipliers.

    Returns:
        Cm (M, T, D, D), cv (M, T, D).
    """
    penalty = kl_penalty(prev)
    Cm = cost.Cm / eta[:, None, None, None] + penalty[..., 1:, 1:]
    cv = cost.cv / eta[:, None, None] + penalty[..., 1:, 0]
    return Cm, cv


@dataclass(frozen=True)
class DualConfig:
    """Settings of the dual gradient descent on eta."""

    min_eta: float = 1e-8
    """Smallest eta tried (the KL constraint is then practically inactive)."""
    max_eta: float = 1e16
    """Largest eta tried (the controller then practically equals the previous one)."""
    kl_tolerance: float = 0.1
    """Converged when |KL - eps| < kl_tolerance * eps."""
    max_iterations: int = 50
    """Dual iterations (batched passes) at most."""
    eta_increase0: float = 1e-4
    """After a non-positive-definite Q_uu, eta grows by max(this, 10 % of eta), an increment that
    doubles with every further failure."""


@dataclass
class TrajOptResult:
    """Outcome of :func:`optimize_trajectories` for M conditions."""

    controllers: list[LinearGaussianController]
    """The new controllers."""
    eta: np.ndarray
    """(M,) final multipliers."""
    kl: np.ndarray
    """(M,) D_KL(new || previous) under the fitted dynamics."""
    kl_target: np.ndarray
    """(M,) the trust-region sizes eps."""
    converged: np.ndarray
    """(M,) |KL - eps| < tol * eps, or KL < eps with eta at its lower limit."""
    dual_iterations: np.ndarray
    """(M,) dual iterations per condition."""
    backward_passes: int = 0
    """Batched backward passes run (each covers every condition still searching)."""
    warnings: list[str] = field(default_factory=list)
    """Problems worth a log line (non-PD fallbacks, eta at its limit)."""


@dataclass
class _Search:
    """Search state of one condition over x = log eta, with y = log KL (decreasing in x)."""

    log_eps: float
    lo: tuple[float, float] | None = None
    """(x, y) with KL > eps at the largest such eta seen."""
    hi: tuple[float, float] | None = None
    """(x, y) with KL < eps at the smallest such eta seen."""
    history: list[tuple[float, float]] = field(default_factory=list)
    stale: int = 0
    """Consecutive results on the same side of eps (the secant is then replaced by bisection)."""

    def record(self, x: float, kl: float) -> None:
        y = math.log(max(kl, 1e-300))
        too_far = y > self.log_eps
        if too_far and (self.lo is None or x > self.lo[0]):
            self.lo = (x, y)
        if not too_far and (self.hi is None or x < self.hi[0]):
            self.hi = (x, y)
        same = bool(self.history) and (self.history[-1][1] > self.log_eps) == too_far
        self.stale = self.stale + 1 if same else 0
        self.history.append((x, y))

    def propose(self, x_min: float, x_max: float) -> float:
        """Next log eta: log-log secant inside a bracket, else an extrapolation along the slope."""
        if self.lo is not None and self.hi is not None:
            (x0, y0), (x1, y1) = self.lo, self.hi
            middle = 0.5 * (x0 + x1)
            if self.stale >= 2 or y0 <= y1:
                self.stale = 0
                return middle
            guess = x0 + (self.log_eps - y0) * (x1 - x0) / (y1 - y0)
            margin = 0.05 * (x1 - x0)
            return guess if x0 + margin <= guess <= x1 - margin else middle
        # Not bracketed yet: KL ~ eta^-2 for large eta; use the observed slope when there is one.
        x1, y1 = self.history[-1]
        slope = -2.0
        if len(self.history) >= 2:
            x0, y0 = self.history[-2]
            if x1 != x0 and (y1 - y0) / (x1 - x0) < -0.05:
                slope = (y1 - y0) / (x1 - x0)
        step = float(np.clip((self.log_eps - y1) / slope, -math.log(1e4), math.log(1e4)))
        if abs(step) < math.log(1.2):
            step = math.copysign(math.log(1.2), step)
        return float(np.clip(x1 + step, x_min, x_max))


def optimize_trajectories(
    prev: Sequence[LinearGaussianController],
    dynamics: Sequence[LinearGaussianDynamics],
    cost: QuadraticCost,
    kl_target: np.ndarray,
    eta0: np.ndarray,
    config: DualConfig | None = None,
    entropy_weight: np.ndarray | None = None,
) -> TrajOptResult:
    """New controllers within D_KL(p || p_prev) ~= kl_target of the previous ones, per condition.

    Args:
        prev: M previous controllers (the ones that produced the samples).
        dynamics: M fitted dynamics.
        cost: stacked (M, T, ...) quadratic cost model.
        kl_target: (M,) eps = kl_step * step_mult * T.
        eta0: (M,) starting multipliers (the previous iteration's).
        config: dual search settings.
        entropy_weight: optional (M, T) weights nu_t >= 0 of extra entropy bonuses
            -nu_t H(p(u_t|x_t)) in the objective (BADMM: the -H half of nu_t D_KL(p || pi), whose
            cross-entropy half is already in ``cost``). The action distribution of step t is then
            tempered at eta + nu_t instead of eta: same gains (the mean minimises the same
            Q-function), covariance (eta + nu_t) / eta times the eta-scaled Q_uu^-1. The KL of the
            dual search is taken with these covariances. None: no bonus (plain LQR-FLM).

    Returns:
        :class:`TrajOptResult`. Never raises on numerical trouble: a condition without a
        positive definite solution even at max_eta keeps its previous controller, with a warning.
    """
    cfg = config or DualConfig()
    M = len(prev)
    if len(dynamics) != M or cost.cc.shape[0] != M:
        raise MismatchError(
            f"optimize_trajectories: expected {M} dynamics and cost models, "
            f"found {len(dynamics)} and {cost.cc.shape[0]}"
        )
    ref = StackedControllers.of(prev)
    dyn = StackedDynamics.of(dynamics)
    if entropy_weight is not None:
        nu = np.asarray(entropy_weight, dtype=float)
        if nu.shape != ref.k.shape[:2] or not np.all(nu >= 0):
            raise MismatchError(f"optimize_trajectories: expected entropy weights >= 0 of shape "
                                f"{ref.k.shape[:2]}, found shape {nu.shape}")
    problem = _Problem(augment_dynamics(dyn.Fm, dyn.fv), augment_cost(cost.Cm, cost.cv),
                       kl_penalty(ref))
    eps = np.asarray(kl_target, dtype=float)
    log_min, log_max = math.log(cfg.min_eta), math.log(cfg.max_eta)
    eta = np.clip(np.asarray(eta0, dtype=float), cfg.min_eta, cfg.max_eta)
    log_floor = np.full(M, log_min)  # smallest usable eta: below it Q_uu was not PD
    searches = [_Search(math.log(e)) for e in eps]
    best: list[tuple[float, float, tuple] | None] = [None] * M
    final_kl = np.zeros(M)
    converged = np.zeros(M, dtype=bool)
    iterations = np.zeros(M, dtype=int)
    warnings: list[str] = []
    passes = 0
    active = np.arange(M)
    for _ in range(cfg.max_iterations):
        if active.size == 0:
            break
        result, eta_used, n_passes, given_up = _solve_pd(problem, eta, active, log_floor, cfg)
        passes += n_passes
        eta[active] = eta_used
        for m in active[given_up]:
            warnings.append(
                f"condition {m}: no positive definite Q_uu up to eta={cfg.max_eta:g}; "
                "keeping the previous controller (check the dynamics and cost conditioning)"
            )
        keep = active[~given_up]
        iterations[active] += 1
        active = keep
        if keep.size == 0:
            break
        sub = np.flatnonzero(~given_up)
        Quu = result.Quu[sub]
        if entropy_weight is not None:
            Quu = Quu * (eta[keep, None] / (eta[keep, None] + nu[keep]))[..., None, None]
        new = StackedControllers(result.K[sub], result.k[sub], np.linalg.inv(Quu), Quu)
        kl = trajectory_kl(new, ref, dyn) if keep.size == M else \
            trajectory_kl(new, ref.take(keep), dyn.take(keep))
        still = []
        for j, m in enumerate(keep):
            kl_m, eps_m, log_eta = kl[j], eps[m], math.log(eta[m])
            candidate = (new.K[j], new.k[j], new.precision[j])
            _keep_best(best, m, kl_m, eps_m, eta[m], candidate, cfg.kl_tolerance)
            final_kl[m] = kl_m
            if abs(kl_m - eps_m) < cfg.kl_tolerance * eps_m:
                converged[m] = True
                continue
            at_floor = log_eta <= max(log_floor[m], log_min) + 1e-9
            if kl_m < eps_m and at_floor:
                converged[m] = True  # constraint inactive at the smallest usable eta
                continue
            if kl_m > eps_m and log_eta >= log_max - 1e-9:
                warnings.append(f"condition {m}: KL {kl_m:.3g} > target {eps_m:.3g} at "
                                f"eta = max_eta; using the best controller found")
                continue
            searches[m].record(log_eta, kl_m)
            nxt = searches[m].propose(max(log_floor[m], log_min), log_max)
            if abs(nxt - log_eta) < 1e-10:
                continue
            eta[m] = math.exp(nxt)
            still.append(m)
        active = np.asarray(still, dtype=int)
    for m in active:
        warnings.append(f"condition {m}: dual search stopped after {cfg.max_iterations} "
                        "iterations; using the best controller found")
    controllers = []
    for m in range(M):
        if best[m] is None:
            controllers.append(prev[m])
            final_kl[m] = 0.0
            continue
        kl_m, eta_m, (K, k, P) = best[m]
        final_kl[m], eta[m] = kl_m, eta_m
        controllers.append(LinearGaussianController.from_precision(K, k, P))
    return TrajOptResult(controllers, eta, final_kl, eps, converged, iterations, passes, warnings)


def _keep_best(best: list, m: int, kl: float, eps: float, eta: float, candidate: tuple,
               tol: float) -> None:
    """Keep the candidate closest to eps among those within the trust region (+tol)."""
    def score(k: float) -> tuple[int, float]:
        inside = k <= (1 + tol) * eps
        return (0, abs(k - eps)) if inside else (1, k)

    if best[m] is None or score(kl) < score(best[m][0]):
        best[m] = (kl, eta, candidate)


@dataclass(frozen=True)
class _Problem:
    """The eta-independent arrays of a trajectory optimisation, in homogeneous coordinates."""

    F: np.ndarray
    """(M, T-1, dX+1, D+1) dynamics, see :func:`~.lqr.augment_dynamics`."""
    C: np.ndarray
    """(M, T, D+1, D+1) cost, see :func:`~.lqr.augment_cost`."""
    penalty: np.ndarray
    """(M, T, D+1, D+1) -log p_bar(u|x), see :func:`kl_penalty`."""


def _solve_pd(problem: _Problem, eta: np.ndarray, active: np.ndarray, log_floor: np.ndarray,
              cfg: DualConfig):
    """Backward passes for ``active`` conditions, raising eta where Q_uu is not PD.

    Returns the pass result (rows in ``active`` order), the etas used, the number of batched
    passes, and a mask of conditions given up (no PD solution up to max_eta).
    """
    eta_used = eta[active].copy()
    increase = np.maximum(cfg.eta_increase0, 0.1 * eta_used)
    given_up = np.zeros(active.size, dtype=bool)
    todo = np.arange(active.size)
    passes = 0
    K = k = Quu = None
    while todo.size:
        rows = active[todo]
        C = problem.C[rows] / eta_used[todo, None, None, None] + problem.penalty[rows]
        res = backward_pass_augmented(problem.F[rows], C)
        passes += 1
        if K is None:
            K, k, Quu = res.K.copy(), res.k.copy(), res.Quu.copy()
        ok = ~res.failed
        K[todo[ok]], k[todo[ok]], Quu[todo[ok]] = res.K[ok], res.k[ok], res.Quu[ok]
        failed = todo[res.failed]
        for i in failed:
            eta_used[i] = eta_used[i] + increase[i]
            increase[i] *= 2.0
            if eta_used[i] >= cfg.max_eta:
                given_up[i] = True
            else:
                log_floor[active[i]] = math.log(eta_used[i])
        todo = failed[~given_up[failed]]
    return _Pass(K, k, Quu), eta_used, passes, given_up


@dataclass(frozen=True)
class _Pass:
    K: np.ndarray
    k: np.ndarray
    Quu: np.ndarray


def step_multiplier(
    predicted: np.ndarray,
    actual: np.ndarray,
    step_mult: np.ndarray,
    min_step_mult: float = 0.01,
    max_step_mult: float = 10.0,
) -> np.ndarray:
    """Adapt the trust-region multiplier from predicted vs actual cost improvement.

    Modelling the improvement as I(eps) = a eps - b eps^2, matched to the prediction (a eps) and
    the outcome, its maximiser scales eps by predicted / (2 (predicted - actual)); that factor is
    clamped to [0.1, 5] (the difference floored at 1e-4) and the product to
    [min_step_mult, max_step_mult].

    Args:
        predicted, actual: (M,) improvements (previous expected cost minus new).
        step_mult: (M,) current multipliers.
    """
    predicted = np.asarray(predicted, dtype=float)
    actual = np.asarray(actual, dtype=float)
    factor = predicted / (2.0 * np.maximum(1e-4, predicted - actual))
    factor = np.clip(factor, 0.1, 5.0)
    return np.clip(factor * np.asarray(step_mult, dtype=float), min_step_mult, max_step_mult)
