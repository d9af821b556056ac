"""The controller executor's mode machine, without ROS: one ``step`` per control tick.

Modes:

* ``idle``   zero torque. The arm's own torque interface compensates gravity (the simulator does,
  as Franka/KUKA torque interfaces do), so zero torque means "float, gravity compensated". On an
  arm without gravity compensation idle would let it fall: use hold there.
* ``reset``  joint-space PD tracking a minimum-jerk path to a condition's q0 until |q - q0| and
  |qd| are within tolerance (then ``hold`` at q0), or a timeout (then ``hold`` where it is, with
  the reason). In lockstep the simulator teleports instead (``StartReset(external=True)``); the
  loop then only shows the mode until ``FinishReset``.
* ``trial``  a linear-Gaussian controller (or a neural policy) stepped by
  :class:`~mbpl_ros.executor.trial.TrialRun`; ends in ``hold``.
* ``hold``   PD to the joint positions seen at the first fresh state after entering hold (or q0
  after a successful reset).
* ``estop``  zero torque, latched: only ``Release`` leaves it (to ``hold``). Entered on request, or
  by itself when a new state shows a joint beyond the safety limits' ``max_velocity`` while the
  executor drives the arm (reset, trial, hold): a controller out of control. Idle is exempt, so
  that moving the floating arm by hand stops nothing.

Time bases (one code path, :attr:`ExecutorConfig.lockstep`):

* real time: :meth:`ExecutorCore.step` runs every 1 kHz tick on the wall clock and its command is
  published every tick; a trial step lasts ``dt / period`` ticks.
* lockstep: :meth:`ExecutorCore.step` runs when a new state arrives (or a request does); it returns
  a command only when one must be sent: one per state during a trial (the simulator advances one
  policy step per command), and one zero command on e-stop. Outside a trial nothing is sent, so the
  simulator stands still, which is what hold means for a simulator that only moves when commanded.

Threading: callbacks call :meth:`ExecutorCore.submit` (a deque append, atomic); only the loop
thread calls :meth:`ExecutorCore.step`; events are appended to :attr:`ExecutorCore.events` for a
non-real-time consumer that pops them.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from mbpl_ros.executor.pd import PdGains, ResetLaw, ResetOutcome, ResetSettings
from mbpl_ros.executor.safety import SafetyFilter, SafetyFlags
from mbpl_ros.executor.trial import TrialResult, TrialRun, TrialSpec
from mbpl_ros.executor.watchdog import Freshness, StalenessWatchdog

USABLE = (Freshness.FRESH, Freshness.HOLD_LAST)
"""Freshness levels a reset or trial may start from (younger than the stale-stop limit)."""
LOCKSTEP_STAMP_TOLERANCE_S = 1e-4
"""Lockstep: largest difference between a state-to-state stamp step and the controller's dt."""


class Mode(enum.StrEnum):
    IDLE = "idle"
    RESET = "reset"
    TRIAL = "trial"
    HOLD = "hold"
    ESTOP = "estop"


DRIVING = frozenset((Mode.RESET, Mode.TRIAL, Mode.HOLD))
"""Modes in which the executor drives the arm (an overspeed in them e-stops it)."""


@dataclass(frozen=True, eq=False)
class StateSample:
    """One ArmState as the loop sees it; a new object per arrival (identity marks "new").

    Attributes:
        received: arrival time at the executor, monotonic clock, s.
        stamp: header stamp of the joint state it was computed from, s.
        q, qd: joint positions (n,) rad and (filtered) velocities (n,) rad/s.
        x: learning state (dX,), or None while the estimator has no target.
        target: target position (3,) m, or None.
        stamp_ns: the header stamp in integer ns (for exact matching).
    """

    received: float
    stamp: float
    q: np.ndarray
    qd: np.ndarray
    x: np.ndarray | None = None
    target: np.ndarray | None = None
    stamp_ns: int = 0


# ------------------------------------------------------------------------------ requests


@dataclass(frozen=True)
class EStop:
    reason: str = "e-stop requested"


@dataclass(frozen=True)
class Release:
    """Leave e-stop (to hold)."""


@dataclass(frozen=True)
class Hold:
    reason: str = "hold requested"


@dataclass(frozen=True)
class StartReset:
    """Reset to ``q_goal`` (n,); ``external``: the simulator teleports (lockstep)."""

    token: int
    q_goal: np.ndarray
    external: bool = False


