"""Dual gradient descent on eta, the KL trust region, non-PD recovery and step adjustment."""

from __future__ import annotations

import numpy as np
import pytest
from core_helpers import random_controller, random_spd

from mbpl_ros.core.costs import reach_cost
from mbpl_ros.core.lqr import (
    augment_cost,
    augment_dynamics,
    backward_pass,
    backward_pass_augmented,
)
from mbpl_ros.core.state import StateLayout
from mbpl_ros.core.synthetic import random_linear_system
from mbpl_ros.core.trajopt import (
    DualConfig,
    QuadraticCost,
    StackedControllers,
    StackedDynamics,
    estimate_cost,
    kl_augmented_cost,
    kl_penalty,
    optimize_trajectories,
    quadratic_cost_from_samples,
    step_multiplier,
    trajectory_kl,
)

dX, dU, T = 4, 2, 15


def _problem(rng, M):
    dynamics, costs, prev = [], [], []
    for _ in range(M):
        system = random_linear_system(dX, dU, rng, noise_std=0.05)
        dynamics.append(system.as_dynamics(T, rng.standard_normal(dX), 0.01 * np.eye(dX)))
        Cm = np.stack([random_spd(rng, dX + dU) for _ in range(T)])
        costs.append(QuadraticCost(np.zeros(T), rng.standard_normal((T, dX + dU)), Cm))
        prev.append(random_controller(rng, T, dX, dU, gain=0.1))
    return prev, dynamics, QuadraticCost.stack(costs)


@pytest.mark.parametrize("kl_step", [0.05, 0.5, 2.0])
def test_dual_descent_meets_the_kl_target(rng, kl_step):
    M = 3
    prev, dynamics, cost = _problem(rng, M)
    eps = np.full(M, kl_step * T) * np.array([0.5, 1.0, 2.0])
    result = optimize_trajectories(prev, dynamics, cost, eps, eta0=np.ones(M))
    assert result.converged.all(), result.warnings
    assert np.all(np.abs(result.kl - eps) < 0.1 * eps), (result.kl, eps)
    # The reported KL is the KL of the returned controllers, recomputed independently.
    kl = trajectory_kl(StackedControllers.of(result.controllers), StackedControllers.of(prev),
                       StackedDynamics.of(dynamics))
    np.testing.assert_allclose(kl, result.kl, rtol=1e-9)
    # Better than the previous controllers under the model, and no better than LQR can be.
    before = estimate_cost(StackedControllers.of(prev), StackedDynamics.of(dynamics), cost)
    after = estimate_cost(StackedControllers.of(result.controllers), StackedDynamics.of(dynamics),
                          cost)
    assert np.all(after < before)
    assert result.backward_passes < 30


def test_conditions_optimised_together_equal_one_at_a_time(rng):
    prev, dynamics, cost = _problem(rng, 3)
    eps = np.array([3.0, 8.0, 20.0])
    together = optimize_trajectories(prev, dynamics, cost, eps, np.ones(3))
    for m in range(3):
        alone = optimize_trajectories(
            prev[m:m + 1], dynamics[m:m + 1],
            QuadraticCost(cost.cc[m:m + 1], cost.cv[m:m + 1], cost.Cm[m:m + 1]),
            eps[m:m + 1], np.ones(1))
        np.testing.assert_allclose(alone.controllers[0].K, together.controllers[m].K, rtol=1e-9,
                                   atol=1e-12)
        np.testing.assert_allclose(alone.eta[0], together.eta[m], rtol=1e-12)
    # Batched: one backward pass per dual iteration serves every condition still searching.
    assert together.backward_passes == together.dual_iterations.max()


def _concave_in_u(rng):
    """One condition whose cost is concave in u: Q_uu = -I/eta + P_prev is PD only for eta > 1."""
    prev, dynamics, cost = _problem(rng, 1)
    Cm = cost.Cm.copy()
    Cm[:, :, :dX, dX:] = 0.0
    Cm[:, :, dX:, :dX] = 0.0
    Cm[:, :, dX:, dX:] = -np.eye(dU)
    Fm = dynamics[0].Fm.copy()
    Fm[:, :, dX:] = 0.0  # actions do not move the state: Q_uu gets nothing from the future
    dyn = type(dynamics[0])(Fm, dynamics[0].fv, dynamics[0].covar, dynamics[0].x0_mean,
                            dynamics[0].x0_covar)
    K = np.zeros_like(prev[0].K)
    ref = type(prev[0])(K, prev[0].k, np.tile(np.eye(dU), (T, 1, 1)))  # precision I
    return [ref], [dyn], QuadraticCost(cost.cc, cost.cv, Cm)


def test_non_pd_q_uu_is_recovered_by_raising_eta(rng):
    prev, dynamics, cost = _concave_in_u(rng)
    eps = np.array([2.0])
    result = optimize_trajectories(prev, dynamics, cost, eps, eta0=np.array([1e-3]))
    assert result.eta[0] > 1.0
    assert result.backward_passes > result.dual_iterations[0]  # retries after non-PD passes
    assert result.converged[0] and abs(result.kl[0] - 2.0) < 0.2, result.kl
    assert np.all(np.linalg.eigvalsh(result.controllers[0].covar) > 0)


