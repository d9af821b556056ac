"""Policy linearisation and MDGPS / BADMM on a known linear system."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mbpl_ros.core.controllers import LinearGaussianController
from mbpl_ros.core.costs import ActionCost, StateTargetCost
from mbpl_ros.core.dynamics import LinearGaussianDynamics
from mbpl_ros.core.lqr_flm import LQRFLMConfig
from mbpl_ros.core.samples import SampleBatch
from mbpl_ros.core.synthetic import collect, random_linear_system
from mbpl_ros.core.trajopt import (
    QuadraticCost,
    StackedControllers,
    StackedDynamics,
    optimize_trajectories,
)
from mbpl_ros.gps.algorithm import (
    BADMM,
    MDGPS,
    GPSConfig,
    Observations,
    augment_with_policy,
    closed_loop_spread,
    policy_action_reference,
    sample_policy_kl,
)
from mbpl_ros.gps.linearize import PolicyPriorConfig, PolicyPriorGMM, linearize_policy
from mbpl_ros.gps.policy import Normalizer, ObservationSpec, make_policy
from mbpl_ros.gps.policy_opt import PolicyOptConfig

dX, dU, T, N = 4, 2, 20, 6
TARGET = np.array([1.0, -1.0, 0.5, 0.0])
SPEC = ObservationSpec(tuple(f"x{i}" for i in range(dX)), tuple(range(dX)), ("a", "b"))


def test_linearisation_of_a_linear_network_is_exact_even_with_few_samples():
    rng = np.random.default_rng(0)
    policy = make_policy(SPEC, dU, hidden=(), seed=1)  # no hidden layer: an affine map
    policy.obs_norm = Normalizer(rng.standard_normal(dX), rng.uniform(0.5, 2.0, dX))
    policy.action_norm = Normalizer(rng.standard_normal(dU), rng.uniform(0.5, 2.0, dU))
    layer = policy.network.body[-1]
    W = layer.weight.detach().double().numpy() * policy.action_norm.scale[:, None] / \
        policy.obs_norm.scale[None, :]
    b = policy.action_norm.mean + policy.action_norm.scale * (
        layer.bias.detach().double().numpy() - layer.weight.detach().double().numpy()
        @ (policy.obs_norm.mean / policy.obs_norm.scale))
    X = rng.standard_normal((3, T, dX)) + np.linspace(0, 2, T)[None, :, None]  # N=3 < dX
    pol_mu = policy.mean_actions(X)
    prior = PolicyPriorGMM(PolicyPriorConfig(min_samples_per_cluster=10))
    prior.update([X, X + 1.0], [pol_mu, policy.mean_actions(X + 1.0)])
    lin = linearize_policy(X, pol_mu, policy.covar, prior)
    np.testing.assert_allclose(lin.K, np.broadcast_to(W, (T, dU, dX)), atol=2e-4)
    np.testing.assert_allclose(lin.k, np.broadcast_to(b, (T, dU)), atol=2e-4)
    np.testing.assert_allclose(lin.covar, np.broadcast_to(policy.covar, (T, dU, dU)), atol=1e-4)


def test_linearisation_of_an_mlp_matches_its_jacobian_for_small_spread():
    rng = np.random.default_rng(1)
    policy = make_policy(SPEC, dU, hidden=(16,), seed=2)
    x0 = rng.standard_normal(dX)
    X = (x0 + 1e-3 * rng.standard_normal((40, T, dX)))  # many samples, tight around x0
    lin = linearize_policy(X, policy.mean_actions(X), policy.covar, None, regularization=1e-12)
    jac = torch.autograd.functional.jacobian(
        lambda v: policy._forward(v[None], None)[0], torch.as_tensor(x0, dtype=torch.float32))
    np.testing.assert_allclose(lin.K.mean(axis=0), jac.numpy(), atol=5e-3)


def _problem(seed=0):
    rng = np.random.default_rng(seed)
    system = random_linear_system(dX, dU, rng)
    cost = StateTargetCost(slice(0, dX), target=TARGET, l2=1.0) + ActionCost(0.1)
    x0s = [np.array([0.5, 0, 0, 0.2]), np.array([-0.5, 0.3, 0, 0]), np.array([0, -0.4, 0.3, 0])]
    zero = LinearGaussianController(np.zeros((T, dU, dX)), np.zeros((T, dU)),
                                    np.tile(np.eye(dU), (T, 1, 1)))
    return rng, system, cost, x0s, zero


def _policy_cost(policy, system, cost, x0s):
    """Noiseless cost of the global policy on the true system, averaged over conditions."""
    total = 0.0
    for x0 in x0s:
        X, U, x = np.empty((T, dX)), np.empty((T, dU)), x0.copy()
        for t in range(T):
            X[t], U[t] = x, policy.act(x).u
            x = system.step(x, U[t], None)
        total += cost.eval(X[None], U[None]).l.sum()
    return total / len(x0s)


@pytest.mark.parametrize(("algorithm", "marginal_states"), [(MDGPS, 0), (BADMM, 0), (MDGPS, 10)])
def test_gps_improves_the_global_policy_on_a_linear_system(algorithm, marginal_states):
    rng, system, cost, x0s, zero = _problem()
    policy = make_policy(SPEC, dU, hidden=(32, 32), seed=0)
    config = GPSConfig(lqr=LQRFLMConfig(kl_step=1.0),
                       policy_opt=PolicyOptConfig(steps=150, batch_size=64),
                       first_policy_steps=300, marginal_states=marginal_states)
    algo = algorithm(config, dX, dU, T, [zero] * 3, policy)
    costs = []
    for _ in range(4):
        batches = [collect(system, c, x0, N, rng) for c, x0 in zip(algo.controllers, x0s,
                                                                    strict=True)]
        report = algo.iteration(batches, [Observations(b.X) for b in batches], cost)
        assert np.all(np.isfinite(report.kl)) and report.policy_loss_after >= 0
        costs.append(_policy_cost(policy, system, cost, x0s))
    # The zero-torque start costs ~100 per condition; after training the policy imitates
    # controllers that reach the target.
    assert costs[-1] < 0.8 * costs[0]
    assert costs[-1] < 10.0


def test_mdgps_on_policy_sampling_uses_the_policy_after_the_first_iteration():
    rng, system, cost, x0s, zero = _problem(1)
    config = GPSConfig(policy_opt=PolicyOptConfig(steps=20), first_policy_steps=20,
                       sample_on_policy=True)
    algo = MDGPS(config, dX, dU, T, [zero] * 3, make_policy(SPEC, dU, hidden=(8,)))
    assert not algo.samples_from_policy()
    batches = [collect(system, zero, x0, N, rng) for x0 in x0s]
    algo.iteration(batches, [Observations(b.X) for b in batches], cost)
    assert algo.samples_from_policy()


def test_badmm_augmented_cost_adds_the_policy_terms():
    M = 1
    rng = np.random.default_rng(0)
    D = dX + dU
    quad = QuadraticCost(np.zeros((M, T)), np.zeros((M, T, D)), np.zeros((M, T, D, D)))
    K = rng.standard_normal((T, dU, dX))
    ref = StackedControllers.of([LinearGaussianController(K, np.zeros((T, dU)),
                                                          np.tile(np.eye(dU), (T, 1, 1)))])
    lam_K, lam_k = rng.standard_normal((M, T, dU, dX)), rng.standard_normal((M, T, dU))
    aug = augment_with_policy(quad, ref, np.full((M, T), 2.0), lam_K, lam_k)
    z = rng.standard_normal(D)
    x, u = z[:dX], z[dX:]
    t = 3
    value = aug.cv[0, t] @ z + 0.5 * z @ aug.Cm[0, t] @ z
    r = u - K[t] @ x
    expected = 2.0 * 0.5 * r @ r + (lam_K[0, t] @ x + lam_k[0, t]) @ r
    assert value == pytest.approx(expected)


def _random_spd(rng, n, scale=1.0):
    A = rng.standard_normal((n, n))
    return scale * (A @ A.T + n * np.eye(n))


def test_badmm_augmented_cost_is_the_lagrangian_at_random_points():
    """The quadratic model equals, at random (x, u), the directly computed
    c + nu (-log pi_hat(u|x)) + lambda(x)^T (u - mu_hat(x)), minus nu times pi_hat's
    log-normaliser (scipy's Gaussian density as the reference)."""
    from scipy.stats import multivariate_normal

    rng = np.random.default_rng(3)
    M, D = 2, dX + dU
    A = rng.standard_normal((M, T, D, D))
    quad = QuadraticCost(rng.standard_normal((M, T)), rng.standard_normal((M, T, D)),
                         A + np.swapaxes(A, -1, -2))
    covs = [np.stack([_random_spd(rng, dU, 0.3) for _ in range(T)]) for _ in range(M)]
    lins = [LinearGaussianController(rng.standard_normal((T, dU, dX)),
                                     rng.standard_normal((T, dU)), c) for c in covs]
    nu = rng.uniform(0.1, 3.0, (M, T))
    lam_K, lam_k = rng.standard_normal((M, T, dU, dX)), rng.standard_normal((M, T, dU))
    aug = augment_with_policy(quad, StackedControllers.of(lins), nu, lam_K, lam_k)
    for _ in range(5):
        m, t = rng.integers(M), rng.integers(T)
        z = 3.0 * rng.standard_normal(D)
        x, u = z[:dX], z[dX:]
        model = aug.cc[m, t] + aug.cv[m, t] @ z + 0.5 * z @ aug.Cm[m, t] @ z
        cost = quad.cc[m, t] + quad.cv[m, t] @ z + 0.5 * z @ quad.Cm[m, t] @ z
        mean = lins[m].K[t] @ x + lins[m].k[t]
        log_pi = multivariate_normal(mean, covs[m][t]).logpdf(u)
        direct = cost - nu[m, t] * log_pi + (lam_K[m, t] @ x + lam_k[m, t]) @ (u - mean)
        log_norm = -0.5 * np.linalg.slogdet(2 * np.pi * covs[m][t])[1]
        assert model == pytest.approx(direct + nu[m, t] * log_norm, rel=1e-9, abs=1e-9)


def _double_integrator(horizon, x0):
    dt = 0.05
    A = np.eye(dX)
    A[:2, 2:] = dt * np.eye(2)
    B = np.zeros((dX, dU))
    B[2:] = dt * np.eye(2)
    return LinearGaussianDynamics(np.tile(np.hstack([A, B]), (horizon - 1, 1, 1)),
                                  np.zeros((horizon - 1, dX)),
                                  np.tile(1e-6 * np.eye(dX), (horizon - 1, 1, 1)), x0,
                                  1e-6 * np.eye(dX))


def test_c_step_entropy_weight_tempers_each_step_at_eta_plus_nu():
    """With entropy weights nu_t the last step's controller is the max-entropy solution of
    c + nu (-log pi_hat) + eta (-log p_prev) at temperature eta + nu: precision
    (C_uu + nu P_hat + eta P_prev) / (eta + nu), gain -Q_uu^-1 Q_ux (closed form)."""
    rng = np.random.default_rng(4)
    horizon, D = 3, dX + dU
    dyn = _double_integrator(horizon, np.ones(dX))
    Cm = np.zeros((1, horizon, D, D))
    Cm[..., :dX, :dX] = np.eye(dX)
    Cm[..., dX:, dX:] = 0.1 * np.eye(dU)
    quad = QuadraticCost(np.zeros((1, horizon)), np.zeros((1, horizon, D)), Cm)
    prev = LinearGaussianController(rng.standard_normal((horizon, dU, dX)),
                                    rng.standard_normal((horizon, dU)),
                                    np.stack([_random_spd(rng, dU, 0.1) for _ in range(horizon)]))
    lin = LinearGaussianController(rng.standard_normal((horizon, dU, dX)),
                                   rng.standard_normal((horizon, dU)),
                                   np.stack([_random_spd(rng, dU, 0.2) for _ in range(horizon)]))
    nu = np.full((1, horizon), 0.7)
    zero = np.zeros((1, horizon, dU))
    aug = augment_with_policy(quad, StackedControllers.of([lin]), nu,
                              np.zeros((1, horizon, dU, dX)), zero)
    res = optimize_trajectories([prev], [dyn], aug, np.array([0.5]), np.array([1.0]),
                                entropy_weight=nu)
    eta, t = res.eta[0], horizon - 1
    Q = aug.Cm[0, t].copy()
    Q[dX:, dX:] += eta * prev.precision[t]
    Q[dX:, :dX] -= eta * prev.precision[t] @ prev.K[t]
    new = res.controllers[0]
    np.testing.assert_allclose(new.precision[t], Q[dX:, dX:] / (eta + nu[0, t]), rtol=1e-8)
    np.testing.assert_allclose(new.K[t], -np.linalg.solve(Q[dX:, dX:], Q[dX:, :dX]), rtol=1e-8,
                               atol=1e-10)


def test_badmm_brings_controllers_and_policy_together_on_a_linear_system():
    """Over BADMM iterations the controller-policy KL (after each S-step) falls by an order of
    magnitude from its peak (18 -> 50 -> 2.6 nats; to under a fifth of the first) and the global
    policy's cost on the true system falls from ~21 to under 8 (MDGPS
    ends at 7.7 here);
    no C-step loses positive definiteness and the dual stays bounded (the pre-fix duals grew
    without bound here: lambda_K, since dropped, reached 1e4 by the eighth iteration while the KL
    stayed at 30-100 nats)."""
    rng, system, cost, x0s, zero = _problem()
    policy = make_policy(SPEC, dU, hidden=(32, 32), seed=0)
    config = GPSConfig(lqr=LQRFLMConfig(kl_step=1.0),
                       policy_opt=PolicyOptConfig(steps=150, batch_size=64),
                       first_policy_steps=300, marginal_states=0)
    algo = BADMM(config, dX, dU, T, [zero] * 3, policy)
    start = _policy_cost(policy, system, cost, x0s)
    kls = []
    for _ in range(6):
        batches = [collect(system, c, x0, N, rng) for c, x0 in zip(algo.controllers, x0s,
                                                                    strict=True)]
        report = algo.iteration(batches, [Observations(b.X) for b in batches], cost)
        assert not any("positive definite" in w for w in report.warnings)
        kls.append(np.mean(report.policy_kl))
    assert np.mean(kls[-2:]) < 0.1 * max(kls)
    assert np.mean(kls[-2:]) < 0.2 * kls[0]
    assert _policy_cost(policy, system, cost, x0s) < min(8.0, 0.5 * start)
    assert np.abs(algo.lambda_k).max() < 100.0  # the dual (constant in x) stays bounded


def test_sample_policy_kl_matches_a_monte_carlo_estimate():
    """The closed form at the sample states equals mean_n E_{u ~ p(.|x_n)} [log p(u|x_n) -
    log pi(u|o_n)], estimated by drawing actions (scipy's Gaussian densities as the reference)."""
    from scipy.stats import multivariate_normal

    rng = np.random.default_rng(5)
    horizon, n = 3, 4
    ctrl = LinearGaussianController(rng.standard_normal((horizon, dU, dX)),
                                    rng.standard_normal((horizon, dU)),
                                    np.stack([_random_spd(rng, dU, 0.2) for _ in range(horizon)]))
    X = rng.standard_normal((n, horizon, dX))
    pol_mu = rng.standard_normal((n, horizon, dU))
    pol_covar = _random_spd(rng, dU, 0.3)
    kl = sample_policy_kl(ctrl, X, pol_mu, pol_covar)
    draws = 100_000
    for t in range(horizon):
        est = 0.0
        for i in range(n):
            mean = ctrl.K[t] @ X[i, t] + ctrl.k[t]
            u = rng.multivariate_normal(mean, ctrl.covar[t], draws)
            est += np.mean(multivariate_normal(mean, ctrl.covar[t]).logpdf(u)
                           - multivariate_normal(pol_mu[i, t], pol_covar).logpdf(u)) / n
        assert kl[t] == pytest.approx(est, rel=0.02, abs=0.02)


def test_policy_action_reference_has_the_controller_slope_and_the_policy_level():
    """If the policy's mean is K_c x + k_pi (the controller's slope, another level), the reference
    recovers k_pi exactly; in general its mean at the samples' mean state is the policy's mean
    action there."""
    rng = np.random.default_rng(6)
    ctrl = LinearGaussianController(rng.standard_normal((T, dU, dX)), rng.standard_normal((T, dU)),
                                    np.tile(0.1 * np.eye(dU), (T, 1, 1)))
    X = rng.standard_normal((N, T, dX))
    batch = SampleBatch(X, np.zeros((N, T, dU)))
    k_pi = rng.standard_normal((T, dU))
    covar = _random_spd(rng, dU, 0.5)
    ref = policy_action_reference([ctrl], [batch], [np.einsum("tux,ntx->ntu", ctrl.K, X) + k_pi],
                                  covar)[0]
    np.testing.assert_allclose(ref.K, ctrl.K)
    np.testing.assert_allclose(ref.k, k_pi, atol=1e-12)
    np.testing.assert_allclose(ref.covar, np.broadcast_to(covar, (T, dU, dU)))
    pol_mu = rng.standard_normal((N, T, dU))  # any policy
    ref = policy_action_reference([ctrl], [batch], [pol_mu], covar)[0]
    np.testing.assert_allclose(np.einsum("tux,tx->tu", ref.K, X.mean(axis=0)) + ref.k,
                               pol_mu.mean(axis=0), atol=1e-12)


def test_badmm_c_step_stays_in_cost_units_where_the_fitted_closed_loop_is_unstable():
    """The reach failure in miniature: a fitted model whose closed loop diverges (state spread
    ~1e12 by the last step) and a policy linearisation whose gains differ from the controller's.
    Coupling the C-step to those gains drives eta (the trust region's weight, in cost units)
    beyond 1e6 so the cost has no weight; coupling it to the policy's actions at the samples with
    the controller's own slope (:func:`policy_action_reference`) keeps eta of the order of the
    cost's, and the C-step still lowers the modelled cost."""
    rng = np.random.default_rng(7)
    horizon, D = 30, dX + dU
    A, B = 2.0 * np.eye(dX), np.vstack([np.eye(dU), np.zeros((dX - dU, dU))])
    dyn = LinearGaussianDynamics(np.tile(np.hstack([A, B]), (horizon - 1, 1, 1)),
                                 np.zeros((horizon - 1, dX)),
                                 np.tile(1e-2 * np.eye(dX), (horizon - 1, 1, 1)), np.ones(dX),
                                 1e-2 * np.eye(dX))
    Cm = np.zeros((1, horizon, D, D))
    Cm[..., dX:, dX:] = np.eye(dU)
    cv = np.zeros((1, horizon, D))
    cv[..., dX:] = 1.0  # a push on the actions: something to gain within the trust region
    quad = QuadraticCost(np.zeros((1, horizon)), cv, Cm)
    prev = LinearGaussianController(np.zeros((horizon, dU, dX)), np.zeros((horizon, dU)),
                                    np.tile(0.1 * np.eye(dU), (horizon, 1, 1)))
    X = rng.standard_normal((N, horizon, dX))
    K_pi = 3.0 * rng.standard_normal((horizon, dU, dX))
    pol_mu = np.einsum("tux,ntx->ntu", K_pi, X) + 0.5
    pol_covar = 0.1 * np.eye(dU)
    lin = LinearGaussianController(K_pi, np.full((horizon, dU), 0.5),
                                   np.tile(pol_covar, (horizon, 1, 1)))
    nu = np.full((1, horizon), 0.01)
    lam = np.zeros((1, horizon, dU, dX)), np.zeros((1, horizon, dU))
    eps = np.array([2.0])

    def c_step(reference):
        aug = augment_with_policy(quad, StackedControllers.of([reference]), nu, *lam)
        return optimize_trajectories([prev], [dyn], aug, eps, np.array([1.0]),
                                     entropy_weight=nu)

    gains = c_step(lin)
    actions = c_step(policy_action_reference([prev], [SampleBatch(X, np.zeros((N, horizon, dU)))],
                                             [pol_mu], pol_covar)[0])
    assert gains.eta[0] > 1e6
    assert actions.eta[0] < 1e3
    assert np.all(np.isfinite(actions.controllers[0].k))
    assert not np.allclose(actions.controllers[0].k, prev.k)


def _scalar_chain(gain: float, horizon: int = 15, a: float = 1.1, b: float = 0.5,
                  action_var: float = 0.04, noise_var: float = 0.01, x0_var: float = 0.2):
    """x' = a x + b u + w, u = gain x + e, as stacked controller and dynamics, plus the closed-form
    state variances s_{t+1} = (a + b gain)^2 s_t + b^2 action_var + noise_var."""
    ctrl = LinearGaussianController(np.full((horizon, 1, 1), gain), np.zeros((horizon, 1)),
                                    np.full((horizon, 1, 1), action_var))
    dyn = LinearGaussianDynamics(np.tile([[[a, b]]], (horizon - 1, 1, 1)),
                                 np.zeros((horizon - 1, 1)),
                                 np.full((horizon - 1, 1, 1), noise_var), np.zeros(1),
                                 np.full((1, 1), x0_var))
    s = np.empty(horizon)
    s[0] = x0_var
    with np.errstate(over="ignore"):
        for t in range(horizon - 1):
            s[t + 1] = np.float64(a + b * gain) ** 2 * s[t] + b * b * action_var + noise_var
    return ctrl, dyn, s


def test_closed_loop_spread_matches_the_variance_recursion():
    for gain in (-1.8, 0.0, 2.0):
        ctrl, dyn, s = _scalar_chain(gain)
        spread = closed_loop_spread(StackedControllers.of([ctrl]), StackedDynamics.of([dyn]))
        np.testing.assert_allclose(spread, [s.max()], rtol=1e-10)
    ctrl, dyn, _ = _scalar_chain(1e200)  # overflows: reported as diverged, without warnings
    assert closed_loop_spread(StackedControllers.of([ctrl]), StackedDynamics.of([dyn]))[0] == \
        np.inf


def test_mdgps_steps_around_the_controller_where_the_policy_linearisation_diverges():
    """Per condition: pi_hat is the trust-region reference while its closed loop under the fitted
    model spreads like the controller's; where it spreads beyond max_reference_spread times that
    (gain 2.0: |a + b K| = 2.1, ~1e9 after 15 steps) the condition's own controller is."""
    stable, dyn, _ = _scalar_chain(-1.8)
    lin_close, _, _ = _scalar_chain(-1.6)
    lin_diverging, _, s = _scalar_chain(2.0)
    policy = make_policy(ObservationSpec(("x",), (0,), ("u",)), 1, hidden=(4,))
    algo = MDGPS(GPSConfig(max_reference_spread=100.0), 1, 1, 15, [stable, stable], policy)
    reference = algo._trust_region_reference([lin_close, lin_diverging], [dyn, dyn])
    assert reference[0] is lin_close and reference[1] is stable
    assert algo._own_reference.tolist() == [False, True]
    assert s.max() > 1e8


def test_mdgps_resumes_a_checkpoint_from_before_the_own_reference_fallback():
    """A trainer checkpoint pickled before _Models had own_reference (pi_hat was always the
    reference) still takes its next step, with the step sizes of pi_hat as reference."""
    rng, system, cost, x0s, zero = _problem(2)
    config = GPSConfig(policy_opt=PolicyOptConfig(steps=20), first_policy_steps=20)
    runs = [MDGPS(config, dX, dU, T, [zero] * 3, make_policy(SPEC, dU, hidden=(8,), seed=0))
            for _ in range(2)]
    batches = [collect(system, zero, x0, N, rng) for x0 in x0s]
    for algo in runs:
        algo.iteration(batches, [Observations(b.X) for b in batches], cost)
    assert not runs[0]._previous.own_reference.any()
    del runs[1]._previous.__dict__["own_reference"]  # the old pickle's attributes
    batches = [collect(system, c, x0, N, rng) for c, x0 in zip(runs[0].controllers, x0s,
                                                                strict=True)]
    reports = [algo.iteration(batches, [Observations(b.X) for b in batches], cost)
               for algo in runs]
    np.testing.assert_array_equal(reports[1].step_mult, reports[0].step_mult)
    assert np.isfinite(reports[1].predicted_improvement).all()


def test_badmm_evaluates_the_policy_at_the_samples_no_more_often_than_mdgps():
    """BADMM's dual step reuses the policy's actions from the linearisation: on a visuomotor
    policy each evaluation is a pass of the network over every sample's image."""
    calls = {}
    for algorithm in (MDGPS, BADMM):
        rng, system, cost, x0s, zero = _problem(2)
        policy = make_policy(SPEC, dU, hidden=(8,), seed=0)
        config = GPSConfig(policy_opt=PolicyOptConfig(steps=5), first_policy_steps=5)
        algo = algorithm(config, dX, dU, T, [zero] * 3, policy)
        evaluate, count = policy.mean_actions, [0]

        def counted(*args, evaluate=evaluate, count=count, **kwargs):
            count[0] += 1
            return evaluate(*args, **kwargs)

        policy.mean_actions = counted
        for _ in range(2):  # the second iteration takes BADMM's dual step
            batches = [collect(system, c, x0, N, rng)
                       for c, x0 in zip(algo.controllers, x0s, strict=True)]
            count[0] = 0
            algo.iteration(batches, [Observations(b.X) for b in batches], cost)
        calls[algorithm.name] = count[0]
    assert calls["badmm"] == calls["mdgps"] > 0, calls
