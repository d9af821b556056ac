"""Policy optimisation: supervised regression of the local controllers' actions.

The loss over samples i (a state/observation and the target action distribution N(mu_i, P_i^-1)
of a local controller at that state) is

    L(theta) = 1/n sum_i w_i (mu_i - pi_theta(o_i))^T P_i (mu_i - pi_theta(o_i))

the precision-weighted regression of GPS (Levine, Finn et al. 2016, eq. 6 up to the covariance
terms): directions in which a controller is certain (high precision) count more.

Conditioning choices (documented because they change the optimiser's scale, not the optimum of
a well-specified fit):

- weights are rescaled to mean 1, capped at twice their median (over positive weights), then
  divided by that median, so that one extreme sample cannot dominate;
- precisions are divided by their mean trace / dU over the data, so the loss is in units of a
  squared action error whatever the controllers' noise level.

The policy's own covariance is fitted in closed form as in GPS: for a state-independent
covariance Sigma_pi, the expected KL to the targets is minimised by
Sigma_pi^-1 = mean_i w_i P_i (+ an entropy regulariser); its diagonal is kept,
variance = 1 / diag(mean_i w_i P_i + 2 ent_reg I).

Reproducible: minibatches come from a ``torch.Generator`` seeded from the config, and the network
is created seeded (:func:`~.policy.make_policy`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from mbpl_ros.core.errors import NonFiniteError, ShapeError

from .policy import GaussianPolicy, Normalizer, to_image_tensor


@dataclass(frozen=True)
class PolicyOptConfig:
    """Settings of :class:`PolicyOptimizer`."""

    steps: int = 300
    """Gradient steps per :meth:`PolicyOptimizer.update`."""
    batch_size: int = 128
    """Samples per gradient step."""
    learning_rate: float = 1e-3
    """Adam step size."""
    weight_decay: float = 0.0
    """Adam L2 weight decay."""
    entropy_reg: float = 0.0
    """Regulariser added (x2) to the fitted policy precision's diagonal."""
    seed: int = 0
    """Seed of the minibatch generator."""
    threads: int | None = None
    """torch threads during updates (None: leave torch's setting)."""

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch_size < 1 or self.learning_rate <= 0:
            raise ValueError(f"PolicyOptConfig: expected steps >= 0, batch_size >= 1, "
                             f"learning_rate > 0, found {self.steps}, {self.batch_size}, "
                             f"{self.learning_rate}")


@dataclass(frozen=True)
class PolicyTargets:
    """Supervised data: n samples of observation, optional image, target mean/precision, weight."""

    obs: np.ndarray
    """(n, dO) observed state entries."""
    mu: np.ndarray
    """(n, dU) target mean actions."""
    precision: np.ndarray
    """(n, dU, dU) target precisions."""
    weight: np.ndarray
    """(n,) per-sample weights >= 0."""
    images: np.ndarray | None = None
    """(n, H, W, 3) uint8 images, or None for a state policy."""

    def __post_init__(self) -> None:
        n = self.obs.shape[0]
        dU = self.mu.shape[-1]
        if self.mu.shape != (n, dU) or self.precision.shape != (n, dU, dU) or \
                self.weight.shape != (n,):
            raise ShapeError(f"PolicyTargets: expected obs (n, dO), mu (n, dU), precision "
                             f"(n, dU, dU), weight (n,), found {self.obs.shape}, "
                             f"{self.mu.shape}, {self.precision.shape}, {self.weight.shape}")
        if self.images is not None and self.images.shape[0] != n:
            raise ShapeError.expected("PolicyTargets.images", f"({n}, H, W, 3)",
                                      self.images.shape)
        for name in ("obs", "mu", "precision", "weight"):
            if not np.all(np.isfinite(getattr(self, name))):
                raise NonFiniteError(f"PolicyTargets.{name}: expected finite values, found "
                                     "NaN/inf")
        if np.any(self.weight < 0):
            raise ValueError("PolicyTargets.weight: expected weights >= 0, found negative ones")

    @staticmethod
    def concatenate(parts: list[PolicyTargets]) -> PolicyTargets:
        imgs = None if parts[0].images is None else np.concatenate([p.images for p in parts])
        return PolicyTargets(np.concatenate([p.obs for p in parts]),
                             np.concatenate([p.mu for p in parts]),
                             np.concatenate([p.precision for p in parts]),
                             np.concatenate([p.weight for p in parts]), imgs)


@dataclass(frozen=True)
class UpdateReport:
    """What one :meth:`PolicyOptimizer.update` did."""

    loss_before: float
    """Normalised precision-weighted loss over all data before the update."""
    loss_after: float
    """The same after the update."""
    steps: int
    seconds: float


