"""The controller executor's logic without ROS: the safety filter, the staleness watchdog, trial
stepping and the mode machine on a fake clock, and the PD reset on the simulated arm."""

from __future__ import annotations

import numpy as np
import pytest

from mbpl_ros.core.controllers import LinearGaussianController
from mbpl_ros.executor import (
    CancelTrial,
    EStop,
    ExecutorConfig,
    ExecutorCore,
    FinishReset,
    Freshness,
    Hold,
    Mode,
    PdGains,
    Release,
    ResetFinished,
    ResetSettings,
    SafetyAction,
    SafetyFilter,
    SafetyFlags,
    SafetyLimits,
    StalenessWatchdog,
    StartReset,
    StartTrial,
    StateSample,
    TrialFinished,
    TrialProgress,
    TrialRun,
    TrialSpec,
)

N = 3
PERIOD = 0.001


MAX_VELOCITY = np.array([3.0, 3.0, 4.0])


def limits(margin: float = 0.1) -> SafetyLimits:
    return SafetyLimits(effort=np.array([10.0, 10.0, 2.0]), lower=np.full(N, -1.0),
                        upper=np.full(N, 1.0), margin=margin, limit_damping=np.full(N, 0.5),
                        max_velocity=MAX_VELOCITY)


def make_core(lockstep: bool = False, mode: Mode = Mode.IDLE, **config) -> ExecutorCore:
    gains = PdGains(np.full(N, 4.0), np.full(N, 1.0))
    return ExecutorCore(ExecutorConfig(gains=gains, lockstep=lockstep, **config),
                        SafetyFilter(limits()), mode)


def sample(now: float, q=None, qd=None, x=None, stamp: float | None = None) -> StateSample:
    q = np.zeros(N) if q is None else np.asarray(q, dtype=float)
    qd = np.zeros(N) if qd is None else np.asarray(qd, dtype=float)
    stamp = now if stamp is None else stamp
    return StateSample(now, stamp, q, qd, None if x is None else np.asarray(x, dtype=float),
                       None, round(stamp * 1e9))


def events(core: ExecutorCore, kind) -> list:
    return [e for e in core.events if isinstance(e, kind)]


def controller(T: int, dX: int, seed: int = 0, scale: float = 1.0) -> LinearGaussianController:
    rng = np.random.default_rng(seed)
    return LinearGaussianController(scale * rng.standard_normal((T, N, dX)),
                                    scale * rng.standard_normal((T, N)),
                                    np.tile(np.eye(N), (T, 1, 1)))


# ------------------------------------------------------------------------------ safety filter


def test_efforts_are_clamped_to_the_limits_and_flagged():
    f = SafetyFilter(limits())
    out, flags = f.apply(np.array([12.0, -3.0, -5.0]))
    np.testing.assert_array_equal(out, [10.0, -3.0, -2.0])
    assert flags == SafetyFlags.CLAMPED
    out, flags = f.apply(np.array([1.0, -3.0, 0.5]))
    assert flags == SafetyFlags.NONE and np.array_equal(out, [1.0, -3.0, 0.5])
    assert "clamped" in f.describe(SafetyFlags.CLAMPED, np.array([12.0, 0, 0]), None)


@pytest.mark.parametrize("bad", [[np.nan, 0.0, 0.0], [0.0, np.inf, 0.0], [1.0, 2.0]])
def test_non_finite_or_wrong_size_commands_become_zero_torque(bad):
    out, flags = SafetyFilter(limits()).apply(np.array(bad))
    np.testing.assert_array_equal(out, np.zeros(N))
    assert flags == SafetyFlags.NON_FINITE


