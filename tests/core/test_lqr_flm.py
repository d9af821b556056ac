"""LQR-FLM end to end on a known linear system, checkpoints and input validation."""

from __future__ import annotations

import numpy as np
import pytest

from mbpl_ros.core.controllers import LinearGaussianController
from mbpl_ros.core.costs import ActionCost, StateTargetCost
from mbpl_ros.core.errors import (
    CheckpointError,
    MismatchError,
    NonFiniteError,
    NotEnoughSamplesError,
)
from mbpl_ros.core.lqr import backward_pass, expected_cost, forward_pass
from mbpl_ros.core.lqr_flm import LQRFLM, LQRFLMConfig
from mbpl_ros.core.samples import SampleBatch
from mbpl_ros.core.state import StateLayout
from mbpl_ros.core.synthetic import LinearSystem, collect, random_linear_system
from mbpl_ros.core.trajopt import quadratic_cost_from_samples

dX, dU, T = 4, 2, 20
TARGET = np.array([1.0, -1.0, 0.5, 0.0])


def _cost():
    return StateTargetCost(slice(0, dX), target=TARGET, l2=1.0) + ActionCost(0.1)


def _zero_controller():
    return LinearGaussianController(np.zeros((T, dU, dX)), np.zeros((T, dU)),
                                    np.tile(np.eye(dU), (T, 1, 1)))


def _expected_true_cost(system: LinearSystem, K, k, covar, x0):
    """Exact expected cost of a linear controller on the true system (quadratic cost)."""
    dyn = system.as_dynamics(T, x0, 1e-6 * np.eye(dX))
    mu, sigma = forward_pass(K[None], k[None], covar[None], dyn.Fm[None], dyn.fv[None],
                             dyn.covar[None], dyn.x0_mean[None], dyn.x0_covar[None])
    Z = np.zeros((1, T, dX + dU))
    quad, _ = quadratic_cost_from_samples(_cost(), Z[:, :, :dX], Z[:, :, dX:])
    return expected_cost(quad.cc[None], quad.cv[None], quad.Cm[None], mu, sigma).sum()


def _lqr_optimum(system: LinearSystem, x0):
    """Expected cost of the optimal (deterministic) LQR controller on the true system."""
    dyn = system.as_dynamics(T, x0, 1e-6 * np.eye(dX))
    Z = np.zeros((1, T, dX + dU))
    quad, _ = quadratic_cost_from_samples(_cost(), Z[:, :, :dX], Z[:, :, dX:])
    res = backward_pass(dyn.Fm[None], dyn.fv[None], quad.Cm[None], quad.cv[None])
    return _expected_true_cost(system, res.K[0], res.k[0], np.zeros((T, dU, dU)), x0)


def test_lqr_flm_approaches_the_lqr_optimum_on_a_linear_system():
    rng = np.random.default_rng(3)
    system = random_linear_system(dX, dU, rng, spectral_radius=0.9, noise_std=0.02)
    x0s = [np.zeros(dX), np.array([0.5, 0.5, -0.5, 0.0])]
    algo = LQRFLM(LQRFLMConfig(), dX, dU, T, 0.05, [_zero_controller() for _ in x0s])
    cost = _cost()

    def true_costs():
        return [_expected_true_cost(system, c.K, c.k, c.covar, x0)
                for c, x0 in zip(algo.controllers, x0s, strict=True)]

    optimum = np.array([_lqr_optimum(system, x0) for x0 in x0s])
    history = [true_costs()]
    for _ in range(12):
        # 5 trials per condition (< dX + dU + 1 regressors: the prior is needed).
        batches = [collect(system, c, x0, 5, rng) for c, x0 in zip(algo.controllers, x0s,
                                                                     strict=True)]
        report = algo.iteration(batches, cost)
        assert not report.warnings, report.warnings
        history.append(true_costs())
    history = np.array(history)
    gap = history - optimum
    assert np.all(gap[-1] < 0.002 * gap[0]), (history, optimum)
    assert np.all(gap[-1] >= -1e-9)  # nothing beats LQR on the true system
    assert np.all(history[4] < history[0])
    assert report.iteration == 11 and algo.iterations_done == 12
    assert np.all(np.isfinite(report.predicted_improvement))


def _run(algo, system, x0s, rng, iterations):
    reports = []
    for _ in range(iterations):
        batches = [collect(system, c, x0, 5, rng) for c, x0 in zip(algo.controllers, x0s,
                                                                     strict=True)]
        reports.append(algo.iteration(batches, _cost()))
    return reports


