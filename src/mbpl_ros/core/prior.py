"""GMM prior for the local dynamics fit (Levine, Finn et al. 2016, appendix A.3).

A Gaussian mixture is fitted by EM over transition points y = [x_t; u_t; x_{t+1}] (D = 2 dX + dU)
of recent trajectories (the last ``max_samples`` of every condition). For the regression at one
time step, the step's own points give posterior component weights; the mixture moment-matched
under those weights is a Normal-inverse-Wishart prior on the joint Gaussian of y: mean mu0,
scatter Phi, and pseudo-counts m (for the mean) and n0 (for the covariance).

One mixture over all conditions, each component owned by one condition. The mixture has
K = clip(points // min_samples_per_cluster, 2, max_clusters) components over the data of all
conditions, shared out among the conditions in proportion to their points (at least one each).
It is the maximum-likelihood mixture for the data *with their condition labels*: p(y, m) =
p(m) sum_{k in m} pi_k N(y; mu_k, Sigma_k), whose EM splits into one EM per condition. The prior
is evaluated with the label dropped, p(y) = sum_k p(m_k) pi_k N(y; mu_k, Sigma_k), so a condition
that visits states another one has seen borrows that condition's local dynamics. Compared with an
unconstrained EM over the pooled data (same K), each point is only scored against its own
condition's components, which makes an EM iteration about M times cheaper, and the conditions'
EMs run in parallel (``workers``). cbfinn/gps fitted an independent prior per condition (up to 20
components each, no sharing).

EM is scikit-learn's :class:`~sklearn.mixture.GaussianMixture` (full covariances), warm-started
across updates while a condition's number of components is unchanged; a fresh mixture starts from
contiguous stretches of time (:func:`_segment_init`). scikit-learn stops on an absolute change of
the mean log-likelihood per point; it is set to ``em_relative_tol`` times the magnitude of the
log-likelihood, which is the relative rule |dll| < 1e-5 |ll| of the reference (applied per
condition, which implies it for their sum). Should EM fail on a collapsed component, it is
restarted with ten times the covariance regularisation (a warning says so) rather than stopping a
training session.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

from .errors import MismatchError, NotEnoughSamplesError, ShapeError
from .samples import SampleBatch
from .threads import blas_threads


@dataclass(frozen=True)
class PriorConfig:
    """Settings of :class:`DynamicsPriorGMM` (defaults: the cbfinn/gps examples)."""

    max_clusters: int = 20
    """Upper bound on the number of mixture components (all conditions together)."""
    min_samples_per_cluster: int = 40
    """Components = clip(points // this, 2, max_clusters), shared out among the conditions."""
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
    workers: int | None = None
    """Threads running the conditions' EMs (None: one per CPU, at most one per condition)."""

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
        self._parts: dict[int, GaussianMixture] = {}
        self._gmm: GaussianMixture | None = None
        self._second_moments: np.ndarray | None = None
        self._center: np.ndarray | None = None
        self.log_likelihood_history: list[dict[int, np.ndarray]] = []
        """Per update and condition, the mean log-likelihood per point before each EM step."""
        self.em_iterations = 0
        """EM iterations of the last update (the most any condition needed)."""
        self.n_points = 0
        """Points the mixture was last fitted on."""

    @property
    def fitted(self) -> bool:
        """Whether :meth:`update` has fitted a mixture."""
        return self._gmm is not None

    @property
    def mixture(self) -> GaussianMixture | None:
        """The mixture over all conditions (None before the first update); do not modify it."""
        return self._gmm

    @property
    def condition_mixtures(self) -> dict[int, GaussianMixture]:
        """Each condition's components as fitted by its EM; do not modify them."""
        return dict(self._parts)

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
        self._fit({m: transition_points(X, U) for m, (X, U) in self._kept.items()})

    def _fit(self, groups: dict[int, np.ndarray]) -> None:
        """EM for every condition; ``groups[m]`` holds its points, (n, T-1, D)."""
        cfg = self.config
        sizes = {m: g.shape[0] * g.shape[1] for m, g in groups.items()}
        n_points = sum(sizes.values())
        total = int(np.clip(n_points // cfg.min_samples_per_cluster, 2, cfg.max_clusters))
        shares = {m: max(1, int(total * n // n_points)) for m, n in sizes.items()}
        for m, n in sizes.items():
            if n < 2 * shares[m]:
                raise NotEnoughSamplesError(
                    f"DynamicsPriorGMM: expected at least {2 * shares[m]} transition points for "
                    f"condition {m}, found {n}"
                )
        reg = self._reg
        for _attempt in range(6):
            try:
                fitted = self._run_all(groups, shares, reg)
                break
            except ValueError as e:  # scikit-learn: a covariance collapsed or lost definiteness
                if "covariance" not in str(e) and "positive-definite" not in str(e):
                    raise
                warnings.warn(
                    f"DynamicsPriorGMM: EM failed with covariance regularisation {reg:g} "
                    f"({n_points} points, {total} clusters); restarting with {10 * reg:g}",
                    RuntimeWarning,
                    stacklevel=3,
                )
                self._parts = {}
                reg *= 10
        else:
            raise RuntimeError("DynamicsPriorGMM: EM failed even with covariance regularisation "
                               f"{reg:g}; check the samples for constant or exploding entries")
        self._parts = {m: gmm for m, (gmm, _) in fitted.items()}
        self._reg = reg
        histories = {m: np.asarray(h) for m, (_, h) in fitted.items()}
        self.log_likelihood_history.append(histories)
        self.em_iterations = max(len(h) for h in histories.values())
        self.n_points = n_points
        self._combine(sizes)

    def _run_all(self, groups: dict[int, np.ndarray], shares: dict[int, int],
                 reg: float) -> dict[int, tuple[GaussianMixture, list[float]]]:
        """The conditions' EMs, on worker threads (BLAS and most of numpy release the GIL), each
        with one BLAS thread."""
        workers = self.config.workers or os.cpu_count() or 1
        workers = max(1, min(workers, len(groups)))

        def one(m: int) -> tuple[GaussianMixture, list[float]]:
            return self._em(self._parts.get(m), groups[m], shares[m], reg)

        with blas_threads(1):  # parallel over conditions instead
            if workers == 1:
                return {m: one(m) for m in groups}
            with ThreadPoolExecutor(workers) as pool:
                return dict(zip(groups, pool.map(one, groups), strict=True))

    def _em(self, gmm: GaussianMixture | None, group: np.ndarray, n_clusters: int,
            reg: float) -> tuple[GaussianMixture, list[float]]:
        """EM for one condition, from its previous mixture (same size) or a fresh start.

        scikit-learn's stopping threshold is fixed per call; it is set from the best available
        scale of the log-likelihood (the previous fit's, or the initial guess's) and, should the
        rule |change| < rel_tol |ll| not hold at the value EM reached, EM continues with the
        updated scale.
        """
        cfg = self.config
        data = group.reshape(-1, group.shape[-1])
        if gmm is None or gmm.n_components != n_clusters or gmm.reg_covar != reg:
            weights, means, covariances, scale = _segment_init([group], n_clusters, reg)
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

    def _combine(self, sizes: dict[int, int]) -> None:
        """The mixture over all conditions: components weighted by their condition's share."""
        n_points = sum(sizes.values())
        parts = [self._parts[m] for m in sorted(self._parts)]
        share = np.concatenate([np.full(p.n_components, sizes[m] / n_points)
                                for m, p in zip(sorted(self._parts), parts, strict=True)])
        self._gmm = _mixture(
            share * np.concatenate([p.weights_ for p in parts]),
            np.concatenate([p.means_ for p in parts]),
            np.concatenate([p.covariances_ for p in parts]),
            np.concatenate([p.precisions_cholesky_ for p in parts]),
            self._reg,
        )
        self._set_moments()

    def _set_moments(self) -> None:
        """Second moments about a common centre, so that eval() is one matrix product."""
        gmm = self._gmm
        self._center = gmm.weights_ @ gmm.means_
        centred = gmm.means_ - self._center
        self._second_moments = gmm.covariances_ + centred[:, :, None] * centred[:, None, :]

    def eval(self, points: np.ndarray) -> NIWPrior:
        """NIW prior for each group of points.

        Args:
            points: (..., n, D) transition points; each group of n points (e.g. the N samples of
                one time step) gets one prior from its averaged posterior component weights.

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
        second = weights @ self._second_moments.reshape(len(self._second_moments), -1)
        covar = second.reshape(-1, D, D) - mean_c[:, :, None] * mean_c[:, None, :]
        s = self.config.strength
        count = np.full(lead, s)
        return NIWPrior(
            mu0=(mean_c + self._center).reshape(*lead, D),
            Phi=s * covar.reshape(*lead, D, D),
            m=count,
            n0=count.copy(),
        )

    def posterior(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """MAP mean and covariance of each group's Gaussian under its NIW prior (:meth:`eval`).

        With n points of sample mean y_bar and scatter S: mean = y_bar and
        covariance = (S + Phi + n m / (n + m) (y_bar - mu0)(y_bar - mu0)^T) / (n + n0).
        All outer-product terms are formed in one stacked matrix product.

        Args:
            points: (B, n, D) groups of transition points.

        Returns:
            mean (B, D) and covariance (B, D, D).
        """
        if self._gmm is None:
            raise NotEnoughSamplesError("DynamicsPriorGMM.posterior: the prior has no data yet")
        B, n, D = points.shape
        mean = points.mean(axis=1)
        resp = self._gmm.predict_proba(points.reshape(-1, D))
        weights = resp.reshape(B, n, -1).mean(axis=1)
        mu0_c = weights @ (self._gmm.means_ - self._center)
        s = self.config.strength  # m = n0 = s
        coef = n * s / (n + s)
        rows = np.concatenate([points - mean[:, None, :],
                               (mean - self._center - mu0_c)[:, None, :],  # y_bar - mu0
                               mu0_c[:, None, :]], axis=1)
        signs = np.concatenate([np.ones(n), [coef, -s]])
        scatter = np.swapaxes(rows * signs[:, None], -1, -2) @ rows
        scatter += ((s * weights) @ self._second_moments.reshape(len(weights.T), -1)).reshape(
            B, D, D)
        scatter /= n + s
        return mean, scatter

    # -- checkpoint support ------------------------------------------------------------------

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Kept trajectories and the fitted mixtures as named arrays (for np.savez)."""
        out: dict[str, np.ndarray] = {}
        for m, (X, U) in self._kept.items():
            out[f"prior_X_{m}"] = X
            out[f"prior_U_{m}"] = U
        for m, g in self._parts.items():
            out[f"prior_gmm_{m}_weights"] = g.weights_
            out[f"prior_gmm_{m}_means"] = g.means_
            out[f"prior_gmm_{m}_covariances"] = g.covariances_
            out[f"prior_gmm_{m}_precisions_cholesky"] = g.precisions_cholesky_
            out[f"prior_gmm_{m}_lower_bound"] = np.array(g.lower_bound_)
        out["prior_regularization"] = np.array(self._reg)
        return out

    def restore(self, arrays: dict[str, np.ndarray], n_conditions: int) -> None:
        """Restore :meth:`state_arrays`: the next update warm-starts exactly as it would have."""
        self._kept, self._parts, self._gmm = {}, {}, None
        self._reg = float(arrays.get("prior_regularization", self.config.covariance_regularization))
        for m in range(n_conditions):
            if f"prior_X_{m}" in arrays:
                self._kept[m] = (np.asarray(arrays[f"prior_X_{m}"], dtype=float),
                                 np.asarray(arrays[f"prior_U_{m}"], dtype=float))
            key = f"prior_gmm_{m}_"
            if key + "weights" in arrays:
                gmm = _mixture(*(np.asarray(arrays[key + name], dtype=float) for name in
                                 ("weights", "means", "covariances", "precisions_cholesky")),
                               self._reg)
                gmm.lower_bound_ = float(arrays[key + "lower_bound"])
                self._parts[m] = gmm
        if self._parts:
            self._combine({m: X.shape[0] * (X.shape[1] - 1) for m, (X, _) in self._kept.items()})


def _mixture(weights: np.ndarray, means: np.ndarray, covariances: np.ndarray,
             precisions_cholesky: np.ndarray, reg: float) -> GaussianMixture:
    """A fitted scikit-learn mixture with the given parameters (as fit() would leave it)."""
    K, D = means.shape
    if weights.shape != (K,) or covariances.shape != (K, D, D) or \
            precisions_cholesky.shape != (K, D, D):
        raise ShapeError(
            f"prior mixture: expected weights ({K},), covariances and precision factors "
            f"({K}, {D}, {D}), found {weights.shape}, {covariances.shape}, "
            f"{precisions_cholesky.shape}"
        )
    gmm = GaussianMixture(n_components=K, covariance_type="full", reg_covar=reg, warm_start=True)
    gmm.weights_, gmm.means_, gmm.covariances_ = weights, means, covariances
    gmm.precisions_cholesky_ = precisions_cholesky
    gmm.precisions_ = precisions_cholesky @ np.swapaxes(precisions_cholesky, -1, -2)
    gmm.converged_, gmm.n_iter_, gmm.lower_bound_, gmm.lower_bounds_ = True, 0, -np.inf, []
    gmm.n_features_in_ = D
    return gmm


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