def test_joint_limit_guard_removes_outward_torque_and_damps_outward_motion():
    f = SafetyFilter(limits(margin=0.1))
    q = np.array([0.95, -0.95, 0.0])  # joint 0 near upper, joint 1 near lower, joint 2 free
    # Outward torques are removed; inward ones and the free joint are untouched.
    out, flags = f.apply(np.array([3.0, -3.0, 1.0]), q, np.zeros(N))
    np.testing.assert_array_equal(out, [0.0, 0.0, 1.0])
    assert flags == SafetyFlags.LIMIT_GUARD
    out, flags = f.apply(np.array([-3.0, 3.0, 1.0]), q, np.zeros(N))
    np.testing.assert_array_equal(out, [-3.0, 3.0, 1.0])
    assert flags == SafetyFlags.NONE
    # Outward velocity is braked (damping 0.5), inward velocity is not.
    out, _ = f.apply(np.zeros(N), q, np.array([2.0, -2.0, 5.0]))
    np.testing.assert_allclose(out, [-1.0, 1.0, 0.0])
    out, flags = f.apply(np.zeros(N), q, np.array([-2.0, 2.0, 0.0]))
    np.testing.assert_array_equal(out, np.zeros(N))
    # Beyond the limit the same rules hold, and the guard's torque is clamped last.
    out, flags = f.apply(np.array([50.0, 0.0, 0.0]), np.array([1.2, 0.0, 0.0]),
                         np.array([100.0, 0.0, 0.0]))
    np.testing.assert_array_equal(out, [-10.0, 0.0, 0.0])
    assert flags == SafetyFlags.LIMIT_GUARD | SafetyFlags.CLAMPED
    # Without a state there is nothing to guard.
    out, flags = f.apply(np.array([3.0, -3.0, 1.0]))
    assert flags == SafetyFlags.NONE


def test_limits_are_validated_with_expected_and_found():
    with pytest.raises(ValueError, match="margin"):
        SafetyLimits(np.ones(N), -np.ones(N), np.ones(N), 1.5, np.zeros(N))
    with pytest.raises(ValueError, match="effort"):
        SafetyLimits(np.array([1.0, 0.0, 1.0]), -np.ones(N), np.ones(N), 0.1, np.zeros(N))


# --------------------------------------------------------------------------------- watchdog


def test_watchdog_levels_follow_the_age_of_the_newest_state():
    w = StalenessWatchdog(0.005, 0.020)
    assert w.update(None) is Freshness.NO_STATE
    assert w.update(0.001) is Freshness.FRESH and w.changed
    assert w.update(0.004) is Freshness.FRESH and not w.changed
    assert w.update(0.006) is Freshness.HOLD_LAST
    assert w.update(0.0201) is Freshness.STOPPED
    assert "20.1 ms" in w.describe() and "limit 20.0 ms" in w.describe()
    assert w.update(0.0) is Freshness.FRESH and w.previous is Freshness.STOPPED
    with pytest.raises(ValueError):
        StalenessWatchdog(0.02, 0.005)


def test_realtime_staleness_holds_the_last_command_then_zeroes_and_aborts_the_trial():
    core = make_core(mode=Mode.HOLD)
    state = sample(0.0, q=[0.1, 0.0, 0.0])
    core.step(0.0, state)  # hold captures q
    core.step(0.001, sample(0.001, q=[0.0, 0.0, 0.0]))  # pulled back to 0.1: kp * 0.1
    fresh = sample(0.002, q=[0.0, 0.0, 0.0])
    first = core.step(0.002, fresh)
    np.testing.assert_allclose(first, [0.4, 0.0, 0.0])
    dX = 4
    spec = TrialSpec(controller(10, dX), 10, 0.005, 5)
    fresh_x = sample(0.003, x=np.ones(dX))
    core.submit(StartTrial(7, spec))
    trial_first = core.step(0.003, fresh_x)
    assert core.mode is Mode.TRIAL
    # 4 ms old: fresh, the trial continues; 10 ms old: the last command is held.
    np.testing.assert_array_equal(core.step(0.007, fresh_x), trial_first)
    np.testing.assert_array_equal(core.step(0.013, fresh_x), trial_first)
    assert any(e.kind == "stale_hold" for e in events(core, SafetyAction))
    # 25 ms old: zero torque, the trial is aborted with the reason, hold.
    np.testing.assert_array_equal(core.step(0.028, fresh_x), np.zeros(N))
    (finished,) = events(core, TrialFinished)
    assert finished.token == 7 and finished.result.aborted
    assert "stale state: 25.0 ms" in finished.result.reason
    assert core.mode is Mode.HOLD and "stale state" in core.reason
    # States again: hold recaptures where the arm is now (no jump back to an old position).
    now_q = sample(0.029, q=[0.3, 0.0, 0.0])
    np.testing.assert_allclose(core.step(0.029, now_q), np.zeros(N))


def test_no_state_means_zero_torque_in_every_mode():
    for mode in (Mode.IDLE, Mode.HOLD):
        core = make_core(mode=mode)
        np.testing.assert_array_equal(core.step(0.0, None), np.zeros(N))


