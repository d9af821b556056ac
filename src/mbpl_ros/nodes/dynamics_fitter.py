"""dynamics_fitter: fits per-condition linear-Gaussian dynamics to rollouts under a GMM prior.

Services (relative to the node, so a namespace keeps one fitter per session):
  ~/fit_iteration  mbpl_interfaces/FitIteration  one iteration's rollouts of all conditions: add
                   them to the per-condition buffers, refit the prior over all conditions' kept
                   trajectories, fit each condition (what LQRFLM.iteration does in-process)
  ~/fit_dynamics   mbpl_interfaces/FitDynamics     fit one condition from the rollouts given (or,
                   if none, the ones of the last iteration held) under the current prior

State: the buffers and the GMM prior, which only ever grow by whole iterations in order
(``iterations_held``). A trainer that resumes a session, or finds a restarted fitter (a request
is refused with ``needs_replay``), rebuilds this state by replaying its recorded rollouts
(``reset`` then every iteration with ``fit`` false), so the fitter needs no checkpoint of its own.
The heavy maths runs here, never in the executor process, with BLAS limited to one thread
(faster on the small matrices of the fit).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from mbpl_interfaces.msg import Rollout
from mbpl_interfaces.srv import FitDynamics, FitIteration
from rclpy.node import Node

from mbpl_ros.conversions import MessageError, dynamics_to_msg, rollout_from_msg
from mbpl_ros.core.dynamics import LinearGaussianDynamics, fit_dynamics, fit_dynamics_batch
from mbpl_ros.core.errors import CoreError
from mbpl_ros.core.lqr_flm import LQRFLMConfig, blas_threads
from mbpl_ros.core.prior import DynamicsPriorGMM, PriorConfig
from mbpl_ros.core.samples import SampleBatch
from mbpl_ros.nodes.parameters import declare_parameters
from mbpl_ros.nodes.run import run_node


class FitRequestError(ValueError):
    """Rollouts that cannot be fitted (aborted, malformed, too few for a condition)."""


def batches_from_rollouts(rollouts: Sequence[Rollout], conditions: int) -> list[SampleBatch]:
    """One :class:`SampleBatch` per condition 0..M-1 from rollout messages.

    States beyond the horizon (x_T) are dropped: the fit pairs x_t with the action u_t applied
    after it, t < T.

    Raises:
        FitRequestError: an aborted or malformed rollout, mixed dimensions, an unknown
            condition, or fewer than 2 rollouts for some condition.
    """
    if conditions < 1:
        raise FitRequestError(f"conditions: expected >= 1, found {conditions}")
    per: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in range(conditions)]
    dims = None
    for msg in rollouts:
        where = f"rollout {msg.trial_id or '?'} (condition {msg.condition})"
        if msg.aborted:
            raise FitRequestError(f"{where}: aborted ({msg.abort_reason}); aborted trials are "
                                  "kept out of the fit")
        if msg.condition >= conditions:
            raise FitRequestError(f"{where}: expected condition < {conditions}")
        try:
            X, U = rollout_from_msg(msg)
        except MessageError as err:
            raise FitRequestError(f"{where}: {err}") from err
        T = U.shape[0]
        if dims is None:
            dims = (T, X.shape[1], U.shape[1])
        elif (T, X.shape[1], U.shape[1]) != dims:
            raise FitRequestError(f"{where}: expected T, dX, dU = {dims}, found "
                                  f"{(T, X.shape[1], U.shape[1])}")
        per[msg.condition].append((X[:T], U))
    short = [m for m, runs in enumerate(per) if len(runs) < 2]
    if short:
        raise FitRequestError(f"conditions {short}: expected at least 2 rollouts each, found "
                              f"{[len(per[m]) for m in short]}")
    return [SampleBatch(np.stack([x for x, _ in runs]), np.stack([u for _, u in runs]))
            for runs in per]


@dataclass(frozen=True)
class FitResult:
    dynamics: list[LinearGaussianDynamics]
    prior_clusters: int
    em_iterations: int
    fit_s: float


class DynamicsFitterState:
    """Buffers and GMM prior of one training session; ROS-free (the node wraps it).

    Mirrors the fitting half of :meth:`~mbpl_ros.core.lqr_flm.LQRFLM.iteration` with the same
    settings (:class:`LQRFLMConfig` fields ``prior``, ``use_prior``,
    ``dynamics_regularization``, ``initial_state_var``, ``blas_threads``).
    """

    def __init__(self, config: LQRFLMConfig) -> None:
        self.config = config
        self.reset()

    def reset(self) -> None:
        self.prior = DynamicsPriorGMM(self.config.prior)
        self.iterations_held = 0
        self.last: list[SampleBatch] | None = None

    def add_iteration(self, batches: list[SampleBatch], fit: bool = True) -> FitResult:
        """Add one iteration's batches (one per condition), update the prior, fit if asked."""
        cfg = self.config
        with blas_threads(cfg.blas_threads):
            start = time.perf_counter()
            if cfg.use_prior:
                self.prior.update(batches)
            prior = self.prior if cfg.use_prior else None
            dynamics = fit_dynamics_batch(batches, prior, cfg.dynamics_regularization,
                                          cfg.initial_state_var) if fit else []
            elapsed = time.perf_counter() - start
        self.iterations_held += 1
        self.last = list(batches)
        return FitResult(dynamics, self.prior.n_clusters,
                         self.prior.em_iterations if cfg.use_prior else 0, elapsed)

    def fit_condition(self, batch: SampleBatch) -> LinearGaussianDynamics:
        """Fit one batch under the current prior (the prior is not updated)."""
        with blas_threads(self.config.blas_threads):
            return self._fit(batch)

    def _fit(self, batch: SampleBatch) -> LinearGaussianDynamics:
        cfg = self.config
        prior = self.prior if cfg.use_prior and self.prior.fitted else None
        return fit_dynamics(batch, prior, cfg.dynamics_regularization, cfg.initial_state_var)


