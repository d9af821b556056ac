"""state_estimator over real DDS: an estimator process, joint states and targets published by the
test, ArmStates checked against ArmStateBuilder."""

from __future__ import annotations

import numpy as np
import pytest
from geometry_msgs.msg import Point
from mbpl_interfaces.msg import ArmState, Target
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from ros_helpers import node_process, spin_until, unmatched_after
from sensor_msgs.msg import JointState

from mbpl_ros.arm_state import ArmStateBuilder
from mbpl_sim import DEFAULT_EE_LINK, default_urdf
from mbpl_sim.description import ArmDescription
from mbpl_sim.tasks import Condition, make_task, task_kinematics

pytestmark = pytest.mark.ros

ESTIMATOR = "mbpl_ros.nodes.state_estimator"
QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
TARGET_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.TRANSIENT_LOCAL)


def joint_state(names, q, qd, sec: int) -> JointState:
    msg = JointState()
    msg.header.stamp.sec = sec
    msg.name = list(names)
    msg.position = [float(v) for v in q]
    msg.velocity = [float(v) for v in qd]
    return msg


def test_state_matches_the_builder_with_shuffled_names_and_rejects_bad_joint_states(ros_node):
    arm = ArmDescription.from_urdf(default_urdf(), DEFAULT_EE_LINK)
    task = make_task("peg")
    builder = ArmStateBuilder(task_kinematics(task, arm))
    rng = np.random.default_rng(0)
    q = rng.uniform(arm.lower, arm.upper) * 0.5
    qd = rng.normal(size=7)
    target = np.array([0.5, -0.1, 0.02])
    with node_process(ESTIMATOR, {"task": "peg", "velocity_filter_alpha": 0.25}) as proc:
        states: list[ArmState] = []
        state_sub = ros_node.create_subscription(ArmState, "state", states.append, QOS)
        joints = ros_node.create_publisher(JointState, "joint_states", QOS)
        targets = ros_node.create_publisher(Target, "target", TARGET_QOS)
        assert not unmatched_after(ros_node, [state_sub, joints, targets])

        # No target yet: q and qd, no x. Sent again until an ArmState comes back: the
        # estimator's writer may match this node's reader later than the reader matched it.
        for _ in range(5):
            joints.publish(joint_state(arm.joint_names, q, qd, 1))
            if spin_until(ros_node, lambda: len(states) >= 1, 3):
                break
        assert states, "no ArmState for the joint state"
        assert len(states[-1].x) == 0 and len(states[-1].target_position) == 0
        np.testing.assert_array_equal(states[-1].joint_positions, q)

        # A target re-publishes the last joint state's ArmState with x (same stamp).
        count = len(states)
        targets.publish(Target(position=Point(x=target[0], y=target[1], z=target[2])))
        assert spin_until(ros_node, lambda: len(states) > count, 10)
        expected = builder.state(q, qd, task.target_points(Condition(q, target)))
        assert states[-1].header.stamp.sec == 1
        np.testing.assert_allclose(states[-1].x, expected, atol=1e-12)
        np.testing.assert_array_equal(states[-1].target_position, target)

        # Names in another order (plus a gripper joint) are mapped by name (same qd: the
        # filtered velocity stays qd).
        order = rng.permutation(7)
        names = [arm.joint_names[i] for i in order] + ["gripper"]
        joints.publish(joint_state(names, np.append(q[order], 0.04), np.append(qd[order], 0.0),
                                   2))
        assert spin_until(ros_node, lambda: states[-1].header.stamp.sec == 2, 10)
        np.testing.assert_allclose(states[-1].x, expected, atol=1e-12)
        np.testing.assert_array_equal(states[-1].joint_positions, q)

        # Wrong names, sizes, NaN: rejected (no ArmState), the estimator keeps going.
        count = len(states)
        bad_names = list(arm.joint_names)
        bad_names[3] = "elbow"
        short = joint_state(arm.joint_names, q, qd, 4)
        short.velocity = list(qd[:5])
        for msg in (joint_state(bad_names, q, qd, 3), short,
                    joint_state(arm.joint_names, np.where(np.arange(7) == 2, np.nan, q), qd, 5)):
            joints.publish(msg)  # one at a time: the estimator keeps only the newest (depth 1)
            spin_until(ros_node, lambda: False, 0.2)
        joints.publish(joint_state(arm.joint_names, q, qd, 6))
        assert spin_until(ros_node, lambda: states[-1].header.stamp.sec == 6, 10)
        assert len(states) == count + 1, "a bad joint state produced an ArmState"

        # Velocities are low-pass filtered per message (alpha 0.25), in x too.
        for sec, velocity in ((7, np.zeros(7)), (8, np.ones(7)), (9, np.ones(7))):
            joints.publish(joint_state(arm.joint_names, q, velocity, sec))
            assert spin_until(ros_node, lambda s=sec: states[-1].header.stamp.sec == s, 10)
            if sec == 7:  # 0.25 * 0 + 0.75 * qd
                np.testing.assert_allclose(states[-1].joint_velocities, 0.75 * qd)
        filtered = 0.25 + 0.75 * (0.25 + 0.75 * 0.75 * qd)
        np.testing.assert_allclose(states[-1].joint_velocities, filtered)
        np.testing.assert_allclose(np.array(states[-1].x)[7:14], filtered)
        # Explicit goals of every ee point replace the tool-down ones.
        goals = task.target_points(Condition(q, target)) + np.array([0.03, -0.02, 0.01])
        targets.publish(Target(position=Point(x=target[0], y=target[1], z=target[2]),
                               points=[Point(x=x, y=y, z=z) for x, y, z in goals]))
        assert spin_until(ros_node, lambda: not np.allclose(states[-1].x[14:20],
                                                             expected[14:20]), 10)
        np.testing.assert_allclose(
            states[-1].x, builder.state(q, states[-1].joint_velocities, goals), atol=1e-12)
        assert proc.poll() is None
    output = proc.stdout.read()
    assert "joint state rejected" in output and "missing ['joint4']" in output
    assert "no target on `target` yet" in output
