"""Linearisation of the global policy around samples, with a GMM policy prior.

For MDGPS and BADMM the trajectory optimiser needs pi_theta as a time-varying linear-Gaussian
controller near the samples of each condition: pi_hat_t(u | x) = N(K_t x + k_t, S_t). At every
step t the joint Gaussian of y = [x_t; mu_theta(o_t)] over the N samples is estimated (maximum a
posteriori under a Normal-inverse-Wishart prior) and conditioned on x_t, exactly like the
dynamics fit of :mod:`mbpl_ros.core.dynamics`; S_t adds the policy's own covariance.

The prior (:class:`PolicyPriorGMM`) is the analogue of the GMM dynamics prior: a Gaussian mixture
fitted by EM over the points [x; mu_theta(o)] of the recent samples of all conditions; for one
step's N points, their averaged posterior component weights moment-match the mixture into a NIW
prior (mean mu0, scatter Phi = strength * covariance, pseudo-counts m = n0 = strength). It lets
N < dX samples per step give a well-posed regression.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

from mbpl_ros.core.controllers import LinearGaussianController
from mbpl_ros.core.errors import NotEnoughSamplesError, ShapeError
from mbpl_ros.core.prior import NIWPrior


@dataclass(frozen=True)
class PolicyPriorConfig:
    """Settings of :class:`PolicyPriorGMM`."""

    max_clusters: int = 20
    """Components at most."""
    min_samples_per_cluster: int = 40
    """Components = clip(points // this, 2, max_clusters)."""
    max_samples: int = 20
    """Trajectories kept per condition (the most recent)."""
    strength: float = 1.0
    """Pseudo-count of the prior (as many transitions' worth of evidence)."""
    max_em_iterations: int = 100
    covariance_regularization: float = 1e-6
    seed: int = 0
    """Seed of scikit-learn's initialisation."""


class PolicyPriorGMM:
    """GMM over [x; mu_theta(o)] points of recent samples; NIW prior per group of points."""

    def __init__(self, config: PolicyPriorConfig | None = None) -> None:
        self.config = config or PolicyPriorConfig()
        self._kept: dict[int, np.ndarray] = {}
        self._gmm: GaussianMixture | None = None

    @property
    def fitted(self) -> bool:
        return self._gmm is not None

    @property
    def n_clusters(self) -> int:
        return 0 if self._gmm is None else self._gmm.n_components

    def update(self, X: list[np.ndarray], pol_mu: list[np.ndarray]) -> None:
        """Add the samples of each condition m (X[m] (N, T, dX), pol_mu[m] (N, T, dU)), refit.

        Older policy outputs of kept samples are replaced, since the policy changed: the caller
        passes the current policy's outputs; kept trajectories are only the states.
        """
        cfg = self.config
        for m, (Xm, Pm) in enumerate(zip(X, pol_mu, strict=True)):
            pts = np.concatenate([Xm, Pm], axis=-1)
            if m in self._kept and self._kept[m].shape[1:] == pts.shape[1:]:
                pts = np.concatenate([self._kept[m], pts])[-cfg.max_samples:]
            self._kept[m] = pts[-cfg.max_samples:]
        data = np.concatenate([p.reshape(-1, p.shape[-1]) for p in self._kept.values()])
        k = int(np.clip(data.shape[0] // cfg.min_samples_per_cluster, 2, cfg.max_clusters))
        if data.shape[0] < 2 * k:
            raise NotEnoughSamplesError(f"PolicyPriorGMM: expected at least {2 * k} points, "
                                        f"found {data.shape[0]}")
        gmm = GaussianMixture(k, covariance_type="full",
                              reg_covar=cfg.covariance_regularization,
                              max_iter=cfg.max_em_iterations, random_state=cfg.seed,
                              init_params="k-means++")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            gmm.fit(data)
        self._gmm = gmm

    def refresh(self, X: list[np.ndarray], pol_mu: list[np.ndarray]) -> None:
        """Replace the kept points of each condition by (X, pol_mu) and refit."""
        self._kept = {}
        self.update(X, pol_mu)

    def eval(self, points: np.ndarray) -> NIWPrior:
        """NIW prior per group: points (..., n, D) -> fields with leading shape (...)."""
        if self._gmm is None:
            raise NotEnoughSamplesError("PolicyPriorGMM.eval: no data yet")
        gmm = self._gmm
        D = gmm.means_.shape[1]
        if points.shape[-1] != D:
            raise ShapeError.expected("PolicyPriorGMM.eval: points", f"(..., n, {D})",
                                      points.shape)
        lead, n = points.shape[:-2], points.shape[-2]
        resp = gmm.predict_proba(points.reshape(-1, D)).reshape(-1, n, gmm.n_components)
        w = resp.mean(axis=1)  # (G, K)
        mu0 = w @ gmm.means_
        diff = gmm.means_[None] - mu0[:, None]  # (G, K, D)
        cov = np.einsum("gk,kij->gij", w, gmm.covariances_) + \
            np.einsum("gk,gki,gkj->gij", w, diff, diff)
        s = self.config.strength
        G = mu0.shape[0]
        return NIWPrior(mu0.reshape(*lead, D), (s * cov).reshape(*lead, D, D),
                        np.full(G, s).reshape(lead), np.full(G, s).reshape(lead))


def linearize_policy(X: np.ndarray, pol_mu: np.ndarray, pol_covar: np.ndarray,
                     prior: PolicyPriorGMM | None = None,
                     regularization: float = 1e-6) -> LinearGaussianController:
    """pi_hat_t(u | x) = N(K_t x + k_t, S_t) fitted to the policy's mean actions at the samples.

    Args:
        X: (N, T, dX) sample states.
        pol_mu: (N, T, dU) the policy's mean actions at those states.
        pol_covar: (dU, dU) or (T, dU, dU) the policy's own covariance, added to S_t.
        prior: a fitted :class:`PolicyPriorGMM`, or None (plain ridge regression; needs N > dX
            for a meaningful fit).
        regularization: ridge on the x block of the joint covariance.

    Returns:
        The linear-Gaussian controller pi_hat (T, dU, dX).
    """
    X = np.asarray(X, dtype=float)
    P = np.asarray(pol_mu, dtype=float)
    if X.ndim != 3 or P.shape[:2] != X.shape[:2]:
        raise ShapeError(f"linearize_policy: expected X (N, T, dX) and pol_mu (N, T, dU), found "
                         f"{X.shape} and {P.shape}")
    N, T, dX = X.shape
    dU = P.shape[-1]
    Y = np.swapaxes(np.concatenate([X, P], axis=-1), 0, 1)  # (T, N, D)
    mean = Y.mean(axis=1)
    diff = Y - mean[:, None]
    sigma = np.swapaxes(diff, -1, -2) @ diff / N
    if prior is not None:
        niw = prior.eval(Y)
        d = mean - niw.mu0
        m, n0 = niw.m[:, None, None], niw.n0[:, None, None]
        sigma = (N * sigma + niw.Phi + (N * m / (N + m)) * d[:, :, None] * d[:, None, :]) / (
            N + n0)
    sxx = sigma[:, :dX, :dX] + regularization * np.eye(dX)
    sxu = sigma[:, :dX, dX:]
    K = np.swapaxes(np.linalg.solve(sxx, sxu), -1, -2)  # (T, dU, dX)
    k = mean[:, dX:] - (K @ mean[:, :dX, None])[..., 0]
    S = sigma[:, dX:, dX:] - K @ sxu
    S = 0.5 * (S + np.swapaxes(S, -1, -2))
    covar = np.broadcast_to(np.asarray(pol_covar, dtype=float), (T, dU, dU))
    S = S + covar
    # Round-off can leave the regression residual slightly indefinite: clip its eigenvalues.
    vals, vecs = np.linalg.eigh(S)
    floor = 1e-6 * np.maximum(vals.max(axis=-1, keepdims=True), 1e-12)
    S = (vecs * np.maximum(vals, floor)[..., None, :]) @ np.swapaxes(vecs, -1, -2)
    return LinearGaussianController(K, k, S)