def test_checkpoint_round_trip_continues_identically(tmp_path):
    rng = np.random.default_rng(4)
    system = random_linear_system(dX, dU, rng)
    x0s = [np.zeros(dX), np.ones(dX)]
    algo = LQRFLM(LQRFLMConfig(kl_step=0.5), dX, dU, T, 0.05, [_zero_controller()] * 2)
    _run(algo, system, x0s, rng, 2)
    path = tmp_path / "lqr_flm.npz"
    algo.save(path)
    loaded = LQRFLM.load(path)
    assert loaded.config == algo.config and loaded.iterations_done == 2
    np.testing.assert_array_equal(loaded.eta, algo.eta)
    np.testing.assert_array_equal(loaded.step_mult, algo.step_mult)
    for a, b in zip(algo.controllers, loaded.controllers, strict=True):
        np.testing.assert_array_equal(a.K, b.K)
        np.testing.assert_array_equal(a.covar, b.covar)
    seed = np.random.default_rng(99)
    batches = [collect(system, c, x0, 5, seed) for c, x0 in zip(algo.controllers, x0s,
                                                                  strict=True)]
    ra = algo.iteration(batches, _cost())
    rb = loaded.iteration(batches, _cost())
    assert ra.em_iterations == rb.em_iterations
    np.testing.assert_allclose(ra.step_mult, rb.step_mult, rtol=1e-12)
    for a, b in zip(algo.controllers, loaded.controllers, strict=True):
        np.testing.assert_allclose(a.K, b.K, rtol=1e-9, atol=1e-12)


def test_bad_checkpoints_are_refused(tmp_path):
    layout = StateLayout(n_joints=1, n_points=0)  # dX = 2, dU = 1
    ctrl = LinearGaussianController(np.zeros((3, 1, 2)), np.zeros((3, 1)), np.ones((3, 1, 1)))
    algo = LQRFLM(LQRFLMConfig(), layout, 1, 3, 0.05, [ctrl])
    good = tmp_path / "good.npz"
    algo.save(good)
    with pytest.raises(MismatchError, match="state layout mismatch"):
        LQRFLM.load(good, layout=StateLayout(n_joints=1, n_points=1))
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        LQRFLM.load(garbage)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(CheckpointError):
        LQRFLM.load(truncated)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, weights=np.zeros(3))
    with pytest.raises(CheckpointError, match="expected format"):
        LQRFLM.load(foreign)
    partial = tmp_path / "partial.npz"
    with np.load(good) as f:
        arrays = {k: f[k] for k in f.files if k != "covar"}
    np.savez(partial, **arrays)
    with pytest.raises(CheckpointError, match="missing entry 'covar'"):
        LQRFLM.load(partial)
    with pytest.raises(CheckpointError, match="cannot read"):
        LQRFLM.load(tmp_path / "missing.npz")


def test_iteration_refuses_bad_input():
    algo = LQRFLM(LQRFLMConfig(), dX, dU, T, 0.05, [_zero_controller()] * 2)
    good = SampleBatch(np.zeros((3, T, dX)), np.zeros((3, T, dU)))
    with pytest.raises(MismatchError, match="expected 2 sample batches"):
        algo.iteration([good], _cost())
    with pytest.raises(MismatchError, match="condition 1"):
        algo.iteration([good, SampleBatch(np.zeros((3, T, dX + 1)), np.zeros((3, T, dU)))],
                       _cost())
    with pytest.raises(NotEnoughSamplesError):
        one = SampleBatch(np.zeros((1, T, dX)), np.zeros((1, T, dU)))
        LQRFLM(LQRFLMConfig(use_prior=False), dX, dU, T, 0.05, [_zero_controller()]).iteration(
            [one], _cost())
    X = np.zeros((3, T, dX))
    X[1, 7, 2] = np.inf
    with pytest.raises(NonFiniteError, match="sample 1, step 7"):
        SampleBatch(X, np.zeros((3, T, dU)))
    with pytest.raises(MismatchError, match="controller 0"):
        LQRFLM(LQRFLMConfig(), dX + 1, dU, T, 0.05, [_zero_controller()])


def test_one_seed_gives_one_run():
    def run(seed):
        rng = np.random.default_rng(seed)
        system = random_linear_system(dX, dU, np.random.default_rng(0))
        x0s = [np.zeros(dX), np.ones(dX)]
        algo = LQRFLM(LQRFLMConfig(), dX, dU, T, 0.05, [_zero_controller()] * 2)
        reports = []
        for _ in range(3):
            batches = [collect(system, c, x0, 5, rng, smooth_sigma=2.0)
                       for c, x0 in zip(algo.controllers, x0s, strict=True)]
            reports.append(algo.iteration(batches, _cost()))
        return algo, reports

    (a, ra), (b, rb), (c, _) = run(7), run(7), run(8)
    for x, y in zip(a.controllers, b.controllers, strict=True):
        np.testing.assert_array_equal(x.K, y.K)
        np.testing.assert_array_equal(x.k, y.k)
    assert [r.mean_cost for r in ra] == [r.mean_cost for r in rb]
    assert not np.array_equal(a.controllers[0].k, c.controllers[0].k)
