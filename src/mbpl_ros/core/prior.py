"""GMM prior for the local dynamics fit (Levine, Finn et al. 2016, appendix A.3).

A Gaussian mixture is fitted by EM over transition points y = [x_t; u_t; x_{t+1}] (D = 2 dX + dU)
of recent trajectories. For the regression at one time step, the step's own points give posterior
cluster weights; the mixture moment-matched under those weights is a Normal-inverse-Wishart prior
on the joint Gaussian of y: mean mu0, scatter Phi, and pseudo-counts m (for the mean) and n0 (for
the covariance).

Shared across conditions: one mixture is fitted over the kept trajectories of *all* conditions
(the last ``max_samples`` per condition). Nearby conditions then share local dynamics, a new
condition starts with a useful prior, and one EM costs the same as M per-condition EMs with M
times fewer clusters each. cbfinn/gps kept one prior per condition instead.

EM is scikit-learn's :class:`~sklearn.mixture.GaussianMixture` (full covariances, warm-started
across updates while the number of clusters is unchanged; a fresh mixture starts from contiguous
stretches of time, see :func:`_segment_init`). Its stopping rule is an absolute change of the mean
log-likelihood per point; it is set to ``em_relative_tol`` times the magnitude of the current
log-likelihood, which is the relative rule |dll| < 1e-5 |ll| of the reference. Should EM fail on
a collapsed component, it is restarted with ten times the covariance regularisation (a warning
says so) rather than stopping a training session.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

from .errors import MismatchError, NotEnoughSamplesError, ShapeError
from .samples import SampleBatch


@dataclass(frozen=True)
class PriorConfig:
    """Settings of :class:`DynamicsPriorGMM` (defaults: the cbfinn/gps examples)."""

    max_clusters: int = 20
    """Upper bound on the number of mixture components."""
    min_samples_per_cluster: int = 40
    """Components = clip(points // this, 2, max_clusters)."""
    max_samples: int = 20
    """Trajectories kept per condition (the most recent ones)."""
    strength: float = 1.0
    """Pseudo-count of the prior: it weighs as much as this many observed transitions."""
    max_em_iterations: int = 100
    """EM iterations per update, at most."""
    em_relative_tol: float = 1e-5
    """EM stops when |change of log-likelihood| < this * |log-likelihood|."""
    covariance_regularization: float = 1e-6
    """Added to the diagonal of every component covariance (scikit-learn ``reg_covar``)."""

    def __post_init__(self) -> None:
        if self.max_clusters < 2 or self.min_samples_per_cluster < 1 or self.max_samples < 1:
            raise ValueError(
                "PriorConfig: expected max_clusters >= 2, min_samples_per_cluster >= 1, "
                f"max_samples >= 1, found {self.max_clusters}, {self.min_samples_per_cluster}, "
                f"{self.max_samples}"
            )
        if self.strength <= 0 or self.max_em_iterations < 1 or self.em_relative_tol <= 0:
            raise ValueError(
                "PriorConfig: expected strength > 0, max_em_iterations >= 1, "
                f"em_relative_tol > 0, found {self.strength}, {self.max_em_iterations}, "
                f"{self.em_relative_tol}"
            )


@dataclass(frozen=True)
class NIWPrior:
    """Normal-inverse-Wishart prior on the joint Gaussian of transition points, per group."""

    mu0: np.ndarray
    """Prior mean, (..., D)."""
    Phi: np.ndarray
    """Prior scatter matrix (covariance times n0), (..., D, D)."""
    m: np.ndarray
    """Pseudo-count of the mean, (...)."""
    n0: np.ndarray
    """Pseudo-count of the covariance, (...)."""


def transition_points(X: np.ndarray, U: np.ndarray) -> np.ndarray:
    """Points [x_t; u_t; x_{t+1}] for t = 0..T-2 of trajectories X (N, T, dX), U (N, T, dU).

    Returns:
        (N, T-1, 2 dX + dU).
    """
    return np.concatenate([X[:, :-1], U[:, :-1], X[:, 1:]], axis=-1)


class DynamicsPriorGMM:
    """GMM over transition points of recent trajectories, giving a NIW prior per time step.

    Call :meth:`update` with each iteration's samples (one batch per condition), then
    :meth:`eval` on the points of the regression at hand.
    """

    def __init__(self, config: PriorConfig | None = None) -> None:
        """Args:
        config: settings; the defaults of :class:`PriorConfig` if None.
        """
        self.config = config or PriorConfig()
        self._reg = self.config.covariance_regularization
        self._kept: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._gmm: GaussianMixture | None = None
        self._second_moments: np.ndarray | None = None
        self._center: np.ndarray | None = None
        self.log_likelihood_history: list[np.ndarray] = []
        """Per update, the mean log-likelihood per point before each EM iteration."""
        self.em_iterations = 0
        """EM iterations run by the last update."""
        self.n_points = 0
        """Points the mixture was last fitted on."""

    @property
    def fitted(self) -> bool:
        """Whether :meth:`update` has fitted a mixture."""
        return self._gmm is not None

    @property
    def mixture(self) -> GaussianMixture | None:
        """The fitted scikit-learn mixture (None before the first update); do not modify it."""
        return self._gmm

    @property
    def n_clusters(self) -> int:
        """Components of the current mixture (0 before the first update)."""
        return 0 if self._gmm is None else self._gmm.n_components

    def kept_trajectories(self) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """Kept (X, U) per condition index: (n, T, dX), (n, T, dU)."""
        return dict(self._kept)

    def update(self, batches: Sequence[SampleBatch]) -> None:
        """Add the samples of this iteration (``batches[m]`` of condition m) and refit by EM."""
        if not batches:
            raise NotEnoughSamplesError("DynamicsPriorGMM.update: expected batches, found none")
        cap = self.config.max_samples
        for m, batch in enumerate(batches):
            if m in self._kept:
                X0, U0 = self._kept[m]
                batch.check_dims(X0.shape[1], X0.shape[2], U0.shape[2], f"condition {m}")
                X = np.concatenate([X0, batch.X])[-cap:]
                U = np.concatenate([U0, batch.U])[-cap:]
            else:
                X, U = batch.X[-cap:], batch.U[-cap:]
            self._kept[m] = (X, U)
        dims = {(X.shape[1], X.shape[2], U.shape[2]) for X, U in self._kept.values()}
        if len(dims) != 1:
            raise MismatchError(
                f"DynamicsPriorGMM.update: expected one (T, dX, dU) for all conditions, "
                f"found {sorted(dims)}"
            )
        self._fit([transition_points(X, U) for X, U in self._kept.values()])

    def _fit(self, groups: list[np.ndarray]) -> None:
        """EM on the transition points of all conditions; ``groups[m]`` is (n, T-1, D)."""
        cfg = self.config
        data = np.concatenate([g.reshape(-1, g.shape[-1]) for g in groups])
        n_points = data.shape[0]
        n_clusters = int(np.clip(n_points // cfg.min_samples_per_cluster, 2, cfg.max_clusters))
        if n_points < 2 * n_clusters:
            raise NotEnoughSamplesError(
                f"DynamicsPriorGMM: expected at least {2 * n_clusters} transition points, "
                f"found {n_points}"
            )
        reg = self._reg
        for _attempt in range(6):
            try:
                gmm, history = self._em(groups, data, n_clusters, reg)
                break
            except ValueError as e:  # scikit-learn: a covariance collapsed or lost definiteness
                if "covariance" not in str(e) and "positive-definite" not in str(e):
                    raise
                warnings.warn(
                    f"DynamicsPriorGMM: EM failed with covariance regularisation {reg:g} "
                    f"({n_points} points, {n_clusters} clusters); restarting with {10 * reg:g}",
                    RuntimeWarning,
                    stacklevel=3,
                )
                self._gmm = None
                reg *= 10
        else:
            raise RuntimeError("DynamicsPriorGMM: EM failed even with covariance regularisation "
                               f"{reg:g}; check the samples for constant or exploding entries")
        self._gmm = gmm
        self._reg = reg
        self.em_iterations = len(history)
        self.n_points = n_points
        self.log_likelihood_history.append(np.asarray(history))
        self._set_moments()

    def _set_moments(self) -> None:
        """Second moments about a common centre, so that eval() is one matrix product."""
        gmm = self._gmm
        self._center = gmm.weights_ @ gmm.means_
        centred = gmm.means_ - self._center
        self._second_moments = gmm.covariances_ + centred[:, :, None] * centred[:, None, :]

    def _em(self, groups: list[np.ndarray], data: np.ndarray, n_clusters: int,
            reg: float) -> tuple[GaussianMixture, list[float]]:
        """Run EM from the previous mixture (same size) or a fresh initialisation.

        scikit-learn stops on an absolute change of the mean log-likelihood, fixed per call; it
        is set from the best available scale of the log-likelihood (the previous fit's, or the
        initial guess's) and, should the rule |change| < rel_tol |ll| not hold at the value EM
        reached, EM continues with the updated scale.
        """
        cfg = self.config
        gmm = self._gmm
        if gmm is None or gmm.n_components != n_clusters or gmm.reg_covar != reg:
            weights, means, covariances, scale = _segment_init(groups, n_clusters, reg)
            gmm = GaussianMixture(
                n_components=n_clusters,
                covariance_type="full",
                reg_covar=reg,
                warm_start=True,
                weights_init=weights,
                means_init=means,
                precisions_init=_inverse(covariances, reg),
            )
        else:
            scale = gmm.lower_bound_
        history: list[float] = []
        rel = cfg.em_relative_tol
        while len(history) < cfg.max_em_iterations:
            tol = rel * max(abs(scale), 1e-12)
            history.extend(_run_em(gmm, data, cfg.max_em_iterations - len(history), tol))
            if len(history) >= 2 and abs(history[-1] - history[-2]) < rel * abs(history[-1]):
                break
            if abs(scale - history[-1]) <= 1e-12 * max(abs(scale), 1.0):
                break  # the scale did not change: scikit-learn stopped for another reason
            scale = history[-1]
        return gmm, history

    def eval(self, points: np.ndarray) -> NIWPrior:
        """NIW prior for each group of points.

        Args:
            points: (..., n, D) transition points; each group of n points (e.g. the N samples of
                one time step) gets one prior from its averaged posterior cluster weights.

        Returns:
            :class:`NIWPrior` with leading shape ``points.shape[:-2]``; m = n0 = strength and
            Phi = strength * (moment-matched covariance of the mixture).
        """
        if self._gmm is None:
            raise NotEnoughSamplesError("DynamicsPriorGMM.eval: the prior has no data yet")
        points = np.asarray(points, dtype=float)
        D = self._gmm.means_.shape[1]
        if points.ndim < 2 or points.shape[-1] != D:
            raise ShapeError.expected("DynamicsPriorGMM.eval: points", f"(..., n, {D})",
                                      points.shape)
        lead, n = points.shape[:-2], points.shape[-2]
        resp = self._gmm.predict_proba(points.reshape(-1, D))
        weights = resp.reshape(-1, n, resp.shape[-1]).mean(axis=1)
        mean_c = weights @ (self._gmm.means_ - self._center)
        second = (weights @ self._second_moments.reshape(len(self._second_moments), -1))
        covar = second.reshape(-1, D, D) - mean_c[:, :, None] * mean_c[:, None, :]
        s = self.config.strength
        count = np.full(lead, s)
        return NIWPrior(
            mu0=(mean_c + self._center).reshape(*lead, D),
            Phi=s * covar.reshape(*lead, D, D),
            m=count,
            n0=count.copy(),
        )

    # -- checkpoint support ------------------------------------------------------------------

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Kept trajectories and the fitted mixture as named arrays (for np.savez)."""
        out: dict[str, np.ndarray] = {}
        for m, (X, U) in self._kept.items():
            out[f"prior_X_{m}"] = X
            out[f"prior_U_{m}"] = U
        if self._gmm is not None:
            g = self._gmm
            out["prior_gmm_weights"] = g.weights_
            out["prior_gmm_means"] = g.means_
            out["prior_gmm_covariances"] = g.covariances_
            out["prior_gmm_precisions_cholesky"] = g.precisions_cholesky_
            out["prior_gmm_scalars"] = np.array([g.lower_bound_, g.reg_covar])
        return out

    def restore(self, arrays: dict[str, np.ndarray], n_conditions: int) -> None:
        """Restore :meth:`state_arrays`: the next update warm-starts exactly as it would have."""
        self._kept = {}
        for m in range(n_conditions):
            if f"prior_X_{m}" in arrays:
                self._kept[m] = (np.asarray(arrays[f"prior_X_{m}"], dtype=float),
                                 np.asarray(arrays[f"prior_U_{m}"], dtype=float))
        self._gmm = None
        self._reg = self.config.covariance_regularization
        if "prior_gmm_weights" not in arrays:
            return
        weights = np.asarray(arrays["prior_gmm_weights"], dtype=float)
        means = np.asarray(arrays["prior_gmm_means"], dtype=float)
        covariances = np.asarray(arrays["prior_gmm_covariances"], dtype=float)
        chol = np.asarray(arrays["prior_gmm_precisions_cholesky"], dtype=float)
        lower_bound, reg = (float(v) for v in arrays["prior_gmm_scalars"])
        K, D = means.shape
        if weights.shape != (K,) or covariances.shape != (K, D, D) or chol.shape != (K, D, D):
            raise ShapeError(
                f"prior mixture: expected weights ({K},), covariances and precision factors "
                f"({K}, {D}, {D}), found {weights.shape}, {covariances.shape}, {chol.shape}"
            )
        # A fitted scikit-learn mixture is its parameters; set them as fit() would have.
        gmm = GaussianMixture(n_components=K, covariance_type="full", reg_covar=reg,
                              warm_start=True)
        gmm.weights_, gmm.means_, gmm.covariances_ = weights, means, covariances
        gmm.precisions_cholesky_ = chol
        gmm.precisions_ = chol @ np.swapaxes(chol, -1, -2)
        gmm.converged_, gmm.n_iter_, gmm.lower_bound_ = True, 0, lower_bound
        gmm.lower_bounds_ = []
        gmm.n_features_in_ = D
        self._gmm = gmm
        self._reg = reg
        self._set_moments()


def _run_em(gmm: GaussianMixture, data: np.ndarray, max_iter: int, tol: float) -> list[float]:
    """Continue EM from the mixture's current parameters; returns the log-likelihood per step."""
    gmm.set_params(max_iter=max_iter, tol=tol)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gmm.fit(data)
    return [float(v) for v in gmm.lower_bounds_]


def _inverse(covariances: np.ndarray, floor: float) -> np.ndarray:
    """Inverses of a stack of symmetric matrices, eigenvalues floored at ``floor`` (SPD result)."""
    vals, vecs = np.linalg.eigh(covariances)
    P = (vecs / np.maximum(vals, floor)[:, None, :]) @ np.swapaxes(vecs, -1, -2)
    return 0.5 * (P + np.swapaxes(P, -1, -2))


def _segment_init(
    groups: list[np.ndarray], n_clusters: int, regularization: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Initial mixture from contiguous stretches of time.

    The conditions' horizons are laid end to end and cut into ``n_clusters`` equal stretches;
    each component starts as the Gaussian of the points (all trajectories) in its stretch. Local
    dynamics change smoothly along a trajectory, so this starts EM close to a good optimum (far
    fewer iterations than k-means++ seeding on such data).

    Args:
        groups: per condition, points (n, T-1, D).

    Returns:
        weights (K,), means (K, D), covariances (K, D, D), and a guess of the mean log-likelihood
        per point (that of the hard assignment to the stretches).
    """
    steps = groups[0].shape[1]
    D = groups[0].shape[-1]
    total = len(groups) * steps
    sums = np.zeros((n_clusters, D))
    outer = np.zeros((n_clusters, D, D))
    counts = np.zeros(n_clusters)
    # Centre first so that the second moments do not cancel badly.
    centre = np.mean([g.mean(axis=(0, 1)) for g in groups], axis=0)
    for m, g in enumerate(groups):
        labels = ((m * steps + np.arange(steps)) * n_clusters) // total
        for k in np.unique(labels):
            pts = (g[:, labels == k] - centre).reshape(-1, D)
            sums[k] += pts.sum(axis=0)
            outer[k] += pts.T @ pts
            counts[k] += pts.shape[0]
    means_c = sums / counts[:, None]
    covariances = outer / counts[:, None, None] - means_c[:, :, None] * means_c[:, None, :]
    covariances = 0.5 * (covariances + np.swapaxes(covariances, -1, -2))
    covariances += regularization * np.eye(D)
    weights = counts / counts.sum()
    logdet = np.linalg.slogdet(covariances)[1]
    guess = weights @ (np.log(weights) - 0.5 * (D * np.log(2 * np.pi) + logdet + D))
    return weights, means_c + centre, covariances, float(guess)