PARAMETERS = {
    "max_clusters": (20, "GMM prior: upper bound on the number of mixture components"),
    "min_samples_per_cluster": (40, "GMM prior: components = clip(points // this, 2, max)"),
    "max_samples": (20, "GMM prior: trajectories kept per condition (most recent)"),
    "strength": (1.0, "GMM prior: pseudo-count (weighs as this many transitions)"),
    "max_em_iterations": (100, "GMM prior: EM iterations per update, at most"),
    "em_relative_tol": (1e-5, "GMM prior: EM stops at |d loglik| < this * |loglik|"),
    "covariance_regularization": (1e-6, "GMM prior: added to component covariance diagonals"),
    "use_prior": (True, "fit with the GMM prior (needed when samples < dX + dU)"),
    "dynamics_regularization": (1e-6, "ridge on the (x, u) block of the regression"),
    "initial_state_var": (1e-6, "floor of the fitted initial-state variances"),
    "blas_threads": (1, "BLAS threads while fitting (0: leave the library default)"),
}


def config_from_parameters(values: dict) -> LQRFLMConfig:
    """The fitting settings as an :class:`LQRFLMConfig` (raises ValueError when invalid)."""
    prior = PriorConfig(
        max_clusters=int(values["max_clusters"]),
        min_samples_per_cluster=int(values["min_samples_per_cluster"]),
        max_samples=int(values["max_samples"]), strength=float(values["strength"]),
        max_em_iterations=int(values["max_em_iterations"]),
        em_relative_tol=float(values["em_relative_tol"]),
        covariance_regularization=float(values["covariance_regularization"]))
    return LQRFLMConfig(prior=prior, use_prior=bool(values["use_prior"]),
                        dynamics_regularization=float(values["dynamics_regularization"]),
                        initial_state_var=float(values["initial_state_var"]),
                        blas_threads=int(values["blas_threads"]) or None)


