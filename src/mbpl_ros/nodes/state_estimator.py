"""state_estimator: joint states -> the learning state x of the arm (mbpl_interfaces/ArmState).

Topics (relative, so a namespace gives one estimator per arm):
  in   joint_states     sensor_msgs/JointState, mapped by joint NAME to the arm's order (extra
                        joints, e.g. a gripper's, are ignored; missing ones reject the message)
  in   target           mbpl_interfaces/Target, transient local: the target (reach) or hole
                        bottom (peg) and the goal of every ee point (none given: the goals with
                        the tool pointing down), which the ee points are measured from
  out  state            mbpl_interfaces/ArmState, one per valid joint state, stamped with it

x = [q, qd, ee points - target points, ee point velocities] (StateLayout order) from the URDF's
kinematics (pinocchio, via ArmStateBuilder), with qd low-pass filtered:
qd_f <- alpha qd + (1 - alpha) qd_f, per message (so alpha is tuned for the joint-state rate; keep
1.0, the raw velocity, for the lockstep simulator whose messages are 50 ms apart). Until a target
arrives, ArmState carries q and qd but an empty x and target_position. A new target re-publishes
the last joint state's ArmState with it (same stamp), so a consumer waiting for the target sees it
without a new joint state (a lockstep simulator sends none until commanded).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from mbpl_interfaces.msg import ArmState, Target
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState

from mbpl_ros.arm_state import ArmStateBuilder
from mbpl_ros.cdr import ArmStateWriter, CdrError, JointStateReader
from mbpl_ros.nodes.parameters import arm_description, declare_parameters
from mbpl_ros.nodes.run import run_node
from mbpl_sim.tasks import TASK_NAMES, Condition, make_task, task_kinematics

STATE_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
"""QoS of joint_states, state and commands: only the newest message matters to a 1 kHz loop, so
a slow reader skips to it instead of working through a backlog (depth 1); reliable, because in
lockstep exactly one message is in flight and it must not be lost."""
REALTIME_STATE_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
"""QoS of a real-time controller_executor's state reader: as sensor data, a lost state is
superseded within a period, and a reliable reader's acknowledgements woke the timed-events threads
of the executor and the estimator ~400 and ~1,100 times a second more
(docs/control_loop_history.md, fourteenth session). Matches the estimator's reliable writer."""
TARGET_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.TRANSIENT_LOCAL)
"""QoS of target: a late subscriber still gets the current target."""


class JointStateError(ValueError):
    """A joint state that cannot be mapped onto the arm (names, sizes, non-finite values)."""


