"""controller_executor: runs the arm's control loop, trials of linear-Gaussian controllers or
neural policies, resets, hold and e-stop (the logic is :mod:`mbpl_ros.executor`; this node only
wires it to ROS).

Topics (relative, so a namespace gives one executor per arm):
  in   state                        mbpl_interfaces/ArmState (from the state_estimator)
  out  effort_controller/commands   std_msgs/Float64MultiArray, one effort per joint, URDF order
  in   camera/image_raw             sensor_msgs/Image (camera_topic): kept while a trial with
                                    record_images runs, fed to a visuomotor policy's vision
                                    layers while its trial runs, the last few always kept
  in   camera/camera_info           sensor_msgs/CameraInfo (camera_info_topic, transient local):
                                    the camera a visuomotor policy goal is checked against
  out  target                       mbpl_interfaces/Target, transient local: the trial's target
                                    with the goal of every ee point (an arm given by its own URDF
                                    reaches goals from its forward kinematics, not tool-down ones)
  out  rollouts                     mbpl_interfaces/Rollout (every finished or aborted trial)
  out  ~/status                     mbpl_interfaces/ExecutorStatus (status_rate_hz, and on mode
                                    changes)
Services: ~/estop, ~/release, ~/hold (std_srvs/Trigger), ~/reset_to_condition (ResetToCondition).
Action:   ~/run_trial (RunTrial).

Threads: the control loop runs in its own thread (real time: DeadlineLoop at loop_rate_hz,
SCHED_FIFO when permitted, a command published every tick; lockstep: woken by each new ArmState).
In real time the loop takes the newest state itself at the start of each tick, as serialized bytes
read straight into numpy (:mod:`mbpl_ros.cdr`), from a best-effort keep-last(1) subscription that no
executor spins, and publishes the command as bytes: a callback thread receiving 1000 states a second
competed with the loop for the Python interpreter, and rclpy's message conversion costs ~60 µs a
message each way here (the README has the measurements). In lockstep the state callback writes
the latest-value slot and wakes the loop. Callbacks queue requests for the loop (deque appends)
and read results the loop queued; the slow work (validating controllers, loading policy files,
building rollout messages, service calls to the bridge, waiting for the estimator to show the
target) runs as coroutines on the ROS executor thread (or its policy loader thread), never in the
loop.

Neural policies (a RunTrial goal with ``policy_path``): the file is read and checked for this
robot and state layout while the goal is validated, in a worker thread (the first one imports
torch, seconds), so that the ROS thread keeps serving e-stop and status meanwhile; the goal is
refused with the reason if the file does not fit. Loaded files are cached (by path, mtime, size).
In the trial the loop evaluates the policy once per policy step, at the step boundary, and holds
the action for dt like a controller's; a state-based MLP runs as numpy from copied weights (tens of
µs), see :mod:`mbpl_ros.executor.policy`. Exploration noise comes with the goal (drawn by the
trainer), so the trial is deterministic and exactly recorded. Importing torch holds the Python
interpreter for stretches of up to hundreds of ms on a busy 2-core machine, which stalls a
real-time loop running in the same process: set ``preload_torch`` to import it at start-up, before
the loop runs (real time only: a lockstep loop waits for states anyway).

Camera frames and visuomotor policy trials: see :mod:`mbpl_ros.nodes.executor_camera`.

lockstep vs real time: see :mod:`mbpl_ros.executor.core`. In lockstep a reset calls the bridge's
reset service (the simulator teleports) instead of running the PD reset, and the staleness
watchdog only measures how long a sent command has gone unanswered (lockstep_timeout_s).
"""

from __future__ import annotations

import itertools
import json
import math
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from geometry_msgs.msg import Point
from mbpl_interfaces.action import RunTrial
from mbpl_interfaces.msg import ArmState, ExecutorStatus, Rollout, Target
from mbpl_interfaces.srv import ResetToCondition
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.exceptions import ParameterUninitializedException
from rclpy.impl.implementation_singleton import rclpy_implementation
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.task import Future
from sensor_msgs.msg import Image
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Trigger

from mbpl_ros.cdr import ArmStateReader, CdrError, Float64ArrayWriter
from mbpl_ros.conversions import (
    MessageError,
    condition_with_overrides,
    controller_from_msg,
    rollout_to_msg,
    stamp_to_ns,
)
from mbpl_ros.core.controllers import LinearGaussianController
from mbpl_ros.core.state import StateLayout
from mbpl_ros.executor import (
    CancelTrial,
    EStop,
    ExecutorConfig,
    ExecutorCore,
    FinishReset,
    FrameFeatures,
    Hold,
    Mode,
    ModeChanged,
    PdGains,
    PolicyActor,
    PolicyCache,
    PolicyLoadError,
    Release,
    ResetFinished,
    ResetSettings,
    SafetyAction,
    SafetyFilter,
    SafetyLimits,
    StartReset,
    StartTrial,
    StateSample,
    TrialFinished,
    TrialProgress,
    TrialResult,
    TrialRun,
    TrialSpec,
)
from mbpl_ros.nodes.executor_camera import ExecutorCamera, StateFields
from mbpl_ros.nodes.parameters import arm_description, declare_parameters
from mbpl_ros.nodes.run import run_node
from mbpl_ros.nodes.state_estimator import REALTIME_STATE_QOS, STATE_QOS, TARGET_QOS
from mbpl_ros.realtime import (
    DeadlineLoop,
    LatenessStats,
    LatestValue,
    phase_locked_start,
    try_realtime_priority,
)
from mbpl_ros.training.direct import task_conditions
from mbpl_sim.tasks import TASK_NAMES, Condition, make_task, task_kinematics

TIME_BASES = ("realtime", "lockstep")
INITIAL_MODES = ("idle", "hold")
RCLError = rclpy_implementation.RCLError
MAX_POLICY_HORIZON = 1_000_000
"""Largest horizon of a policy goal (its record is preallocated: (T + 1) x dX floats)."""
BRIDGE_ATTEMPT_S = 2.0
"""Lockstep: wait this long for one reset request to the bridge before sending it again, s."""
STATUS_STATS_S = 2.0
"""The status message's lateness percentiles cover the last this many seconds, whatever the
stats_file's window."""
EVENT_POLL_S = 0.02
"""How often the ROS thread collects the loop's events (trial results, progress, logs), s. (The
EventsExecutor has no guard conditions for the loop to wake it with.)"""
ROS_WORK_PHASE = 0.2
"""Real time: where in the loop period the event drain's timer expires (fraction after a tick's
deadline). Its callback starts 0.2-0.5 ms later (measured under load: 0.35-0.7 ms after the
deadline, p5-p95), after the tick's own work (~0.2 ms) and before the next tick's spin (0.9)."""