def test_no_pd_solution_keeps_the_previous_controller_with_a_warning(rng):
    prev, dynamics, cost = _concave_in_u(rng)
    result = optimize_trajectories(prev, dynamics, cost, np.array([2.0]), np.array([1e-3]),
                                   DualConfig(max_eta=0.5))
    assert result.controllers[0] is prev[0]
    assert result.kl[0] == 0.0 and not result.converged[0]
    assert any("no positive definite" in w for w in result.warnings)


def test_eta_at_its_maximum_returns_the_best_controller_with_a_warning(rng):
    prev, dynamics, cost = _problem(rng, 1)
    result = optimize_trajectories(prev, dynamics, cost, np.array([1e-6]), np.ones(1),
                                   DualConfig(max_eta=10.0))
    assert not result.converged[0]
    assert any("max_eta" in w for w in result.warnings)
    assert result.eta[0] == pytest.approx(10.0)
    assert result.kl[0] > 1e-6


@pytest.mark.parametrize(
    ("predicted", "actual", "mult", "expected"),
    [
        (1.0, 0.5, 1.0, 1.0),  # 1 / (2 * 0.5)
        (1.0, 0.0, 2.0, 1.0),  # 1 / (2 * 1) = 0.5, times 2
        (1.0, 0.9, 1.0, 5.0),  # 1 / 0.2 = 5
        (1.0, 1.0, 1.0, 5.0),  # difference floored at 1e-4: 5000 -> clamped to 5
        (1.0, 2.0, 0.5, 2.5),  # actual better than predicted: floor again, 5 x 0.5
        (-1.0, -3.0, 1.0, 0.1),  # predicted worsening: factor clamped to 0.1
        (1.0, -9.0, 1.0, 0.1),  # 1 / 20 = 0.05 -> 0.1
        (1.0, 0.9, 4.0, 10.0),  # 5 x 4 = 20 -> max_step_mult
        (1.0, -9.0, 0.05, 0.01),  # 0.1 x 0.05 = 0.005 -> min_step_mult
    ],
)
def test_step_multiplier_follows_its_formula(predicted, actual, mult, expected):
    out = step_multiplier(np.array([predicted]), np.array([actual]), np.array([mult]), 0.01, 10.0)
    assert out[0] == pytest.approx(expected)


def test_quadratic_model_from_samples_is_the_average_of_the_expansions(rng):
    layout = StateLayout(n_joints=2, n_points=1)
    cost = reach_cost(layout, curvature="exact")
    X = 0.1 * rng.standard_normal((3, 5, layout.dim))
    U = rng.standard_normal((3, 5, layout.action_dim))
    model, sample_costs = quadratic_cost_from_samples(cost, X, U)
    singles = [quadratic_cost_from_samples(cost, X[i:i + 1], U[i:i + 1])[0] for i in range(3)]
    for i, single in enumerate(singles):
        # Around its own sample, each model reproduces value and gradient of the cost.
        z = np.concatenate([X[i], U[i]], axis=-1)
        exp = cost.eval(X[i], U[i])
        value = single.cc + np.einsum("ti,ti->t", single.cv, z) + \
            0.5 * np.einsum("ti,tij,tj->t", z, single.Cm, z)
        np.testing.assert_allclose(value, exp.l, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(single.cv + np.einsum("tij,tj->ti", single.Cm, z),
                                   np.concatenate([exp.lx, exp.lu], axis=-1), atol=1e-9)
        np.testing.assert_allclose(sample_costs[i], exp.l)
    for name in ("cc", "cv", "Cm"):
        np.testing.assert_allclose(getattr(model, name),
                                   np.mean([getattr(s, name) for s in singles], axis=0))


def test_kl_augmented_cost_is_cost_over_eta_minus_log_policy(rng):
    prev, dynamics, cost = _problem(rng, 2)
    ref = StackedControllers.of(prev)
    eta = np.array([0.5, 3.0])
    Cm, cv = kl_augmented_cost(cost, ref, eta)
    # Differences of the quadratic model between two points equal those of c/eta - log p_bar.
    z1, z2 = rng.standard_normal((2, 2, T, dX + dU))

    def model(z):
        return np.einsum("mti,mti->mt", cv, z) + 0.5 * np.einsum("mti,mtij,mtj->mt", z, Cm, z)

    def target(z):
        c = np.einsum("mti,mti->mt", cost.cv, z) + 0.5 * np.einsum("mti,mtij,mtj->mt", z,
                                                                   cost.Cm, z)
        r = z[..., dX:] - np.einsum("mtij,mtj->mti", ref.K, z[..., :dX]) - ref.k
        return c / eta[:, None] + 0.5 * np.einsum("mti,mtij,mtj->mt", r, ref.precision, r)

    np.testing.assert_allclose(model(z1) - model(z2), target(z1) - target(z2), rtol=1e-9)
    # The optimiser's homogeneous form gives the same backward pass.
    dyn = StackedDynamics.of(dynamics)
    plain = backward_pass(dyn.Fm, dyn.fv, Cm, cv)
    augmented = backward_pass_augmented(
        augment_dynamics(dyn.Fm, dyn.fv),
        augment_cost(cost.Cm, cost.cv) / eta[:, None, None, None] + kl_penalty(ref))
    np.testing.assert_allclose(augmented.K, plain.K, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(augmented.k, plain.k, rtol=1e-9, atol=1e-12)