# ---------------------------------------------------------------------------- trial stepping


def test_trial_holds_each_action_for_dt_and_records_exactly_what_was_sent():
    T, ticks, dX = 4, 5, 3
    ctrl = controller(T, dX, seed=1, scale=4.0)  # large enough that some efforts clamp
    core = make_core()
    core.submit(StartTrial(1, TrialSpec(ctrl, T, ticks * PERIOD, ticks, 2, "t1")))
    sent, xs = [], []
    for k in range(T * ticks + 1):
        now = k * PERIOD
        x = np.array([np.sin(k), np.cos(k), 0.01 * k])
        xs.append(x)
        sent.append(core.step(now, sample(now, x=x)))
    (finished,) = events(core, TrialFinished)
    result = finished.result
    assert not result.aborted and result.reason == f"completed {T} steps"
    assert result.states.shape == (T + 1, dX) and result.actions.shape == (T, N)
    sent = np.array(sent)
    for t in range(T):
        block = sent[t * ticks:(t + 1) * ticks]
        assert np.all(block == block[0]), f"action {t} not held for dt"
        np.testing.assert_array_equal(block[0], result.actions[t])
        np.testing.assert_array_equal(result.states[t], xs[t * ticks])
        expected = np.clip(ctrl.K[t] @ xs[t * ticks] + ctrl.k[t], -limits().effort,
                           limits().effort)
        np.testing.assert_allclose(result.actions[t], expected)
    np.testing.assert_array_equal(result.states[T], xs[T * ticks])
    np.testing.assert_allclose(result.stamps, np.arange(T + 1) * ticks * PERIOD)
    assert np.any(np.abs(result.actions) == limits().effort), "no clamped action tested"
    assert [e.step for e in events(core, TrialProgress)] == [1, 2, 3, 4]
    assert core.mode is Mode.HOLD  # after the trial


def test_trial_run_alone_counts_guard_changes_mid_step():
    run = TrialRun(TrialSpec(controller(2, 2), 2, 0.003, 3))
    action, new = run.tick(np.zeros(2), 0.0)
    assert new
    run.record_sent(action)
    run.check_sent(action)
    run.check_sent(action + 1.0)
    assert run.altered_ticks == 1
    assert "guard altered the held action on 1 ticks" in run.result().reason


def test_trial_start_is_refused_with_the_reason():
    core = make_core()
    spec = TrialSpec(controller(3, 4), 3, 0.005, 5)
    core.submit(StartTrial(1, spec))
    core.step(0.0, sample(0.0))  # no x: the estimator has no target
    core.submit(StartTrial(2, spec))
    core.step(0.001, sample(0.001, x=np.ones(6)))
    core.submit(EStop())
    core.submit(StartTrial(3, spec))
    core.step(0.002, sample(0.002, x=np.ones(4)))
    reasons = {e.token: e.result.reason for e in events(core, TrialFinished)}
    assert "no state with x yet" in reasons[1]
    assert "state x has 6 entries, the controller expects 4" in reasons[2]
    assert "e-stop latched" in reasons[3]


def test_estop_aborts_the_trial_latches_zero_torque_until_release():
    core = make_core(mode=Mode.HOLD)
    spec = TrialSpec(controller(50, 2), 50, 0.002, 2)
    core.submit(StartTrial(1, spec))
    for k in range(6):
        out = core.step(k * PERIOD, sample(k * PERIOD, x=np.ones(2)))
    assert np.any(out != 0)
    core.submit(EStop("operator"))
    np.testing.assert_array_equal(core.step(0.006, sample(0.006, x=np.ones(2))), np.zeros(N))
    (finished,) = events(core, TrialFinished)
    assert finished.result.aborted and finished.result.reason == "e-stop: operator"
    assert finished.result.actions.shape == (3, N)
    core.submit(Hold())
    core.submit(StartReset(2, np.zeros(N)))
    for k in range(7, 20):
        np.testing.assert_array_equal(core.step(k * PERIOD, sample(k * PERIOD, q=[0.5, 0, 0])),
                                      np.zeros(N))
    assert core.mode is Mode.ESTOP
    assert "e-stop latched" in events(core, ResetFinished)[0].reason
    core.submit(Release())
    out = core.step(0.020, sample(0.020, q=[0.5, 0, 0]))
    assert core.mode is Mode.HOLD and np.allclose(out, 0.0)  # holds where it is


