"""Guided Policy Search: MDGPS and BADMM over the LQR-FLM core.

A training loop owns one algorithm object and, every iteration::

    batches, observations = run trials (of algo.controllers, or of algo.policy when on-policy)
    report = algo.iteration(batches, observations, cost)

Both variants alternate a C-step (new local controllers by :func:`~mbpl_ros.core.trajopt.
optimize_trajectories` on the fitted dynamics) and an S-step (supervised training of the global
policy on the new controllers' actions at the sample states, :mod:`.policy_opt`). They differ in
how the C-step is tied to the policy:

- :class:`MDGPS` (mirror descent GPS): the KL trust region of the C-step is taken against the
  *policy's linearisation* pi_hat around the samples (:func:`~.linearize.linearize_policy` with a
  GMM policy prior) instead of the previous controller. The core's ``optimize_trajectories``
  takes the reference controllers as its first argument, so no core change is needed: the
  reference per condition is pi_hat. The step size adapts like LQR-FLM's, from the expected cost
  of pi_hat before and after (the policy is what must improve). Where pi_hat's closed loop under
  the fitted dynamics diverges (``GPSConfig.max_reference_spread``) neither the KL to it nor its
  expected cost means anything: that condition takes an LQR-FLM step around its own controller
  and keeps its step multiplier.
- :class:`BADMM`: the C-step keeps the KL trust region against the previous controller, with the
  cost augmented by nu_t (-log pi_bar(u|x)) + lambda_t^T (u - mu_bar_t(x))
  (:func:`augment_with_policy`) and each step tempered at eta + nu_t (the entropy half of
  nu_t D_KL(p || pi_bar)). pi_bar (:func:`policy_action_reference`) is the policy's mean action
  at the sample states with the controller's own feedback gains: coupling the gains too made the
  term scale with the fitted model's state spread, unbounded where its closed loop is unstable.
  Before each C-step the dual moves along the mean controller-policy action gap at the samples,
  lambda <- lambda + rate nu (Sigma_p + Sigma_pi)^-1 gap, and nu_t is multiplied or divided
  towards a per-step KL target (``GPSConfig.policy_kl_schedule``), the KL measured at the sample
  states (:func:`sample_policy_kl`). The S-step's targets are shifted by P^-1 lambda / nu and
  weighted by nu_t, the policy's side of the same Lagrangian.

Sampling: ``sample_on_policy`` (MDGPS only) runs the global policy (with its own noise) from the
second iteration on; otherwise the local controllers are run (off-policy).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from mbpl_ros.core.controllers import LinearGaussianController
from mbpl_ros.core.costs import Cost
from mbpl_ros.core.dynamics import LinearGaussianDynamics, fit_dynamics_batch
from mbpl_ros.core.errors import MismatchError
from mbpl_ros.core.lqr import conditional_kl, state_marginals
from mbpl_ros.core.lqr_flm import LQRFLMConfig, blas_threads
from mbpl_ros.core.prior import DynamicsPriorGMM
from mbpl_ros.core.samples import SampleBatch
from mbpl_ros.core.trajopt import (
    QuadraticCost,
    StackedControllers,
    StackedDynamics,
    estimate_cost,
    kl_penalty,
    optimize_trajectories,
    quadratic_cost_from_samples,
    step_multiplier,
)

from .linearize import PolicyPriorConfig, PolicyPriorGMM, linearize_policy
from .policy import GaussianPolicy
from .policy_opt import PolicyOptConfig, PolicyOptimizer, PolicyTargets


@dataclass(frozen=True)
class GPSConfig:
    """Settings shared by :class:`MDGPS` and :class:`BADMM`."""

    lqr: LQRFLMConfig = field(default_factory=LQRFLMConfig)
    """Trust region, dynamics fit and prior, dual search (as for LQR-FLM)."""
    policy_prior: PolicyPriorConfig = field(default_factory=PolicyPriorConfig)
    policy_opt: PolicyOptConfig = field(default_factory=PolicyOptConfig)
    first_policy_steps: int | None = 1000
    """Gradient steps of the first S-step (the policy starts from scratch); None: as later."""
    sample_on_policy: bool = False
    """MDGPS: sample the global policy (not the local controllers) from iteration 1 on."""
    marginal_states: int = 20
    """S-step, state policies: states per condition and step drawn from each new controller's
    state marginal under the fitted dynamics, moved onto the real samples
    (:func:`anchor_to_samples`) and labelled with the controller's mean action there. A handful
    of real samples per condition says little about how the action should change with the
    state; these draws teach the policy the controllers' feedback around their trajectories
    (visuomotor policies always use real samples only: no images exist for drawn states).
    Measured on peg (4 conditions, 12 iterations, 10 held-out): seeds 0 / 1 ended at 3/4 and
    2/4 training, 40 % / 40 % held-out with the anchored draws (4/4 training at iterations 9-10
    in both), against 2/4 and 3/4, 20 % / 20 % without; unanchored draws made seed 1 diverge."""
    init_policy_weight: float = 0.01
    """BADMM: initial nu_t, the weight (in cost units, like the trust region's eta) of the C-step's
    D_KL(controller || policy) term and of the S-step's samples."""
    policy_dual_rate: float = 0.1
    """BADMM: step of the lambda update as a fraction of the mean controller-policy action gap g_t
    at the sample states:
    lambda_t += rate nu_t (Sigma_controller + Sigma_policy)^-1 g_t. That change moves the C-step's
    mean action by at most rate * g_t / (1 + its precision ratio) and the S-step's target by the
    rest of rate * g_t, so a rate in (0, 1] closes the gap without overshooting it."""
    policy_kl_schedule: tuple[float, ...] = (1.0, 0.5, 0.25, 0.1)
    """BADMM: target per-step D_KL(controller || policy), averaged over the sample states
    (:func:`sample_policy_kl`), in nats at the dual steps of iterations
    1, 2, ... (the last value repeats): nu_t grows by ``policy_weight_factor`` where the KL of step
    t is above the target and shrinks by it where the KL is below target / factor^2."""
    policy_weight_factor: float = 2.0
    """BADMM: multiplicative step of nu_t (> 1)."""
    min_policy_weight: float = 1e-4
    """BADMM: floor of nu_t."""
    max_policy_weight: float = 1e4
    """BADMM: ceiling of nu_t."""
    max_reference_spread: float = 100.0
    """MDGPS: largest ratio of the policy linearisation's closed-loop state spread to the sampling
    controller's, both under the fitted dynamics (:func:`closed_loop_spread`), for which pi_hat
    is the C-step's reference. Above it the fitted model plus pi_hat diverges (on peg: spreads
    1e6-1e16 against the controllers' 1e2-1e4, the samples' 5-7,000), the KL to pi_hat is
    dominated by those marginals, eta hits its ceiling and the condition stops improving for
    the rest of the run; the condition then steps around its own controller, as LQR-FLM does."""

    def __post_init__(self) -> None:
        if self.init_policy_weight <= 0 or not 0 <= self.policy_dual_rate <= 2 or \
                self.policy_weight_factor <= 1 or not self.policy_kl_schedule or \
                min(self.policy_kl_schedule) <= 0 or \
                not 0 < self.min_policy_weight <= self.max_policy_weight or \
                not self.max_reference_spread > 1:
            raise ValueError(
                "GPSConfig: expected init_policy_weight > 0, 0 <= policy_dual_rate <= 2, "
                "policy_weight_factor > 1, a non-empty positive policy_kl_schedule and "
                "0 < min_policy_weight <= max_policy_weight, max_reference_spread > 1, found "
                f"{self.init_policy_weight}, {self.policy_dual_rate}, "
                f"{self.policy_weight_factor}, {self.policy_kl_schedule}, "
                f"{self.min_policy_weight}, {self.max_policy_weight}, "
                f"{self.max_reference_spread}")


@dataclass(frozen=True)
class Observations:
    """What the policy saw along the samples of one condition."""

    obs: np.ndarray
    """(N, T, dO) observed state entries."""
    images: np.ndarray | None = None
    """(N, T, H, W, 3) uint8 camera images, or None."""


@dataclass(frozen=True)
class GPSIterationReport:
    """What one GPS iteration did; per-condition tuples have length M.

    Carries the fields :func:`mbpl_ros.training.direct.iteration_record` reads (update_s,
    mean_cost, kl, step_mult, eta, warnings) plus the policy's.
    """

    iteration: int
    update_s: float
    fit_s: float
    trajopt_s: float
    policy_s: float
    mean_cost: tuple[float, ...]
    kl: tuple[float, ...]
    """D_KL(new controller || reference) (MDGPS: the policy linearisation)."""
    kl_target: tuple[float, ...]
    step_mult: tuple[float, ...]
    eta: tuple[float, ...]
    policy_kl: tuple[float, ...]
    """D_KL(new controller || policy linearisation after the S-step) per condition."""
    policy_loss_before: float
    policy_loss_after: float
    predicted_improvement: tuple[float, ...]
    actual_improvement: tuple[float, ...]
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


@dataclass
class _Models:
    """Per-iteration models kept for the next step adjustment."""

    reference: StackedControllers
    new: StackedControllers
    dynamics: StackedDynamics
    cost: QuadraticCost
    own_reference: np.ndarray | None = None
    """(M,) bool: the reference was the condition's own controller, not pi_hat. None: a
    checkpoint written before the fallback existed, where it was always pi_hat."""


def controller_targets(controller: LinearGaussianController, X: np.ndarray,
                       obs: Observations, weight: float | np.ndarray = 1.0,
                       shift: np.ndarray | None = None) -> PolicyTargets:
    """S-step data of one condition: mean actions K_t x + k_t (+ shift) at the sample states.

    Args:
        X: (N, T, dX) states; obs: what the policy saw there.
        weight: scalar or (T,) per-step weights.
        shift: optional (N, T, dU) or (T, dU) added to the targets (BADMM's dual term).
    """
    N, T, _ = X.shape
    mu = np.einsum("tux,ntx->ntu", controller.K, X) + controller.k
    if shift is not None:
        mu = mu + shift
    prc = np.broadcast_to(controller.precision, (N, *controller.precision.shape))
    w = np.broadcast_to(np.asarray(weight, dtype=float), (T,))
    images = None if obs.images is None else obs.images.reshape(-1, *obs.images.shape[2:])
    return PolicyTargets(obs.obs.reshape(N * T, -1), mu.reshape(N * T, -1),
                         np.ascontiguousarray(prc).reshape(N * T, *prc.shape[2:]),
                         np.tile(w, N), images)


class _GPS:
    """State and steps shared by MDGPS and BADMM."""

    name = "gps"

    def __init__(self, config: GPSConfig, dX: int, dU: int, T: int,
                 controllers: Sequence[LinearGaussianController], policy: GaussianPolicy,
                 optimizer: PolicyOptimizer | None = None) -> None:
        self.config = config
        self.dX, self.dU, self.T = int(dX), int(dU), int(T)
        for m, c in enumerate(controllers):
            if (c.T, c.dX, c.dU) != (self.T, self.dX, self.dU):
                raise MismatchError(f"{self.name}: controller {m}: expected T={T}, dX={dX}, "
                                    f"dU={dU}, found T={c.T}, dX={c.dX}, dU={c.dU}")
        if policy.dU != self.dU:
            raise MismatchError(f"{self.name}: expected a policy with dU={dU}, found {policy.dU}")
        self._controllers = list(controllers)
        M = len(self._controllers)
        self.policy = policy
        self.optimizer = optimizer or PolicyOptimizer(policy, config.policy_opt)
        self.prior = DynamicsPriorGMM(config.lqr.prior)
        self.policy_prior = PolicyPriorGMM(config.policy_prior)
        self._eta = np.full(M, config.lqr.initial_eta)
        self._step_mult = np.full(M, config.lqr.initial_step_mult)
        self._iteration = 0
        self._own_reference = np.zeros(M, dtype=bool)
        self._notes: list[str] = []
        self._previous: _Models | None = None
        self._kept: dict[int, tuple[np.ndarray, Observations]] = {}
        self.linearizations: list[LinearGaussianController] | None = None
        self.dynamics: list[LinearGaussianDynamics] | None = None
        self._rng = np.random.default_rng(config.policy_opt.seed + 1)

    @property
    def controllers(self) -> list[LinearGaussianController]:
        return list(self._controllers)

    @property
    def conditions(self) -> int:
        return len(self._controllers)

    @property
    def iterations_done(self) -> int:
        return self._iteration

    def samples_from_policy(self) -> bool:
        """Whether the next iteration's samples should come from the global policy."""
        return False

    # -- shared steps -------------------------------------------------------------------------

    def _check(self, batches: Sequence[SampleBatch], observations: Sequence[Observations],
               cost: Cost | Sequence[Cost]) -> list[Cost]:
        M = self.conditions
        if len(batches) != M or len(observations) != M:
            raise MismatchError(f"{self.name}.iteration: expected {M} batches and observations, "
                                f"found {len(batches)} and {len(observations)}")
        for m, (b, o) in enumerate(zip(batches, observations, strict=True)):
            b.check_dims(self.T, self.dX, self.dU, f"{self.name}.iteration: condition {m}")
            if o.obs.shape[:2] != (b.N, self.T):
                raise MismatchError(f"{self.name}.iteration: condition {m}: expected "
                                    f"observations ({b.N}, {self.T}, dO), found {o.obs.shape}")
        costs = list(cost) if isinstance(cost, Sequence) else [cost] * M
        if len(costs) != M:
            raise MismatchError(f"{self.name}.iteration: expected 1 or {M} costs")
        return costs

    def _fit_models(self, batches: Sequence[SampleBatch], costs: list[Cost],
                    dynamics: Sequence[LinearGaussianDynamics] | None = None) -> tuple[
        list[LinearGaussianDynamics], QuadraticCost, np.ndarray
    ]:
        """Dynamics (fitted here with the GMM prior unless given, e.g. by a dynamics_fitter
        node that keeps the prior itself) and the cost's quadratic expansion."""
        cfg = self.config.lqr
        if dynamics is None:
            if cfg.use_prior:
                self.prior.update(batches)
            dynamics = fit_dynamics_batch(batches, self.prior if cfg.use_prior else None,
                                          cfg.dynamics_regularization, cfg.initial_state_var)
        else:
            dynamics = list(dynamics)
            if len(dynamics) != self.conditions:
                raise MismatchError(f"{self.name}.iteration: expected dynamics for "
                                    f"{self.conditions} conditions, found {len(dynamics)}")
            for m, d in enumerate(dynamics):
                if (d.T, d.dX, d.dU) != (self.T, self.dX, self.dU):
                    raise MismatchError(f"{self.name}.iteration: dynamics of condition {m}: "
                                        f"expected T={self.T}, dX={self.dX}, dU={self.dU}, "
                                        f"found T={d.T}, dX={d.dX}, dU={d.dU}")
        models, means = [], []
        for c, b in zip(costs, batches, strict=True):
            q, l = quadratic_cost_from_samples(c, b.X, b.U)
            models.append(q)
            means.append(l.sum(axis=-1).mean())
        return dynamics, QuadraticCost.stack(models), np.asarray(means)

    def _policy_outputs(self, obs: Observations) -> np.ndarray:
        return self.policy.mean_actions(obs.obs, obs.images)

    def _linearize(self, batches: Sequence[SampleBatch], observations: Sequence[Observations]
                   ) -> tuple[list[LinearGaussianController], list[np.ndarray]]:
        """pi_hat per condition around this iteration's samples (prior over kept samples), and
        the policy's mean actions at those samples (N, T, dU) per condition."""
        cap = self.config.policy_prior.max_samples
        for m, (b, o) in enumerate(zip(batches, observations, strict=True)):
            if m in self._kept:
                X0, o0 = self._kept[m]
                X = np.concatenate([X0, b.X])[-cap:]
                imgs = None if o.images is None else np.concatenate([o0.images, o.images])[-cap:]
                o = Observations(np.concatenate([o0.obs, o.obs])[-cap:], imgs)
            else:
                X = b.X[-cap:]
            self._kept[m] = (X, o)
        kept_mu = {m: self._policy_outputs(o) for m, (_, o) in self._kept.items()}
        self.policy_prior.refresh([self._kept[m][0] for m in sorted(self._kept)],
                                  [kept_mu[m] for m in sorted(self._kept)])
        pol_mu = [kept_mu[m][-b.N:] for m, b in enumerate(batches)]
        lins = [linearize_policy(b.X, mu, self.policy.covar, self.policy_prior,
                                 self.config.lqr.dynamics_regularization)
                for b, mu in zip(batches, pol_mu, strict=True)]
        return lins, pol_mu

    def _fit_initial_policy(self, batches: Sequence[SampleBatch],
                            observations: Sequence[Observations]) -> float:
        """On the first iteration, fit the policy to the initial controllers; returns seconds."""
        if self._iteration > 0:
            return 0.0
        t0 = time.perf_counter()
        self._train_policy([controller_targets(c, b.X, o) for c, b, o in
                            zip(self._controllers, batches, observations, strict=True)])
        return time.perf_counter() - t0

    def _linearize_current(self, batches: Sequence[SampleBatch],
                           observations: Sequence[Observations]) -> list[
                               LinearGaussianController]:
        """pi_hat of the just-trained policy, with the existing prior (for reporting)."""
        return [linearize_policy(b.X, self._policy_outputs(o), self.policy.covar,
                                 self.policy_prior, self.config.lqr.dynamics_regularization)
                for b, o in zip(batches, observations, strict=True)]

    def _sstep_states(self, batches: Sequence[SampleBatch], observations: Sequence[Observations],
                      controllers: Sequence[LinearGaussianController],
                      dynamics: Sequence[LinearGaussianDynamics]) -> list[
                          tuple[np.ndarray, Observations]]:
        """Per condition, the S-step's states (N + marginal_states, T, dX) and what the policy
        sees there: the real samples plus draws from the controllers' state marginals."""
        n = self.config.marginal_states
        if n == 0 or any(o.images is not None for o in observations):
            return [(b.X, o) for b, o in zip(batches, observations, strict=True)]
        drawn = draw_marginal_states(controllers, dynamics, n, self._rng)
        out = []
        for b, o, X in zip(batches, observations, drawn, strict=True):
            X = anchor_to_samples(X, b.X)
            obs = self.policy.observation.from_states(X)
            out.append((np.concatenate([b.X, X]),
                        Observations(np.concatenate([o.obs, obs]))))
        return out

    def _train_policy(self, parts: list[PolicyTargets]):
        steps = self.config.first_policy_steps if self.optimizer.updates == 0 else None
        return self.optimizer.update(PolicyTargets.concatenate(parts), steps)

    def _step_adjust(self, reference: StackedControllers, dyn: StackedDynamics,
                     quad: QuadraticCost) -> tuple[np.ndarray, np.ndarray]:
        """Predicted and actual improvement of the reference's expected cost (see subclasses)."""
        prev = self._previous
        M = self.conditions
        if prev is None:
            return np.full(M, np.nan), np.full(M, np.nan)
        before = estimate_cost(prev.reference, prev.dynamics, prev.cost)
        predicted = before - estimate_cost(prev.new, prev.dynamics, prev.cost)
        actual = before - estimate_cost(reference, dyn, quad)
        adjusted = step_multiplier(predicted, actual, self._step_mult,
                                   self.config.lqr.min_step_mult, self.config.lqr.max_step_mult)
        # The estimates compare pi_hat before and after; where either was not the reference its
        # model marginals diverge and the comparison is noise.
        hold = self._own_reference.copy()
        if prev.own_reference is not None:
            hold |= prev.own_reference
        self._step_mult = np.where(hold, self._step_mult, adjusted)
        predicted[hold] = actual[hold] = np.nan
        return predicted, actual

    # -- one iteration; the variants differ only in the hooks below ------------------------

    def iteration(self, batches: Sequence[SampleBatch], observations: Sequence[Observations],
                  cost: Cost | Sequence[Cost],
                  dynamics: Sequence[LinearGaussianDynamics] | None = None
                  ) -> GPSIterationReport:
        """One iteration: fit dynamics (unless ``dynamics`` are given), (first time: fit the
        policy to the controllers), linearise the policy, adapt the step, C-step within the trust
        region around the variant's reference, S-step on the new controllers' actions."""
        costs = self._check(batches, observations, cost)
        cfg = self.config
        with blas_threads(cfg.lqr.blas_threads):
            start = time.perf_counter()
            dynamics, quad, mean_cost = self._fit_models(batches, costs, dynamics)
            policy_s = self._fit_initial_policy(batches, observations)
            lins, pol_mu = self._linearize(batches, observations)
            self._before_c_step(batches, pol_mu, lins, dynamics)
            fit_done = time.perf_counter()
            reference = self._trust_region_reference(lins, dynamics)
            ref = StackedControllers.of(reference)
            dyn = StackedDynamics.of(dynamics)
            predicted, actual = self._step_adjust(ref, dyn, quad)
            eps = cfg.lqr.kl_step * self._step_mult * self.T
            result = optimize_trajectories(reference, dynamics, self._c_step_cost(quad, lins),
                                           eps, self._eta, cfg.lqr.dual, self._c_step_entropy())
            traj_done = time.perf_counter()
            data = self._sstep_states(batches, observations, result.controllers, dynamics)
            upd = self._train_policy(self._s_step_targets(result.controllers, data))
            policy_s += time.perf_counter() - traj_done
            after = self._linearize_current(batches, observations)
            pkl = policy_kl(result.controllers, after, dynamics).sum(axis=-1)
            end = time.perf_counter()
        self._previous = _Models(ref, StackedControllers.of(result.controllers), dyn, quad,
                                 self._own_reference.copy())
        self._controllers = result.controllers
        self._eta = result.eta.copy()
        self.linearizations = after
        self.dynamics = dynamics
        report = GPSIterationReport(
            self._iteration, end - start, fit_done - start, traj_done - fit_done, policy_s,
            tuple(map(float, mean_cost)), tuple(map(float, result.kl)), tuple(map(float, eps)),
            tuple(map(float, self._step_mult)), tuple(map(float, result.eta)),
            tuple(map(float, pkl)), upd.loss_before, upd.loss_after,
            tuple(map(float, predicted)), tuple(map(float, actual)),
            tuple(result.warnings) + tuple(self._notes))
        self._iteration += 1
        return report

    def _before_c_step(self, batches: Sequence[SampleBatch], pol_mu: list[np.ndarray],
                       lins: list[LinearGaussianController],
                       dynamics: list[LinearGaussianDynamics]) -> None:
        """Variant hook after the policy linearisation, given the policy's mean actions at the
        samples (BADMM: the dual step)."""

    def _trust_region_reference(self, lins: list[LinearGaussianController],
                                dynamics: list[LinearGaussianDynamics]
                                ) -> list[LinearGaussianController]:
        """The controllers the C-step's KL trust region is taken around (sets
        ``_own_reference``)."""
        raise NotImplementedError

    def _c_step_cost(self, quad: QuadraticCost, lins: list[LinearGaussianController]
                     ) -> QuadraticCost:
        """The cost the C-step minimises."""
        return quad

    def _c_step_entropy(self) -> np.ndarray | None:
        """(M, T) extra entropy weights of the C-step (see ``optimize_trajectories``)."""
        return None

    def _s_step_targets(self, controllers: list[LinearGaussianController],
                        data: list[tuple[np.ndarray, Observations]]) -> list[PolicyTargets]:
        """The S-step's supervised data per condition."""
        return [controller_targets(c, X, o) for c, (X, o) in
                zip(controllers, data, strict=True)]


def draw_marginal_states(controllers: Sequence[LinearGaussianController],
                         dynamics: Sequence[LinearGaussianDynamics], n: int,
                         rng: np.random.Generator) -> list[np.ndarray]:
    """``n`` draws per step from each controller's Gaussian state marginals p(x_t) under its
    fitted linear dynamics: (n, T, dX) per condition (steps drawn independently)."""
    p, d = StackedControllers.of(controllers), StackedDynamics.of(dynamics)
    mu, sigma = state_marginals(p.K, p.k, p.covar, d.Fm, d.fv, d.covar, d.x0_mean, d.x0_covar)
    # Symmetric square root: marginals can be singular (the first step is nearly certain).
    w, V = np.linalg.eigh(0.5 * (sigma + np.swapaxes(sigma, -1, -2)))
    root = V * np.sqrt(np.clip(w, 0.0, None))[..., None, :]
    z = rng.standard_normal((len(controllers), n, *mu.shape[1:]))
    X = mu[:, None] + np.einsum("mtij,mntj->mnti", root, z)
    return list(X)


def anchor_to_samples(drawn: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Drawn states (n, T, dX) moved onto the real samples X (N, T, dX): per step, centred on
    the samples' mean, their spread shrunk (never grown) to the samples' total variance. The
    fitted model supplies only the shape of the spread: where the closed loop it predicts is off
    or unstable, its marginals stray far from any state the arm visited."""
    centre = drawn.mean(axis=0)
    deviation = drawn - centre
    model_var = np.einsum("ntx,ntx->t", deviation, deviation) / drawn.shape[0]
    sample_var = X.var(axis=0).sum(axis=-1)
    scale = np.sqrt(np.minimum(1.0, sample_var / np.maximum(model_var, 1e-300)))
    return X.mean(axis=0) + deviation * scale[:, None]


def closed_loop_spread(controllers: StackedControllers, dynamics: StackedDynamics) -> np.ndarray:
    """(M,) largest trace over the horizon of the state covariance of the controllers' closed
    loop under the dynamics (inf where it overflows)."""
    with np.errstate(over="ignore", invalid="ignore"):
        _, sigma = state_marginals(controllers.K, controllers.k, controllers.covar, dynamics.Fm,
                                   dynamics.fv, dynamics.covar, dynamics.x0_mean,
                                   dynamics.x0_covar)
        spread = np.trace(sigma, axis1=-2, axis2=-1).max(axis=-1)
    return np.where(np.isfinite(spread), spread, np.inf)


def policy_kl(controllers: Sequence[LinearGaussianController],
              reference: Sequence[LinearGaussianController],
              dynamics: Sequence[LinearGaussianDynamics]) -> np.ndarray:
    """Per-step D_KL(p(u|x) || ref(u|x)) averaged over p's state marginals, (M, T)."""
    p, r = StackedControllers.of(controllers), StackedControllers.of(reference)
    d = StackedDynamics.of(dynamics)
    mu, sigma = state_marginals(p.K, p.k, p.covar, d.Fm, d.fv, d.covar, d.x0_mean, d.x0_covar)
    return conditional_kl(mu, sigma, p.K, p.k, p.covar, r.K, r.k, r.precision)


def sample_policy_kl(controller: LinearGaussianController, X: np.ndarray, pol_mu: np.ndarray,
                     pol_covar: np.ndarray) -> np.ndarray:
    """Per-step D_KL(p(u|x) || pi(u|o)) averaged over the sample states, (T,).

    p(u|x_n,t) = N(K_t x_n,t + k_t, Sigma_p,t) against the policy's own output N(pol_mu_n,t,
    pol_covar) at the same sample: a Monte-Carlo estimate over the real states, unlike
    :func:`policy_kl`, which integrates over the fitted model's state marginals (those can be
    orders of magnitude wider than the states the arm visits where the model's closed loop is
    unstable).

    Args:
        X: (N, T, dX) sample states; pol_mu: (N, T, dU) the policy's mean actions there;
        pol_covar: (dU, dU) the policy's covariance.
    """
    dU = controller.dU
    gap = pol_mu - (np.einsum("tux,ntx->ntu", controller.K, X) + controller.k)
    prc = np.linalg.inv(pol_covar)
    mahal = np.einsum("nti,ij,ntj->nt", gap, prc, gap).mean(axis=0)
    trace = np.einsum("ij,tji->t", prc, controller.covar)
    logdets = np.linalg.slogdet(pol_covar)[1] - np.linalg.slogdet(controller.covar)[1]
    return np.maximum(0.5 * (trace - dU + logdets + mahal), 0.0)


class MDGPS(_GPS):
    """Mirror-descent GPS (see the module docstring)."""

    name = "mdgps"

    def samples_from_policy(self) -> bool:
        return self.config.sample_on_policy and self._iteration > 0

    def _trust_region_reference(self, lins: list[LinearGaussianController],
                                dynamics: list[LinearGaussianDynamics]
                                ) -> list[LinearGaussianController]:
        dyn = StackedDynamics.of(dynamics)
        ratio = (closed_loop_spread(StackedControllers.of(lins), dyn)
                 / closed_loop_spread(StackedControllers.of(self._controllers), dyn))
        self._own_reference = ~(ratio <= self.config.max_reference_spread)  # NaN: diverged too
        self._notes = [f"condition {m}: the policy linearisation's closed loop under the fitted "
                       f"dynamics spreads {ratio[m]:.3g}x the controller's; C-step around the "
                       f"controller, step multiplier held"
                       for m in np.flatnonzero(self._own_reference)]
        return [c if own else lin for c, lin, own in
                zip(self._controllers, lins, self._own_reference, strict=True)]


def augment_with_policy(quad: QuadraticCost, reference: StackedControllers, nu: np.ndarray,
                        lambda_K: np.ndarray | None, lambda_k: np.ndarray) -> QuadraticCost:
    """c + nu_t (-log pi_hat(u|x)) + lambda_t(x)^T (u - mu_hat_t(x)) as a quadratic cost model, up
    to a constant (the log-normaliser of pi_hat), with lambda_t(x) = lambda_K,t x + lambda_k,t and
    mu_hat_t(x) = K_hat,t x + k_hat,t the mean of pi_hat.

    This is the cost part of BADMM's C-step Lagrangian. The multiplier term prices the whole
    constraint u = mu_hat(x): its -lambda(x)^T mu_hat(x) half does not depend on the action but on
    the state, which the controller changes too. With only lambda^T u, minimising over u leaves a
    state cost x^T K_hat^T lambda_K x of either sign and first order in lambda; with the whole
    term it leaves -1/2 lambda(x)^T (nu P_hat)^-1 lambda(x), second order and bounded by the dual
    step (see ``GPSConfig.policy_dual_rate``). The entropy part of nu_t D_KL(p || pi_hat) is not a
    cost; it goes to ``optimize_trajectories`` as ``entropy_weight`` (without it the term would
    reward shrinking the controller's covariance without bound).

    Args:
        quad: (M, T, ...) cost model.
        reference: pi_hat per condition (its precision defines -log pi_hat up to a constant).
        nu: (M, T) weights; lambda_K: (M, T, dU, dX), or None for a multiplier constant in x;
        lambda_k: (M, T, dU).
    """
    M, T, dU, dX = reference.K.shape
    if lambda_K is None:
        lambda_K = np.zeros((M, T, dU, dX))
    # On z_aug = [1; x; u]: u - mu_hat(x) = R z_aug with R = [-k_hat, -K_hat, I] and
    # lambda(x) = L z_aug with L = [lambda_k, lambda_K, 0];
    # (L z)^T (R z) = 1/2 z^T (L^T R + R^T L) z.
    R = np.concatenate([-reference.k[..., None], -reference.K,
                        np.broadcast_to(np.eye(dU), (M, T, dU, dU))], axis=-1)
    L = np.concatenate([lambda_k[..., None], lambda_K, np.zeros((M, T, dU, dU))], axis=-1)
    LR = np.swapaxes(L, -1, -2) @ R
    H = nu[..., None, None] * kl_penalty(reference) + LR + np.swapaxes(LR, -1, -2)
    return QuadraticCost(quad.cc + 0.5 * H[..., 0, 0], quad.cv + H[..., 1:, 0],
                         quad.Cm + H[..., 1:, 1:])


def policy_action_reference(controllers: Sequence[LinearGaussianController],
                            batches: Sequence[SampleBatch], pol_mu: Sequence[np.ndarray],
                            pol_covar: np.ndarray) -> list[LinearGaussianController]:
    """BADMM's C-step coupling per condition: N(K_t x + k_t, pol_covar) with each controller's
    own gains K_t and k_t = mean_n(mu_pi,n,t - K_t x_n,t), the policy's mean actions at the
    sample states seen through the controller's feedback.

    The C-step integrates its policy term over the fitted model's state marginals. Coupling the
    gains too (the policy linearisation's K_hat) made that term, and the trust region KL of any
    compromise between K_prev and K_hat, scale with the model's state spread, which on the reach
    task is 10^6-10^16 where the samples' is ~10 (an unstable closed loop of the fitted model):
    eta went to 10^4-10^16 and the cost lost all weight. With the slope the controller's own,
    the term prices only the action gap at the states actually visited; the policy learns the
    controllers' feedback in the S-step (draws from their marginals, ``marginal_states``).
    """
    out = []
    for c, b, mu in zip(controllers, batches, pol_mu, strict=True):
        k = (mu - np.einsum("tux,ntx->ntu", c.K, b.X)).mean(axis=0)
        covar = np.array(np.broadcast_to(pol_covar, c.covar.shape))
        out.append(LinearGaussianController(c.K, k, covar))
    return out


class BADMM(_GPS):
    """BADMM GPS (see the module docstring).

    The C-step minimises, per condition, E_p[sum_t c_t + lambda_t^T u_t] + sum_t nu_t
    D_KL(p(u_t|x_t) || pi_bar(u_t|x_t)) within D_KL(p || p_prev) <= eps, pi_bar from
    :func:`policy_action_reference` (the policy's actions at the samples, the controller's
    gains): with the trust region's multiplier eta, step t's action distribution is the
    max-entropy solution at temperature eta + nu_t of c + lambda^T u + nu_t (-log pi_bar) +
    eta (-log p_prev). The S-step minimises sum_t nu_t E[D_KL(pi || p)] - lambda_t^T u_pi, i.e.
    the precision-weighted regression onto the controllers' actions shifted by P^-1 lambda / nu,
    weighted by nu_t. The dual step moves lambda (a per-step constant) along
    the mean action gap at the samples in the metric (Sigma_p + Sigma_pi)^-1 (see
    ``GPSConfig.policy_dual_rate``) and adapts nu_t multiplicatively towards a per-step KL target,
    that KL measured at the sample states (:func:`sample_policy_kl`).
    """

    name = "badmm"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        M, T, dU = self.conditions, self.T, self.dU
        self.nu = np.full((M, T), self.config.init_policy_weight)
        self.lambda_k = np.zeros((M, T, dU))
        """The multiplier lambda_t of u_t = mu_bar_t(x_t), per step (constant in x)."""
        self._coupling: list[LinearGaussianController] = []

    def _dual_step(self, batches: Sequence[SampleBatch], pol_mu: list[np.ndarray]) -> np.ndarray:
        """lambda_t += rate nu_t (Sigma_p + Sigma_pi)^-1 gap_t; nu_t by the KL schedule.

        gap_t = mean_n (u_p - u_pi)_t, the controller-policy mean-action gap at the sample states.
        The KL that sets nu is :func:`sample_policy_kl`, measured at the sample states. Returns
        that per-step KL (M, T).
        """
        cfg = self.config
        kl = np.empty((self.conditions, self.T))
        for m, (c, b, mu) in enumerate(zip(self._controllers, batches, pol_mu, strict=True)):
            u_ctrl = np.einsum("tux,ntx->ntu", c.K, b.X) + c.k
            gap = (u_ctrl - mu).mean(axis=0)  # (T, dU)
            metric = np.linalg.inv(c.covar + self.policy.covar)  # (T, dU, dU)
            scaled = cfg.policy_dual_rate * self.nu[m][:, None, None] * metric
            self.lambda_k[m] += np.einsum("tij,tj->ti", scaled, gap)
            kl[m] = sample_policy_kl(c, b.X, mu, self.policy.covar)
        schedule = cfg.policy_kl_schedule
        target = schedule[min(self._iteration - 1, len(schedule) - 1)]
        f = cfg.policy_weight_factor
        factor = np.where(kl > target, f, np.where(kl < target / f**2, 1.0 / f, 1.0))
        self.nu = np.clip(self.nu * factor, cfg.min_policy_weight, cfg.max_policy_weight)
        return kl

    def _before_c_step(self, batches: Sequence[SampleBatch], pol_mu: list[np.ndarray],
                       lins: list[LinearGaussianController],
                       dynamics: list[LinearGaussianDynamics]) -> None:
        if self._iteration > 0:
            self._dual_step(batches, pol_mu)
        self._coupling = policy_action_reference(self._controllers, batches, pol_mu,
                                                 self.policy.covar)

    def _trust_region_reference(self, lins: list[LinearGaussianController],
                                dynamics: list[LinearGaussianDynamics]
                                ) -> list[LinearGaussianController]:
        return self._controllers

    def _c_step_cost(self, quad: QuadraticCost, lins: list[LinearGaussianController]
                     ) -> QuadraticCost:
        return augment_with_policy(quad, StackedControllers.of(self._coupling), self.nu, None,
                                   self.lambda_k)

    def _c_step_entropy(self) -> np.ndarray:
        return self.nu

    def _s_step_targets(self, controllers: list[LinearGaussianController],
                        data: list[tuple[np.ndarray, Observations]]) -> list[PolicyTargets]:
        parts = []
        for m, (c, (X, o)) in enumerate(zip(controllers, data, strict=True)):
            shift = np.einsum("tij,tj->ti", c.covar, self.lambda_k[m]) / self.nu[m][:, None]
            parts.append(controller_targets(c, X, o, self.nu[m], shift))
        return parts
