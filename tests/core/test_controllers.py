"""Linear-Gaussian controllers, their initialisations and exploration noise."""

from __future__ import annotations

import numpy as np
import pytest
from core_helpers import random_controller

from mbpl_ros.core.controllers import (
    LinearGaussianController,
    guess_joint_dynamics,
    init_lqr,
    init_pd,
    smoothed_noise,
)
from mbpl_ros.core.errors import NonFiniteError, ShapeError


def test_folded_noise_reproduces_noisy_actions(rng):
    ctrl = random_controller(rng, T=5, dX=4, dU=2)
    noise = rng.standard_normal((5, 2))
    folded = ctrl.fold_noise(noise)
    x = rng.standard_normal(4)
    for t in range(5):
        np.testing.assert_allclose(folded.act(t, x), ctrl.act(t, x, noise[t]))
        np.testing.assert_allclose(ctrl.act(t, x, noise[t]),
                                   ctrl.K[t] @ x + ctrl.k[t] + ctrl.chol[t] @ noise[t])
    np.testing.assert_allclose(folded.covar, ctrl.covar)


def test_derived_matrices(rng):
    ctrl = random_controller(rng, T=3, dX=4, dU=3)
    np.testing.assert_allclose(ctrl.chol @ np.swapaxes(ctrl.chol, 1, 2), ctrl.covar)
    np.testing.assert_allclose(ctrl.precision @ ctrl.covar, np.broadcast_to(np.eye(3), (3, 3, 3)),
                               atol=1e-10)
    assert np.allclose(np.triu(ctrl.chol[0], 1), 0)
    again = LinearGaussianController.from_precision(ctrl.K, ctrl.k, ctrl.precision)
    np.testing.assert_allclose(again.covar, ctrl.covar, atol=1e-12)


def test_bad_controllers_are_refused():
    T, dU, dX = 3, 2, 4
    good = dict(K=np.zeros((T, dU, dX)), k=np.zeros((T, dU)), covar=np.tile(np.eye(dU), (T, 1, 1)))
    with pytest.raises(ShapeError, match=r"expected shape \(3, 2\)"):
        LinearGaussianController(**{**good, "k": np.zeros((T, dU + 1))})
    K = good["K"].copy()
    K[1, 0, 0] = np.nan
    with pytest.raises(NonFiniteError, match="step 1"):
        LinearGaussianController(**{**good, "K": K})
    covar = good["covar"].copy()
    covar[2] = -np.eye(dU)
    with pytest.raises(ValueError, match="positive definite"):
        LinearGaussianController(**{**good, "covar": covar})
    ctrl = LinearGaussianController(**good)
    with pytest.raises(ShapeError):
        ctrl.act(0, np.zeros(dX + 1))
    with pytest.raises(IndexError):
        ctrl.act(T, np.zeros(dX))


def test_smoothed_noise_has_unit_variance_and_is_correlated_in_time():
    rng = np.random.default_rng(0)
    draws = np.stack([smoothed_noise(rng, 40, 3, smooth_sigma=2.0) for _ in range(4000)])
    var = draws.var(axis=0)  # per step and action, over draws
    # Each entry is N(0, 1): the per-(t, i) variances scatter around 1 with sd ~ sqrt(2/4000).
    assert abs(var.mean() - 1.0) < 0.01
    assert np.all(np.abs(var - 1.0) < 5 * np.sqrt(2 / 4000))  # boundaries included
    lag1 = np.mean(draws[:, 1:] * draws[:, :-1])
    assert lag1 > 0.8  # a 2-step Gaussian kernel correlates neighbours at exp(-1/16) ~ 0.94
    white = np.stack([smoothed_noise(rng, 40, 3, smooth_sigma=0.0) for _ in range(2000)])
    assert abs(np.mean(white[:, 1:] * white[:, :-1])) < 0.01


def test_smoothed_noise_is_reproducible():
    a = smoothed_noise(np.random.default_rng(5), 10, 2, 1.0)
    b = smoothed_noise(np.random.default_rng(5), 10, 2, 1.0)
    np.testing.assert_array_equal(a, b)


def test_init_lqr_holds_the_initial_joint_state_on_its_model():
    dX, dU, dt, T = 10, 3, 0.05, 60
    x0 = np.zeros(dX)
    x0[:dU] = [0.3, -0.2, 0.5]
    ctrl = init_lqr(x0, dX, dU, dt, T, init_var=0.5, final_weight=10.0)
    Fm, fv = guess_joint_dynamics(dX, dU, dt, np.ones(dU), np.zeros(dU))
    # Start displaced: the mean controller pulls the joints back towards x0.
    x = x0.copy()
    x[:dU] += 0.1
    for t in range(T - 1):
        x = Fm @ np.concatenate([x, ctrl.act(t, x)]) + fv
    assert np.abs(x[:dU] - x0[:dU]).max() < 0.05
    # At x0 itself (at rest) the action is ~0: holding needs no torque on this model.
    assert np.abs(ctrl.act(0, x0)).max() < 1e-9
    # Noise covariance is init_var I shrunk by the model curvature, never larger; the last step's
    # cost (actions included) is final_weight times heavier.
    eig = np.linalg.eigvalsh(ctrl.covar)
    assert eig[:-1].max() <= 0.5 + 1e-12 and eig[:-1].min() > 0.25
    np.testing.assert_allclose(eig[-1], 0.5 / 10.0)


def test_init_pd_gains():
    dX, dU, T = 8, 2, 4
    x0 = np.zeros(dX)
    x0[:dU] = [0.3, -0.2]
    ctrl = init_pd(x0, dX, dU, T, pos_gains=[10.0, 20.0], vel_gains=2.0, init_var=0.3,
                   feedforward=[1.0, -1.0])
    x = x0.copy()
    x[0] += 0.1
    x[dU + 1] = 0.5
    np.testing.assert_allclose(ctrl.act(2, x), [-10 * 0.1 + 1.0, -2.0 * 0.5 - 1.0])
    np.testing.assert_allclose(ctrl.covar, np.tile(0.3 * np.eye(dU), (T, 1, 1)))
