"""Cost terms with quadratic expansions along whole trajectories.

A cost maps a trajectory X (..., T, dX), U (..., T, dU) to a :class:`CostExpansion`: the value per
step and its first and second derivatives with respect to x_t and u_t. Leading batch axes (for
example N samples) are carried through. Terms add with ``+`` and scale with ``*``.

Analytic terms: :class:`ActionCost` (1/2 u^T diag(w) u) and :class:`StateTargetCost`
(distance of some state entries to a target, 1/2 l2 d^2 + 1/2 l1 log(alpha + d^2)), which covers
end-effector points (already point-minus-target in the state) and joint targets.
:class:`AutodiffCost` differentiates any torch function c(x, u, t) instead.

Task costs: :func:`reach_cost` and :func:`peg_cost` (torque penalty + end-effector distance every
step + a final-step copy), with the weights of :class:`TaskCostWeights`.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .errors import ShapeError
from .state import StateLayout


@dataclass(frozen=True)
class CostExpansion:
    """Cost values and derivatives per step; leading axes ``...`` as in the trajectory."""

    l: np.ndarray
    """(..., T) cost per step."""
    lx: np.ndarray
    """(..., T, dX) dl/dx."""
    lu: np.ndarray
    """(..., T, dU) dl/du."""
    lxx: np.ndarray
    """(..., T, dX, dX) d2l/dx2."""
    luu: np.ndarray
    """(..., T, dU, dU) d2l/du2."""
    lux: np.ndarray
    """(..., T, dU, dX) d2l/(du dx)."""

    def __add__(self, other: CostExpansion) -> CostExpansion:
        return CostExpansion(
            self.l + other.l,
            self.lx + other.lx,
            self.lu + other.lu,
            self.lxx + other.lxx,
            self.luu + other.luu,
            self.lux + other.lux,
        )

    def scaled(self, weight: float) -> CostExpansion:
        """All entries times ``weight``."""
        return CostExpansion(
            weight * self.l,
            weight * self.lx,
            weight * self.lu,
            weight * self.lxx,
            weight * self.luu,
            weight * self.lux,
        )

    @staticmethod
    def zeros(lead: tuple[int, ...], T: int, dX: int, dU: int) -> CostExpansion:
        """An all-zero expansion with leading shape ``lead``."""
        return CostExpansion(
            np.zeros((*lead, T)),
            np.zeros((*lead, T, dX)),
            np.zeros((*lead, T, dU)),
            np.zeros((*lead, T, dX, dX)),
            np.zeros((*lead, T, dU, dU)),
            np.zeros((*lead, T, dU, dX)),
        )


class Cost(ABC):
    """A cost term: ``eval(X, U)`` returns its :class:`CostExpansion`.

    Subclasses implement :meth:`eval`; they may also override :meth:`add_to` to add their
    expansion into a running total without allocating full-size arrays (what :class:`CostSum`
    calls).
    """

    @abstractmethod
    def eval(self, X: np.ndarray, U: np.ndarray) -> CostExpansion:
        """Expansion along X (..., T, dX), U (..., T, dU)."""

    def add_to(self, X: np.ndarray, U: np.ndarray, out: CostExpansion, weight: float) -> None:
        """Add ``weight`` times this term's expansion into ``out`` in place."""
        part = self.eval(X, U)
        for name in ("l", "lx", "lu", "lxx", "luu", "lux"):
            getattr(out, name)[...] += weight * getattr(part, name)

    def __add__(self, other: Cost) -> CostSum:
        return CostSum([self, other])

    def __mul__(self, weight: float) -> CostSum:
        return CostSum([self], [float(weight)])

    __rmul__ = __mul__


class _InPlaceCost(Cost):
    """A term that implements :meth:`add_to`; ``eval`` adds it to zeros."""

    def eval(self, X: np.ndarray, U: np.ndarray) -> CostExpansion:
        X, U = _check_trajectory(X, U)
        out = CostExpansion.zeros(X.shape[:-2], X.shape[-2], X.shape[-1], U.shape[-1])
        self.add_to(X, U, out, 1.0)
        return out


def _check_trajectory(X: np.ndarray, U: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X, dtype=float)
    U = np.asarray(U, dtype=float)
    if X.ndim < 2 or U.ndim != X.ndim or U.shape[:-1] != X.shape[:-1]:
        raise ShapeError(
            f"cost: expected X (..., T, dX) and U (..., T, dU) with the same leading shape, "
            f"found {X.shape} and {U.shape}"
        )
    return X, U


