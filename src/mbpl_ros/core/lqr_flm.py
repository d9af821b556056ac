"""LQR-FLM: LQR with fitted local models under a KL trust region, one object per training run.

A training loop owns an :class:`LQRFLM`::

    layout = StateLayout()                          # 7 joints, 2 ee points: dX = 26, dU = 7
    dX, dU = layout.dim, layout.action_dim
    cost = peg_cost(layout)                         # or reach_cost, or any Cost
    algo = LQRFLM(LQRFLMConfig(), layout, dU, T, dt,
                  [init_lqr(x0, dX, dU, dt, T) for x0 in initial_states])
    rng = np.random.default_rng(seed)
    for _ in range(iterations):
        batches = []
        for m, controller in enumerate(algo.controllers):
            trials = []
            for _ in range(N):
                noise = smoothed_noise(rng, T, dU, smooth_sigma=2.0)
                executed = controller.fold_noise(noise)   # deterministic, exactly recorded
                trials.append(run_trial(m, executed))     # X (T, dX), U (T, dU)
            batches.append(SampleBatch(np.stack([X for X, _ in trials]),
                                       np.stack([U for _, U in trials])))
        report = algo.iteration(batches, cost)
    algo.save(path)

:meth:`LQRFLM.iteration` does, in order: update the GMM dynamics prior with all conditions'
samples; fit the dynamics of each condition; expand the cost around the samples; adapt each
condition's trust region from the previous iteration's predicted vs actual improvement; optimise
all conditions' controllers together (:func:`~.trajopt.optimize_trajectories`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .controllers import LinearGaussianController
from .costs import Cost
from .dynamics import LinearGaussianDynamics, fit_dynamics_batch
from .errors import CheckpointError, CoreError, MismatchError, NotEnoughSamplesError
from .prior import DynamicsPriorGMM, PriorConfig
from .samples import SampleBatch
from .state import StateLayout
from .threads import blas_threads
from .trajopt import (
    DualConfig,
    QuadraticCost,
    StackedControllers,
    StackedDynamics,
    estimate_cost,
    optimize_trajectories,
    quadratic_cost_from_expansion,
    step_multiplier,
)

CHECKPOINT_FORMAT = "mbpl_ros.lqr_flm"
CHECKPOINT_VERSION = 1


@dataclass(frozen=True)
class LQRFLMConfig:
    """Settings of :class:`LQRFLM` (defaults: the cbfinn/gps examples)."""

    kl_step: float = 0.2
    """Base KL step per time step; the trust region is eps = kl_step * step_mult * T."""
    initial_step_mult: float = 1.0
    """Step multiplier of the first iteration."""
    min_step_mult: float = 0.01
    """Lower bound of the step multiplier."""
    max_step_mult: float = 10.0
    """Upper bound of the step multiplier."""
    initial_eta: float = 1.0
    """Starting dual variable; later iterations start from the previous one."""
    dynamics_regularization: float = 1e-6
    """Ridge on the (x, u) block of the dynamics regression."""
    initial_state_var: float = 1e-6
    """Floor of the fitted initial-state variances."""
    use_prior: bool = True
    """Fit the dynamics with the GMM prior (needed when samples < dX + dU)."""
    prior: PriorConfig = field(default_factory=PriorConfig)
    """GMM prior settings."""
    dual: DualConfig = field(default_factory=DualConfig)
    """Dual gradient descent settings."""
    blas_threads: int | None = 1
    """BLAS threads during an iteration (small matrices run faster on one); None leaves it."""

    def __post_init__(self) -> None:
        if self.kl_step <= 0 or not 0 < self.min_step_mult <= self.max_step_mult:
            raise ValueError(
                "LQRFLMConfig: expected kl_step > 0 and 0 < min_step_mult <= max_step_mult, "
                f"found {self.kl_step}, {self.min_step_mult}, {self.max_step_mult}"
            )

    def to_json(self) -> str:
        """JSON text of all settings."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @staticmethod
    def from_json(text: str) -> LQRFLMConfig:
        """Inverse of :meth:`to_json`."""
        d = json.loads(text)
        d["prior"] = PriorConfig(**d["prior"])
        d["dual"] = DualConfig(**d["dual"])
        return LQRFLMConfig(**d)


