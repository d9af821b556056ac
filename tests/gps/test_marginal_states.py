"""States drawn for the S-step follow the closed loop's state distribution (Monte Carlo check)."""

import numpy as np

from mbpl_ros.core.controllers import LinearGaussianController
from mbpl_ros.core.dynamics import LinearGaussianDynamics
from mbpl_ros.gps.algorithm import anchor_to_samples, draw_marginal_states


def test_drawn_states_match_simulated_closed_loop_rollouts():
    rng = np.random.default_rng(0)
    T, dX, dU = 6, 3, 2
    Fm = np.concatenate([np.eye(dX) + 0.1 * rng.normal(size=(T - 1, dX, dX)),
                         0.3 * rng.normal(size=(T - 1, dX, dU))], axis=-1)
    fv = 0.1 * rng.normal(size=(T - 1, dX))
    w_cov = np.stack([np.diag(rng.uniform(0.01, 0.05, dX))] * (T - 1))
    x0_mean, x0_cov = rng.normal(size=dX), np.diag([0.02, 0.0, 0.01])  # one exact coordinate
    dyn = LinearGaussianDynamics(Fm, fv, w_cov, x0_mean, x0_cov)
    K = 0.5 * rng.normal(size=(T, dU, dX))
    k = rng.normal(size=(T, dU))
    u_cov = np.stack([np.diag([0.04, 0.09])] * T)
    ctrl = LinearGaussianController(K, k, u_cov)

    # Independent reference: simulate the closed loop step by step.
    n = 200_000
    x = x0_mean + rng.multivariate_normal(np.zeros(dX), x0_cov, size=n)
    simulated = [x]
    for t in range(T - 1):
        u = x @ K[t].T + k[t] + rng.multivariate_normal(np.zeros(dU), u_cov[t], size=n)
        x = np.concatenate([x, u], axis=1) @ Fm[t].T + fv[t] + \
            rng.multivariate_normal(np.zeros(dX), w_cov[t], size=n)
        simulated.append(x)
    (drawn,) = draw_marginal_states([ctrl], [dyn], n, np.random.default_rng(1))
    assert drawn.shape == (n, T, dX)
    for t in range(T):
        np.testing.assert_allclose(drawn[:, t].mean(0), simulated[t].mean(0), atol=0.02)
        np.testing.assert_allclose(np.cov(drawn[:, t].T), np.cov(simulated[t].T), atol=0.02)
    np.testing.assert_allclose(drawn[:, 0, 1], x0_mean[1], atol=1e-9)  # zero variance stays


def test_anchoring_recentres_on_the_samples_and_only_shrinks_the_spread():
    rng = np.random.default_rng(2)
    X = rng.normal(loc=1.0, scale=0.1, size=(5, 4, 3))  # real samples
    wide = rng.normal(loc=-3.0, scale=10.0, size=(500, 4, 3))  # a model far off
    narrow = X.mean(0) + rng.normal(scale=0.001, size=(500, 4, 3))
    out_wide, out_narrow = anchor_to_samples(wide, X), anchor_to_samples(narrow, X)
    np.testing.assert_allclose(out_wide.mean(0), X.mean(0), atol=1e-12)
    sample_var = X.var(0).sum(-1)
    np.testing.assert_allclose(out_wide.var(0).sum(-1), sample_var, rtol=1e-9)
    np.testing.assert_allclose(out_narrow.var(0).sum(-1), narrow.var(0).sum(-1), rtol=1e-9)
    # The model's correlation structure survives the scaling.
    np.testing.assert_allclose(np.corrcoef(out_wide[:, 2].T), np.corrcoef(wide[:, 2].T),
                               atol=1e-9)
