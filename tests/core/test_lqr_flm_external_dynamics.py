"""LQRFLM.iteration with dynamics fitted elsewhere (the dynamics_fitter node's path)."""

from __future__ import annotations

import numpy as np
import pytest

from mbpl_ros.core.controllers import LinearGaussianController
from mbpl_ros.core.costs import ActionCost, StateTargetCost
from mbpl_ros.core.dynamics import fit_dynamics_batch
from mbpl_ros.core.errors import MismatchError
from mbpl_ros.core.lqr_flm import LQRFLM, LQRFLMConfig
from mbpl_ros.core.synthetic import collect, random_linear_system

dX, dU, T = 4, 2, 15


def _controller():
    return LinearGaussianController(np.zeros((T, dU, dX)), np.zeros((T, dU)),
                                    np.tile(np.eye(dU), (T, 1, 1)))


def test_given_dynamics_give_the_same_update_as_the_internal_fit():
    rng = np.random.default_rng(0)
    system = random_linear_system(dX, dU, rng, spectral_radius=0.9, noise_std=0.02)
    cost = StateTargetCost(slice(0, dX), target=np.ones(dX), l2=1.0) + ActionCost(0.1)
    config = LQRFLMConfig(use_prior=False)
    internal = LQRFLM(config, dX, dU, T, 0.05, [_controller()])
    external = LQRFLM(config, dX, dU, T, 0.05, [_controller()])
    batches = [collect(system, _controller(), np.zeros(dX), 8, rng)]
    fitted = fit_dynamics_batch(batches, None, config.dynamics_regularization,
                                config.initial_state_var)
    a = internal.iteration(batches, cost)
    b = external.iteration(batches, cost, dynamics=fitted)
    assert b.fit_s == pytest.approx(0.0, abs=1e-3)
    np.testing.assert_allclose(external.controllers[0].K, internal.controllers[0].K)
    np.testing.assert_allclose(external.controllers[0].k, internal.controllers[0].k)
    assert a.kl == pytest.approx(b.kl)


def test_dynamics_of_the_wrong_shape_are_refused():
    rng = np.random.default_rng(1)
    system = random_linear_system(dX, dU, rng, spectral_radius=0.9, noise_std=0.02)
    algo = LQRFLM(LQRFLMConfig(use_prior=False), dX, dU, T, 0.05, [_controller()])
    batches = [collect(system, _controller(), np.zeros(dX), 6, rng)]
    short = collect(system, LinearGaussianController(np.zeros((T - 1, dU, dX)),
                                                     np.zeros((T - 1, dU)),
                                                     np.tile(np.eye(dU), (T - 1, 1, 1))),
                    np.zeros(dX), 8, rng)
    wrong = fit_dynamics_batch([short], None, 1e-6, 1e-6)
    with pytest.raises(MismatchError, match="expected 1 dynamics"):
        algo.iteration(batches, ActionCost(0.1), dynamics=wrong)
