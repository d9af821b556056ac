"""sim_bridge: makes the MuJoCo or PyBullet arm look like a ros2_control-driven arm.

Topics (relative, so a namespace puts one simulated arm per namespace):
  in   effort_controller/commands  std_msgs/Float64MultiArray (forward_command_controller style)
  out  joint_states                sensor_msgs/JointState
  out  camera/image_raw            sensor_msgs/Image (rgb8), camera_rate_hz in sim time, stamped
                                   like the joint state of the same instant
  out  camera/camera_info          sensor_msgs/CameraInfo, transient local, once: the camera
                                   (image_width/height, camera_fovy_deg, camera_supersample as
                                   binning; :mod:`mbpl_ros.camera`), which an executor compares
                                   with the camera a visuomotor policy was trained with
  out  /clock                      rosgraph_msgs/Clock (sim time)
Services: ~/reset_to_condition, ~/pause (std_srvs/SetBool), ~/step.

Two modes, one physics step order:
  realtime  a thread steps the physics every 1 ms of wall clock on absolute deadlines and publishes
            the joint state after every physics step; the latest valid command is held. The
            thread takes the commands itself at the start of each step and publishes serialized
            joint states (:mod:`mbpl_ros.cdr`), so the ROS thread, which would otherwise convert
            1000 messages a second, hardly ever holds the interpreter the physics needs: on two
            cores it did, lost the CPU to the other nodes' SCHED_FIFO threads, and stalled the
            physics for 50-400 ms at a time.
  lockstep  each command received advances the physics by ``lockstep_steps`` physics steps (one
            policy step) holding that command, then publishes the joint state once: as fast as the
            consumer allows, on sim time, for CI and fast training.
The camera (camera_rate_hz > 0) renders at its rate in sim time and at every reset (sim time 0):
in lockstep with camera_rate_hz = 1 / dt that is one frame per policy step, published just before
the joint state with the same stamp, so a consumer can pair every state with its frame.
The condition table is :func:`mbpl_ros.training.direct.task_conditions`: the one the trainer, the
executors and ``mbpl train --graph direct`` draw from the same (task, urdf, conditions, seed).
A command of the wrong length or with NaN/inf is rejected with a logged reason; the arm keeps the
last valid command (zero torque before the first one).
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from mbpl_interfaces.srv import ResetToCondition, StepSimulation
from rclpy.impl.implementation_singleton import rclpy_implementation
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import SetBool

from mbpl_ros.camera import CameraModel, camera_info_fields
from mbpl_ros.cdr import CdrError, JointStateWriter, read_float64_array
from mbpl_ros.conversions import condition_with_overrides
from mbpl_ros.nodes.parameters import declare_parameters
from mbpl_ros.nodes.run import run_node
from mbpl_ros.realtime import DeadlineLoop, LatestValue, try_realtime_priority
from mbpl_ros.training.direct import task_conditions
from mbpl_sim import make_sim
from mbpl_sim.tasks import Condition

MODES = ("realtime", "lockstep")
RCLError = rclpy_implementation.RCLError


class SimBridge(Node):
    """The simulated arm behind a ros2_control-style effort interface."""

    ros_executor = "single"
    """Spun by a SingleThreadedExecutor (:func:`~mbpl_ros.nodes.run.run_node`)."""

    def __init__(self, **node_kwargs) -> None:
        super().__init__("sim_bridge", **node_kwargs)
        p = self._declare_parameters()
        self.mode: str = p["mode"]
        self.lockstep_steps: int = p["lockstep_steps"]
        self.camera = CameraModel(p["image_height"], p["image_width"], p["camera_fovy_deg"],
                                  p["camera_supersample"])
        self.sim = make_sim(p["backend"], p["urdf"] or None, p["ee_link"] or None,
                            task=p["task"], camera_fovy_deg=self.camera.fovy_deg,
                            camera_supersample=self.camera.supersample)
        arm = self.sim.description
        self.joint_names: list[str] = list(arm.joint_names)
        self.n_joints: int = arm.n_joints
        self.conditions: list[Condition] = task_conditions(
            self.sim.task, arm, p["conditions"], np.random.default_rng(p["seed"]),
            own_urdf=bool(p["urdf"]))
        rate = p["camera_rate_hz"]
        self._camera_period_steps = round(1.0 / (rate * self.sim.timestep)) if rate > 0 else 0
        self._image_size = (p["image_width"], p["image_height"])
        self._clock_every = max(1, p["clock_every_steps"])

        self._command: LatestValue[np.ndarray] = LatestValue()
        self._sim_lock = threading.Lock()
        self._paused = threading.Event()
        self._stop = threading.Event()
        self.rejected_commands = 0

        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self._joint_pub = self.create_publisher(JointState, "joint_states", qos)
        self._joint_state_writer = JointStateWriter(self.joint_names)
        # Only with the camera on, so that nothing advertises frames that never come (the
        # executor refuses a record_images goal when no one publishes them). Reliable and deep:
        # a trial recording images must not lose the frame of a step to a reader that lags.
        self._image_pub = self.create_publisher(
            Image, "camera/image_raw", QoSProfile(depth=500, reliability=ReliabilityPolicy.RELIABLE)
        ) if self._camera_period_steps else None
        self._info_pub = self.create_publisher(
            CameraInfo, "camera/camera_info",
            QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                       durability=DurabilityPolicy.TRANSIENT_LOCAL)
        ) if self._camera_period_steps else None
        self._clock_pub = self.create_publisher(Clock, "/clock", 10)
        if self.mode == "lockstep":
            self.create_subscription(
                Float64MultiArray, "effort_controller/commands", self._on_command, qos)
            self._command_reader: Node | None = None
        else:
            # taken by the physics thread; on a node no executor spins
            self._command_reader = Node(f"{self.get_name()}_command_reader",
                                        namespace=self.get_namespace(), context=self.context)
            self._command_sub = self._command_reader.create_subscription(
                Float64MultiArray, "effort_controller/commands", lambda _: None,
                QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
        self.create_service(ResetToCondition, "~/reset_to_condition", self._on_reset)
        self.create_service(SetBool, "~/pause", self._on_pause)
        self.create_service(StepSimulation, "~/step", self._on_step)

        self.sim.reset(self.conditions[0])
        if self._info_pub is not None:
            self._info_pub.publish(self._camera_info())
        self._loop = DeadlineLoop(self.sim.timestep)
        self._thread: threading.Thread | None = None
        if self.mode == "realtime":
            self._thread = threading.Thread(target=self._realtime_loop, name="physics", daemon=True)
            self._thread.start()
        self.get_logger().info(
            f"{p['backend']} arm with {self.n_joints} joints {self.joint_names}, task {p['task']}, "
            f"{len(self.conditions)} conditions, mode {self.mode}")

    def _declare_parameters(self) -> dict:
        specs = {
            "backend": ("mujoco", "physics engine: mujoco or pybullet"),
            "urdf": ("", "robot description file; empty: the project's 7-DoF arm"),
            "ee_link": ("", "end-effector link; empty: the default arm's tool link"),
            "task": ("reach", "task scene: reach or peg"),
            "mode": ("realtime", "realtime (1 kHz wall clock) or lockstep (sim time)"),
            "lockstep_steps": (50, "physics steps per command in lockstep mode (one policy step)"),
            "conditions": (4, "number of conditions in the condition table"),
            "seed": (0, "seed of the condition table"),
            "camera_rate_hz": (0.0, "camera publishing rate in sim time, Hz; 0: no camera"),
            "image_width": (64, "camera image width, px"),
            "image_height": (64, "camera image height, px"),
            "camera_fovy_deg": (55.0, "camera vertical field of view, degrees (a visuomotor "
                                      "policy needs the one it was trained with: mbpl train's "
                                      "camera_fovy_deg)"),
            "camera_supersample": (1, "render the camera image this many times larger and "
                                      "block-average it (as the policy was trained: mbpl "
                                      "train's camera_supersample)"),
            "clock_every_steps": (10, "publish /clock every this many physics steps (realtime)"),
        }
        values = declare_parameters(self, specs)
        if values["mode"] not in MODES:
            raise ValueError(f"mode: expected one of {MODES}, found {values['mode']!r}")
        if values["lockstep_steps"] < 1:
            raise ValueError(f"lockstep_steps: expected >= 1, found {values['lockstep_steps']}")
        if values["urdf"] and not Path(values["urdf"]).is_file():
            raise FileNotFoundError(f"urdf: no such file {values['urdf']!r}")
        return values

    # ------------------------------------------------------------------------------ inputs

    def _validate_command(self, effort: np.ndarray) -> np.ndarray | None:
        """The effort vector, or None (logged, throttled per reason) if it must be rejected."""
        log = self.get_logger()
        if effort.shape != (self.n_joints,):
            self.rejected_commands += 1
            log.warning(f"command rejected, holding the last valid one: expected "
                        f"{self.n_joints} efforts, found {effort.size}", throttle_duration_sec=1.0)
            return None
        if not np.all(np.isfinite(effort)):
            self.rejected_commands += 1
            log.warning(f"command rejected, holding the last valid one: non-finite effort "
                        f"{effort.tolist()}", throttle_duration_sec=1.0)
            return None
        return effort

    def _on_command(self, msg: Float64MultiArray) -> None:
        """Lockstep: hold the command and advance one policy step."""
        effort = self._validate_command(np.asarray(msg.data, dtype=float))
        if effort is not None:
            self._command.write(effort)
        if not self._paused.is_set():
            with self._sim_lock:
                self._advance(self.lockstep_steps)
                snapshot = self._snapshot()
            self._publish_state(snapshot)

    def _take_commands(self) -> None:
        """Real time, physics thread: hold the newest valid command waiting in the reader."""
        while (taken := self._command_sub.handle.take_message(Float64MultiArray, True)) \
                is not None:
            try:
                effort = read_float64_array(taken[0])
            except CdrError as err:
                self.rejected_commands += 1
                self.get_logger().warning(f"command rejected, holding the last valid one: {err}",
                                          throttle_duration_sec=1.0)
                continue
            effort = self._validate_command(effort)
            if effort is not None:
                self._command.write(effort)

    def _held_command(self) -> np.ndarray:
        slot = self._command.read()
        return np.zeros(self.n_joints) if slot is None else slot[1]

    def _on_reset(self, request: ResetToCondition.Request, response: ResetToCondition.Response):
        try:
            condition = self._condition_from_request(request)
            with self._sim_lock:
                self.sim.reset(condition)
                self._command.reset()
                if self._camera_period_steps:
                    self._publish_image()  # the first frame of the episode, with x_0's stamp
        except (ValueError, IndexError) as error:
            response.success = False
            response.message = str(error)
            self.get_logger().error(f"reset refused: {error}")
            return response
        self._publish_state()
        response.success = True
        response.message = f"reset to condition {request.condition}"
        return response

    def _condition_from_request(self, request: ResetToCondition.Request) -> Condition:
        if len(request.target_points) and not len(request.target_position):
            raise ValueError("target_points: expected with a target_position (the points are "
                             "the goals of the ee points around that target)")
        if len(request.joint_positions) == 0 and len(request.target_position) == 0:
            if request.condition >= len(self.conditions):
                raise IndexError(f"unknown condition {request.condition}: the table has "
                                 f"{len(self.conditions)} (0..{len(self.conditions) - 1})")
            return self.conditions[request.condition]
        return condition_with_overrides(
            self.conditions[min(request.condition, len(self.conditions) - 1)], request)

    def _on_pause(self, request: SetBool.Request, response: SetBool.Response):
        if request.data:
            self._paused.set()
        else:
            self._paused.clear()
        response.success = True
        response.message = "paused" if request.data else "running"
        return response

    def _on_step(self, request: StepSimulation.Request, response: StepSimulation.Response):
        if request.steps < 1:
            response.success = False
            response.message = "steps: expected >= 1"
            return response
        with self._sim_lock:
            self._advance(request.steps)
            response.sim_time = self.sim.sim_time
        self._publish_state()
        response.success = True
        return response

    # ------------------------------------------------------------------------------ physics

    def _advance(self, n_steps: int) -> None:
        """Step the physics ``n_steps`` times with the held command; the caller holds the lock."""
        self.sim.step(self._held_command(), n_steps)
        if self._camera_period_steps:
            steps_now = round(self.sim.sim_time / self.sim.timestep)
            if steps_now // self._camera_period_steps != (steps_now - n_steps) // \
                    self._camera_period_steps:
                self._publish_image()

    def _realtime_loop(self) -> None:
        try_realtime_priority()

        def tick(i: int) -> bool:
            if self._paused.is_set():
                return True
            # On SIGINT rclpy shuts the context down before main() can stop this thread.
            if not self.context.ok():
                return False
            try:
                self._take_commands()
            except RCLError:
                if self.context.ok():
                    raise
                return False
            with self._sim_lock:
                self._advance(1)
                snapshot = self._snapshot()
            try:
                self._publish_state(snapshot, with_clock=(i % self._clock_every == 0))
            except Exception:  # noqa: BLE001 - publishers are invalid once the context is gone
                if self.context.ok():
                    raise
                return False
            return True

        self._loop.run(tick, self._stop)

    # ------------------------------------------------------------------------------ outputs

    def _sim_stamp(self):
        seconds = self.sim.sim_time
        clock = Clock()
        clock.clock.sec = int(seconds)
        clock.clock.nanosec = int(round((seconds - int(seconds)) * 1e9)) % 1_000_000_000
        return clock

    def _snapshot(self) -> tuple[Clock, np.ndarray, np.ndarray, np.ndarray]:
        """Sim time, q, qd and held effort; the caller holds the lock (PyBullet is not
        thread-safe)."""
        return (self._sim_stamp(), self.sim.joint_positions(), self.sim.joint_velocities(),
                self._held_command())

    def _publish_state(self, snapshot=None, with_clock: bool = True) -> None:
        if snapshot is None:
            with self._sim_lock:
                snapshot = self._snapshot()
        clock, position, velocity, effort = snapshot
        stamp_ns = clock.clock.sec * 1_000_000_000 + clock.clock.nanosec
        self._joint_pub.publish(self._joint_state_writer.serialize(stamp_ns, position, velocity,
                                                                   effort))
        if with_clock:
            self._clock_pub.publish(clock)

    def _publish_image(self) -> None:
        width, height = self._image_size
        pixels = self.sim.render(width, height)
        msg = Image()
        msg.header.stamp = self._sim_stamp().clock
        msg.header.frame_id = "camera_optical_frame"
        msg.height, msg.width = pixels.shape[:2]
        msg.encoding = "rgb8"
        msg.step = msg.width * 3
        msg.data = pixels.tobytes()
        self._image_pub.publish(msg)

    def _camera_info(self) -> CameraInfo:
        msg = CameraInfo()
        msg.header.stamp = self._sim_stamp().clock
        msg.header.frame_id = "camera_optical_frame"
        for name, value in camera_info_fields(self.camera).items():
            setattr(msg, name, value)
        return msg

    def realtime_stats(self):
        """Lateness of the physics loop (realtime mode)."""
        return self._loop.stats()

    def destroy_node(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        self.sim.close()
        if self._command_reader is not None:
            self._command_reader.destroy_node()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    run_node(SimBridge, args)


if __name__ == "__main__":
    main()