def test_overspeed_reports_the_joints_beyond_their_bounds():
    f = SafetyFilter(limits())
    assert f.overspeed(np.array([3.0, -3.0, 4.0])) is None  # at the bounds
    assert f.overspeed(np.array([0.0, -3.5, 4.5])) == (
        "joints [1, 2] at [-3.5, 4.5] rad/s, beyond their velocity bounds [3.0, 4.0] rad/s")
    assert "joints [0]" in f.overspeed(np.array([np.nan, 0.0, 0.0]))
    unchecked = SafetyFilter(SafetyLimits(np.ones(N), -np.ones(N), np.ones(N), 0.1, np.zeros(N)))
    assert unchecked.overspeed(np.full(N, 1e6)) is None
    for bad in (0.0, -1.0, np.nan):
        with pytest.raises(ValueError, match="max_velocity"):
            SafetyLimits(np.ones(N), -np.ones(N), np.ones(N), 0.1, np.zeros(N), max_velocity=bad)


@pytest.mark.parametrize("lockstep", [False, True])
def test_overspeed_while_driving_the_arm_estops_it(lockstep):
    core = make_core(lockstep=lockstep, mode=Mode.HOLD)
    core.submit(StartTrial(1, TrialSpec(controller(50, 2), 50, 0.002, 1 if lockstep else 2)))
    for k in range(4):
        core.step(k * PERIOD, sample(k * PERIOD, x=np.ones(2), stamp=k * 0.002))
    assert core.mode is Mode.TRIAL
    fast = sample(0.004, qd=[0.0, 0.0, -4.2], x=np.ones(2), stamp=0.008)
    out = core.step(0.004, fast)
    np.testing.assert_array_equal(out, np.zeros(N))  # lockstep too: one zero command
    assert core.mode is Mode.ESTOP
    (finished,) = events(core, TrialFinished)
    assert finished.result.aborted and finished.result.reason == (
        "e-stop: joints [2] at [-4.2] rad/s, beyond their velocity bounds [4.0] rad/s")
    assert [e.kind for e in events(core, SafetyAction)] == ["overspeed"]
    # Latched: later states, fast or not, keep zero torque until a release.
    for k in range(5, 9):
        out = core.step(k * PERIOD, sample(k * PERIOD, qd=[0.0, 0.0, 0.1 * k]))
        assert out is None if lockstep else np.array_equal(out, np.zeros(N))
    assert core.mode is Mode.ESTOP


def test_overspeed_in_idle_stops_nothing():
    core = make_core(mode=Mode.IDLE)  # an operator moving the floating arm by hand
    core.step(0.0, sample(0.0, qd=[10.0, 0.0, 0.0]))
    assert core.mode is Mode.IDLE and not events(core, SafetyAction)


def test_cancel_and_hold_abort_a_trial():
    core = make_core()
    for token, request in ((1, CancelTrial(1, "canceled")), (2, Hold("operator hold"))):
        core.submit(StartTrial(token, TrialSpec(controller(20, 2), 20, 0.002, 2)))
        core.step(0.0, sample(0.0, x=np.ones(2)))
        core.submit(request)
        core.step(0.001, sample(0.001, x=np.ones(2)))
    reasons = [e.result.reason for e in events(core, TrialFinished)]
    assert reasons == ["canceled", "operator hold"]
    assert core.mode is Mode.HOLD


# ---------------------------------------------------------------------------------- lockstep


def test_lockstep_sends_one_command_per_new_state_and_nothing_otherwise():
    core = make_core(lockstep=True, lockstep_timeout_s=1.0)
    dX, dt = 2, 0.05
    state = sample(0.0, x=np.zeros(dX), stamp=0.0)
    assert core.step(0.0, state) is None  # idle: the simulator is left alone
    core.submit(StartTrial(1, TrialSpec(controller(3, dX), 3, dt, 1)))
    first = core.step(0.01, state)  # starts at once from the current state
    assert first is not None
    assert core.step(0.02, state) is None  # no new state: no command
    duplicate = sample(0.03, x=np.ones(dX), stamp=0.0)  # re-published, same stamp
    assert core.step(0.03, duplicate) is None
    sent = [first]
    for t in (1, 2):
        sent.append(core.step(0.03 + t, sample(0.03 + t, x=np.full(dX, t), stamp=t * dt)))
        assert sent[-1] is not None
    assert core.step(3.5, sample(3.5, x=np.full(dX, 3), stamp=3 * dt)) is None
    (finished,) = events(core, TrialFinished)
    np.testing.assert_array_equal(finished.result.actions, np.array(sent))
    np.testing.assert_array_equal(finished.result.states[:, 0], [0, 1, 2, 3])
    np.testing.assert_allclose(finished.result.stamps, [0, 0.05, 0.1, 0.15])