@dataclass(frozen=True)
class FinishReset:
    """End an external reset."""

    token: int
    ok: bool
    reason: str


@dataclass(frozen=True)
class StartTrial:
    token: int
    spec: TrialSpec


@dataclass(frozen=True)
class CancelTrial:
    token: int
    reason: str = "trial canceled"


Request = EStop | Release | Hold | StartReset | FinishReset | StartTrial | CancelTrial

# -------------------------------------------------------------------------------- events


@dataclass(frozen=True)
class ModeChanged:
    mode: Mode
    reason: str


@dataclass(frozen=True)
class TrialProgress:
    token: int
    step: int


@dataclass(frozen=True)
class TrialFinished:
    token: int
    result: TrialResult


@dataclass(frozen=True)
class ResetFinished:
    token: int
    ok: bool
    reason: str


@dataclass(frozen=True)
class SafetyAction:
    """Something the loop did for safety; ``kind`` is a short key for log throttling."""

    kind: str
    message: str


Event = ModeChanged | TrialProgress | TrialFinished | ResetFinished | SafetyAction


@dataclass(frozen=True)
class ExecutorConfig:
    """Settings of the mode machine.

    Attributes:
        gains: PD gains of reset and hold.
        gains_at: optional gains for a configuration q (n,), e.g. from the mass matrix M(q):
            evaluated once when a reset starts (at its goal) and when hold captures its position,
            never per tick; overrides ``gains`` when given. Called from the loop thread only.
        reset: reset tolerances, timeout and path speed.
        lockstep: lockstep time base (see the module docstring).
        stale_hold_s: real time: hold the last command when the newest state is older, s.
        stale_stop_s: real time: zero torque (and abort a trial/reset) when older, s.
        lockstep_timeout_s: lockstep: a command unanswered by a new state for this long aborts
            the trial, s.
    """

    gains: PdGains
    reset: ResetSettings = field(default_factory=ResetSettings)
    gains_at: Callable[[np.ndarray], PdGains] | None = None
    lockstep: bool = False
    stale_hold_s: float = 0.005
    stale_stop_s: float = 0.020
    lockstep_timeout_s: float = 2.0


