"""Cost expansions against torch autodiff and finite differences."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mbpl_ros.core.costs import (
    ActionCost,
    ApproachPhase,
    AutodiffCost,
    CostSum,
    Ramp,
    StateTargetCost,
    TaskCostWeights,
    ee_points_cost,
    peg_cost,
    ramp_weights,
    reach_cost,
)
from mbpl_ros.core.errors import ShapeError
from mbpl_ros.core.state import StateLayout

LAYOUT = StateLayout(n_joints=3, n_points=2)  # dX = 18, dU = 3
T = 6


def _trajectory(rng, n=None):
    lead = () if n is None else (n,)
    X = 0.05 * rng.standard_normal((*lead, T, LAYOUT.dim))
    U = rng.standard_normal((*lead, T, LAYOUT.action_dim))
    return X, U


def _torch_state_target(term: StateTargetCost):
    """The same formula as StateTargetCost, written independently in torch."""
    idx = torch.as_tensor(np.arange(LAYOUT.dim)[term.index])
    target = torch.as_tensor(np.broadcast_to(term.target, idx.shape).copy())
    w = torch.as_tensor(np.broadcast_to(term.weights, idx.shape).copy())
    r = torch.as_tensor(ramp_weights(term.ramp, T, term.final_multiplier, term.active))

    def fn(x, u, t):
        d = x[idx] - target
        s = torch.sum(w * d * d)
        return r[t] * (0.5 * term.l2 * s + 0.5 * term.l1 * torch.log(term.alpha + s))

    return AutodiffCost(fn, LAYOUT.dim, LAYOUT.action_dim)


def _assert_same(a, b, rtol=1e-9, atol=1e-9):
    for name in ("l", "lx", "lu", "lxx", "luu", "lux"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=rtol, atol=atol,
                                   err_msg=name)


@pytest.mark.parametrize("active", [(0.0, 1.0), (0.2, 0.7)])
@pytest.mark.parametrize("ramp", list(Ramp))
def test_state_target_term_matches_autodiff(rng, ramp, active):
    term = StateTargetCost(LAYOUT.ee_points, target=0.01 * np.arange(6),
                           weights=[2, 2, 1, 2, 2, 1], l1=0.1, l2=10.0, alpha=1e-5, ramp=ramp,
                           final_multiplier=10.0, curvature="exact", active=active)
    X, U = _trajectory(rng, n=3)
    _assert_same(term.eval(X, U), _torch_state_target(term).eval(X, U))


def test_action_term_matches_autodiff(rng):
    w = np.array([1e-3, 2e-3, 5e-4])
    term = ActionCost(w)
    wt = torch.as_tensor(w)
    auto = AutodiffCost(lambda x, u, t: 0.5 * torch.sum(wt * u * u), LAYOUT.dim,
                        LAYOUT.action_dim)
    X, U = _trajectory(rng)
    _assert_same(term.eval(X, U), auto.eval(X, U))


def test_convex_curvature_is_psd_with_the_exact_value_and_gradient(rng):
    kwargs = dict(index=LAYOUT.ee_points, l1=1.0, l2=0.0, alpha=1e-5)
    exact = StateTargetCost(**kwargs, curvature="exact").eval(*_trajectory(rng))
    convex = StateTargetCost(**kwargs, curvature="convex").eval(*_trajectory(rng))
    X, U = _trajectory(np.random.default_rng(7))
    exact = StateTargetCost(**kwargs, curvature="exact").eval(X, U)
    convex = StateTargetCost(**kwargs, curvature="convex").eval(X, U)
    np.testing.assert_allclose(convex.l, exact.l)
    np.testing.assert_allclose(convex.lx, exact.lx)
    assert np.linalg.eigvalsh(convex.lxx).min() > -1e-9
    assert np.linalg.eigvalsh(exact.lxx).min() < -1.0  # the log well is concave out here


def _finite_difference(cost, X, U, h=1e-6):
    """Central differences of the value (gradient) and of the analytic gradient (Hessian)."""
    D = X.shape[-1] + U.shape[-1]
    dX = X.shape[-1]
    Z = np.concatenate([X, U], axis=-1)
    grad = np.zeros((T, D))
    hess = np.zeros((T, D, D))
    for i in range(D):
        e = np.zeros(D)
        e[i] = h
        plus, minus = Z + e, Z - e
        cp = cost.eval(plus[:, :dX], plus[:, dX:])
        cm = cost.eval(minus[:, :dX], minus[:, dX:])
        grad[:, i] = (cp.l - cm.l) / (2 * h)
        gp = np.concatenate([cp.lx, cp.lu], axis=-1)
        gm = np.concatenate([cm.lx, cm.lu], axis=-1)
        hess[:, :, i] = (gp - gm) / (2 * h)
    return grad, hess


def test_task_cost_matches_finite_differences(rng):
    cost = reach_cost(LAYOUT, curvature="exact")
    X, U = _trajectory(rng)
    exp = cost.eval(X, U)
    grad, hess = _finite_difference(cost, X, U)
    dX = LAYOUT.dim
    np.testing.assert_allclose(exp.lx, grad[:, :dX], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(exp.lu, grad[:, dX:], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(exp.lxx, hess[:, :dX, :dX], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(exp.luu, hess[:, dX:, dX:], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(exp.lux, hess[:, dX:, :dX], atol=1e-6)


def test_ramps():
    np.testing.assert_allclose(ramp_weights(Ramp.CONSTANT, 4, 3.0), [1, 1, 1, 3])
    np.testing.assert_allclose(ramp_weights(Ramp.LINEAR, 4), [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(ramp_weights(Ramp.QUADRATIC, 2), [0.25, 1.0])
    np.testing.assert_allclose(ramp_weights(Ramp.FINAL_ONLY, 3, 10.0), [0, 0, 10])
    np.testing.assert_allclose(ramp_weights(Ramp.LINEAR, 4, 2.0, (0.25, 0.75)), [0, 0.5, 0.75, 0])
    np.testing.assert_allclose(ramp_weights(Ramp.CONSTANT, 10, 1.0, (0.3, 1.0)), [0] * 3 + [1] * 7)


def test_cost_sum_weights_and_operators(rng):
    a = ActionCost(1.0)
    b = ee_points_cost(LAYOUT)
    X, U = _trajectory(rng)
    total = (2.0 * a + b).eval(X, U)
    expected = a.eval(X, U).scaled(2.0) + b.eval(X, U)
    _assert_same(total, expected)


def test_task_cost_factories_use_documented_weights(rng):
    w = TaskCostWeights()
    X, U = _trajectory(rng)
    peg = peg_cost(LAYOUT, approach=None)
    assert isinstance(peg, CostSum) and len(peg.terms) == 3
    action, every_step, final = peg.terms
    np.testing.assert_allclose(action.weights, w.action)
    assert (every_step.l1, every_step.l2, every_step.ramp) == (w.l1, w.l2, Ramp.CONSTANT)
    assert (final.ramp, final.final_multiplier) == (Ramp.FINAL_ONLY, w.final_multiplier)
    np.testing.assert_allclose(every_step.weights, [2, 2, 1, 2, 2, 1])
    # At the target with zero torque only the log terms remain: (1 + 10 at the end) l1/2 log a.
    zero = peg.eval(np.zeros_like(X), np.zeros_like(U))
    log_a = 0.5 * w.l1 * np.log(w.alpha)
    np.testing.assert_allclose(zero.l, [log_a] * (T - 1) + [log_a * (1 + w.final_multiplier)])


def test_shape_errors_are_clear():
    with pytest.raises(ShapeError, match="same leading shape"):
        ActionCost(1.0).eval(np.zeros((T, 4)), np.zeros((T + 1, 2)))
    with pytest.raises(ShapeError, match=r"scalar or \(6,\)"):
        StateTargetCost(LAYOUT.ee_points, target=[0.0, 1.0]).eval(
            np.zeros((T, LAYOUT.dim)), np.zeros((T, 3)))
    with pytest.raises(ValueError, match="curvature"):
        StateTargetCost(LAYOUT.ee_points, curvature="gauss")


def test_peg_approach_phase_tracks_points_above_the_hole_first():
    w, approach = TaskCostWeights(), ApproachPhase(height=0.12, fraction=0.3)
    peg = peg_cost(LAYOUT, approach=approach)
    assert len(peg.terms) == 4
    U = np.zeros((T, LAYOUT.action_dim))
    # Every ee point exactly at its approach goal: 12 cm above its hole goal (z entries +0.12).
    X = np.zeros((T, LAYOUT.dim))
    X[:, LAYOUT.ee_points] = np.tile([0.0, 0.0, 0.12], LAYOUT.n_points)
    first = [t for t in range(T) if t / T < approach.fraction]  # t = 0, 1 of 6
    s = LAYOUT.n_points * 1.0 * 0.12**2  # z weight 1, both points 12 cm from the hole goal

    def distance_cost(s):
        return 0.5 * w.l2 * s + 0.5 * w.l1 * np.log(w.alpha + s)

    expected = np.array([0.5 * w.l1 * np.log(w.alpha) if t in first else distance_cost(s)
                         for t in range(T)])
    expected[-1] += w.final_multiplier * distance_cost(s)
    np.testing.assert_allclose(peg.eval(X, U).l, expected, rtol=1e-12)
    with pytest.raises(ValueError, match="fraction"):
        ApproachPhase(fraction=1.0)
    with pytest.raises(ValueError, match="active"):
        StateTargetCost(LAYOUT.ee_points, active=(0.5, 0.5))