@dataclass(frozen=True)
class IterationReport:
    """What one :meth:`LQRFLM.iteration` did; per-condition tuples have length M."""

    iteration: int
    """Index of this iteration (0 for the first)."""
    update_s: float
    """Wall time of the whole iteration, s."""
    fit_s: float
    """Prior update plus dynamics fits, s."""
    prior_s: float
    """Prior (GMM) update alone, s."""
    cost_s: float
    """Cost expansion and step adjustment, s."""
    trajopt_s: float
    """Trajectory optimisation, s."""
    backward_passes: int
    """Batched backward passes of the dual search (each covers all conditions still searching)."""
    em_iterations: int
    """EM iterations of the prior update (the most any condition's EM needed; 0 without one)."""
    prior_clusters: int
    """Components of the GMM prior, all conditions together."""
    eta: tuple[float, ...]
    """Final dual variable per condition."""
    kl: tuple[float, ...]
    """D_KL(new || sampled controller) per condition, under the fitted dynamics."""
    kl_target: tuple[float, ...]
    """Trust region eps per condition."""
    step_mult: tuple[float, ...]
    """Step multiplier used for eps, per condition."""
    mean_cost: tuple[float, ...]
    """Mean over the samples of the total trajectory cost, per condition."""
    predicted_improvement: tuple[float, ...]
    """Improvement the previous iteration predicted (NaN on iteration 0)."""
    actual_improvement: tuple[float, ...]
    """Improvement measured with the new dynamics (NaN on iteration 0)."""
    converged: tuple[bool, ...]
    """Whether the dual search met its tolerance, per condition."""
    warnings: tuple[str, ...] = ()
    """Numerical problems that were worked around."""

    def to_dict(self) -> dict:
        """A JSON-able dict of all fields."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class _Previous:
    """What the step adjustment needs from the previous iteration."""

    controllers: StackedControllers
    dynamics: StackedDynamics
    cost: QuadraticCost


def _cost_models(costs: list[Cost], batches: Sequence[SampleBatch]) -> tuple[
    QuadraticCost, np.ndarray
]:
    """Stacked quadratic cost models (M, T, ...) and mean sample costs (M,) of all conditions.

    Conditions sharing one cost object and sample count are expanded in one call.
    """
    M = len(batches)
    models: list[QuadraticCost | None] = [None] * M
    mean_cost = np.empty(M)
    groups: dict[tuple[int, int], list[int]] = {}
    for m, (c, b) in enumerate(zip(costs, batches, strict=True)):
        groups.setdefault((id(c), b.N), []).append(m)
    for idx in groups.values():
        N = batches[idx[0]].N
        X = np.concatenate([batches[m].X for m in idx])
        U = np.concatenate([batches[m].U for m in idx])
        exp = costs[idx[0]].eval(X, U)
        for j, m in enumerate(idx):
            part = slice(j * N, (j + 1) * N)
            models[m] = quadratic_cost_from_expansion(exp, X[part], U[part], part)
            mean_cost[m] = exp.l[part].sum(axis=-1).mean()
    return QuadraticCost.stack(models), mean_cost


class LQRFLM:
    """LQR-FLM over M conditions (see the module docstring for the loop)."""

    def __init__(
        self,
        config: LQRFLMConfig,
        layout: StateLayout | int,
        dU: int,
        T: int,
        dt: float,
        controllers: Sequence[LinearGaussianController],
    ) -> None:
        """Args:
        config: settings.
        layout: the state layout, or just dX (then controllers cannot be checked by name).
        dU: action dimension.
        T: horizon (steps per trial).
        dt: policy step, s (recorded in checkpoints).
        controllers: initial controller of each condition (e.g. :func:`~.controllers.init_lqr`).
        """
        self.config = config
        self.layout = layout if isinstance(layout, StateLayout) else None
        self.dX = layout.dim if isinstance(layout, StateLayout) else int(layout)
        self.dU, self.T, self.dt = int(dU), int(T), float(dt)
        if not controllers:
            raise MismatchError("LQRFLM: expected one initial controller per condition, found none")
        for m, c in enumerate(controllers):
            if (c.T, c.dX, c.dU) != (self.T, self.dX, self.dU):
                raise MismatchError(
                    f"LQRFLM: controller {m}: expected T={self.T}, dX={self.dX}, dU={self.dU}, "
                    f"found T={c.T}, dX={c.dX}, dU={c.dU}"
                )
        self._controllers = list(controllers)
        M = len(controllers)
        self._eta = np.full(M, config.initial_eta)
        self._step_mult = np.full(M, config.initial_step_mult)
        self._iteration = 0
        self._previous: _Previous | None = None
        self._dynamics: list[LinearGaussianDynamics] | None = None
        self.prior = DynamicsPriorGMM(config.prior)

    @property
    def controllers(self) -> list[LinearGaussianController]:
        """The current controller of each condition (run these to collect the next samples)."""
        return list(self._controllers)

    @property
    def conditions(self) -> int:
        """Number of conditions M."""
        return len(self._controllers)

    @property
    def iterations_done(self) -> int:
        """Iterations completed."""
        return self._iteration

    @property
    def dynamics(self) -> list[LinearGaussianDynamics] | None:
        """Dynamics fitted by the last iteration, one per condition (None before the first)."""
        return None if self._dynamics is None else list(self._dynamics)

    @property
    def eta(self) -> np.ndarray:
        """Current dual variable per condition, (M,)."""
        return self._eta.copy()

    @property
    def step_mult(self) -> np.ndarray:
        """Current step multiplier per condition, (M,)."""
        return self._step_mult.copy()

    def iteration(
        self,
        batches: Sequence[SampleBatch],
        cost: Cost | Sequence[Cost],
        dynamics: Sequence[LinearGaussianDynamics] | None = None,
    ) -> IterationReport:
        """One LQR-FLM iteration on samples of the current controllers.

        Args:
            batches: ``batches[m]``: N >= 2 trials of condition m run with ``controllers[m]``.
            cost: one cost for all conditions, or one per condition.
            dynamics: dynamics already fitted to these batches elsewhere (e.g. by the
                dynamics_fitter node), one per condition; then this object's prior is neither
                updated nor used and ``fit_s`` is 0.

        Returns:
            An :class:`IterationReport`; :attr:`controllers` then holds the new controllers.
        """
        M, cfg = self.conditions, self.config
        if len(batches) != M:
            raise MismatchError(f"LQRFLM.iteration: expected {M} sample batches (one per "
                                f"condition), found {len(batches)}")
        for m, b in enumerate(batches):
            b.check_dims(self.T, self.dX, self.dU, f"LQRFLM.iteration: condition {m}")
            if b.N < 2:
                raise NotEnoughSamplesError(
                    f"LQRFLM.iteration: expected at least 2 samples per condition, found {b.N} "
                    f"for condition {m}")
        costs = list(cost) if isinstance(cost, Sequence) else [cost] * M
        if len(costs) != M:
            raise MismatchError(f"LQRFLM.iteration: expected 1 or {M} costs, found {len(costs)}")
        if dynamics is not None:
            dynamics = list(dynamics)
            if len(dynamics) != M or any((d.T, d.dX, d.dU) != (self.T, self.dX, self.dU)
                                         for d in dynamics):
                raise MismatchError(
                    f"LQRFLM.iteration: expected {M} dynamics with T={self.T}, "
                    f"dX={self.dX}, dU={self.dU}, found "
                    f"{[(d.T, d.dX, d.dU) for d in dynamics]}")

        with blas_threads(cfg.blas_threads):
            start = time.perf_counter()
            em_iterations = 0
            if dynamics is None:
                if cfg.use_prior:
                    self.prior.update(batches)
                    em_iterations = self.prior.em_iterations
                prior_done = time.perf_counter()
                prior = self.prior if cfg.use_prior else None
                dynamics = fit_dynamics_batch(batches, prior, cfg.dynamics_regularization,
                                              cfg.initial_state_var)
            else:
                prior_done = time.perf_counter()
            fit_done = time.perf_counter()

            quad, mean_cost = _cost_models(costs, batches)
            stacked_dyn = StackedDynamics.of(dynamics)
            predicted = actual = np.full(M, np.nan)
            if self._previous is not None:
                predicted, actual = self._improvements(stacked_dyn, quad)
                self._step_mult = step_multiplier(predicted, actual, self._step_mult,
                                                  cfg.min_step_mult, cfg.max_step_mult)
            cost_done = time.perf_counter()

            kl_target = cfg.kl_step * self._step_mult * self.T
            result = optimize_trajectories(self._controllers, dynamics, quad, kl_target,
                                           self._eta, cfg.dual)
            end = time.perf_counter()

        self._previous = _Previous(StackedControllers.of(self._controllers), stacked_dyn, quad)
        self._controllers = result.controllers
        self._eta = result.eta.copy()
        self._dynamics = dynamics
        report = IterationReport(
            iteration=self._iteration,
            update_s=end - start,
            fit_s=fit_done - start,
            prior_s=prior_done - start,
            cost_s=cost_done - fit_done,
            trajopt_s=end - cost_done,
            backward_passes=result.backward_passes,
            em_iterations=em_iterations,
            prior_clusters=self.prior.n_clusters,
            eta=tuple(float(e) for e in result.eta),
            kl=tuple(float(k) for k in result.kl),
            kl_target=tuple(float(k) for k in kl_target),
            step_mult=tuple(float(s) for s in self._step_mult),
            mean_cost=tuple(float(c) for c in mean_cost),
            predicted_improvement=tuple(float(p) for p in predicted),
            actual_improvement=tuple(float(a) for a in actual),
            converged=tuple(bool(c) for c in result.converged),
            warnings=tuple(result.warnings),
        )
        self._iteration += 1
        return report

    def _improvements(self, dyn: StackedDynamics, quad: QuadraticCost) -> tuple[
        np.ndarray, np.ndarray
    ]:
        """Predicted and actual improvement of the controllers that produced these samples.

        With p_prev the controller before them, p_cur theirs, (dyn, cost)_prev the models of the
        previous iteration and (dyn, cost)_cur this one's: previous = E[c | p_prev, prev models],
        predicted = previous - E[c | p_cur, prev models], actual = previous - E[c | p_cur, cur
        models].
        """
        prev = self._previous
        cur = StackedControllers.of(self._controllers)
        previous = estimate_cost(prev.controllers, prev.dynamics, prev.cost)
        predicted_new = estimate_cost(cur, prev.dynamics, prev.cost)
        actual_new = estimate_cost(cur, dyn, quad)
        return previous - predicted_new, previous - actual_new

    # -- checkpoints ---------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Write controllers and algorithm state to ``path`` (an .npz archive, atomically)."""
        ctrl = StackedControllers.of(self._controllers)
        arrays: dict[str, np.ndarray] = {
            "format": np.array(CHECKPOINT_FORMAT),
            "version": np.array(CHECKPOINT_VERSION),
            "config": np.array(self.config.to_json()),
            "dims": np.array([self.T, self.dX, self.dU]),
            "dt": np.array(self.dt),
            "iteration": np.array(self._iteration),
            "state_names": np.array(self.layout.names() if self.layout else [], dtype=str),
            "K": ctrl.K,
            "k": ctrl.k,
            "covar": ctrl.covar,
            "eta": self._eta,
            "step_mult": self._step_mult,
        }
        if self._previous is not None:
            p = self._previous
            arrays.update({
                "prev_K": p.controllers.K, "prev_k": p.controllers.k,
                "prev_covar": p.controllers.covar,
                "prev_Fm": p.dynamics.Fm, "prev_fv": p.dynamics.fv,
                "prev_dyn_covar": p.dynamics.covar, "prev_x0_mean": p.dynamics.x0_mean,
                "prev_x0_covar": p.dynamics.x0_covar,
                "prev_cc": p.cost.cc, "prev_cv": p.cost.cv, "prev_Cm": p.cost.Cm,
            })
        arrays.update(self.prior.state_arrays())
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        layout: StateLayout | None = None,
        config: LQRFLMConfig | None = None,
    ) -> LQRFLM:
        """Restore an :class:`LQRFLM` written by :meth:`save`.

        Args:
            path: the archive.
            layout: if given, the saved state names must match it (else :class:`MismatchError`).
            config: settings to continue with (the saved ones if None).

        Raises:
            CheckpointError: unreadable, corrupt or foreign file, or inconsistent contents.
        """
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = {name: f[name] for name in f.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise CheckpointError(f"{path}: expected an LQR-FLM .npz checkpoint, cannot read "
                                  f"it ({type(e).__name__}: {e})") from e
        fmt = str(arrays.get("format", ""))
        if fmt != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{path}: expected format {CHECKPOINT_FORMAT!r}, found "
                                  f"{fmt or 'none'!r}")
        version = int(arrays.get("version", -1))
        if version != CHECKPOINT_VERSION:
            raise CheckpointError(f"{path}: expected version {CHECKPOINT_VERSION}, found "
                                  f"{version}")
        try:
            return cls._from_arrays(arrays, layout, config)
        except KeyError as e:
            raise CheckpointError(f"{path}: missing entry {e}") from e
        except MismatchError:
            raise
        except (CoreError, ValueError, TypeError) as e:
            raise CheckpointError(f"{path}: inconsistent checkpoint ({e})") from e

    @classmethod
    def _from_arrays(cls, a: dict[str, np.ndarray], layout: StateLayout | None,
                     config: LQRFLMConfig | None) -> LQRFLM:
        T, dX, dU = (int(v) for v in a["dims"])
        names = [str(n) for n in a["state_names"]]
        if layout is not None:
            if names:
                layout.check_names(names)
            elif layout.dim != dX:
                raise MismatchError(f"checkpoint: expected dX={layout.dim}, found {dX}")
        cfg = config or LQRFLMConfig.from_json(str(a["config"]))
        K, k, covar = a["K"], a["k"], a["covar"]
        controllers = [LinearGaussianController(K[m], k[m], covar[m]) for m in range(len(K))]
        algo = cls(cfg, layout if layout is not None else dX, dU, T, float(a["dt"]), controllers)
        M = algo.conditions
        for name in ("eta", "step_mult"):
            if a[name].shape != (M,):
                raise CheckpointError(f"checkpoint: expected {name} of shape ({M},), found "
                                      f"{a[name].shape}")
        algo._eta = np.array(a["eta"], dtype=float)
        algo._step_mult = np.array(a["step_mult"], dtype=float)
        algo._iteration = int(a["iteration"])
        if "prev_K" in a:
            prev_ctrl = [LinearGaussianController(a["prev_K"][m], a["prev_k"][m],
                                                  a["prev_covar"][m]) for m in range(M)]
            dyn = [LinearGaussianDynamics(a["prev_Fm"][m], a["prev_fv"][m],
                                          a["prev_dyn_covar"][m], a["prev_x0_mean"][m],
                                          a["prev_x0_covar"][m]) for m in range(M)]
            quad = QuadraticCost(a["prev_cc"], a["prev_cv"], a["prev_Cm"])
            if quad.Cm.shape != (M, T, dX + dU, dX + dU):
                raise CheckpointError(f"checkpoint: expected prev_Cm of shape "
                                      f"{(M, T, dX + dU, dX + dU)}, found {quad.Cm.shape}")
            algo._previous = _Previous(StackedControllers.of(prev_ctrl),
                                       StackedDynamics.of(dyn), quad)
        algo.prior.restore(a, M)
        return algo
