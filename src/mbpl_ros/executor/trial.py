"""Stepping a linear-Gaussian controller (or a neural policy) through one trial and recording it.

A trial of horizon T evaluates u_t = K_t x_t + k_t (a policy: u_t = pi(x_t)) at each policy step
t = 0..T-1 from the state x_t at that moment, and holds u_t for ``ticks_per_step`` control ticks
(dt of the controller): the zero-order hold the dynamics fit assumes. After the last action has
been held, x_T is recorded and the trial is complete. Real time: one call of
:meth:`TrialRun.tick` per 1 kHz tick (``ticks_per_step`` = dt / 1 ms). Lockstep: one call per
new state (``ticks_per_step`` = 1), since the simulator advances one policy step per command.

The action recorded for step t is the command actually sent at its first tick (after the safety
filter), given back through :meth:`TrialRun.record_sent`; ticks whose command then differed from
it (the joint-limit guard acted mid-step) are counted in ``altered_ticks``.

What runs is any :class:`TrialActor`: a :class:`~mbpl_ros.core.controllers.LinearGaussianController`
or a :class:`~mbpl_ros.executor.policy.PolicyActor`. An actor that counts ``faults`` (actions it
replaced by zero torque because of non-finite values) has them counted per trial and reported
through :attr:`TrialRun.fault`, so the loop can log them. An actor with a method
``act_at(t, x, stamp_ns)`` is called through it with x_t's stamp (a visuomotor policy reads the
camera frame of that very instant).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


class TrialActor(Protocol):
    """What a trial runs: T steps of u_t = act(t, x_t) on states of dX entries, dU actions."""

    T: int
    dX: int
    dU: int

    def act(self, t: int, x: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class TrialSpec:
    """What to run.

    Attributes:
        controller: the linear-Gaussian controller (noise already folded into k) or another
            :class:`TrialActor` (a neural policy).
        horizon: policy steps T to run (<= controller.T).
        dt: policy step, s.
        ticks_per_step: control ticks each action is held (1 in lockstep).
        condition: condition index (recorded in the rollout).
        trial_id: identifier echoed in the rollout.
    """

    controller: TrialActor
    horizon: int
    dt: float
    ticks_per_step: int
    condition: int = 0
    trial_id: str = ""

    def __post_init__(self) -> None:
        if not 1 <= self.horizon <= self.controller.T:
            raise ValueError(f"horizon: expected 1..{self.controller.T} (the controller's T), "
                             f"found {self.horizon}")
        if self.ticks_per_step < 1:
            raise ValueError(f"ticks_per_step: expected >= 1, found {self.ticks_per_step}")
        if not self.dt > 0:
            raise ValueError(f"dt: expected > 0 s, found {self.dt}")


@dataclass(frozen=True)
class TrialResult:
    """A finished (or aborted) trial.

    Attributes:
        states: (t_end + 1, dX) states x_0..x_t_end (t_end = T when complete), or fewer rows if
            aborted before the next state was recorded.
        actions: (n_actions, dU) the commands sent, u_0..; n_actions is T when complete.
        stamps: (len(states),) state header stamps minus that of x_0, s.
        aborted: the trial did not run to the end.
        reason: why it was aborted, or a summary.
        altered_ticks: ticks on which the safety filter changed the held action.
        policy_faults: steps whose action the actor replaced by zero torque (non-finite values).
        stamps_ns: (len(states),) the states' header stamps, absolute integer ns (to pair each
            state exactly with other data of its instant, e.g. its camera frame).
    """

    spec: TrialSpec
    states: np.ndarray
    actions: np.ndarray
    stamps: np.ndarray
    aborted: bool
    reason: str
    altered_ticks: int = 0
    policy_faults: int = 0
    stamps_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


class TrialRun:
    """The running trial: call :meth:`tick` with the latest state on every control tick."""

    def __init__(self, spec: TrialSpec) -> None:
        self.spec = spec
        c = spec.controller
        self._states = np.empty((spec.horizon + 1, c.dX))
        self._actions = np.empty((spec.horizon, c.dU))
        self._stamps = np.empty(spec.horizon + 1)
        self._stamps_ns = np.zeros(spec.horizon + 1, dtype=np.int64)
        self._n_states = 0
        self._n_actions = 0
        self._tick = 0
        self._held: np.ndarray | None = None
        self.altered_ticks = 0
        self.policy_faults = 0
        self.fault: str | None = None
        """Set by the :meth:`tick` whose action the actor replaced by zeros (the reason)."""
        self.done = False
        self._actor_faults = getattr(c, "faults", 0)
        self._act_at = getattr(c, "act_at", None)

    @property
    def step(self) -> int:
        """Policy steps whose action has been sent so far."""
        return self._n_actions

    @property
    def next_tick_starts_step(self) -> bool:
        """Whether the next :meth:`tick` evaluates the controller (a policy-step boundary)."""
        return not self.done and self._tick % self.spec.ticks_per_step == 0

    @property
    def last_stamp(self) -> float | None:
        """Header stamp (absolute, s) of the last recorded state."""
        return None if self._n_states == 0 else float(self._stamps[self._n_states - 1])

    def tick(self, x: np.ndarray, stamp: float,
             stamp_ns: int | None = None) -> tuple[np.ndarray | None, bool]:
        """Advance one control tick with the latest state ``x`` (dX,) stamped ``stamp`` (s; the
        same in integer ns: ``stamp_ns``, default derived from ``stamp``).

        Returns:
            (action, new_step): the action to send this tick (None once the trial is complete:
            x_T has just been recorded) and whether this tick starts a policy step (the caller
            then reports the command it sent with :meth:`record_sent`).
        """
        if self.done:
            return None, False
        n = self.spec.ticks_per_step
        if self._tick % n:
            self._tick += 1
            return self._held, False
        t = self._tick // n
        self._states[t] = x
        self._stamps[t] = stamp
        self._stamps_ns[t] = round(stamp * 1e9) if stamp_ns is None else stamp_ns
        self._n_states = t + 1
        if t == self.spec.horizon:
            self.done = True
            return None, False
        actor = self.spec.controller
        self._held = actor.act(t, x) if self._act_at is None \
            else self._act_at(t, x, int(self._stamps_ns[t]))
        faults = getattr(actor, "faults", 0)
        if faults != self._actor_faults:
            self._actor_faults = faults
            self.policy_faults += 1
            self.fault = f"step {t}: {getattr(actor, 'last_fault', 'non-finite action')}: " \
                         "zero torque sent instead"
        else:
            self.fault = None
        self._tick += 1
        return self._held, True

    def record_sent(self, command: np.ndarray) -> None:
        """Record the command sent at the first tick of the current step as u_t."""
        self._actions[self._n_actions] = command
        self._n_actions += 1

    def check_sent(self, command: np.ndarray) -> None:
        """Count a mid-step tick whose sent command differs from the recorded u_t."""
        if self._n_actions and not np.array_equal(command, self._actions[self._n_actions - 1]):
            self.altered_ticks += 1

    def result(self, aborted: bool = False, reason: str = "") -> TrialResult:
        """The record so far as a :class:`TrialResult` (copies)."""
        n = self._n_states
        stamps = self._stamps[:n] - (self._stamps[0] if n else 0.0)
        if not reason:
            reason = f"completed {self._n_actions} steps"
            if self.altered_ticks:
                reason += (f"; the joint-limit guard altered the held action on "
                           f"{self.altered_ticks} ticks")
            if self.policy_faults:
                reason += (f"; {self.policy_faults} policy steps gave non-finite values "
                           "(zero torque sent instead)")
        return TrialResult(self.spec, self._states[:n].copy(),
                           self._actions[:self._n_actions].copy(), stamps, aborted, reason,
                           self.altered_ticks, self.policy_faults, self._stamps_ns[:n].copy())