class Ramp(enum.Enum):
    """How a term's weight changes over the horizon."""

    CONSTANT = "constant"
    """1 at every step."""
    LINEAR = "linear"
    """(t + 1) / T."""
    QUADRATIC = "quadratic"
    """((t + 1) / T)^2."""
    FINAL_ONLY = "final_only"
    """0 except at the last step."""


def ramp_weights(ramp: Ramp, T: int, final_multiplier: float = 1.0,
                 active: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """Weights (T,) of a ramp, the last one multiplied by ``final_multiplier``, zero outside the
    ``active`` part of the horizon: steps t with start <= t / T < stop."""
    ramp = Ramp(ramp)
    progress = np.arange(1, T + 1) / T
    if ramp is Ramp.CONSTANT:
        w = np.ones(T)
    elif ramp is Ramp.LINEAR:
        w = progress
    elif ramp is Ramp.QUADRATIC:
        w = progress**2
    else:
        w = np.zeros(T)
        w[-1] = 1.0
    w[-1] *= final_multiplier
    start, stop = active
    phase = np.arange(T) / T
    return np.where((phase >= start) & (phase < stop), w, 0.0)


class ActionCost(_InPlaceCost):
    """1/2 sum_i w_i u_i^2 at every step."""

    def __init__(self, weights: float | Sequence[float] | np.ndarray) -> None:
        """Args:
        weights: scalar or (dU,) weight per action entry (per (action unit)^2).
        """
        self.weights = np.asarray(weights, dtype=float)
        if self.weights.ndim > 1:
            raise ShapeError.expected("ActionCost.weights", "scalar or (dU,)", self.weights.shape)

    def add_to(self, X: np.ndarray, U: np.ndarray, out: CostExpansion, weight: float) -> None:
        dU = U.shape[-1]
        w = weight * np.broadcast_to(self.weights, (dU,))
        out.l[...] += 0.5 * np.sum(w * U**2, axis=-1)
        out.lu[...] += w * U
        out.luu[...] += np.diag(w)


class StateTargetCost(_InPlaceCost):
    """Weighted distance of selected state entries to a target, l1/l2 penalty.

    With d = x[index] - target and s = sum_i w_i d_i^2, the cost at step t is

        r_t * (1/2 l2 s + 1/2 l1 log(alpha + s))

    where r_t is the ramp weight. The log term is sharp near the target (it rewards precise
    arrival); its exact Hessian has negative curvature along d whenever s > alpha.
    ``curvature="convex"`` keeps only the positive semi-definite part of the Hessian, dropping
    the g''(s) grad(s) grad(s)^T term of the log (g = 1/2 l1 log(alpha + s)), which is what LQR
    needs: its Gaussian expectations of a quadratic model are meaningful only for a convex one.
    ``curvature="exact"`` gives the true Hessian. Values and gradients are exact either way.

    Unlike cbfinn/gps, the ramp multiplies the whole term (gps scaled the distance inside the log,
    which differs only by a constant).
    """

    def __init__(
        self,
        index: slice | Sequence[int],
        target: float | Sequence[float] | np.ndarray = 0.0,
        weights: float | Sequence[float] | np.ndarray = 1.0,
        l1: float = 0.0,
        l2: float = 1.0,
        alpha: float = 1e-5,
        ramp: Ramp = Ramp.CONSTANT,
        final_multiplier: float = 1.0,
        curvature: str = "convex",
        active: tuple[float, float] = (0.0, 1.0),
    ) -> None:
        """Args:
        index: state entries the term acts on (a slice such as ``StateLayout.ee_points``).
        target: scalar or per-entry target value (units of those entries).
        weights: scalar or per-entry weights w_i.
        l1: weight of the log term.
        l2: weight of the squared term.
        alpha: offset inside the log (units^2); sets how sharp the log well is.
        ramp: time profile of the weight.
        final_multiplier: extra factor on the last step.
        curvature: "convex" (PSD Hessian, for LQR) or "exact".
        active: (start, stop) fractions of the horizon where the term acts (see
            :func:`ramp_weights`).
        """
        start, stop = active
        if not 0.0 <= start < stop <= 1.0:
            raise ValueError(f"StateTargetCost: expected 0 <= start < stop <= 1 for active, "
                             f"found {active}")
        if curvature not in ("convex", "exact"):
            raise ValueError(f"StateTargetCost: expected curvature 'convex' or 'exact', "
                             f"found {curvature!r}")
        if alpha <= 0 and l1 != 0:
            raise ValueError(f"StateTargetCost: expected alpha > 0 with l1 != 0, found {alpha}")
        self.index = index
        self.target = np.asarray(target, dtype=float)
        self.weights = np.asarray(weights, dtype=float)
        self.l1, self.l2, self.alpha = float(l1), float(l2), float(alpha)
        self.ramp = Ramp(ramp)
        self.final_multiplier = float(final_multiplier)
        self.curvature = curvature
        self.active = (float(start), float(stop))

    def _entries(self, dX: int) -> np.ndarray:
        if isinstance(self.index, slice):
            return np.arange(dX)[self.index]
        idx = np.asarray(self.index, dtype=int)
        if idx.ndim != 1 or np.any(idx < 0) or np.any(idx >= dX):
            raise ShapeError(f"StateTargetCost: expected indices in [0, {dX}), found {idx}")
        return idx

    def add_to(self, X: np.ndarray, U: np.ndarray, out: CostExpansion, weight: float) -> None:
        T, dX = X.shape[-2], X.shape[-1]
        idx = self._entries(dX)
        n = idx.size
        for name, value in (("target", self.target), ("weights", self.weights)):
            if value.ndim > 1 or (value.ndim == 1 and value.shape != (n,)):
                raise ShapeError.expected(f"StateTargetCost.{name}", f"scalar or ({n},)",
                                          value.shape)
        w = np.broadcast_to(self.weights, (n,))
        r = weight * ramp_weights(self.ramp, T, self.final_multiplier, self.active)
        sel = self.index if isinstance(self.index, slice) else idx
        d = X[..., sel] - self.target
        wd = w * d
        s = np.sum(wd * d, axis=-1)
        # c = r g(s) with g(s) = 1/2 l2 s + 1/2 l1 log(alpha + s):
        # dc/dd = r g'(s) 2 w d,  g'(s) = 1/2 (l2 + l1 / (alpha + s)).
        slope = r * self.l2
        if self.l1:
            inv = 1.0 / (self.alpha + s)
            slope = slope + r * self.l1 * inv
            out.l[...] += r * 0.5 * self.l1 * np.log(self.alpha + s)
        out.l[...] += r * 0.5 * self.l2 * s
        hess = slope[..., None, None] * np.diag(w)
        if self.curvature == "exact" and self.l1:
            # + r g''(s) (2 w d)(2 w d)^T,  g''(s) = -1/2 l1 / (alpha + s)^2.
            bend = -2.0 * self.l1 * r * inv**2
            hess = hess + bend[..., None, None] * wd[..., :, None] * wd[..., None, :]
        if isinstance(sel, slice):
            out.lx[..., sel] += slope[..., None] * wd
            out.lxx[..., sel, sel] += hess
        else:
            out.lx[..., sel] += slope[..., None] * wd
            out.lxx[..., sel[:, None], sel[None, :]] += hess


class CostSum(Cost):
    """Weighted sum of cost terms."""

    def __init__(self, terms: Sequence[Cost], weights: Sequence[float] | None = None) -> None:
        """Args:
        terms: the cost terms.
        weights: one multiplier per term (all 1 if None).
        """
        self.terms = list(terms)
        self.weights = [1.0] * len(self.terms) if weights is None else [float(w) for w in weights]
        if len(self.weights) != len(self.terms) or not self.terms:
            raise ValueError(
                f"CostSum: expected one weight per term and at least one term, found "
                f"{len(self.terms)} terms and {len(self.weights)} weights"
            )

    def eval(self, X: np.ndarray, U: np.ndarray) -> CostExpansion:
        X, U = _check_trajectory(X, U)
        out = CostExpansion.zeros(X.shape[:-2], X.shape[-2], X.shape[-1], U.shape[-1])
        self.add_to(X, U, out, 1.0)
        return out

    def add_to(self, X: np.ndarray, U: np.ndarray, out: CostExpansion, weight: float) -> None:
        for term, w in zip(self.terms, self.weights, strict=True):
            term.add_to(X, U, out, weight * w)


class AutodiffCost(Cost):
    """A cost c(x, u, t) written in torch, differentiated with torch.func.

    ``fn(x, u, t)`` takes x (dX,) and u (dU,) float64 tensors and the step t as a Python int, and
    returns a 0-d tensor. It must be a pure function of torch operations on x and u (it is vmapped
    over samples). Slower than the analytic terms (one vmapped Hessian per step); meant for adding
    a term without deriving it, and for checking analytic terms.
    """

    def __init__(self, fn: Callable, dX: int, dU: int) -> None:
        """Args:
        fn: the cost c(x, u, t).
        dX, dU: state and action dimensions.
        """
        import torch  # heavy import, only for users of this class
        from torch.func import jacrev, vmap

        self.fn, self.dX, self.dU = fn, dX, dU
        self._torch = torch

        def joint(z, t):
            return fn(z[:dX], z[dX:], t)

        self._value = vmap(joint, in_dims=(0, None))
        self._grad = vmap(jacrev(joint), in_dims=(0, None))
        self._hess = vmap(jacrev(jacrev(joint)), in_dims=(0, None))  # reverse-over-reverse

    def eval(self, X: np.ndarray, U: np.ndarray) -> CostExpansion:
        X, U = _check_trajectory(X, U)
        if X.shape[-1] != self.dX or U.shape[-1] != self.dU:
            raise ShapeError(
                f"AutodiffCost: expected dX={self.dX}, dU={self.dU}, "
                f"found dX={X.shape[-1]}, dU={U.shape[-1]}"
            )
        torch = self._torch
        lead, T, dX, D = X.shape[:-2], X.shape[-2], self.dX, self.dX + self.dU
        Z = torch.as_tensor(np.concatenate([X, U], axis=-1).reshape(-1, T, D),
                            dtype=torch.float64)
        l = np.empty((Z.shape[0], T))
        g = np.empty((Z.shape[0], T, D))
        H = np.empty((Z.shape[0], T, D, D))
        for t in range(T):
            z = Z[:, t]
            l[:, t] = self._value(z, t).detach().numpy()
            g[:, t] = self._grad(z, t).detach().numpy()
            H[:, t] = self._hess(z, t).detach().numpy()
        shape = (*lead, T)
        return CostExpansion(
            l=l.reshape(shape),
            lx=g[..., :dX].reshape(*shape, dX),
            lu=g[..., dX:].reshape(*shape, self.dU),
            lxx=H[..., :dX, :dX].reshape(*shape, dX, dX),
            luu=H[..., dX:, dX:].reshape(*shape, self.dU, self.dU),
            lux=H[..., dX:, :dX].reshape(*shape, self.dU, dX),
        )


def ee_points_cost(
    layout: StateLayout,
    weights: float | Sequence[float] | np.ndarray = 1.0,
    l1: float = 0.1,
    l2: float = 10.0,
    alpha: float = 1e-5,
    ramp: Ramp = Ramp.CONSTANT,
    final_multiplier: float = 1.0,
    curvature: str = "convex",
    offset: Sequence[float] | np.ndarray = (0.0, 0.0, 0.0),
    active: tuple[float, float] = (0.0, 1.0),
) -> StateTargetCost:
    """End-effector points to their targets (the state holds point minus target), or to their
    targets moved by ``offset`` (3,), m, in the world frame (e.g. above a hole).

    ``weights`` is a scalar, (3,) per axis (repeated for every point) or (3 n_points,);
    ``active``: the part of the horizon where the term acts (:func:`ramp_weights`).
    """
    n = 3 * layout.n_points
    w = np.asarray(weights, dtype=float)
    if w.shape == (3,) and n != 3:
        w = np.tile(w, layout.n_points)
    shift = np.asarray(offset, dtype=float)
    if shift.shape != (3,):
        raise ShapeError.expected("ee_points_cost offset", "(3,)", shift.shape)
    target = np.tile(shift, layout.n_points) if np.any(shift) else 0.0
    return StateTargetCost(layout.ee_points, target, w, l1, l2, alpha, ramp, final_multiplier,
                           curvature, active)


def joint_target_cost(
    layout: StateLayout,
    target_positions: Sequence[float] | np.ndarray,
    weights: float | Sequence[float] | np.ndarray = 1.0,
    l2: float = 1.0,
    ramp: Ramp = Ramp.CONSTANT,
    final_multiplier: float = 1.0,
) -> StateTargetCost:
    """Joint positions to a target configuration (rad), quadratic: 1/2 l2 sum w_i (q_i - q*_i)^2."""
    return StateTargetCost(layout.joint_positions, target_positions, weights, 0.0, l2, 1e-5,
                           ramp, final_multiplier)


@dataclass(frozen=True)
class TaskCostWeights:
    """Weights of the reach / peg task costs (a torque-controlled arm, torques in N m)."""

    action: float | tuple[float, ...] = 5e-5
    """Torque penalty w_u per (N m)^2. The cbfinn/gps MuJoCo examples used 5e-5 to 1e-3 divided by
    PR2 gains, i.e. 1.6e-5..1e-2 per joint; 5e-5 keeps the cost of the tens of N m an arm needs
    against gravity (0.5 * 5e-5 * 30^2 = 0.02 per step) well below the distance terms."""
    l1: float = 0.1
    """Log-term weight of the end-effector distance, every step."""
    l2: float = 10.0
    """Squared-term weight of the end-effector distance, every step (per m^2)."""
    alpha: float = 1e-5
    """Offset of the log (m^2): the log well is about sqrt(alpha) = 3 mm wide."""
    final_multiplier: float = 10.0
    """Weight of the extra final-step copy of the distance term."""


@dataclass(frozen=True)
class ApproachPhase:
    """Peg insertion in two phases: the first ``fraction`` of the horizon tracks goal points
    ``height`` above the hole's (the peg upright over the hole, clear of the block), the rest
    the hole's own. A state policy has no clock: it learns "descend once above the hole"
    from controllers that arrive above it, hover and descend, instead of diagonal descents
    that meet the block within 0.5 s. Measured (MDGPS, 4 conditions, 12 iterations, 10
    held-out conditions between them, seeds 0 / 1): without the phase the runs ended at 70 % /
    60 % held-out, the failures resting on the block top 1-2 cm beside the hole (a policy's
    small lateral error at arrival, then pressed down against friction); with it 100 % / 100 %.
    """

    height: float = 0.12
    """Of the approach goal above the hole bottom, m (the default hole is 8 cm deep)."""
    fraction: float = 0.3
    """Part of the horizon spent on the approach."""

    def __post_init__(self) -> None:
        if not (self.height > 0 and 0 < self.fraction < 1):
            raise ValueError(f"ApproachPhase: expected height > 0 and 0 < fraction < 1, found "
                             f"{self.height}, {self.fraction}")


def _task_cost(layout: StateLayout, point_weights: np.ndarray, w: TaskCostWeights,
               curvature: str, approach: ApproachPhase | None = None) -> CostSum:
    terms: list[Cost] = [ActionCost(w.action)]
    track_from = 0.0
    if approach is not None:
        track_from = approach.fraction
        terms.append(ee_points_cost(layout, point_weights, w.l1, w.l2, w.alpha, Ramp.CONSTANT,
                                    1.0, curvature, offset=(0.0, 0.0, approach.height),
                                    active=(0.0, track_from)))
    terms.append(ee_points_cost(layout, point_weights, w.l1, w.l2, w.alpha, Ramp.CONSTANT, 1.0,
                                curvature, active=(track_from, 1.0)))
    terms.append(ee_points_cost(layout, point_weights, w.l1, w.l2, w.alpha, Ramp.FINAL_ONLY,
                                w.final_multiplier, curvature))
    return CostSum(terms)


def reach_cost(
    layout: StateLayout, weights: TaskCostWeights | None = None, curvature: str = "convex"
) -> CostSum:
    """Reach: torque penalty + end-effector points to target every step + a final-step copy x10.

    All axes weigh the same. See :class:`TaskCostWeights` for the defaults and their reasons.
    """
    return _task_cost(layout, np.ones(3), weights or TaskCostWeights(), curvature)


def peg_cost(
    layout: StateLayout, weights: TaskCostWeights | None = None, curvature: str = "convex",
    approach: ApproachPhase | None = ApproachPhase(),  # noqa: B008 (frozen, never mutated)
) -> CostSum:
    """Peg insertion: as :func:`reach_cost`, with horizontal errors weighted 2, vertical 1, and
    an approach phase above the hole first (:class:`ApproachPhase`; None: none).

    Weighting x and y twice as much as z makes the arm align the peg over the hole before it
    descends (the cbfinn/gps peg examples used the same 2, 2, 1 point weights).
    """
    return _task_cost(layout, np.array([2.0, 2.0, 1.0]), weights or TaskCostWeights(), curvature,
                      approach)
