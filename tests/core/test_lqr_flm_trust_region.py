"""Where LQR-FLM measures its trust region: the fitted model's marginals, or the sample states
where the model's closed loop diverges (``LQRFLMConfig.trust_region_states``)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from mbpl_ros.core.controllers import LinearGaussianController
from mbpl_ros.core.costs import ActionCost, StateTargetCost
from mbpl_ros.core.dynamics import LinearGaussianDynamics, fit_dynamics_batch
from mbpl_ros.core.lqr_flm import LQRFLM, LQRFLMConfig
from mbpl_ros.core.synthetic import collect, random_linear_system
from mbpl_ros.core.trajopt import (
    StackedControllers,
    StackedDynamics,
    StateMoments,
    closed_loop_spread,
    trajectory_kl,
)

dX, dU, T = 4, 2, 15
COST = StateTargetCost(slice(0, dX), target=np.ones(dX), l2=1.0) + ActionCost(0.1)


def _controller():
    return LinearGaussianController(np.zeros((T, dU, dX)), np.zeros((T, dU)),
                                    np.tile(np.eye(dU), (T, 1, 1)))


def _config(mode: str) -> LQRFLMConfig:
    return LQRFLMConfig(use_prior=False, trust_region_states=mode)


def _diverging(dynamics: LinearGaussianDynamics) -> LinearGaussianDynamics:
    """The fit with its state transition replaced by 2x growth a step (what contact can do to a
    local linear fit): the closed loop of any small-gain controller then spreads ~1e8 wide."""
    Fm = dynamics.Fm.copy()
    Fm[:, :, :dX] = 2.0 * np.eye(dX)
    return dataclasses.replace(dynamics, Fm=Fm)


def test_auto_equals_model_where_the_model_is_sane():
    rng = np.random.default_rng(3)
    system = random_linear_system(dX, dU, rng, spectral_radius=0.9, noise_std=0.02)
    model, auto = LQRFLM(_config("model"), dX, dU, T, 0.05, [_controller()]), \
        LQRFLM(_config("auto"), dX, dU, T, 0.05, [_controller()])
    for _ in range(3):
        batch = collect(system, model.controllers[0], np.zeros(dX), 8, rng)
        a = model.iteration([batch], COST)
        b = auto.iteration([batch], COST)
        np.testing.assert_array_equal(auto.controllers[0].K, model.controllers[0].K)
        assert b.kl == a.kl and b.step_mult == a.step_mult


@pytest.mark.parametrize("mode", ["model", "auto"])
def test_auto_measures_the_kl_at_the_samples_where_the_model_diverges(mode):
    rng = np.random.default_rng(4)
    system = random_linear_system(dX, dU, rng, spectral_radius=0.9, noise_std=0.02)
    algo = LQRFLM(_config(mode), dX, dU, T, 0.05, [_controller()])
    step_mults = []
    for _ in range(3):
        old = StackedControllers.of(algo.controllers)
        batch = collect(system, algo.controllers[0], np.zeros(dX), 8, rng)
        dynamics = _diverging(fit_dynamics_batch([batch], None, 1e-6, 1e-6)[0])
        fitted = StackedDynamics.of([dynamics])
        assert closed_loop_spread(old, fitted)[0] > 100 * StateMoments.of_samples(
            [batch]).spread()[0]
        report = algo.iteration([batch], COST, dynamics=[dynamics])
        new = StackedControllers.of(algo.controllers)
        at_samples = trajectory_kl(new, old, fitted, StateMoments.of_samples([batch]))[0]
        in_model = trajectory_kl(new, old, fitted)[0]
        assert report.kl[0] == pytest.approx(at_samples if mode == "auto" else in_model,
                                             rel=1e-9)
        assert report.kl[0] == pytest.approx(report.kl_target[0], rel=0.1)
        step_mults.append(report.step_mult[0])
    # The cost estimates behind the step adaptation are meaningless there: auto holds it.
    assert (step_mults == [1.0, 1.0, 1.0]) == (mode == "auto"), step_mults
