"""sim_bridge over real DDS: a bridge process and an rclpy client node in the test process."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from mbpl_interfaces.srv import ResetToCondition, StepSimulation
from rclpy.qos import QoSProfile, ReliabilityPolicy
from ros_helpers import call_service, node_process, ros_args, spin_until, unmatched_after
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import SetBool

from mbpl_sim import DEFAULT_EE_LINK, default_urdf
from mbpl_sim.description import ArmDescription
from mbpl_sim.tasks import make_conditions, make_task

pytestmark = pytest.mark.ros

BRIDGE = "mbpl_ros.nodes.sim_bridge"
QOS = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)


class JointStateLog:
    def __init__(self, node) -> None:
        self.messages: list[JointState] = []
        self.subscription = node.create_subscription(JointState, "joint_states",
                                                     self.messages.append, QOS)

    def stamps(self) -> np.ndarray:
        return np.array([m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for m in self.messages])

    def last(self) -> JointState:
        return self.messages[-1]


def send(pub, effort) -> None:
    msg = Float64MultiArray()
    msg.data = [float(e) for e in effort]
    pub.publish(msg)


def exchange(node, pub, log: JointStateLog, effort, timeout: float = 10.0) -> JointState:
    """Lockstep: send one command and wait for the joint state it produces."""
    count = len(log.messages)
    send(pub, effort)
    assert spin_until(node, lambda: len(log.messages) > count, timeout), "no joint state came back"
    return log.last()


def reset(node, condition: int = 0):
    request = ResetToCondition.Request()
    request.condition = condition
    return call_service(node, ResetToCondition, "/sim_bridge/reset_to_condition", request)


def first_reset(node, log: JointStateLog, condition: int = 0, tries: int = 5) -> None:
    """Reset and wait for the joint state the bridge publishes for it, resetting again if it
    does not come: this test's reader has matched the bridge's writer, but the writer may match
    the reader only later, and what it publishes before is dropped (a reset is idempotent)."""
    for _ in range(tries):
        count = len(log.messages)
        response = reset(node, condition)
        assert response.success, response.message
        if spin_until(node, lambda n=count: len(log.messages) > n, 3):
            return
    raise AssertionError(f"no joint state after {tries} resets")


@pytest.fixture(scope="module")
def expected_conditions():
    arm = ArmDescription.from_urdf(default_urdf(), DEFAULT_EE_LINK)
    return make_conditions(make_task("reach"), arm, 4, np.random.default_rng(3))


@pytest.mark.parametrize("backend", ["mujoco", "pybullet"])
def test_lockstep_command_moves_arm_and_reset_restores_condition(ros_node, backend,
                                                                 expected_conditions):
    params = {"backend": backend, "mode": "lockstep", "lockstep_steps": 50, "seed": 3,
              "conditions": 4}
    with node_process(BRIDGE, params) as proc:
        log = JointStateLog(ros_node)
        pub = ros_node.create_publisher(Float64MultiArray, "effort_controller/commands", QOS)
        assert not unmatched_after(ros_node, [log.subscription, pub])
        first_reset(ros_node, log, 1)
        start = log.last()
        np.testing.assert_allclose(start.position, expected_conditions[1].joint_positions,
                                   atol=1e-9)
        np.testing.assert_allclose(start.velocity, 0.0, atol=1e-9)
        assert list(start.name) == list(
            ArmDescription.from_urdf(default_urdf(), DEFAULT_EE_LINK).joint_names)

        effort = np.zeros(len(start.position))
        effort[0] = 5.0
        first = exchange(ros_node, pub, log, effort)
        second = exchange(ros_node, pub, log, effort)
        t0, t1, t2 = (m.header.stamp.sec + m.header.stamp.nanosec * 1e-9
                      for m in (start, first, second))
        # one exchange = one policy step of 50 physics steps of 1 ms
        assert t1 - t0 == pytest.approx(0.05, abs=1e-6)
        assert t2 - t1 == pytest.approx(0.05, abs=1e-6)
        assert first.velocity[0] > 0.01 and second.velocity[0] > first.velocity[0]
        assert second.position[0] > start.position[0]
        np.testing.assert_allclose(second.effort, effort)

        assert reset(ros_node, 2).success
        assert spin_until(ros_node, lambda: np.allclose(
            log.last().position, expected_conditions[2].joint_positions, atol=1e-9), 10)
        np.testing.assert_allclose(log.last().velocity, 0.0, atol=1e-9)
        assert proc.poll() is None


def test_bad_commands_are_rejected_and_last_valid_one_is_held(ros_node):
    with node_process(BRIDGE, {"mode": "lockstep", "lockstep_steps": 20}) as proc:
        log = JointStateLog(ros_node)
        pub = ros_node.create_publisher(Float64MultiArray, "effort_controller/commands", QOS)
        assert not unmatched_after(ros_node, [log.subscription, pub])
        first_reset(ros_node, log, 0)
        n = len(log.last().position)
        valid = np.linspace(-2.0, 2.0, n)
        exchange(ros_node, pub, log, valid)
        for bad in (np.full(n + 1, 1.0), np.full(n - 1, 1.0),
                    np.where(np.arange(n) == 2, np.nan, 1.0),
                    np.where(np.arange(n) == 0, np.inf, 1.0)):
            state = exchange(ros_node, pub, log, bad)
            np.testing.assert_allclose(state.effort, valid)
            assert np.all(np.isfinite(state.position)) and np.all(np.isfinite(state.velocity))
        assert proc.poll() is None, "the bridge died on bad input"
    output = proc.stdout.read()
    assert "command rejected" in output and "expected 7 efforts, found 8" in output
    assert "non-finite effort" in output


def test_unknown_condition_is_refused_with_reason(ros_node):
    with node_process(BRIDGE, {"mode": "lockstep", "conditions": 2}) as proc:
        response = reset(ros_node, 7)
        assert not response.success
        assert "unknown condition 7" in response.message and "0..1" in response.message
        assert proc.poll() is None


def test_realtime_mode_publishes_every_physics_step_and_pauses(ros_node):
    with node_process(BRIDGE, {"mode": "realtime"}):
        log = JointStateLog(ros_node)
        assert spin_until(ros_node, lambda: len(log.messages) >= 300, 20)
        log.messages.clear()
        spin_until(ros_node, lambda: False, 1.0)
        stamps = log.stamps()
        # Every physics step is published: consecutive sim stamps are 1 ms apart.
        steps = np.round(np.diff(stamps) / 1e-3)
        assert np.all(steps == 1), f"skipped or repeated steps: {np.unique(steps)}"
        assert len(stamps) > 300, f"only {len(stamps)} joint states in 1 s of wall time"

        request = SetBool.Request()
        request.data = True
        assert call_service(ros_node, SetBool, "/sim_bridge/pause", request).success
        spin_until(ros_node, lambda: False, 0.3)
        paused_at = log.stamps()[-1]
        spin_until(ros_node, lambda: False, 0.5)
        assert log.stamps()[-1] == paused_at

        step = StepSimulation.Request()
        step.steps = 25
        result = call_service(ros_node, StepSimulation,
                              "/sim_bridge/step", step)
        assert result.success and result.sim_time == pytest.approx(paused_at + 0.025, abs=1e-6)


def test_realtime_mode_holds_the_newest_valid_command(ros_node):
    with node_process(BRIDGE, {"mode": "realtime"}) as proc:
        log = JointStateLog(ros_node)
        pub = ros_node.create_publisher(Float64MultiArray, "effort_controller/commands", QOS)
        assert not unmatched_after(ros_node, [log.subscription, pub])
        assert spin_until(ros_node, lambda: len(log.messages) >= 10, 20)
        np.testing.assert_array_equal(log.last().effort, np.zeros(7))  # before any command
        valid = np.linspace(-1.0, 1.0, 7)

        def effort_becomes(effort, timeout=10.0) -> bool:
            return spin_until(ros_node, lambda: np.array_equal(log.last().effort, effort),
                              timeout)

        send(pub, valid)
        assert effort_becomes(valid), "the command never reached the physics"
        positions = [log.last().position[0]]
        for bad in (np.full(8, 1.0), np.full(6, 1.0), np.where(np.arange(7) == 2, np.nan, 1.0),
                    np.where(np.arange(7) == 0, -np.inf, 1.0)):
            send(pub, bad)
            log.messages.clear()
            spin_until(ros_node, lambda: len(log.messages) >= 50, 5)
            assert log.messages, "the bridge stopped publishing after a bad command"
            for message in log.messages:
                np.testing.assert_array_equal(message.effort, valid)
                assert np.all(np.isfinite(message.position))
        positions.append(log.last().position[0])
        assert positions[-1] != positions[0], "the held command did not move the arm"
        newer = -valid
        send(pub, newer)
        assert effort_becomes(newer)
        assert proc.poll() is None, "the bridge died on bad input"
    output = proc.stdout.read()
    assert "expected 7 efforts, found 8" in output  # (the others within 1 s: throttled)
    assert "non-finite effort" in output


def test_camera_images_are_published(ros_node):
    params = {"mode": "lockstep", "lockstep_steps": 50, "camera_rate_hz": 20.0}
    with node_process(BRIDGE, params):
        images: list[Image] = []
        ros_node.create_subscription(Image, "camera/image_raw", images.append, 10)
        log = JointStateLog(ros_node)
        pub = ros_node.create_publisher(Float64MultiArray, "effort_controller/commands", QOS)
        assert not unmatched_after(ros_node, [log.subscription, pub])
        first_reset(ros_node, log, 0)
        for _ in range(3):
            exchange(ros_node, pub, log, np.zeros(7))
        assert spin_until(ros_node, lambda: len(images) >= 3, 10)
        image = images[-1]
        assert (image.height, image.width, image.encoding) == (64, 64, "rgb8")
        pixels = np.frombuffer(bytes(image.data), dtype=np.uint8).reshape(64, 64, 3)
        assert pixels.std() > 5, "blank image"


def test_missing_end_effector_link_fails_at_start_with_clear_message():
    cmd = [sys.executable, "-m", BRIDGE, *ros_args({"ee_link": "no_such_link"})]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "no_such_link" in result.stdout + result.stderr