def test_lockstep_aborts_on_silence_and_on_a_wrong_step_length():
    core = make_core(lockstep=True, lockstep_timeout_s=1.0)
    core.submit(StartTrial(1, TrialSpec(controller(5, 2), 5, 0.05, 1)))
    assert core.step(0.0, sample(0.0, x=np.zeros(2), stamp=0.0)) is not None
    assert core.step(0.9, sample(0.0, x=np.zeros(2), stamp=0.0)) is None
    core.step(1.2, sample(0.0, x=np.zeros(2), stamp=0.0))
    (stale,) = events(core, TrialFinished)
    assert stale.result.aborted and "stale state" in stale.result.reason
    assert core.mode is Mode.HOLD
    core.submit(StartTrial(2, TrialSpec(controller(5, 2), 5, 0.05, 1)))
    core.step(2.0, sample(2.0, x=np.zeros(2), stamp=1.0))
    core.step(2.1, sample(2.1, x=np.zeros(2), stamp=1.02))
    wrong = events(core, TrialFinished)[-1]
    assert wrong.token == 2 and "advanced 20.0 ms per command" in wrong.result.reason


def test_lockstep_estop_sends_one_zero_command_and_external_reset_follows_the_bridge():
    core = make_core(lockstep=True)
    core.submit(StartReset(1, np.zeros(N), external=True))
    assert core.step(0.0, None) is None and core.mode is Mode.RESET
    core.submit(FinishReset(1, True, "teleported"))
    core.step(0.1, None)
    assert events(core, ResetFinished)[0].ok and core.mode is Mode.HOLD
    core.submit(EStop())
    np.testing.assert_array_equal(core.step(0.2, None), np.zeros(N))
    assert core.step(0.3, None) is None and core.mode is Mode.ESTOP


# ------------------------------------------------------------------------- PD reset on the arm


@pytest.fixture(scope="module")
def arm():
    pytest.importorskip("mujoco")
    from mbpl_sim import make_sim
    from mbpl_sim.tasks import make_conditions, task_kinematics

    sim = make_sim("mujoco", task="reach")
    conditions = make_conditions(sim.task, sim.description, 2, np.random.default_rng(3))
    yield sim, conditions, task_kinematics(sim.task, sim.description)
    sim.close()


def arm_core(arm, frequency_hz: float = 2.0, **reset) -> ExecutorCore:
    sim, conditions, kinematics = arm
    d = sim.description

    def gains_at(q):
        return PdGains.from_inertia(kinematics.mass_matrix(q), frequency_hz)

    mass = kinematics.mass_matrix(conditions[0].joint_positions)
    safety = SafetyLimits(d.effort_limits, d.lower, d.upper, 0.05,
                          4 * np.pi * frequency_hz / np.diag(np.linalg.inv(mass)))
    config = ExecutorConfig(gains=gains_at(conditions[0].joint_positions),
                            reset=ResetSettings(**reset), gains_at=gains_at)
    return ExecutorCore(config, SafetyFilter(safety), Mode.HOLD)


def run_on_arm(arm, core: ExecutorCore, seconds: float, delay_ticks: int = 0):
    """1 kHz loop on the simulated arm, each state measured ``delay_ticks`` ms before it
    arrives (transport delay: it is fresh on arrival, old in content)."""
    sim = arm[0]
    history, torques = [], []
    for k in range(round(seconds / PERIOD)):
        now = k * PERIOD
        history.append((sim.sim_time, sim.joint_positions(), sim.joint_velocities()))
        stamp, q, qd = history[max(0, len(history) - 1 - delay_ticks)]
        torques.append(sim.step(core.step(now, StateSample(now, stamp, q, qd)), 1))
        if any(isinstance(e, ResetFinished) for e in core.events):
            break
    return np.array(torques)


