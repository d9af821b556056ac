"""LQR primitives against independent references: the discrete algebraic Riccati equation and
Monte Carlo estimates of marginals, expected cost and trajectory KL."""

from __future__ import annotations

import numpy as np
import scipy.linalg
from core_helpers import random_controller, random_spd

from mbpl_ros.core.lqr import backward_pass, conditional_kl, expected_cost, forward_pass
from mbpl_ros.core.synthetic import random_linear_system


def test_backward_pass_converges_to_the_riccati_solution(rng):
    dX, dU, T = 4, 2, 400
    A = rng.standard_normal((dX, dX)) * 0.6  # not necessarily stable
    B = rng.standard_normal((dX, dU))
    Q = random_spd(rng, dX)
    R = random_spd(rng, dU)
    Fm = np.broadcast_to(np.hstack([A, B]), (1, T - 1, dX, dX + dU))
    Cm = np.broadcast_to(scipy.linalg.block_diag(Q, R), (1, T, dX + dU, dX + dU))
    result = backward_pass(Fm, np.zeros((1, T - 1, dX)), Cm, np.zeros((1, T, dX + dU)))
    assert not result.failed.any()
    P = scipy.linalg.solve_discrete_are(A, B, Q, R)
    K_are = -np.linalg.solve(R + B.T @ P @ B, B.T @ P @ A)
    np.testing.assert_allclose(result.Vxx[0], P, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(result.K[0, 0], K_are, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(result.k[0, 0], 0.0, atol=1e-12)
    np.testing.assert_allclose(result.Quu[0, 0], R + B.T @ P @ B, rtol=1e-8)


def test_backward_pass_flags_only_the_condition_with_an_indefinite_q_uu(rng):
    dX, dU, T = 3, 2, 5
    Fm = np.broadcast_to(rng.standard_normal((dX, dX + dU)) * 0.3, (2, T - 1, dX, dX + dU))
    Cm = np.broadcast_to(np.eye(dX + dU), (2, T, dX + dU, dX + dU)).copy()
    Cm[1, 2, dX:, dX:] = -np.eye(dU)
    result = backward_pass(Fm, np.zeros((2, T - 1, dX)), Cm, np.zeros((2, T, dX + dU)))
    assert result.failed.tolist() == [False, True]
    single = backward_pass(Fm[:1], np.zeros((1, T - 1, dX)), Cm[:1], np.zeros((1, T, dX + dU)))
    np.testing.assert_allclose(result.K[0], single.K[0])


def _sample_trajectories(rng, system, ctrl, x0_mean, x0_covar, n):
    T = ctrl.T
    X = np.empty((n, T, system.dX))
    U = np.empty((n, T, system.dU))
    x = rng.multivariate_normal(x0_mean, x0_covar, size=n)
    for t in range(T):
        X[:, t] = x
        U[:, t] = x @ ctrl.K[t].T + ctrl.k[t] + rng.standard_normal((n, ctrl.dU)) @ ctrl.chol[t].T
        x = x @ system.A.T + U[:, t] @ system.B.T + system.c + \
            rng.standard_normal((n, system.G.shape[1])) @ system.G.T
    return X, U


def _stacked(ctrl):
    return ctrl.K[None], ctrl.k[None], ctrl.covar[None]


def test_forward_pass_and_expected_cost_match_monte_carlo(rng):
    dX, dU, T, n = 3, 2, 6, 100_000
    system = random_linear_system(dX, dU, rng, noise_std=0.1)
    ctrl = random_controller(rng, T, dX, dU)
    x0_mean, x0_covar = rng.standard_normal(dX), random_spd(rng, dX, 0.1)
    dyn = system.as_dynamics(T, x0_mean, x0_covar)
    mu, sigma = forward_pass(*_stacked(ctrl), dyn.Fm[None], dyn.fv[None], dyn.covar[None],
                             x0_mean[None], x0_covar[None])
    X, U = _sample_trajectories(rng, system, ctrl, x0_mean, x0_covar, n)
    Z = np.concatenate([X, U], axis=-1)
    se = np.sqrt(np.einsum("tii->ti", sigma[0]) / n)
    assert np.all(np.abs(Z.mean(axis=0) - mu[0]) < 5 * se)
    emp_cov = np.einsum("nti,ntj->tij", Z - Z.mean(0), Z - Z.mean(0)) / n
    np.testing.assert_allclose(emp_cov, sigma[0], atol=0.05 * np.abs(sigma[0]).max())

    Cm = np.stack([random_spd(rng, dX + dU) for _ in range(T)])
    cv = rng.standard_normal((T, dX + dU))
    cc = rng.standard_normal(T)
    per_sample = cc + np.einsum("ti,nti->nt", cv, Z) + 0.5 * np.einsum("nti,tij,ntj->nt", Z, Cm, Z)
    exact = expected_cost(cc[None], cv[None], Cm[None], mu, sigma)[0]
    totals = per_sample.sum(axis=1)
    assert abs(totals.mean() - exact.sum()) < 5 * totals.std() / np.sqrt(n)


def test_closed_form_trajectory_kl_matches_monte_carlo(rng):
    dX, dU, T, n = 3, 2, 8, 200_000
    system = random_linear_system(dX, dU, rng, noise_std=0.1)
    p = random_controller(rng, T, dX, dU)
    q = random_controller(rng, T, dX, dU)
    x0_mean, x0_covar = rng.standard_normal(dX), random_spd(rng, dX, 0.1)
    dyn = system.as_dynamics(T, x0_mean, x0_covar)
    mu, sigma = forward_pass(*_stacked(p), dyn.Fm[None], dyn.fv[None], dyn.covar[None],
                             x0_mean[None], x0_covar[None])
    kl = conditional_kl(mu[..., :dX], sigma[..., :dX, :dX], *_stacked(p), q.K[None], q.k[None],
                        q.precision[None])[0].sum()

    X, U = _sample_trajectories(rng, system, p, x0_mean, x0_covar, n)

    def log_policy(ctrl):
        r = U - np.einsum("tij,ntj->nti", ctrl.K, X) - ctrl.k
        mahal = np.einsum("nti,tij,ntj->nt", r, ctrl.precision, r)
        logdet = np.linalg.slogdet(ctrl.covar)[1]
        return (-0.5 * (mahal + logdet + dU * np.log(2 * np.pi))).sum(axis=1)

    ratio = log_policy(p) - log_policy(q)  # the dynamics terms cancel
    estimate, se = ratio.mean(), ratio.std() / np.sqrt(n)
    assert kl > 1.0
    assert abs(kl - estimate) < 4 * se, (kl, estimate, se)


def test_kl_of_a_controller_with_itself_is_zero(rng):
    dX, dU, T = 3, 2, 4
    p = random_controller(rng, T, dX, dU)
    mu = rng.standard_normal((1, T, dX))
    sigma = np.stack([random_spd(rng, dX) for _ in range(T)])[None]
    kl = conditional_kl(mu, sigma, *_stacked(p), p.K[None], p.k[None], p.precision[None])
    np.testing.assert_allclose(kl, 0.0, atol=1e-10)