class ExecutorCore:
    """Modes, watchdog, safety filter and trial stepping of the controller executor."""

    def __init__(self, config: ExecutorConfig, safety: SafetyFilter,
                 initial_mode: Mode = Mode.IDLE) -> None:
        n = safety.limits.n_joints
        if config.gains.n_joints != n:
            raise ValueError(f"gains for {config.gains.n_joints} joints, safety limits for {n}")
        if initial_mode not in (Mode.IDLE, Mode.HOLD):
            raise ValueError(f"initial mode: expected idle or hold, found {initial_mode.value}")
        self.config = config
        self.safety = safety
        self.n_joints = n
        self.events: deque[Event] = deque()
        self.events_emitted = 0
        self.mode = initial_mode
        self.reason = "started"
        self.ticks = 0
        if config.lockstep:
            timeout = config.lockstep_timeout_s
            self.watchdog = StalenessWatchdog(timeout, timeout)
        else:
            self.watchdog = StalenessWatchdog(config.stale_hold_s, config.stale_stop_s)
        self._requests: deque[Request] = deque()
        self._zero = np.zeros(n)
        self._last_command = np.zeros(n)
        self._hold_q: np.ndarray | None = None
        self._hold_gains: PdGains | None = None
        self._reset_law: ResetLaw | None = None
        self._reset_goal: np.ndarray | None = None
        self._reset_token: int | None = None
        self._trial: TrialRun | None = None
        self._trial_token: int | None = None
        self._trial_stale_steps = 0
        self._kick = False
        self._last_sample: StateSample | None = None
        self._awaiting_since: float | None = None
        self._last_flags = SafetyFlags.NONE

    # ------------------------------------------------------------------------- interface

    def submit(self, request: Request) -> None:
        """Queue a request for the next :meth:`step` (any thread)."""
        self._requests.append(request)

    @property
    def trial_step(self) -> int:
        """Policy steps sent in the running trial (0 without one)."""
        return 0 if self._trial is None else self._trial.step

    @property
    def busy(self) -> bool:
        """A trial or reset is running."""
        return self.mode in (Mode.TRIAL, Mode.RESET)

    def step(self, now: float, sample: StateSample | None) -> np.ndarray | None:
        """One control step at ``now`` (monotonic s) with the newest state (None: none yet).

        Returns the safe effort command (n,) to publish, or None (lockstep: nothing to send).
        """
        self.ticks += 1
        lockstep = self.config.lockstep
        new = sample is not None and sample is not self._last_sample
        self._last_sample = sample
        response = False
        if sample is None:
            age = None
        elif lockstep:
            if new and self._awaiting_since is not None and self._is_next_state(sample):
                self._awaiting_since = None
                response = True
            age = 0.0 if self._awaiting_since is None else now - self._awaiting_since
        else:
            age = now - sample.received
        level = self.watchdog.update(age)

        once: np.ndarray | None = None
        while self._requests:
            command = self._handle(self._requests.popleft(), now, sample, level)
            if command is not None:
                once = command
        if self.watchdog.changed:
            self._on_freshness_change(level)
            level = self.watchdog.level
        if new and self.mode in DRIVING:
            overspeed = self.safety.overspeed(sample.qd)
            if overspeed is not None:
                self._emit(SafetyAction("overspeed", f"{overspeed}: e-stop"))
                once = self._handle(EStop(overspeed), now, sample, level)

        if lockstep:
            return self._lockstep_command(now, sample, response, once)
        return self._realtime_command(now, sample, level)

    # ----------------------------------------------------------------------- time bases

    def _realtime_command(self, now: float, sample: StateSample | None,
                          level: Freshness) -> np.ndarray:
        if self.mode in (Mode.IDLE, Mode.ESTOP) or level in (Freshness.NO_STATE,
                                                             Freshness.STOPPED):
            command = self._zero
        elif level is Freshness.HOLD_LAST and self.mode is not Mode.TRIAL:
            command = self._last_command
        else:
            if level is Freshness.HOLD_LAST and self._trial is not None \
                    and self._trial.next_tick_starts_step:
                self._trial_stale_steps += 1
            command = self._mode_command(now, sample)
        self._last_command = command
        return command

    def _lockstep_command(self, now: float, sample: StateSample | None, response: bool,
                          once: np.ndarray | None) -> np.ndarray | None:
        if self.mode is Mode.TRIAL and sample is not None and (response or self._kick):
            self._kick = False
            trial = self._trial
            last = trial.last_stamp
            if last is not None and abs(sample.stamp - last - trial.spec.dt) > \
                    LOCKSTEP_STAMP_TOLERANCE_S:
                self._abort(
                    f"lockstep: the simulator advanced {(sample.stamp - last) * 1e3:.1f} ms per "
                    f"command but the controller's dt is {trial.spec.dt * 1e3:.1f} ms (set the "
                    "bridge's lockstep_steps to dt / physics step)", Mode.HOLD)
                return once
            command = self._trial_step(sample)
            if command is not None:
                self._awaiting_since = now
                self._last_command = command
                return command
        return once

    def _is_next_state(self, sample: StateSample) -> bool:
        """Lockstep: a state answers the pending command unless it repeats the last stamp (an
        estimator re-publishing the same joint state with a new target)."""
        last = None if self._trial is None else self._trial.last_stamp
        return last is None or sample.stamp > last

    # ----------------------------------------------------------------------------- modes

    def _mode_command(self, now: float, sample: StateSample) -> np.ndarray:
        mode = self.mode
        if mode is Mode.TRIAL:
            command = self._trial_step(sample)
            if command is not None:
                return command
            mode = self.mode  # the trial ended: hold from this tick on
        elif mode is Mode.RESET and self._reset_law is not None:
            law = self._reset_law
            outcome, reason = law.outcome(now, sample.q, sample.qd)
            if outcome is ResetOutcome.RUNNING:
                return self._filter(law.torque(now, sample.q, sample.qd), sample)
            ok = outcome is ResetOutcome.CONVERGED
            self._end_reset(ok, reason, hold_at=law.q_goal if ok else None)
            mode = self.mode
        if mode is Mode.HOLD:
            if self._hold_q is None:
                self._hold_q = sample.q.copy()
            if self._hold_gains is None:
                self._hold_gains = self._gains(self._hold_q)
            return self._filter(self._hold_gains.torque(sample.q, sample.qd, self._hold_q),
                                sample)
        return self._zero  # idle, estop, or an external (lockstep) reset

    def _trial_step(self, sample: StateSample) -> np.ndarray | None:
        """One trial tick (real time) or step (lockstep); None once the trial has ended."""
        trial = self._trial
        x = sample.x
        if x is None or x.shape != (trial.spec.controller.dX,):
            found = "no x (no target at the estimator)" if x is None else f"{x.size} entries"
            self._abort(f"state x lost mid-trial: expected {trial.spec.controller.dX} entries, "
                        f"found {found}", Mode.HOLD)
            return None
        action, new_step = trial.tick(x, sample.stamp, sample.stamp_ns or None)
        if action is None:
            result = trial.result()
            if self._trial_stale_steps:
                result = replace(result, reason=result.reason + f"; {self._trial_stale_steps} "
                                 "steps used a state older than the stale-hold limit")
            self._finish_trial(result, Mode.HOLD, f"trial {trial.spec.trial_id} complete")
            return None
        if new_step and trial.fault is not None:
            self._emit(SafetyAction("policy_fault", f"trial {trial.spec.trial_id}: {trial.fault}"))
        command = self._filter(action, sample)
        if new_step:
            trial.record_sent(command)
            self._emit(TrialProgress(self._trial_token, trial.step))
        else:
            trial.check_sent(command)
        return command

    def _filter(self, desired: np.ndarray, sample: StateSample | None) -> np.ndarray:
        q = None if sample is None else sample.q
        qd = None if sample is None else sample.qd
        command, flags = self.safety.apply(desired, q, qd)
        # (flag arithmetic costs µs per tick: skipped in the usual case, nothing raised)
        fresh_flags = flags & ~self._last_flags if flags else flags
        if fresh_flags:
            kind = "+".join(f.name.lower() for f in SafetyFlags if f and f in fresh_flags)
            self._emit(SafetyAction(kind, self.safety.describe(flags, desired, q)))
        self._last_flags = flags
        return command

    # -------------------------------------------------------------------------- requests

    def _handle(self, request: Request, now: float, sample: StateSample | None,
                level: Freshness) -> np.ndarray | None:
        """Apply one request; returns a command to send once (lockstep e-stop) or None."""
        if isinstance(request, EStop):
            reason = f"e-stop: {request.reason}"
            self._abort(reason, Mode.ESTOP)
            if self.mode is not Mode.ESTOP:
                self._set_mode(Mode.ESTOP, reason)
            return self._zero.copy()
        if isinstance(request, Release):
            if self.mode is Mode.ESTOP:
                self._hold(None)
                self._set_mode(Mode.HOLD, "released from e-stop")
            return None
        if isinstance(request, Hold):
            if self.mode is not Mode.ESTOP:
                self._abort(request.reason, Mode.HOLD)
                self._hold(None)
                if self.mode is not Mode.HOLD:
                    self._set_mode(Mode.HOLD, request.reason)
            return None
        if isinstance(request, StartReset):
            self._start_reset(request, now, sample, level)
            return None
        if isinstance(request, FinishReset):
            if self.mode is Mode.RESET and request.token == self._reset_token:
                self._end_reset(request.ok, request.reason,
                                hold_at=self._reset_goal if request.ok else None)
            return None
        if isinstance(request, StartTrial):
            self._start_trial(request, sample, level)
            return None
        if isinstance(request, CancelTrial):
            if self._trial is not None and request.token == self._trial_token:
                self._abort(request.reason, Mode.HOLD)
            return None
        raise TypeError(f"unknown request {request!r}")

    def _refusal(self) -> str | None:
        if self.mode is Mode.ESTOP:
            return "e-stop latched: call ~/release first"
        if self.busy:
            return f"busy: the executor is in {self.mode.value} ({self.reason})"
        return None

    def _start_reset(self, request: StartReset, now: float, sample: StateSample | None,
                     level: Freshness) -> None:
        refusal = self._refusal()
        goal = np.asarray(request.q_goal, dtype=float)
        if refusal is None and goal.shape != (self.n_joints,):
            refusal = f"reset goal: expected {self.n_joints} joint positions, found {goal.size}"
        if refusal is None and not request.external and (sample is None
                                                         or level not in USABLE):
            refusal = f"no fresh state to start the reset from ({self.watchdog.describe()})"
        if refusal is not None:
            self._emit(ResetFinished(request.token, False, refusal))
            return
        self._reset_token = request.token
        self._reset_goal = goal.copy()
        if request.external:
            self._reset_law = None
            self._set_mode(Mode.RESET, "reset by the simulator (lockstep)")
            return
        try:
            self._reset_law = ResetLaw(self._gains(goal), self.config.reset, sample.q, goal, now)
        except ValueError as err:
            self._emit(ResetFinished(request.token, False, str(err)))
            return
        self._set_mode(Mode.RESET, f"PD reset along a {self._reset_law.path.duration:.2f} s "
                                   "minimum-jerk path")

    def _end_reset(self, ok: bool, reason: str, hold_at: np.ndarray | None) -> None:
        token = self._reset_token
        self._reset_law = None
        self._reset_token = None
        self._hold(hold_at)
        self._set_mode(Mode.HOLD, reason)
        self._emit(ResetFinished(token, ok, reason))

    def _start_trial(self, request: StartTrial, sample: StateSample | None,
                     level: Freshness) -> None:
        spec = request.spec
        refusal = self._refusal()
        if refusal is None:
            if sample is None or sample.x is None:
                refusal = ("no state with x yet: the state estimator has no target (it needs "
                           "one on target_position) or no joint state")
            elif not self.config.lockstep and level not in USABLE:
                refusal = f"no fresh state to start the trial from ({self.watchdog.describe()})"
            elif sample.x.shape != (spec.controller.dX,):
                refusal = (f"state x has {sample.x.size} entries, the controller expects "
                           f"{spec.controller.dX}")
        if refusal is not None:
            self._emit(TrialFinished(request.token, TrialRun(spec).result(True, refusal)))
            return
        self._trial = TrialRun(spec)
        self._trial_token = request.token
        self._trial_stale_steps = 0
        self._kick = True
        self._awaiting_since = None
        self._set_mode(Mode.TRIAL, f"trial {spec.trial_id}: condition {spec.condition}, "
                                   f"{spec.horizon} steps of {spec.dt * 1e3:.0f} ms")

    # ------------------------------------------------------------------------- helpers

    def _abort(self, reason: str, next_mode: Mode) -> None:
        """End a running trial or reset as failed with ``reason`` and switch to ``next_mode``."""
        if self._trial is not None:
            self._finish_trial(self._trial.result(True, reason), next_mode, reason)
        elif self.mode is Mode.RESET:
            token = self._reset_token
            self._reset_law = None
            self._reset_token = None
            self._hold(None)
            self._set_mode(next_mode, reason)
            self._emit(ResetFinished(token, False, reason))

    def _finish_trial(self, result: TrialResult, next_mode: Mode, reason: str) -> None:
        token = self._trial_token
        self._trial = None
        self._trial_token = None
        self._awaiting_since = None
        self._hold(None)
        self._set_mode(next_mode, reason)
        self._emit(TrialFinished(token, result))

    def _on_freshness_change(self, level: Freshness) -> None:
        previous = self.watchdog.previous
        reason = self.watchdog.describe()
        if level is Freshness.STOPPED:
            active = self.busy
            self._emit(SafetyAction("stale", f"{reason}: zero torque"
                                    + (f", aborting the {self.mode.value}" if active else "")))
            if active:
                self._abort(reason, Mode.HOLD)
            self._hold(None)
            if self.config.lockstep:
                self._awaiting_since = None
                self.watchdog.update(0.0)
        elif level is Freshness.HOLD_LAST:
            self._emit(SafetyAction("stale_hold", f"{reason}: holding the last command"))
        elif level is Freshness.FRESH and previous is Freshness.STOPPED:
            self._hold(None)
            self._emit(SafetyAction("fresh", "states are arriving again"))

    def _gains(self, q: np.ndarray) -> PdGains:
        """PD gains for holding or reaching ``q`` (scheduled on the configuration if the config
        has ``gains_at``)."""
        return self.config.gains if self.config.gains_at is None else self.config.gains_at(q)

    def _hold(self, q: np.ndarray | None) -> None:
        """Hold at ``q`` from now on, or at the next fresh state's position if None."""
        self._hold_q = None if q is None else np.array(q, dtype=float)
        self._hold_gains = None

    def _set_mode(self, mode: Mode, reason: str) -> None:
        self.mode = mode
        self.reason = reason
        self._emit(ModeChanged(mode, reason))

    def _emit(self, event: Event) -> None:
        self.events.append(event)
        self.events_emitted += 1