@pytest.mark.parametrize("delay_ticks", [0, 20])
def test_pd_reset_converges_from_a_condition_offset(arm, delay_ticks):
    sim, conditions, _ = arm
    sim.reset(conditions[0])
    core = arm_core(arm)
    goal = conditions[1].joint_positions
    core.submit(StartReset(1, goal))
    torques = run_on_arm(arm, core, 6.0, delay_ticks)
    (done,) = events(core, ResetFinished)
    assert done.ok, done.reason
    assert np.abs(sim.joint_positions() - goal).max() <= 0.01
    assert np.abs(sim.joint_velocities()).max() <= 0.05
    assert core.mode is Mode.HOLD
    assert np.all(np.abs(torques) < sim.description.effort_limits), "the reset saturated"
    # Hold keeps it there.
    core.events.clear()
    run_on_arm(arm, core, 0.5, delay_ticks)
    assert np.abs(sim.joint_positions() - goal).max() <= 0.01


def test_pd_reset_timeout_holds_with_the_reason(arm):
    sim, conditions, _ = arm
    sim.reset(conditions[0])
    core = arm_core(arm, timeout_s=0.3)
    core.submit(StartReset(1, conditions[1].joint_positions))
    run_on_arm(arm, core, 1.0)
    (done,) = events(core, ResetFinished)
    assert not done.ok and "reset timed out after 0.3 s" in done.reason
    assert core.mode is Mode.HOLD and "timed out" in core.reason


def test_gains_from_the_mass_matrix_put_every_mode_at_the_design_frequency(arm):
    """Why the gains use the full mass matrix: diag(M) gains make some joint-space modes 30x
    faster than designed (a 5 ms loop delay then destabilises the arm); M-scaled gains give
    M^-1 kp = ω² I exactly."""
    _, conditions, kinematics = arm
    M = kinematics.mass_matrix(conditions[0].joint_positions)
    omega = 2 * np.pi * 2.0
    full = PdGains.from_inertia(M, 2.0, 1.0)
    np.testing.assert_allclose(np.linalg.solve(M, full.kp), omega**2 * np.eye(7), atol=1e-6)
    np.testing.assert_allclose(np.linalg.solve(M, full.kd), 2 * omega * np.eye(7), atol=1e-6)
    diagonal = PdGains.from_inertia(np.diag(M), 2.0, 1.0)
    fastest = np.abs(np.linalg.eigvals(np.linalg.solve(M, diagonal.kd))).max()
    assert fastest > 10 * 2 * omega
    with pytest.raises(ValueError, match="positive definite"):
        PdGains.from_inertia(-M, 2.0)


def test_lockstep_trial_on_the_arm_equals_the_direct_training_rollout(arm):
    """The executor's lockstep trial gives the very X, U that training.direct.run_trial gives."""
    from mbpl_ros.arm_state import ArmStateBuilder
    from mbpl_ros.core.controllers import init_lqr, smoothed_noise
    from mbpl_ros.training.direct import run_trial

    sim, conditions, kinematics = arm
    builder = ArmStateBuilder(kinematics)
    condition, T, dt = conditions[1], 15, 0.05
    targets = sim.task.target_points(condition)
    x0 = builder.state(condition.joint_positions, np.zeros(7), targets)
    ctrl = init_lqr(x0, builder.layout.dim, 7, dt, T, init_gains=1.0 / np.diag(
        kinematics.mass_matrix(condition.joint_positions)))
    ctrl = ctrl.fold_noise(smoothed_noise(np.random.default_rng(0), T, 7, 1.0))
    direct = run_trial(sim, builder, condition, ctrl, dt)

    sim.reset(condition)
    core = arm_core(arm)
    core = ExecutorCore(ExecutorConfig(gains=core.config.gains, lockstep=True), core.safety)
    core.submit(StartTrial(1, TrialSpec(ctrl, T, dt, 1)))
    now = 0.0
    for _ in range(T + 1):
        q, qd = sim.joint_positions(), sim.joint_velocities()
        state = StateSample(now, sim.sim_time, q, qd, builder.state(q, qd, targets))
        command = core.step(now, state)
        if command is None:
            break
        sim.step(command, round(dt / sim.timestep))
        now += 0.001
    (finished,) = events(core, TrialFinished)
    np.testing.assert_array_equal(finished.result.states[:T], direct.X)
    np.testing.assert_array_equal(finished.result.actions, direct.U)