class DynamicsFitter(Node):
    """Services over :class:`DynamicsFitterState`; see the module docstring."""

    ros_executor = "single"
    """Spun by a SingleThreadedExecutor (:func:`~mbpl_ros.nodes.run.run_node`)."""

    def __init__(self, **node_kwargs) -> None:
        super().__init__("dynamics_fitter", **node_kwargs)
        values = declare_parameters(self, PARAMETERS)
        self.state = DynamicsFitterState(config_from_parameters(values))
        self._last_key: tuple | None = None
        self._last_response: FitIteration.Response | None = None
        self.create_service(FitIteration, "~/fit_iteration", self._on_fit_iteration)
        self.create_service(FitDynamics, "~/fit_dynamics", self._on_fit_dynamics)
        self.get_logger().info("ready: ~/fit_iteration, ~/fit_dynamics")

    def _on_fit_iteration(self, request: FitIteration.Request,
                          response: FitIteration.Response) -> FitIteration.Response:
        key = (request.iteration, request.conditions, request.reset, request.fit,
               tuple(r.trial_id for r in request.rollouts))
        if key == self._last_key and self._last_response is not None and not request.reset:
            return self._last_response  # a retried request: do not add its rollouts twice
        if request.reset:
            self.state.reset()
            self._last_key = self._last_response = None
        held = self.state.iterations_held
        response.iterations_held = held
        if request.iteration != held:
            response.success = False
            response.needs_replay = True
            response.message = (f"holding iterations 0..{held - 1}, asked to add iteration "
                                f"{request.iteration}: replay from iteration 0 with reset")
            self.get_logger().warning(response.message)
            return response
        try:
            batches = batches_from_rollouts(request.rollouts, request.conditions)
            result = self.state.add_iteration(batches, fit=request.fit)
        except (FitRequestError, CoreError, ValueError, RuntimeError) as err:
            response.success = False
            response.message = f"iteration {request.iteration}: {err}"
            self.get_logger().error(response.message)
            return response
        response.success = True
        response.iterations_held = self.state.iterations_held
        response.dynamics = [dynamics_to_msg(d, m) for m, d in enumerate(result.dynamics)]
        response.prior_clusters = result.prior_clusters
        response.em_iterations = result.em_iterations
        response.fit_s = result.fit_s
        response.message = (f"iteration {request.iteration}: {len(request.rollouts)} rollouts, "
                            f"{result.prior_clusters} prior clusters, {result.em_iterations} EM "
                            f"iterations, {result.fit_s:.2f} s")
        self.get_logger().info(response.message)
        self._last_key, self._last_response = key, response
        return response

    def _on_fit_dynamics(self, request: FitDynamics.Request,
                         response: FitDynamics.Response) -> FitDynamics.Response:
        try:
            if len(request.rollouts):
                for r in request.rollouts:
                    if r.condition != request.condition:
                        raise FitRequestError(f"rollout {r.trial_id}: condition {r.condition}, "
                                              f"expected {request.condition}")
                batch = batches_from_rollouts(
                    [_with_condition(r, 0) for r in request.rollouts], 1)[0]
            elif self.state.last is not None and request.condition < len(self.state.last):
                batch = self.state.last[request.condition]
            else:
                raise FitRequestError(f"condition {request.condition}: no rollouts given and "
                                      "none held")
            response.dynamics = dynamics_to_msg(self.state.fit_condition(batch),
                                                request.condition)
        except (FitRequestError, CoreError, ValueError) as err:
            response.success = False
            response.message = str(err)
            return response
        response.success = True
        response.message = f"condition {request.condition}: fitted on {batch.N} rollouts"
        return response


def _with_condition(msg: Rollout, condition: int) -> Rollout:
    copy = Rollout()
    for name in Rollout.get_fields_and_field_types():
        setattr(copy, name, getattr(msg, name))
    copy.condition = condition
    return copy


def main(args: list[str] | None = None) -> None:
    run_node(DynamicsFitter, args)


if __name__ == "__main__":
    main()
