"""Dynamics regression and its GMM prior against known linear-Gaussian systems."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from mbpl_ros.core.controllers import LinearGaussianController
from mbpl_ros.core.dynamics import UnderdeterminedFitWarning, fit_dynamics, fit_dynamics_batch
from mbpl_ros.core.errors import MismatchError, NotEnoughSamplesError
from mbpl_ros.core.prior import DynamicsPriorGMM, PriorConfig, transition_points
from mbpl_ros.core.samples import SampleBatch
from mbpl_ros.core.synthetic import LinearSystem, random_linear_system


def _exploring_controller(rng, T, dX, dU, gain=0.2, var=1.0):
    K = gain * rng.standard_normal((T, dU, dX))
    return LinearGaussianController(K, 0.3 * rng.standard_normal((T, dU)),
                                    np.tile(var * np.eye(dU), (T, 1, 1)))


def _samples(rng, system: LinearSystem, ctrl, n, x0_std=0.5):
    """n trials of a noisy controller on the system, all at once."""
    T = ctrl.T
    X = np.empty((n, T, system.dX))
    U = np.empty((n, T, system.dU))
    x = x0_std * rng.standard_normal((n, system.dX))
    for t in range(T):
        X[:, t] = x
        U[:, t] = x @ ctrl.K[t].T + ctrl.k[t] + rng.standard_normal((n, system.dU)) @ ctrl.chol[t].T
        x = x @ system.A.T + U[:, t] @ system.B.T + system.c + \
            rng.standard_normal((n, system.G.shape[1])) @ system.G.T
    return SampleBatch(X, U)


def test_fit_recovers_a_known_system(rng):
    dX, dU, T = 4, 2, 8
    system = random_linear_system(dX, dU, rng, noise_std=0.01)
    batch = _samples(rng, system, _exploring_controller(rng, T, dX, dU), n=300)
    dyn = fit_dynamics(batch)
    assert dyn.Fm.shape == (T - 1, dX, dX + dU) and dyn.T == T
    np.testing.assert_allclose(dyn.Fm, np.broadcast_to(np.hstack([system.A, system.B]),
                                                       dyn.Fm.shape), atol=0.01)
    np.testing.assert_allclose(dyn.fv, np.broadcast_to(system.c, dyn.fv.shape), atol=0.01)
    # Noise covariance 1e-4 I, estimated from 300 samples (relative sd ~ 8 %).
    diag = np.einsum("tii->ti", dyn.covar)
    np.testing.assert_allclose(diag, 1e-4, rtol=0.35)
    off = dyn.covar - np.einsum("ti,ij->tij", diag, np.eye(dX))
    assert np.abs(off).max() < 3e-5
    np.testing.assert_allclose(dyn.x0_mean, batch.X[:, 0].mean(axis=0))


def _fm_error(dyn, system):
    return np.sqrt(np.mean((dyn.Fm - np.hstack([system.A, system.B])) ** 2))


def test_prior_from_earlier_data_helps_when_samples_are_few(rng):
    dX, dU, T = 6, 3, 25
    system = random_linear_system(dX, dU, rng, noise_std=0.02)
    prior = DynamicsPriorGMM()
    prior.update([_samples(rng, system, _exploring_controller(rng, T, dX, dU), n=20)])
    errors_prior, errors_plain = [], []
    for _ in range(5):
        few = _samples(rng, system, _exploring_controller(rng, T, dX, dU), n=5)  # 5 < dX + dU
        errors_prior.append(_fm_error(fit_dynamics(few, prior), system))
        with pytest.warns(UnderdeterminedFitWarning, match="5 samples for 9 regressors"):
            errors_plain.append(_fm_error(fit_dynamics(few), system))
    assert np.mean(errors_prior) < 0.2 * np.mean(errors_plain), (errors_prior, errors_plain)
    assert np.mean(errors_prior) < 0.05


def test_fit_refuses_a_single_sample():
    with pytest.raises(NotEnoughSamplesError, match="at least 2 samples"):
        fit_dynamics(SampleBatch(np.zeros((1, 4, 3)), np.zeros((1, 4, 1))))


def test_singular_regression_falls_back_with_a_warning(rng):
    X = rng.standard_normal((10, 5, 3))
    X[..., 1] = 0.0  # a constant state entry
    batch = SampleBatch(X, rng.standard_normal((10, 5, 1)))
    with pytest.warns(UnderdeterminedFitWarning, match="singular regression"):
        dyn = fit_dynamics(batch, regularization=0.0)
    assert np.all(np.isfinite(dyn.Fm))


def _arm_like_batches(rng, system, n_conditions, n, T):
    dX, dU = system.dX, system.dU
    return [_samples(rng, system, _exploring_controller(rng, T, dX, dU), n) for _ in
            range(n_conditions)]


def test_em_never_decreases_the_log_likelihood_across_warm_started_updates(rng):
    dX, dU, T = 5, 2, 40
    system = random_linear_system(dX, dU, rng, noise_std=0.05)
    prior = DynamicsPriorGMM(PriorConfig(max_clusters=6, min_samples_per_cluster=20,
                                         max_samples=6))
    for _ in range(3):
        prior.update(_arm_like_batches(rng, system, 2, 3, T))
    previous = copy.deepcopy(prior.condition_mixtures)
    prior.update(_arm_like_batches(rng, system, 2, 3, T))
    assert len(prior.log_likelihood_history) == 4
    assert prior.n_clusters == 6
    assert {m: g.n_components for m, g in prior.condition_mixtures.items()} == {0: 3, 1: 3}
    for update in prior.log_likelihood_history:
        for history in update.values():
            assert len(history) >= 2
            steps = np.diff(history)
            assert np.all(steps >= -1e-10 * np.abs(history[1:])), steps
    # Warm start: each condition's EM in the last update started from its previous mixture.
    kept = prior.kept_trajectories()
    for m, mixture in previous.items():
        data = transition_points(*kept[m]).reshape(-1, 2 * dX + dU)
        np.testing.assert_allclose(prior.log_likelihood_history[-1][m][0], mixture.score(data),
                                   rtol=1e-10)


def test_mixture_over_conditions_weighs_components_by_their_share(rng):
    dX, dU, T = 3, 1, 30
    system = random_linear_system(dX, dU, rng, noise_std=0.05)
    prior = DynamicsPriorGMM(PriorConfig(min_samples_per_cluster=20, max_clusters=6))
    # Condition 1 has twice the trajectories of condition 0: 2 and 4 of the 6 components.
    prior.update([_samples(rng, system, _exploring_controller(rng, T, dX, dU), n) for n in (4, 8)])
    parts = prior.condition_mixtures
    assert (parts[0].n_components, parts[1].n_components) == (2, 4)
    joint = prior.mixture
    np.testing.assert_allclose(joint.weights_, np.concatenate(
        [parts[0].weights_ / 3, 2 * parts[1].weights_ / 3]))
    np.testing.assert_allclose(joint.means_, np.concatenate([parts[0].means_, parts[1].means_]))
    assert joint.weights_.sum() == pytest.approx(1.0)


def test_prior_keeps_the_last_trajectories_of_each_condition(rng):
    prior = DynamicsPriorGMM(PriorConfig(max_samples=4, min_samples_per_cluster=5))
    T, dX, dU = 6, 2, 1
    for i in range(3):
        batches = [SampleBatch(np.full((3, T, dX), 10 * m + i) + rng.standard_normal((3, T, dX)),
                               rng.standard_normal((3, T, dU))) for m in range(2)]
        prior.update(batches)
    kept = prior.kept_trajectories()
    assert sorted(kept) == [0, 1]
    for m in range(2):
        X, U = kept[m]
        assert X.shape == (4, T, dX) and U.shape == (4, T, dU)
        np.testing.assert_allclose(X.mean(axis=(1, 2)), [10 * m + 1] + [10 * m + 2] * 3,
                                   atol=1.0)
    assert prior.n_points == 2 * 4 * (T - 1)
    with pytest.raises(MismatchError):
        prior.update([SampleBatch(np.zeros((2, T + 1, dX)), np.zeros((2, T + 1, dU)))])


def test_prior_eval_is_the_moment_matched_mixture_under_averaged_posteriors(rng):
    dX, dU, T = 3, 1, 30
    system = random_linear_system(dX, dU, rng, noise_std=0.05)
    prior = DynamicsPriorGMM(PriorConfig(strength=2.0, min_samples_per_cluster=20,
                                         max_clusters=5))
    prior.update(_arm_like_batches(rng, system, 2, 4, T))
    gmm = prior.mixture
    query = transition_points(*(lambda b: (b.X, b.U))(
        _samples(rng, system, _exploring_controller(rng, T, dX, dU), 4)))[:, :3]  # (4, 3, D)
    groups = np.swapaxes(query, 0, 1)  # 3 groups of 4 points
    niw = prior.eval(groups)
    for g, pts in enumerate(groups):
        # Independent reference: scipy densities, normalised per point, averaged over points.
        logp = np.stack([np.log(w) + multivariate_normal(mu, cov).logpdf(pts)
                         for w, mu, cov in zip(gmm.weights_, gmm.means_, gmm.covariances_,
                                               strict=True)], axis=1)
        resp = np.exp(logp - logsumexp(logp, axis=1, keepdims=True)).mean(axis=0)
        mu0 = resp @ gmm.means_
        cov = sum(r * (S + np.outer(mu - mu0, mu - mu0))
                  for r, mu, S in zip(resp, gmm.means_, gmm.covariances_, strict=True))
        np.testing.assert_allclose(niw.mu0[g], mu0, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(niw.Phi[g], 2.0 * cov, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(niw.m, 2.0)
    np.testing.assert_allclose(niw.n0, 2.0)


def test_conditions_fitted_together_equal_one_at_a_time(rng):
    dX, dU, T = 3, 2, 12
    systems = [random_linear_system(dX, dU, rng) for _ in range(3)]
    batches = [_samples(rng, s, _exploring_controller(rng, T, dX, dU), n) for s, n in
               zip(systems, (8, 8, 11), strict=True)]
    prior = DynamicsPriorGMM(PriorConfig(min_samples_per_cluster=20))
    prior.update(batches)
    together = fit_dynamics_batch(batches, prior)
    for b, dyn in zip(batches, together, strict=True):
        alone = fit_dynamics(b, prior)
        for name in ("Fm", "fv", "covar", "x0_mean", "x0_covar"):
            np.testing.assert_allclose(getattr(dyn, name), getattr(alone, name), rtol=1e-10,
                                       atol=1e-12)


def test_posterior_is_the_niw_map_estimate(rng):
    dX, dU, T = 3, 1, 30
    system = random_linear_system(dX, dU, rng, noise_std=0.05)
    prior = DynamicsPriorGMM(PriorConfig(strength=1.5, min_samples_per_cluster=20))
    prior.update([_samples(rng, system, _exploring_controller(rng, T, dX, dU), 6)])
    groups = np.swapaxes(transition_points(
        *(lambda b: (b.X, b.U))(_samples(rng, system, _exploring_controller(rng, T, dX, dU), 4))),
        0, 1)  # (T-1, 4, D)
    mean, sigma = prior.posterior(groups)
    niw = prior.eval(groups)
    n = groups.shape[1]
    for g, pts in enumerate(groups):
        y_bar = pts.mean(axis=0)
        scatter = (pts - y_bar).T @ (pts - y_bar)
        d = y_bar - niw.mu0[g]
        m, n0 = niw.m[g], niw.n0[g]
        expected = (scatter + niw.Phi[g] + n * m / (n + m) * np.outer(d, d)) / (n + n0)
        np.testing.assert_allclose(mean[g], y_bar)
        np.testing.assert_allclose(sigma[g], expected, rtol=1e-9, atol=1e-12)