class JointOrder:
    """Maps JointState name lists onto the arm's joint order; caches the last mapping."""

    def __init__(self, joint_names: tuple[str, ...]) -> None:
        self.joint_names = tuple(joint_names)
        self._names: list[str] | None = None
        self._index: np.ndarray | None = None

    def index(self, names: list[str]) -> np.ndarray:
        """Indices (n,) of the arm's joints in ``names``; raises JointStateError if one is
        missing or repeated."""
        if names == self._names:
            return self._index
        positions = {}
        for i, name in enumerate(names):
            if name in positions:
                raise JointStateError(f"joint {name!r} appears twice in the joint state")
            positions[name] = i
        missing = [name for name in self.joint_names if name not in positions]
        if missing:
            raise JointStateError(f"joint names: expected {list(self.joint_names)}, found "
                                  f"{list(names)} (missing {missing})")
        self._index = np.array([positions[name] for name in self.joint_names])
        self._names = list(names)
        return self._index

    def extract(self, names: list[str], position: np.ndarray, velocity: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
        """q and qd (n,) in the arm's order; raises JointStateError with the reason."""
        n = len(names)
        if len(position) != n or len(velocity) != n:
            raise JointStateError(f"joint state sizes: expected position and velocity of "
                                  f"{n} entries (one per name), found {len(position)} and "
                                  f"{len(velocity)}")
        index = self.index(names)
        q = position[index]
        qd = velocity[index]
        if not (np.all(np.isfinite(q)) and np.all(np.isfinite(qd))):
            raise JointStateError(f"non-finite joint state: q {q.tolist()}, qd {qd.tolist()}")
        return q, qd


class StateEstimator(Node):
    """Publishes the ArmState of every valid joint state."""

    def __init__(self, **node_kwargs) -> None:
        super().__init__("state_estimator", **node_kwargs)
        p = self._declare_parameters()
        self.arm = arm_description(p["urdf"], p["ee_link"])
        self.task = make_task(p["task"])
        self.builder = ArmStateBuilder(task_kinematics(self.task, self.arm))
        self.alpha: float = p["velocity_filter_alpha"]
        self.ros_thread_priority: int = p["ros_thread_priority"]
        self.joints = JointOrder(self.arm.joint_names)
        self.rejected = 0
        self._qd_filtered: np.ndarray | None = None
        self._target: np.ndarray | None = None
        self._target_points: np.ndarray | None = None
        self._last_joint_state: tuple[int, str, np.ndarray, np.ndarray] | None = None
        self._reader = JointStateReader()
        self._writer = ArmStateWriter(self.arm.n_joints, self.builder.layout.dim)
        self._warned_no_target = False

        self._state_pub = self.create_publisher(ArmState, "state", STATE_QOS)
        # Serialized in and out (mbpl_ros.cdr): rclpy's message conversion was most of this
        # node's CPU at 1000 joint states a second.
        self.create_subscription(JointState, "joint_states", self._on_joint_state, STATE_QOS,
                                 raw=True)
        self.create_subscription(Target, "target", self._on_target, TARGET_QOS)
        if p["initial_target_condition"] >= 0:
            # Here only: the training module pulls in the learning core, seconds of start-up.
            from mbpl_ros.training.direct import task_conditions

            conditions = task_conditions(self.task, self.arm, p["conditions"],
                                         np.random.default_rng(p["seed"]),
                                         own_urdf=bool(p["urdf"]))
            index = p["initial_target_condition"]
            if index >= len(conditions):
                raise ValueError(f"initial_target_condition: unknown condition {index}: the "
                                 f"table has {len(conditions)} (0..{len(conditions) - 1})")
            self._set_target(conditions[index].target_position, conditions[index].target_points)
        self.get_logger().info(
            f"estimating x (dX {self.builder.layout.dim}) for joints {list(self.arm.joint_names)}, "
            f"ee link {self.arm.ee_link}, task {p['task']}, velocity filter alpha {self.alpha}")

    def _declare_parameters(self) -> dict:
        specs = {
            "urdf": ("", "robot description file; empty: the project's 7-DoF arm"),
            "ee_link": ("", "end-effector link; empty: the default arm's tool link"),
            "task": ("reach", "task (reach or peg): gives the tracked ee points"),
            "velocity_filter_alpha": (1.0, "first-order low-pass on joint velocities per "
                                           "message, in (0, 1]; 1.0: raw velocities"),
            "conditions": (4, "size of the condition table (same table as the sim bridge)"),
            "seed": (0, "seed of the condition table"),
            "initial_target_condition": (-1, "use this condition's target until one arrives "
                                              "on target; -1: none"),
            "ros_thread_priority": (0, "SCHED_FIFO priority of the (single) callback thread, "
                                       "e.g. 70 on a robot PC so the estimator is not "
                                       "descheduled in the 1 kHz path; 0: normal scheduling"),
        }
        values = declare_parameters(self, specs)
        if values["task"] not in TASK_NAMES:
            raise ValueError(f"task: expected one of {TASK_NAMES}, found {values['task']!r}")
        if not 0.0 < values["velocity_filter_alpha"] <= 1.0:
            raise ValueError(f"velocity_filter_alpha: expected a value in (0, 1], found "
                             f"{values['velocity_filter_alpha']}")
        if not 0 <= values["ros_thread_priority"] <= 99:
            raise ValueError(f"ros_thread_priority: expected 0..99, found "
                             f"{values['ros_thread_priority']}")
        if values["conditions"] < 1:
            raise ValueError(f"conditions: expected >= 1, found {values['conditions']}")
        if values["urdf"] and not Path(values["urdf"]).is_file():
            raise FileNotFoundError(f"urdf: no such file {values['urdf']!r}")
        return values

    # ------------------------------------------------------------------------------ inputs

    def _on_joint_state(self, raw: bytes) -> None:
        try:
            stamp_ns, frame_id, names, position, velocity = self._reader.read(raw)
            q, qd_raw = self.joints.extract(names, position, velocity)
        except (CdrError, JointStateError) as err:
            self.rejected += 1
            self.get_logger().warning(f"joint state rejected ({self.rejected} so far): {err}",
                                      throttle_duration_sec=1.0)
            return
        if self._qd_filtered is None or self.alpha == 1.0:
            qd = qd_raw
        else:
            qd = self.alpha * qd_raw + (1.0 - self.alpha) * self._qd_filtered
        self._qd_filtered = qd
        self._last_joint_state = (stamp_ns, frame_id, q, qd)
        self._publish(stamp_ns, frame_id, q, qd)

    def _on_target(self, msg: Target) -> None:
        """A target, with the goal of every tracked ee point or none (then tool-down goals)."""
        target = np.array([msg.position.x, msg.position.y, msg.position.z])
        points = np.array([[p.x, p.y, p.z] for p in msg.points]) if len(msg.points) else None
        if points is not None and points.shape != self.task.ee_points_local.shape:
            self.get_logger().warning(
                f"target rejected: expected {self.task.ee_points_local.shape[0]} point goals "
                f"(one per tracked ee point), found {points.shape[0]}",
                throttle_duration_sec=1.0)
            return
        if not (np.all(np.isfinite(target)) and (points is None or np.all(np.isfinite(points)))):
            self.get_logger().warning(f"target rejected: non-finite position {target.tolist()} "
                                      f"or point goals", throttle_duration_sec=1.0)
            return
        self._set_target(target, points)
        if self._last_joint_state is not None:
            self._publish(*self._last_joint_state)

    def _set_target(self, target: np.ndarray, points: np.ndarray | None = None) -> None:
        target = np.asarray(target, dtype=float)
        self._target_points = self.task.target_points(
            Condition(np.zeros(self.arm.n_joints), target, points))
        self._target = target
        self.get_logger().info(f"target set to {np.round(target, 4).tolist()} m"
                               + ("" if points is None else " with explicit point goals"))

    # ------------------------------------------------------------------------------ output

    def _publish(self, stamp_ns: int, frame_id: str, q: np.ndarray, qd: np.ndarray) -> None:
        """The ArmState of one joint state (stamp and frame copied from it)."""
        if self._target is not None:
            x = self.builder.state(q, qd, self._target_points)
            raw = self._writer.serialize(stamp_ns, frame_id, q, qd, x, self._target)
        else:
            if not self._warned_no_target:
                self._warned_no_target = True
                self.get_logger().info("no target on `target` yet: publishing ArmState "
                                       "without x until one arrives")
            raw = self._writer.serialize(stamp_ns, frame_id, q, qd)
        self._state_pub.publish(raw)


def main(args: list[str] | None = None) -> None:
    run_node(StateEstimator, args)


if __name__ == "__main__":
    main()