def normalized_weights(weight: np.ndarray) -> np.ndarray:
    """Weights scaled to mean 1, capped at twice the median of the positive ones, over it."""
    w = np.asarray(weight, dtype=float)
    if w.sum() <= 0:
        raise ValueError("normalized_weights: expected some positive weight, found none")
    w = w * (w.size / w.sum())
    positive = w[w > 1e-2]
    med = float(np.median(positive)) if positive.size else 1.0
    return np.minimum(w, 2.0 * med) / med


def precision_weighted_loss(pred: torch.Tensor, mu: torch.Tensor, prc: torch.Tensor,
                            weight: torch.Tensor) -> torch.Tensor:
    """mean_i w_i (mu_i - pred_i)^T P_i (mu_i - pred_i) for (B, dU), (B, dU), (B, dU, dU), (B,)."""
    r = mu - pred
    return (weight * torch.einsum("bi,bij,bj->b", r, prc, r)).mean()


class PolicyOptimizer:
    """Trains a :class:`GaussianPolicy` on :class:`PolicyTargets`; keeps Adam's state."""

    def __init__(self, policy: GaussianPolicy, config: PolicyOptConfig | None = None) -> None:
        self.policy = policy
        self.config = config or PolicyOptConfig()
        self._generator = torch.Generator().manual_seed(self.config.seed)
        self._optimizer = torch.optim.Adam(policy.network.parameters(),
                                           lr=self.config.learning_rate,
                                           weight_decay=self.config.weight_decay)
        self.normalized = False
        """Whether the normalisers have been fitted (on the first update)."""
        self.updates = 0

    def fit_normalizers(self, data: PolicyTargets) -> None:
        """Observation and action normalisation from ``data`` (done once, on the first update)."""
        self.policy.obs_norm = Normalizer.fit(data.obs)
        self.policy.action_norm = Normalizer.fit(data.mu, floor=1e-2)
        self.normalized = True

    def _tensors(self, data: PolicyTargets) -> tuple[torch.Tensor, ...]:
        w = normalized_weights(data.weight)
        prc = data.precision
        scale = np.trace(prc, axis1=-2, axis2=-1).mean() / prc.shape[-1]
        return (torch.as_tensor(data.obs, dtype=torch.float32),
                torch.as_tensor(data.mu, dtype=torch.float32),
                torch.as_tensor(prc / scale, dtype=torch.float32),
                torch.as_tensor(w, dtype=torch.float32))

    def loss(self, data: PolicyTargets, batch: int = 1024) -> float:
        """The normalised precision-weighted loss of the current policy over ``data``."""
        obs, mu, prc, w = self._tensors(data)
        self.policy.network.eval()
        total = 0.0
        with torch.no_grad():
            for s in range(0, obs.shape[0], batch):
                sl = slice(s, s + batch)
                img = None if data.images is None else to_image_tensor(data.images[sl])
                pred = self.policy._forward(obs[sl], img)
                total += float(precision_weighted_loss(pred, mu[sl], prc[sl], w[sl])) * \
                    obs[sl].shape[0]
        return total / obs.shape[0]

    def update(self, data: PolicyTargets, steps: int | None = None) -> UpdateReport:
        """Minimise the loss over ``data`` for ``steps`` minibatch steps, then refit the
        policy covariance. The first call also fits the normalisers."""
        start = time.perf_counter()
        cfg = self.config
        old_threads = torch.get_num_threads()
        if cfg.threads is not None:
            torch.set_num_threads(cfg.threads)
        try:
            if not self.normalized:
                self.fit_normalizers(data)
            before = self.loss(data)
            obs, mu, prc, w = self._tensors(data)
            n = obs.shape[0]
            steps = cfg.steps if steps is None else steps
            net = self.policy.network
            net.train()
            order = torch.randperm(n, generator=self._generator)
            pos = 0
            for _ in range(steps):
                if pos + cfg.batch_size > n:
                    order = torch.randperm(n, generator=self._generator)
                    pos = 0
                idx = order[pos:pos + cfg.batch_size]
                pos += cfg.batch_size
                img = None if data.images is None else to_image_tensor(data.images[idx.numpy()])
                pred = self.policy._forward(obs[idx], img)
                loss = precision_weighted_loss(pred, mu[idx], prc[idx], w[idx])
                self._optimizer.zero_grad()
                loss.backward()
                self._optimizer.step()
            after = self.loss(data)
            self.policy.variance = fit_policy_variance(data.precision, data.weight,
                                                       cfg.entropy_reg)
        finally:
            torch.set_num_threads(old_threads)
        self.updates += 1
        return UpdateReport(before, after, steps, time.perf_counter() - start)


def fit_policy_variance(precision: np.ndarray, weight: np.ndarray,
                        entropy_reg: float = 0.0) -> np.ndarray:
    """(dU,) variance = 1 / diag(weighted mean precision + 2 entropy_reg I) (see module doc)."""
    w = np.asarray(weight, dtype=float)
    A = np.einsum("n,nij->ij", w, precision) / max(w.sum(), 1e-12)
    return 1.0 / (np.diag(A) + 2.0 * entropy_reg)
