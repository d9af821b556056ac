"""States drawn for the S-step follow the closed loop's state distribution (Monte Carlo check)."""

import numpy as np

from mbpl_ros.core.controllers import LinearGaussianController
from mbpl_ros.core.dynamics import LinearGaussianDynamics
from mbpl_ros.gps.algorithm import draw_marginal_states


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