class GoalError(ValueError):
    """A RunTrial goal or reset request that cannot be run, with the reason."""


@dataclass(frozen=True)
class TrialPlan:
    """A validated RunTrial goal."""

    condition_index: int
    condition: Condition
    controller: LinearGaussianController | PolicyActor
    horizon: int
    dt: float
    ticks_per_step: int
    request: ResetToCondition.Request
    """The reset to this condition (the goal's q0/target overrides included)."""


class ControllerExecutor(Node):
    """The arm's control loop and the trial action server."""

    def __init__(self, **node_kwargs) -> None:
        super().__init__("controller_executor", **node_kwargs)
        p = self._declare_parameters()
        self.lockstep: bool = p["mode"] == "lockstep"
        self.arm = arm_description(p["urdf"], p["ee_link"])
        self.task = make_task(p["task"])
        self.layout = StateLayout(self.arm.n_joints, self.task.n_points)
        self.state_names: list[str] = self.layout.names()
        self.conditions: list[Condition] = task_conditions(
            self.task, self.arm, p["conditions"], np.random.default_rng(p["seed"]),
            own_urdf=bool(p["urdf"]))
        self.period_s: float = 1.0 / p["loop_rate_hz"]
        self.dt: float = p["dt"]
        self.target_wait_s: float = p["target_wait_s"]
        self.bridge_timeout_s: float = p["bridge_timeout_s"]
        self.realtime_priority: int = p["realtime_priority"]
        self.ros_thread_priority: int = 0 if self.lockstep else p["ros_thread_priority"]
        self.ros_executor: str = p["ros_executor"]
        self.stats_file: str = p["stats_file"]
        self.policy_load_timeout_s: float = p["policy_load_timeout_s"]
        self._policies = PolicyCache(self.arm.joint_names, self.state_names,
                                     threads=p["policy_threads"])
        # One worker: policy files load one at a time, off the ROS thread.
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="policy_loader")
        self.policy_faults = 0
        if p["preload_torch"] and not self.lockstep:
            started = time.perf_counter()
            import torch  # noqa: F401 - before the loop starts: see the module docstring

            self.get_logger().info(f"torch imported in {time.perf_counter() - started:.1f} s "
                                   "(preload_torch)")

        gains, gains_at, limit_damping = self._gains(p, task_kinematics(self.task, self.arm))
        reset = ResetSettings(p["reset_position_tolerance"], p["reset_velocity_tolerance"],
                              p["reset_timeout_s"], p["reset_max_velocity"])
        limits = SafetyLimits(self.arm.effort_limits, self.arm.lower, self.arm.upper,
                              p["joint_limit_margin"], limit_damping,
                              max_velocity=(p["overspeed_factor"] * self.arm.velocity_limits
                                            if p["overspeed_factor"] > 0 else np.inf))
        config = ExecutorConfig(gains=gains, reset=reset, gains_at=gains_at,
                                lockstep=self.lockstep, stale_hold_s=p["stale_hold_ms"] * 1e-3,
                                stale_stop_s=p["stale_stop_ms"] * 1e-3,
                                lockstep_timeout_s=p["lockstep_timeout_s"])
        self.core = ExecutorCore(config, SafetyFilter(limits), Mode(p["initial_mode"]))
        self.reset_settings = reset

        self._state: LatestValue[StateSample] = LatestValue()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._tokens = itertools.count(1)
        self._pending: dict[int, Future] = {}
        self._goal_handles: dict[int, object] = {}
        self._goal_tokens: dict[bytes, int] = {}
        self._validated: tuple[RunTrial.Goal, TrialPlan] | None = None
        self._trial_busy = False
        self._log_times: dict[str, float] = {}
        self._log_suppressed: dict[str, int] = {}
        self.last_rejection = ""
        self.loop_ticks = 0

        window = max(1, round(p["stats_window_s"] / self.period_s))
        self._loop = DeadlineLoop(self.period_s, history=window)
        self._latency_stamp_ns = np.zeros(window, dtype=np.int64)
        self._latency_time = np.zeros(window)
        self._latency_count = 0
        self._publish_s = np.zeros(window)
        """How long each command publish took (the DDS write is most of a tick's work), s."""
        self._cpu_log: list[tuple[float, float, float]] = []
        self._status_stats: LatenessStats | None = None
        """Real time: the loop's recent lateness, written by the loop thread at the status rate,
        read by the status publisher. Computed there, after a tick's command, because the
        percentiles hold the interpreter for ~0.3 ms: in the ROS thread they stalled the loop's
        next tick start (bench, 20 s each: p99 lateness 58 µs before, 25 µs after)."""
        self._status_every = max(1, round(1.0 / (p["status_rate_hz"] * self.period_s)))
        self._last_commanded: StateSample | None = None
        self._command_writer = Float64ArrayWriter(self.arm.n_joints)
        self._state_bytes = ArmStateReader()
        self.realtime_granted = False

        group = ReentrantCallbackGroup()
        self._command_pub = self.create_publisher(
            Float64MultiArray, "effort_controller/commands", STATE_QOS)
        self._target_pub = self.create_publisher(Target, "target", TARGET_QOS)
        # frame_timeout_s below the lockstep watchdog's, which would otherwise abort first with
        # a vaguer reason
        self.camera = ExecutorCamera(
            self, p["camera_topic"], p["camera_info_topic"], p["image_max_age_s"],
            p["image_wait_s"], min(p["frame_timeout_s"], 0.5 * p["lockstep_timeout_s"]),
            self.lockstep, deliver=self._deliver, wait_until=self._wait_until,
            callback_group=group)
        self._rollout_pub = self.create_publisher(Rollout, "rollouts", 10)
        self._status_pub = self.create_publisher(ExecutorStatus, "~/status", 10)
        if self.lockstep:
            self.create_subscription(ArmState, "state", self._on_state, STATE_QOS)
            self._state_reader: Node | None = None
        else:
            # Real time: the loop thread takes each state itself at the start of its tick, from
            # a subscription on a second node that no ROS executor spins. The keep-last(1) DDS
            # reader is then the loop's input slot, and no callback thread competes with the
            # loop for the interpreter 1000 times a second.
            self._state_reader = Node(f"{self.get_name()}_state_reader",
                                      namespace=self.get_namespace(), context=self.context)
            self._state_sub = self._state_reader.create_subscription(
                ArmState, "state", lambda _: None, REALTIME_STATE_QOS)
        self.create_service(Trigger, "~/estop", self._on_estop, callback_group=group)
        self.create_service(Trigger, "~/release", self._on_release, callback_group=group)
        self.create_service(Trigger, "~/hold", self._on_hold, callback_group=group)
        self.create_service(ResetToCondition, "~/reset_to_condition", self._on_reset,
                            callback_group=group)
        self._bridge_client = self.create_client(
            ResetToCondition, p["bridge_reset_service"], callback_group=group) \
            if self.lockstep else None
        self._action = ActionServer(
            self, RunTrial, "~/run_trial", execute_callback=self._execute_trial,
            goal_callback=self._on_goal, cancel_callback=self._on_cancel,
            callback_group=group, result_timeout=60)
        # On the monotonic clock of the loop's deadlines, which the loop lines up so that these
        # callbacks fall into its idle time (_realtime_loop).
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self._drain_timer = self.create_timer(EVENT_POLL_S, self._drain_events,
                                              callback_group=group, clock=steady)
        # (a timer passes TimerInfo to a callback that takes an argument: wrap)
        self.create_timer(1.0 / p["status_rate_hz"], lambda: self._publish_status(),
                          callback_group=group, clock=steady)

        target = self._lockstep_loop if self.lockstep else self._realtime_loop
        self._thread = threading.Thread(target=target, name="control_loop", daemon=True)
        self._thread.start()
        pace = "one command per state" if self.lockstep else f"{p['loop_rate_hz']:.0f} Hz loop"
        self.get_logger().info(
            f"{p['mode']} executor for joints {list(self.arm.joint_names)}, task {p['task']}, "
            f"{len(self.conditions)} conditions, dX {self.layout.dim}, {pace}, initial mode "
            f"{p['initial_mode']}; PD {'M(q)-scaled' if gains_at else 'fixed'}, at condition 0 "
            f"kp diag {np.round(np.diag(gains.kp), 2).tolist()}, "
            f"kd diag {np.round(np.diag(gains.kd), 3).tolist()}")

    # ------------------------------------------------------------------------ parameters

    def _declare_parameters(self) -> dict:
        specs = {
            "mode": ("realtime", "time base: realtime (1 kHz wall-clock loop) or lockstep (one "
                                 "command per new state, against the bridge's lockstep mode)"),
            "urdf": ("", "robot description file; empty: the project's 7-DoF arm"),
            "ee_link": ("", "end-effector link; empty: the default arm's tool link"),
            "task": ("reach", "task (reach or peg): the state layout and the condition table"),
            "conditions": (4, "size of the condition table (same table as the sim bridge)"),
            "seed": (0, "seed of the condition table"),
            "loop_rate_hz": (1000.0, "control loop rate in real time, Hz"),
            "dt": (0.05, "policy step a trial's controller must have, s (lockstep: the bridge's "
                         "lockstep_steps x 1 ms); 0: accept any dt (checked against the state "
                         "stamps in lockstep, against the loop period in real time)"),
            "initial_mode": ("idle", "mode at start: idle (zero torque) or hold"),
            "pd_frequency_hz": (2.0, "reset/hold PD natural frequency, Hz: kp = (2πf)² M(q), "
                                     "kd = 2ζ(2πf) M(q) with the URDF mass matrix at the goal "
                                     "or hold position, unless pd_kp/pd_kd are given"),
            "pd_damping_ratio": (1.0, "reset/hold PD damping ratio"),
            "reset_position_tolerance": (0.01, "reset done when max |q - q0| is below, rad"),
            "reset_velocity_tolerance": (0.05, "and max |qd| is below, rad/s"),
            "reset_timeout_s": (10.0, "a PD reset not done after this long holds instead, s"),
            "reset_max_velocity": (0.5, "peak joint speed of the reset path, rad/s"),
            "joint_limit_margin": (0.05, "zone inside each position limit where outward torque "
                                         "is removed and outward velocity damped, rad"),
            "overspeed_factor": (3.0, "e-stop while driving the arm (reset, trial, hold) when a "
                                      "joint exceeds this times its URDF velocity limit; 0: off"),
            "stale_hold_ms": (5.0, "realtime: hold the last command when the state is older, ms"),
            "stale_stop_ms": (20.0, "realtime: zero torque and abort when older, ms"),
            "lockstep_timeout_s": (2.0, "lockstep: abort a trial when a command is unanswered "
                                        "this long, s"),
            "bridge_reset_service": ("sim_bridge/reset_to_condition",
                                     "lockstep: the simulator's reset service (relative names "
                                     "resolve in this node's namespace)"),
            "bridge_timeout_s": (10.0, "lockstep: wait this long for the reset service, s"),
            "target_wait_s": (5.0, "wait this long for the state to show a new target, s"),
            "status_rate_hz": (2.0, "ExecutorStatus rate, Hz (also sent on mode changes)"),
            "realtime_priority": (80, "SCHED_FIFO priority of the loop thread; 0: do not ask"),
            "ros_executor": ("events", "ROS executor of the callback thread: events "
                                       "(EventsExecutor, less CPU) or single "
                                       "(SingleThreadedExecutor)"),
            "ros_thread_priority": (60, "realtime: SCHED_FIFO priority of the ROS callback thread "
                                        "(below the loop's), so that while it holds the Python "
                                        "GIL ordinary processes cannot preempt it and stall the "
                                        "loop waiting for the GIL; 0: normal scheduling"),
            "gil_switch_interval_us": (100.0, "Python thread switch interval, µs, so the loop "
                                              "thread gets the interpreter back quickly from "
                                              "callbacks (Python's default is 5000)"),
            "stats_window_s": (2.0, "the stats_file's lateness percentiles cover the last this "
                                    "many seconds (the status always covers the last "
                                    f"{STATUS_STATS_S:g} s)"),
            "stats_file": ("", "write loop statistics here (JSON) at shutdown; empty: none"),
            "camera_topic": ("camera/image_raw",
                             "camera images for RunTrial goals with record_images or a "
                             "visuomotor policy (relative names resolve in this node's "
                             "namespace); empty: such goals are refused"),
            "camera_info_topic": ("camera/camera_info",
                                  "the camera's sensor_msgs/CameraInfo (transient local): a "
                                  "visuomotor policy goal is refused unless it shows the camera "
                                  "the policy was trained with; empty: such goals are refused"),
            "frame_timeout_s": (0.5, "visuomotor policy trial (lockstep): abort when the camera "
                                     "frame of a state has not arrived this long after the state, "
                                     "s (at most half of lockstep_timeout_s is used)"),
            "image_max_age_s": (0.1, "record_images: a state's frame is the newest one stamped "
                                     "at or before it and at most this much older, s"),
            "image_wait_s": (2.0, "record_images: wait this long after a trial for frames "
                                  "still in flight before aborting it, s"),
            "policy_load_timeout_s": (120.0, "refuse a policy goal whose file is not loaded "
                                             "within this long (the first one imports torch), s"),
            "policy_threads": (1, "torch threads for loading policies (and evaluating networks "
                                  "numpy cannot); 0: torch's default"),
            "preload_torch": (False, "realtime: import torch at start-up, before the control "
                                     "loop runs, instead of at the first policy goal (the import "
                                     "stalls a running real-time loop)"),
        }
        values = declare_parameters(self, specs)
        for name, description in (("pd_kp", "fixed reset/hold stiffness per joint, N m/rad"),
                                  ("pd_kd", "fixed reset/hold damping per joint, N m s/rad")):
            self.declare_parameter(name, Parameter.Type.DOUBLE_ARRAY,
                                   ParameterDescriptor(description=description))
            try:
                values[name] = list(self.get_parameter(name).value)
            except ParameterUninitializedException:
                values[name] = None
        self._validate_parameters(values)
        if values["gil_switch_interval_us"] > 0:
            sys.setswitchinterval(values["gil_switch_interval_us"] * 1e-6)
        return values

    @staticmethod
    def _validate_parameters(v: dict) -> None:
        if v["mode"] not in TIME_BASES:
            raise ValueError(f"mode: expected one of {TIME_BASES}, found {v['mode']!r}")
        if v["initial_mode"] not in INITIAL_MODES:
            raise ValueError(f"initial_mode: expected one of {INITIAL_MODES}, found "
                             f"{v['initial_mode']!r}")
        if v["ros_executor"] not in ("events", "single"):
            raise ValueError(f"ros_executor: expected events or single, found "
                             f"{v['ros_executor']!r}")
        if v["task"] not in TASK_NAMES:
            raise ValueError(f"task: expected one of {TASK_NAMES}, found {v['task']!r}")
        if v["urdf"] and not Path(v["urdf"]).is_file():
            raise FileNotFoundError(f"urdf: no such file {v['urdf']!r}")
        if v["conditions"] < 1:
            raise ValueError(f"conditions: expected >= 1, found {v['conditions']}")
        positive = ("loop_rate_hz", "pd_frequency_hz", "policy_load_timeout_s",
                    "stale_hold_ms", "stale_stop_ms", "lockstep_timeout_s", "bridge_timeout_s",
                    "target_wait_s", "status_rate_hz", "image_max_age_s", "image_wait_s",
                    "stats_window_s", "reset_position_tolerance", "reset_velocity_tolerance",
                    "frame_timeout_s",
                    "reset_timeout_s", "reset_max_velocity")
        for name in positive:
            if not v[name] > 0:
                raise ValueError(f"{name}: expected > 0, found {v[name]}")
        if v["stale_stop_ms"] < v["stale_hold_ms"]:
            raise ValueError(f"stale_stop_ms: expected >= stale_hold_ms ({v['stale_hold_ms']}), "
                             f"found {v['stale_stop_ms']}")
        if v["dt"] < 0:
            raise ValueError(f"dt: expected >= 0 s, found {v['dt']}")
        if not v["overspeed_factor"] >= 0:
            raise ValueError(f"overspeed_factor: expected >= 0 (0: off), found "
                             f"{v['overspeed_factor']}")
        if v["joint_limit_margin"] < 0 or v["pd_damping_ratio"] < 0:
            raise ValueError("joint_limit_margin and pd_damping_ratio: expected >= 0, found "
                             f"{v['joint_limit_margin']} and {v['pd_damping_ratio']}")
        if v["policy_threads"] < 0:
            raise ValueError(f"policy_threads: expected >= 0, found {v['policy_threads']}")
        for name in ("realtime_priority", "ros_thread_priority"):
            if not 0 <= v[name] <= 99:
                raise ValueError(f"{name}: expected 0..99, found {v[name]}")

    def _gains(self, p: dict, kinematics) -> tuple[PdGains, object, np.ndarray]:
        """Reset/hold gains at condition 0, the scheduling function (None with fixed gains) and
        the joint-limit guard damping (n,)."""
        n = self.arm.n_joints
        for name in ("pd_kp", "pd_kd"):
            if p[name] is not None and len(p[name]) != n:
                raise ValueError(f"{name}: expected {n} gains (one per joint), found "
                                 f"{len(p[name])}")
        q_ref = self.conditions[0].joint_positions
        mass = kinematics.mass_matrix(q_ref)
        frequency, ratio = p["pd_frequency_hz"], p["pd_damping_ratio"]
        # Guard damping: each joint's apparent inertia 1/(M^-1)_ii (the others free) at the
        # PD's damping ratio and frequency: stable even if only that joint is braked.
        limit_damping = 2 * max(ratio, 0.5) * 2 * np.pi * frequency / np.diag(np.linalg.inv(mass))
        if p["pd_kp"] is not None or p["pd_kd"] is not None:
            derived = PdGains.from_inertia(mass, frequency, ratio)
            kp = np.diag(derived.kp) if p["pd_kp"] is None else np.array(p["pd_kp"])
            kd = np.diag(derived.kd) if p["pd_kd"] is None else np.array(p["pd_kd"])
            return PdGains(kp, kd), None, np.diag(PdGains(kp, kd).kd).copy()

        def gains_at(q: np.ndarray) -> PdGains:  # loop thread only: its own kinematics
            return PdGains.from_inertia(kinematics.mass_matrix(q), frequency, ratio)

        return gains_at(q_ref), gains_at, limit_damping

    # ------------------------------------------------------------------------ the loop

    def _on_state(self, msg: ArmState) -> None:
        """Lockstep subscription callback: store the state and wake the loop (in a visuomotor
        trial only once its frame's features are there:
        :class:`~mbpl_ros.nodes.executor_camera.VisionTrial`)."""
        stamp_ns = stamp_to_ns(msg.header.stamp)
        fields = (np.asarray(msg.x, dtype=float), np.asarray(msg.joint_positions, dtype=float),
                  np.asarray(msg.joint_velocities, dtype=float),
                  np.asarray(msg.target_position, dtype=float))
        if not self.camera.park(stamp_ns, fields):
            self._deliver(stamp_ns, fields)

    def _deliver(self, stamp_ns: int, fields: StateFields) -> None:
        """Store a lockstep state (once the camera's gate lets it through) and wake the loop."""
        if self._accept_state(stamp_ns, *fields, received=time.monotonic()):
            self._wake.set()

    def _take_state(self) -> None:
        """Real time, loop thread: take the newest state waiting in the DDS reader, if any, as
        bytes read straight into numpy (rclpy's message conversion would hold the interpreter
        for ~100 µs per tick)."""
        taken = self._state_sub.handle.take_message(ArmState, True)
        if taken is None:
            return
        raw, info = taken
        try:
            fields = self._state_bytes.read(raw)
        except CdrError as err:
            self._log_once_per_s("bad_state", f"state rejected: {err}")
            return
        # Stamped with its arrival, not this take: the watchdog must see how old it really is.
        age_s = max(0.0, time.time() - info["received_timestamp"] * 1e-9)
        self._accept_state(*fields, received=time.monotonic() - age_s)

    def _accept_state(self, stamp_ns: int, x: np.ndarray, q: np.ndarray, qd: np.ndarray,
                      target: np.ndarray, received: float) -> bool:
        """Check a state; store it in the slot (monotonic arrival time ``received``) or log why
        it was dropped."""
        n = self.arm.n_joints
        # (a sum of Python floats: a third of what np.isfinite(...).all() costs on 7 entries)
        if q.shape != (n,) or qd.shape != (n,) or not math.isfinite(sum(q.tolist())
                                                                    + sum(qd.tolist())):
            self._log_once_per_s("bad_state", f"state rejected: expected {n} finite joint "
                                 f"positions and velocities, found {q.tolist()}, {qd.tolist()}")
            return False
        self._state.write(StateSample(received, stamp_ns * 1e-9, q, qd, x if x.size else None,
                                      target if target.size == 3 else None, stamp_ns), received)
        return True

    def _control_step(self) -> None:
        """One step of the loop: newest state -> core -> publish (shared by both time bases)."""
        now = time.monotonic()
        slot = self._state.read()
        sample = None if slot is None else slot[1]
        try:
            effort = self.core.step(now, sample)
        except Exception as err:  # the loop must survive anything: stop the arm, keep going
            effort = None if self.lockstep else np.zeros(self.arm.n_joints)
            self.core.submit(EStop(f"internal error in the control step: {err!r}"))
            self._log_once_per_s("loop_error", f"control step failed, e-stop: {err!r}")
        if effort is not None:
            try:
                raw = self._command_writer.serialize(effort)
                start = time.perf_counter()
                self._command_pub.publish(raw)
                self._publish_s[self.loop_ticks % self._publish_s.size] = \
                    time.perf_counter() - start
            except RCLError:
                if self.context.ok():
                    raise
                self._stop.set()  # shutting down: the context went away under the loop
                return
            if sample is not None and sample is not self._last_commanded:
                self._last_commanded = sample
                i = self._latency_count % self._latency_time.size
                self._latency_stamp_ns[i] = sample.stamp_ns
                self._latency_time[i] = time.time()  # wall clock, as DDS source timestamps
                self._latency_count += 1
        self.loop_ticks += 1

    def _realtime_loop(self) -> None:
        if self.realtime_priority > 0:
            self.realtime_granted = try_realtime_priority(self.realtime_priority)
        self.get_logger().info(
            f"control loop at {1.0 / self.period_s:.0f} Hz, SCHED_FIFO "
            f"{'granted' if self.realtime_granted else 'not granted (normal priority)'}")

        status_ticks = round(STATUS_STATS_S / self.period_s)

        def tick(i: int) -> bool:
            self._take_state()
            self._control_step()
            if i % 1000 == 0:
                self._cpu_log.append((time.monotonic(), time.thread_time(), time.process_time()))
            if i % self._status_every == 0:
                # after this tick's command: the extra work delays no tick start
                self._status_stats = self._loop.stats(recent=status_ticks)
            return True

        # The ROS thread's periodic callbacks need the interpreter: when one holds it as a tick's
        # deadline comes, the tick starts late (a 60 s bench: 407 of the 662 ticks late by more
        # than 100 µs had waited through one). The deadlines are placed so that the event
        # drain's timer expires ROS_WORK_PHASE of a period after a deadline.
        until_ns = self._drain_timer.time_until_next_call()
        now = time.perf_counter()
        first = None if until_ns is None else phase_locked_start(
            now, now + until_ns * 1e-9, self.period_s, ROS_WORK_PHASE * self.period_s,
            margin=self._loop.spin_margin_s)
        try:
            self._loop.run(tick, self._stop, first_deadline=first)
        finally:
            self._cpu_log.append((time.monotonic(), time.thread_time(), time.process_time()))

    def _lockstep_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=0.05)
            self._wake.clear()
            self._control_step()

    def _submit(self, request) -> None:
        self.core.submit(request)
        self._wake.set()

    # ------------------------------------------------------------------ events from the loop

    def _drain_events(self) -> None:
        if self.core.mode is Mode.TRIAL:
            cancel = self.camera.check_frames()
            if cancel is not None:
                self._submit(cancel)
        progress: dict[int, int] = {}
        while self.core.events:
            event = self.core.events.popleft()
            if isinstance(event, TrialProgress):
                progress[event.token] = event.step
            elif isinstance(event, ModeChanged):
                self.get_logger().info(f"mode {event.mode.value}: {event.reason}")
                self._publish_status()
            elif isinstance(event, SafetyAction):
                self._log_once_per_s(event.kind, f"safety: {event.message}")
            elif isinstance(event, TrialFinished | ResetFinished):
                future = self._pending.pop(event.token, None)
                if future is not None and not future.done():
                    future.set_result(event)
        for token, step in progress.items():
            handle = self._goal_handles.get(token)
            if handle is not None and handle.is_active:
                handle.publish_feedback(RunTrial.Feedback(step=step))

    def _log_once_per_s(self, kind: str, message: str) -> None:
        """Warn at most once a second per kind, counting what was suppressed."""
        now = time.monotonic()
        if now - self._log_times.get(kind, -1e9) < 1.0:
            self._log_suppressed[kind] = self._log_suppressed.get(kind, 0) + 1
            return
        suppressed = self._log_suppressed.pop(kind, 0)
        self._log_times[kind] = now
        more = f" (+{suppressed} similar in the last second)" if suppressed else ""
        self.get_logger().warning(message + more)

    def _publish_status(self, reason: str | None = None) -> None:
        msg = ExecutorStatus()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.mode = self.core.mode.value
        msg.reason = reason if reason is not None else self.core.reason
        msg.ticks = self.loop_ticks
        msg.trial_step = self.core.trial_step
        stats = self._status_stats
        if stats is not None:
            msg.missed_ticks = stats.missed
            msg.lateness_p99_us = 0.0 if np.isnan(stats.p99_us) else stats.p99_us
        self._status_pub.publish(msg)

    # ------------------------------------------------------------------------ coroutines

    def _expect(self, token: int) -> Future:
        future = Future()
        self._pending[token] = future
        return future

    async def _wait_until(self, predicate: Callable[[], bool], timeout_s: float,
                          period_s: float = 0.005) -> bool:
        """Await ``predicate()`` becoming true (checked every ``period_s``) or ``timeout_s``."""
        if predicate():
            return True
        future = Future()
        deadline = time.monotonic() + timeout_s

        def check() -> None:
            if future.done():
                return
            if predicate():
                future.set_result(True)
            elif time.monotonic() > deadline:
                future.set_result(False)

        timer = self.create_timer(period_s, check)
        try:
            return await future
        finally:
            self.destroy_timer(timer)

    def _condition(self, request: ResetToCondition.Request) -> Condition:
        """The table's condition, with the request's joint positions/target if given."""
        index = request.condition
        overridden = len(request.joint_positions) and len(request.target_position)
        if index >= len(self.conditions) and not overridden:
            raise GoalError(f"unknown condition {index}: the table has {len(self.conditions)} "
                            f"(0..{len(self.conditions) - 1})")
        if len(request.target_position) and (
                len(request.target_position) != 3
                or not np.all(np.isfinite(request.target_position))):
            raise GoalError(f"target position: expected 3 finite coordinates, found "
                            f"{list(request.target_position)}")
        n_points = self.task.n_points
        if len(request.target_points) and (
                not len(request.target_position) or len(request.target_points) != 3 * n_points
                or not np.all(np.isfinite(request.target_points))):
            raise GoalError(f"target points: expected {3 * n_points} finite coordinates (one xyz "
                            f"per ee point of the {self.task.name} task) with a target_position, "
                            f"found {len(request.target_points)}"
                            + ("" if len(request.target_position) else " without one"))
        try:
            condition = condition_with_overrides(
                self.conditions[min(index, len(self.conditions) - 1)], request)
            q = self.arm.check_positions(condition.joint_positions, "reset joint positions")
            return Condition(q, condition.target_position, condition.target_points)
        except ValueError as err:
            raise GoalError(str(err)) from err

    def _refusal(self) -> str | None:
        if self.core.mode is Mode.ESTOP:
            return "e-stop latched: call ~/release first"
        if self._trial_busy or self.core.busy:
            return f"busy: the executor is in {self.core.mode.value} ({self.core.reason})"
        return None

    def _publish_target(self, condition: Condition) -> None:
        """The condition's target with the goal of every ee point, for the estimator."""
        msg = Target()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = self.arm.root_link
        x, y, z = (float(v) for v in condition.target_position)
        msg.position = Point(x=x, y=y, z=z)
        msg.points = [Point(x=float(x), y=float(y), z=float(z))
                      for x, y, z in self.task.target_points(condition)]
        self._target_pub.publish(msg)

    def _state_shows(self, target: np.ndarray, q_goal: np.ndarray | None) -> bool:
        slot = self._state.read()
        if slot is None:
            return False
        sample = slot[1]
        if sample.x is None or sample.target is None or np.any(sample.target != target):
            return False
        if q_goal is None:
            return True
        tolerance = 1e-6 if self.lockstep else 2 * self.reset_settings.position_tolerance
        return float(np.max(np.abs(sample.q - q_goal))) <= tolerance

    async def _reset(self, request: ResetToCondition.Request, condition: Condition
                     ) -> tuple[bool, str]:
        """Reset to ``condition`` (PD in real time, the bridge's service in lockstep) and wait
        until the state shows its joint positions and target."""
        token = next(self._tokens)
        future = self._expect(token)
        self._publish_target(condition)
        if not self.lockstep:
            self._submit(StartReset(token, condition.joint_positions))
            event: ResetFinished = await future
            ok, reason = event.ok, event.reason
        else:
            self._submit(StartReset(token, condition.joint_positions, external=True))
            ok, reason = await self._call_bridge_reset(request)
            self._submit(FinishReset(token, ok, reason))
            event = await future
            ok, reason = event.ok and ok, event.reason
        if not ok:
            return False, reason
        target, q_goal = condition.target_position, condition.joint_positions
        deadline = time.monotonic() + self.target_wait_s
        while not await self._wait_until(lambda: self._state_shows(target, q_goal),
                                         min(1.0, max(0.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline:
                return False, (f"reset: no state with q0 and target {target.tolist()} within "
                               f"{self.target_wait_s} s (is the state_estimator running?)")
            if self.lockstep:
                # The bridge publishes the reset state once; right after start-up the
                # estimator's subscription may not have matched yet and lost it. A reset is
                # idempotent and publishes the state again.
                self._publish_target(condition)
                ok, reason = await self._call_bridge_reset(request)
                if not ok:
                    return False, reason
        return True, reason

    async def _call_bridge_reset(self, request: ResetToCondition.Request) -> tuple[bool, str]:
        client = self._bridge_client
        name = client.srv_name
        deadline = time.monotonic() + self.bridge_timeout_s
        future = None
        # Retried: a request sent while a restarted bridge is still being discovered (the dead
        # one still looks ready until its DDS lease ends) is lost; a reset is idempotent.
        while time.monotonic() < deadline:
            if not await self._wait_until(client.service_is_ready,
                                          deadline - time.monotonic(), 0.05):
                return False, f"reset: the simulator's service {name} is not available"
            future = client.call_async(request)
            if await self._wait_until(future.done, min(BRIDGE_ATTEMPT_S,
                                                       max(0.0, deadline - time.monotonic()))):
                break
            client.remove_pending_request(future)
            future = None
        if future is None:
            return False, f"reset: {name} did not answer within {self.bridge_timeout_s} s"
        response = future.result()
        if response is None or not response.success:
            return False, f"reset refused by {name}: {getattr(response, 'message', 'no answer')}"
        return True, f"reset by the simulator: {response.message}"

    # ------------------------------------------------------------------------- services

    def _on_estop(self, request: Trigger.Request, response: Trigger.Response):
        self._submit(EStop("~/estop called"))
        response.success = True
        response.message = "e-stop latched: zero torque until ~/release"
        self.get_logger().warning("e-stop requested")
        return response

    def _on_release(self, request: Trigger.Request, response: Trigger.Response):
        response.success = self.core.mode is Mode.ESTOP
        self._submit(Release())
        response.message = "released: holding the current position" if response.success \
            else f"not in e-stop (mode {self.core.mode.value})"
        return response

    def _on_hold(self, request: Trigger.Request, response: Trigger.Response):
        response.success = self.core.mode is not Mode.ESTOP
        self._submit(Hold("~/hold called"))
        response.message = "holding the current position" if response.success \
            else "e-stop latched: call ~/release first"
        return response

    async def _on_reset(self, request: ResetToCondition.Request,
                        response: ResetToCondition.Response):
        try:
            condition = self._condition(request)
            refusal = self._refusal()
            if refusal is not None:
                raise GoalError(refusal)
        except GoalError as err:
            response.success, response.message = False, str(err)
            self.get_logger().error(f"reset refused: {err}")
            return response
        self._trial_busy = True
        try:
            response.success, response.message = await self._reset(request, condition)
        finally:
            self._trial_busy = False
        return response

    # ------------------------------------------------------------------------ trial action

    def _plan(self, goal: RunTrial.Goal) -> TrialPlan:
        """Validate a goal (a policy goal's file must be loaded already: :meth:`_load_policy`);
        raises GoalError with the reason."""
        request = ResetToCondition.Request(condition=goal.condition,
                                           joint_positions=goal.joint_positions,
                                           target_position=goal.target_position,
                                           target_points=goal.target_points)
        condition = self._condition(request)
        if goal.record_images:
            refusal = self.camera.record_refusal()
            if refusal is not None:
                raise GoalError(refusal)
        if goal.policy_path:
            return self._policy_plan(goal, request, condition)
        if len(goal.policy_noise):
            raise GoalError("policy_noise: only for a policy goal (policy_path); a controller "
                            "carries its noise folded into k")
        try:
            controller = controller_from_msg(goal.controller, self.state_names)
        except MessageError as err:
            raise GoalError(str(err)) from err
        if controller.dU != self.arm.n_joints:
            raise GoalError(f"controller: expected du {self.arm.n_joints} (one torque per "
                            f"joint), found {controller.dU}")
        horizon = goal.horizon or controller.T
        if horizon > controller.T:
            raise GoalError(f"horizon: expected at most the controller's {controller.T} steps, "
                            f"found {horizon}")
        dt = float(goal.controller.dt)
        if self.dt > 0 and abs(dt - self.dt) > 1e-9:
            raise GoalError(f"controller dt: expected {self.dt} s (this executor's dt), found "
                            f"{dt} s")
        return TrialPlan(goal.condition, condition, controller, horizon, dt,
                         self._ticks_per_step(dt, "controller"), request)

    def _ticks_per_step(self, dt: float, what: str) -> int:
        if self.lockstep:
            return 1
        ticks = round(dt / self.period_s)
        if ticks < 1 or abs(ticks * self.period_s - dt) > 1e-9 + 1e-6 * dt:
            raise GoalError(f"{what} dt {dt} s: expected a multiple of the "
                            f"{self.period_s * 1e3:g} ms loop period")
        return ticks

    def _policy_plan(self, goal: RunTrial.Goal, request: ResetToCondition.Request,
                     condition: Condition) -> TrialPlan:
        path = goal.policy_path
        try:
            loaded = self._policies.get(path)
        except PolicyLoadError as err:
            raise GoalError(str(err)) from err
        if loaded is None:
            raise GoalError(f"policy file {path}: not loaded (it changed since the goal was "
                            "validated?)")
        horizon = int(goal.horizon)
        if not 1 <= horizon <= MAX_POLICY_HORIZON:
            raise GoalError(f"horizon: a policy goal needs 1..{MAX_POLICY_HORIZON} steps, found "
                            f"{horizon}")
        dt = float(goal.controller.dt) or loaded.dt or self.dt
        if not dt > 0 or not np.isfinite(dt):
            raise GoalError(f"policy dt: expected > 0 s (controller.dt, the file's dt or the "
                            f"executor's), found {dt}")
        if self.dt > 0 and abs(dt - self.dt) > 1e-9:
            raise GoalError(f"policy dt: expected {self.dt} s (this executor's dt), found {dt} s")
        noise = None
        if len(goal.policy_noise):
            noise = np.asarray(goal.policy_noise, dtype=float)
            if noise.size != horizon * loaded.dU or not np.all(np.isfinite(noise)):
                raise GoalError(f"policy_noise: expected {horizon * loaded.dU} finite values "
                                f"(horizon x du), found {noise.size}"
                                + ("" if np.all(np.isfinite(noise)) else " with NaN/inf"))
            noise = noise.reshape(horizon, loaded.dU)
        frames = None
        if loaded.is_visuomotor:
            refusal = self.camera.policy_refusal(loaded)
            if refusal is not None:
                raise GoalError(refusal)
            frames = FrameFeatures(loaded, capacity=max(256, 2 * (horizon + 1)))
        actor = PolicyActor(loaded, horizon, noise, frames)
        return TrialPlan(goal.condition, condition, actor, horizon, dt,
                         self._ticks_per_step(dt, "policy"), request)

    async def _load_policy(self, path: str) -> None:
        """Load ``path`` into the cache off the ROS thread; raises GoalError."""
        try:
            if self._policies.get(path) is not None:
                return
        except PolicyLoadError as err:
            raise GoalError(str(err)) from err
        started = time.monotonic()
        future = self._loader.submit(self._policies.load, path)
        if not await self._wait_until(future.done, self.policy_load_timeout_s, 0.02):
            raise GoalError(f"policy file {path}: not loaded within "
                            f"{self.policy_load_timeout_s:g} s")
        try:
            loaded = future.result()
        except PolicyLoadError as err:
            raise GoalError(str(err)) from err
        except Exception as err:  # noqa: BLE001 - any failure to read the file refuses the goal
            raise GoalError(f"policy file {path}: {type(err).__name__}: {err}") from err
        self.get_logger().info(f"policy loaded in {time.monotonic() - started:.2f} s: "
                               f"{loaded.description}")

    async def _on_goal(self, goal: RunTrial.Goal) -> GoalResponse:
        try:
            refusal = self._refusal()
            if refusal is not None:
                raise GoalError(refusal)
            if goal.policy_path or goal.record_images:
                self._trial_busy = True  # no second goal while this one is prepared
                try:
                    if goal.record_images:
                        await self.camera.await_camera(with_info=False)
                    if goal.policy_path:
                        await self._load_policy(goal.policy_path)
                        loaded = self._policies.get(goal.policy_path)
                        if loaded is not None and loaded.is_visuomotor and self.lockstep:
                            await self.camera.await_camera()
                finally:
                    self._trial_busy = False
            plan = self._plan(goal)
        except GoalError as err:
            self.last_rejection = str(err)
            self.get_logger().error(f"RunTrial goal rejected: {err}")
            self._publish_status(reason=f"RunTrial goal rejected: {err}")
            return GoalResponse.REJECT
        self._validated = (goal, plan)
        self._trial_busy = True
        return GoalResponse.ACCEPT

    def _on_cancel(self, goal_handle) -> CancelResponse:
        token = self._goal_tokens.get(bytes(goal_handle.goal_id.uuid))
        if token is not None:
            self._submit(CancelTrial(token, "trial canceled by the client"))
        return CancelResponse.ACCEPT

    async def _execute_trial(self, goal_handle) -> RunTrial.Result:
        goal = goal_handle.request
        uuid = bytes(goal_handle.goal_id.uuid)
        token = next(self._tokens)
        self._goal_tokens[uuid] = token
        self._goal_handles[token] = goal_handle
        try:
            if self._validated is not None and self._validated[0] is goal:
                plan = self._validated[1]
            else:
                try:
                    plan = self._plan(goal)
                except GoalError as err:  # not the goal the goal callback checked: refuse
                    goal_handle.abort()
                    return RunTrial.Result(success=False, message=str(err))
            self._validated = None
            spec = TrialSpec(plan.controller, plan.horizon, plan.dt, plan.ticks_per_step,
                             plan.condition_index, uuid.hex())
            images: list[Image] = []
            vision = self.camera.start(plan.controller, token, goal.record_images,
                                       plan.horizon, goal.reset_first)
            try:
                result = await self._run_trial(goal_handle, goal, plan, spec, token)
                if vision is not None:
                    result = self.camera.end_vision(vision, result)
                if goal.record_images and not result.aborted:
                    images, reason = await self.camera.trial_images(result)
                    if reason:
                        result = replace(result, aborted=True, reason=reason)
            finally:
                self.camera.stop(vision)
            return self._finish(goal_handle, spec, result, images)
        finally:
            self._goal_tokens.pop(uuid, None)
            self._goal_handles.pop(token, None)
            self._trial_busy = False

    async def _run_trial(self, goal_handle, goal: RunTrial.Goal, plan: TrialPlan,
                         spec: TrialSpec, token: int) -> TrialResult:
        def failed(reason: str) -> TrialResult:
            return TrialRun(spec).result(True, reason)

        target = plan.condition.target_position
        if goal.reset_first:
            ok, reason = await self._reset(plan.request, plan.condition)
            if not ok:
                return failed(reason)
        else:
            self._publish_target(plan.condition)
            if not await self._wait_until(lambda: self._state_shows(target, None),
                                          self.target_wait_s):
                return failed(f"no state with target {target.tolist()} within "
                              f"{self.target_wait_s} s (is the state_estimator running and "
                              "receiving joint states?)")
        if goal_handle.is_cancel_requested:
            return failed("trial canceled by the client")
        future = self._expect(token)
        self._submit(StartTrial(token, spec))
        event: TrialFinished = await future
        return event.result

    def _finish(self, goal_handle, spec: TrialSpec, result: TrialResult,
                images: list[Image] | None = None) -> RunTrial.Result:
        rollout = rollout_to_msg(result.states, result.actions, spec.condition, spec.dt,
                                 self.state_names, spec.trial_id, result.stamps, result.aborted,
                                 result.reason if result.aborted else "")
        if len(result.stamps_ns):
            start = int(result.stamps_ns[0])
            rollout.header.stamp.sec, rollout.header.stamp.nanosec = divmod(start, 1_000_000_000)
        rollout.images = images or []
        self._rollout_pub.publish(rollout)
        out = RunTrial.Result(success=not result.aborted, message=result.reason,
                              rollout=rollout, policy_faults=result.policy_faults)
        if result.policy_faults:
            self.policy_faults += result.policy_faults
            self.get_logger().warning(
                f"trial {spec.trial_id[:8]}: {result.policy_faults} policy steps gave non-finite "
                f"values, zero torque sent instead ({self.policy_faults} since start)")
        if result.aborted and goal_handle.is_cancel_requested:
            goal_handle.canceled()
        elif result.aborted:
            goal_handle.abort()
            self.get_logger().warning(f"trial {spec.trial_id[:8]} aborted: {result.reason}")
        else:
            goal_handle.succeed()
            self.get_logger().info(f"trial {spec.trial_id[:8]} on condition {spec.condition}: "
                                   f"{result.reason}")
        return out

    # ------------------------------------------------------------------------ shutdown

    def _publish_percentiles(self) -> dict | None:
        """p50 / p99 of the command publish, µs, over the stats window (None: no tick yet)."""
        n = min(self.loop_ticks, self._publish_s.size)
        if n == 0:
            return None
        p50, p99 = np.percentile(self._publish_s[:n] * 1e6, [50, 99])
        return {"p50": float(p50), "p99": float(p99)}

    def loop_report(self) -> dict:
        """Loop statistics and, for each state the loop used, its header stamp (ns) and the wall
        time (time.time(), s) at which the first command computed from it was published; the CPU
        log holds (monotonic s, loop-thread CPU s, process CPU s) about once a second;
        ``missed_at``: the deadlines the loop missed (monotonic s), ``overrun_at`` those of them
        lost to a tick's own work."""
        n = min(self._latency_count, self._latency_time.size)
        order = np.argsort(self._latency_time[:n], kind="stable")
        return {
            "mode": "lockstep" if self.lockstep else "realtime",
            "sched_fifo": self.realtime_granted,
            "period_s": self.period_s,
            "loop_ticks": self.loop_ticks,
            "lateness": None if self.lockstep else self._loop.stats().as_dict(),
            "missed_at": [] if self.lockstep else self._loop.missed_deadlines().tolist(),
            "overrun_at": [] if self.lockstep else self._loop.overrun_deadlines().tolist(),
            "publish_us": self._publish_percentiles(),
            "cpu_log": self._cpu_log,
            "command_state_stamp_ns": self._latency_stamp_ns[:n][order].tolist(),
            "command_time": self._latency_time[:n][order].tolist(),
        }

    def destroy_node(self) -> None:
        thread = getattr(self, "_thread", None)  # None: __init__ failed before the loop started
        if thread is not None:
            self._stop.set()
            self._wake.set()
            thread.join(timeout=2.0)
            if self.stats_file:
                Path(self.stats_file).write_text(json.dumps(self.loop_report()))
        loader = getattr(self, "_loader", None)
        if loader is not None:
            loader.shutdown(wait=False, cancel_futures=True)
        reader = getattr(self, "_state_reader", None)
        if reader is not None:
            reader.destroy_node()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    run_node(ControllerExecutor, args)


if __name__ == "__main__":
    main()
