"""Policy linearisation and MDGPS / BADMM on a known linear system."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mbpl_ros.core.controllers import LinearGaussianController
from mbpl_ros.core.costs import ActionCost, StateTargetCost
from mbpl_ros.core.lqr_flm import LQRFLMConfig
from mbpl_ros.core.synthetic import collect, random_linear_system
from mbpl_ros.core.trajopt import QuadraticCost, StackedControllers
from mbpl_ros.gps.algorithm import BADMM, MDGPS, GPSConfig, Observations, augment_with_policy
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
    expected = 2.0 * 0.5 * r @ r + (lam_K[0, t] @ x + lam_k[0, t]) @ u
    assert value == pytest.approx(expected)
