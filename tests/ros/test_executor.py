"""controller_executor over real DDS: a sim bridge, a state estimator and the executor as processes
in lockstep (real time: test_executor_realtime.py) and an rclpy client in the test process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from mbpl_interfaces.action import RunTrial
from mbpl_interfaces.msg import ExecutorStatus, Rollout
from mbpl_interfaces.srv import ResetToCondition
from rclpy.action import ActionClient
from rclpy.qos import QoSProfile, ReliabilityPolicy
from ros_helpers import call_service, node_process, spin_until, unmatched_after
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Trigger

from mbpl_ros.arm_state import ArmStateBuilder
from mbpl_ros.conversions import controller_to_msg, rollout_from_msg
from mbpl_ros.core.controllers import init_lqr, smoothed_noise
from mbpl_ros.core.state import StateLayout
from mbpl_ros.realtime import realtime_dds_variables
from mbpl_sim import DEFAULT_EE_LINK, default_urdf
from mbpl_sim.description import ArmDescription
from mbpl_sim.tasks import make_conditions, make_task, task_kinematics

pytestmark = pytest.mark.ros

BRIDGE = "mbpl_ros.nodes.sim_bridge"
ESTIMATOR = "mbpl_ros.nodes.state_estimator"
EXECUTOR = "mbpl_ros.nodes.controller_executor"
ACTION = "/controller_executor/run_trial"
QOS = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
ARM = {"task": "reach", "conditions": 2, "seed": 3}
DT = 0.05


class Arm:
    """The arm, its condition table (the nodes' seed) and controllers for it, in the test."""

    def __init__(self) -> None:
        self.description = ArmDescription.from_urdf(default_urdf(), DEFAULT_EE_LINK)
        self.task = make_task(ARM["task"])
        self.conditions = make_conditions(self.task, self.description, ARM["conditions"],
                                          np.random.default_rng(ARM["seed"]))
        self.kinematics = task_kinematics(self.task, self.description)
        self.builder = ArmStateBuilder(self.kinematics)
        self.layout = StateLayout(self.description.n_joints, self.task.n_points)

    def controller_msg(self, condition: int, T: int, noise_seed: int = 0):
        """The trainer's initial controller (hold-x0 LQR) with smoothed noise folded in."""
        c = self.conditions[condition]
        q0 = c.joint_positions
        x0 = self.builder.state(q0, np.zeros_like(q0), self.task.target_points(c))
        controller = init_lqr(x0, self.layout.dim, self.layout.action_dim, DT, T,
                              init_gains=1.0 / np.diag(self.kinematics.mass_matrix(q0)))
        noise = smoothed_noise(np.random.default_rng(noise_seed), T, self.layout.action_dim, 1.0)
        return controller_to_msg(controller.fold_noise(noise), condition, DT, self.layout.names())


@pytest.fixture(scope="module")
def arm() -> Arm:
    return Arm()


class Graph:
    """Bridge, estimator and executor processes; the bridge can be stopped, killed and started
    again (with other parameters)."""

    def __init__(self, mode: str, executor_params: dict | None = None,
                 estimator_params: dict | None = None, bridge_params: dict | None = None,
                 arm: dict | None = None) -> None:
        self.mode = mode
        self.executor_params = executor_params or {}
        self.estimator_params = estimator_params or {}
        self.bridge_params = bridge_params or {}
        self.arm = ARM if arm is None else arm
        self._contexts = []
        self.bridge = self.estimator = self.executor = None
        self._bridge_context = None

    def start_bridge(self, **overrides):
        self.stop_bridge()
        self._bridge_context = node_process(BRIDGE, {**self.arm, "mode": self.mode,
                                                     "lockstep_steps": 50, **self.bridge_params,
                                                     **overrides})
        self.bridge = self._bridge_context.__enter__()
        return self.bridge

    def stop_bridge(self) -> None:
        if self._bridge_context is not None:
            self._bridge_context.__exit__(None, None, None)
            self._bridge_context = None

    def __enter__(self) -> Graph:
        self.start_bridge()
        # A real-time executor runs as deployed: Fast DDS's threads at its loop's priority.
        executor_env = ({**os.environ, **realtime_dds_variables(os.environ)}
                        if self.mode == "realtime" else None)
        for name, module, params, env in (
                ("estimator", ESTIMATOR, {**self.arm, **self.estimator_params}, None),
                ("executor", EXECUTOR, {**self.arm, "mode": self.mode, **self.executor_params},
                 executor_env)):
            context = node_process(module, params, env=env)
            self._contexts.append(context)
            setattr(self, name, context.__enter__())
        return self

    def __exit__(self, *exc) -> None:
        for context in reversed(self._contexts):
            context.__exit__(None, None, None)
        self.stop_bridge()
        self.log = self.executor.stdout.read() if self.executor.stdout else ""
        if exc and exc[0] is not None:  # pytest shows this with the failure
            print(f"controller_executor's output (last 4000 characters):\n{self.log[-4000:]}")

    def alive(self) -> bool:
        return self.executor.poll() is None and self.estimator.poll() is None


@pytest.fixture(scope="module")
def lockstep_graph():
    with Graph("lockstep", {"lockstep_timeout_s": 1.0}) as graph:
        yield graph


class Client:
    """Action client, command/status/joint-state logs of one test."""

    def __init__(self, node, joint_states: bool = True) -> None:
        self.node = node
        self.action = ActionClient(node, RunTrial, ACTION)
        self.commands: list[tuple[float, np.ndarray]] = []
        self.joint_states: list[JointState] = []
        self.statuses: list[ExecutorStatus] = []
        self.rollouts: list[Rollout] = []
        subscriptions = [
            node.create_subscription(Float64MultiArray, "effort_controller/commands",
                                     lambda m: self.commands.append(
                                         (time.monotonic(), np.array(m.data))), QOS),
            node.create_subscription(ExecutorStatus, "/controller_executor/status",
                                     self.statuses.append, QOS),
        ]
        if joint_states:
            subscriptions.append(node.create_subscription(
                JointState, "joint_states", self.joint_states.append, QOS))
        node.create_subscription(Rollout, "rollouts", self.rollouts.append, QOS)
        assert self.action.wait_for_server(timeout_sec=60), "executor action server missing"
        # Every logged topic matched to its publisher before a goal is sent (a loaded machine
        # can take seconds), so no message of the trial is missed.
        unmatched = unmatched_after(node, subscriptions)
        assert not unmatched, f"no publisher matched on {unmatched}"
        spin_until(node, lambda: False, 0.3)

    def send(self, goal: RunTrial.Goal, feedback: list[int] | None = None, timeout: float = 30):
        """The goal handle (None if no answer)."""
        future = self.action.send_goal_async(
            goal, feedback_callback=None if feedback is None
            else lambda m: feedback.append(m.feedback.step))
        assert spin_until(self.node, future.done, timeout), "no answer to the goal"
        return future.result()

    def result(self, handle, timeout: float = 60):
        future = handle.get_result_async()
        assert spin_until(self.node, future.done, timeout), "no trial result"
        return future.result()

    def trigger(self, name: str) -> Trigger.Response:
        return call_service(self.node, Trigger, f"/controller_executor/{name}", Trigger.Request())

    def wait_mode(self, mode: str, timeout: float = 10) -> bool:
        return spin_until(self.node, lambda: bool(self.statuses)
                          and self.statuses[-1].mode == mode, timeout)


def goal_for(arm: Arm, condition: int, T: int, horizon: int | None = None, seed: int = 0,
             reset_first: bool = True) -> RunTrial.Goal:
    goal = RunTrial.Goal()
    goal.condition = condition
    goal.horizon = T if horizon is None else horizon
    goal.controller = arm.controller_msg(condition, T, seed)
    goal.reset_first = reset_first
    return goal


def stamp(msg) -> float:
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9



def assert_refused(ros_node, client, expected: dict, timeout: float = 30) -> None:
    """Each goal of ``{reason: goal}`` is rejected and a status names the reason."""
    for reason, goal in expected.items():
        count = len(client.statuses)
        handle = client.send(goal, timeout=timeout)
        assert not handle.accepted, reason
        assert spin_until(ros_node, lambda c=count, r=reason: any(
            r in s.reason for s in client.statuses[c:]), 10), \
            f"no status with {reason!r}: {[s.reason for s in client.statuses[-3:]]}"

def test_lockstep_trial_returns_the_rollout_the_bridge_saw(ros_node, arm, lockstep_graph):
    client = Client(ros_node)
    feedback: list[int] = []
    handle = client.send(goal_for(arm, 1, 20), feedback)
    assert handle.accepted
    wrapped = client.result(handle)
    result = wrapped.result
    assert result.success, result.message
    states, actions = rollout_from_msg(result.rollout)
    assert states.shape == (21, arm.layout.dim) and actions.shape == (20, 7)
    assert not result.rollout.aborted and list(result.rollout.state_names) == arm.layout.names()
    np.testing.assert_allclose(result.rollout.stamps, np.arange(21) * DT, atol=1e-6)
    assert feedback and feedback[-1] == 20 and feedback == sorted(feedback)

    # States x_0..x_T are the bridge's joint states after the reset and after each command.
    assert spin_until(ros_node, lambda: len(client.rollouts) >= 1, 10), "rollout not published"
    by_stamp = {round(stamp(m), 6): m for m in client.joint_states}
    layout = arm.layout
    for t in range(21):
        js = by_stamp[round(t * DT, 6)]
        np.testing.assert_allclose(states[t, layout.joint_positions], js.position, atol=1e-12)
        np.testing.assert_allclose(states[t, layout.joint_velocities], js.velocity, atol=1e-12)
    np.testing.assert_allclose(states[0, layout.joint_positions],
                               arm.conditions[1].joint_positions, atol=1e-9)
    targets = arm.task.target_points(arm.conditions[1])
    np.testing.assert_allclose(states[-1], arm.builder.state(
        states[-1, :7], states[-1, 7:14], targets), atol=1e-9)
    # The actions are exactly the commands sent, one per state, and what the bridge applied.
    sent = np.array([c for _, c in client.commands[-20:]])
    np.testing.assert_array_equal(sent, actions)
    np.testing.assert_array_equal(by_stamp[round(20 * DT, 6)].effort, actions[-1])
    assert np.abs(actions).max() > 0.01, "a trivial controller proves little"
    assert lockstep_graph.alive()


def test_malformed_goals_are_rejected_with_the_reason_and_a_valid_one_runs_after(
        ros_node, arm, lockstep_graph):
    client = Client(ros_node)
    bad = goal_for(arm, 0, 5)
    bad.controller.gain = list(bad.controller.gain)[:-3]
    nan = goal_for(arm, 0, 5)
    offsets = list(nan.controller.offset)
    offsets[4] = float("nan")
    nan.controller.offset = offsets
    layout = goal_for(arm, 0, 5)
    layout.controller.state_names = ["a"] * len(layout.controller.state_names)
    noise = goal_for(arm, 0, 5)
    noise.policy_noise = [0.0] * 35
    unknown = goal_for(arm, 0, 5)
    unknown.condition = 9
    images = goal_for(arm, 0, 5)
    images.record_images = True  # the bridge of this graph has no camera
    points = goal_for(arm, 0, 5)
    points.target_position = [0.4, 0.0, 0.3]
    points.target_points = [0.4, 0.0, 0.3]  # one point of the task's two
    expected = {"controller.gain: expected": bad, "controller.offset: non-finite": nan,
                "state layout": layout, "policy_noise: only for a policy goal": noise,
                "unknown condition 9": unknown,
                "record_images: nothing publishes /camera/image_raw": images,
                "target points: expected 6 finite coordinates": points}
    assert_refused(ros_node, client, expected)
    assert lockstep_graph.alive(), "the executor died on a malformed goal"
    handle = client.send(goal_for(arm, 0, 5))
    assert handle.accepted
    result = client.result(handle).result
    assert result.success and result.rollout.horizon == 5, result.message


def test_estop_mid_trial_aborts_it_and_commands_zero_torque(ros_node, arm, lockstep_graph):
    client = Client(ros_node)
    feedback: list[int] = []
    handle = client.send(goal_for(arm, 0, 400, seed=1), feedback)
    assert handle.accepted
    assert spin_until(ros_node, lambda: bool(feedback) and feedback[-1] >= 5, 30)
    assert client.trigger("estop").success
    result = client.result(handle).result
    assert not result.success and result.rollout.aborted
    assert "e-stop" in result.rollout.abort_reason
    assert 5 <= result.rollout.horizon < 400
    states, actions = rollout_from_msg(result.rollout)  # what ran before the stop, consistent
    assert len(states) in (len(actions), len(actions) + 1)
    assert spin_until(ros_node, lambda: np.all(client.commands[-1][1] == 0.0), 5), \
        "the last command is not zero torque"
    assert client.wait_mode("estop")
    # Latched: a new trial is refused until released.
    assert not client.send(goal_for(arm, 0, 5)).accepted
    assert client.trigger("release").success
    assert client.wait_mode("hold")
    assert lockstep_graph.alive()


def test_bridge_killed_mid_trial_aborts_with_stale_state_and_executor_recovers(
        ros_node, arm, lockstep_graph):
    client = Client(ros_node)
    feedback: list[int] = []
    handle = client.send(goal_for(arm, 1, 400, seed=2), feedback)
    assert handle.accepted
    assert spin_until(ros_node, lambda: bool(feedback) and feedback[-1] >= 5, 30)
    lockstep_graph.bridge.send_signal(signal.SIGKILL)
    lockstep_graph.bridge.wait()
    result = client.result(handle).result
    assert not result.success and result.rollout.aborted
    assert "stale state" in result.rollout.abort_reason, result.rollout.abort_reason
    assert client.wait_mode("hold"), "the executor did not go to a safe mode"
    assert lockstep_graph.alive(), "the executor died with the bridge"
    # A new bridge: the next trial runs again.
    lockstep_graph.start_bridge()
    handle = client.send(goal_for(arm, 0, 5))
    assert handle.accepted
    result = client.result(handle).result
    assert result.success, result.message


def test_operator_reset_service_in_lockstep_teleports_to_the_condition(ros_node, arm,
                                                                       lockstep_graph):
    client = Client(ros_node)
    request = ResetToCondition.Request(condition=1)
    response = call_service(ros_node, ResetToCondition, "/controller_executor/reset_to_condition",
                            request, timeout=30)
    assert response.success, response.message
    response = call_service(ros_node, ResetToCondition, "/controller_executor/reset_to_condition",
                            ResetToCondition.Request(condition=5), timeout=30)
    assert not response.success and "unknown condition 5" in response.message
    assert client.wait_mode("hold")


def test_executor_refuses_bad_parameters_at_start():
    cmd = [sys.executable, "-m", EXECUTOR, "--ros-args", "-p", "mode:=sometimes"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "mode: expected one of ('realtime', 'lockstep'), found 'sometimes'" in \
        result.stdout + result.stderr


# ------------------------------------------------------------------------- neural policies

def save_test_policy(arm: Arm, path, joints=None, layout=None, seed: int = 0):
    """A seeded MLP scaled to N m of torque on the heavy joints (a trivial policy would prove
    little) and little on the light wrist, which would otherwise reach its joint limits within the
    trial, where the executor's guard rightly alters the action."""
    from mbpl_ros.gps.policy import Normalizer, ObservationSpec, make_policy, save_policy

    layout = layout or arm.layout
    spec = ObservationSpec.full_state(layout, joints or arm.description.joint_names)
    policy = make_policy(spec, 7, hidden=(32, 32), seed=seed)
    scale = np.array([10.0, 10.0, 10.0, 10.0, 0.05, 0.05, 0.05])
    policy.action_norm = Normalizer(np.zeros(7), scale)
    policy.variance = (0.3 * scale) ** 2
    return save_policy(policy, path, dt=DT)


def policy_goal(path, condition: int, T: int, noise: np.ndarray | None = None,
                **overrides) -> RunTrial.Goal:
    goal = RunTrial.Goal()
    goal.condition = condition
    goal.horizon = T
    goal.policy_path = str(path)
    goal.reset_first = True
    if noise is not None:
        goal.policy_noise = noise.ravel().tolist()
    for name, value in overrides.items():
        setattr(goal, name, value)
    return goal


def test_policy_trial_runs_the_policys_actions_on_the_recorded_states(ros_node, arm,
                                                                      lockstep_graph, tmp_path):
    from mbpl_ros.gps.policy import load_policy

    client = Client(ros_node)
    path = save_test_policy(arm, tmp_path / "policy.pt")
    reference = load_policy(path)  # the file itself, read here independently of the executor
    T = 20
    # The first policy goal imports torch in the executor: seconds on a busy machine.
    handle = client.send(policy_goal(path, 1, T), timeout=180)
    assert handle.accepted, client.statuses[-1].reason if client.statuses else ""
    wrapped = client.result(handle)
    result = wrapped.result
    assert result.success and result.policy_faults == 0, result.message
    states, actions = rollout_from_msg(result.rollout)
    assert states.shape == (T + 1, arm.layout.dim) and actions.shape == (T, 7)
    np.testing.assert_allclose(states[0, arm.layout.joint_positions],
                               arm.conditions[1].joint_positions, atol=1e-9)
    np.testing.assert_allclose(actions, reference.mean_actions(states[:T]), rtol=1e-5, atol=1e-5)
    assert np.abs(actions).max() > 0.5, "a trivial policy proves little"
    assert np.ptp(actions, axis=0).max() > 0.05, "the actions do not follow the state"
    assert spin_until(ros_node, lambda: len(client.rollouts) >= 1, 10), "rollout not published"
    sent = np.array([c for _, c in client.commands[-T:]])
    np.testing.assert_array_equal(sent, actions)

    # With the trainer's noise, on a held-out condition given by its q0 and target.
    noise = np.random.default_rng(4).standard_normal((T, 7))
    q0 = arm.conditions[0].joint_positions + 0.05
    target = arm.conditions[1].target_position + np.array([0.02, -0.03, 0.01])
    handle = client.send(policy_goal(path, 7, T, noise, joint_positions=q0.tolist(),
                                     target_position=target.tolist()))
    assert handle.accepted
    result = client.result(handle).result
    assert result.success, result.message
    states, actions = rollout_from_msg(result.rollout)
    np.testing.assert_allclose(states[0, arm.layout.joint_positions], q0, atol=1e-9)
    expected_x0 = arm.builder.state(q0, np.zeros(7), arm.task.target_points(
        type(arm.conditions[0])(q0, target)))
    np.testing.assert_allclose(states[0], expected_x0, atol=1e-9)
    np.testing.assert_allclose(actions, reference.mean_actions(states[:T])
                               + np.sqrt(reference.variance) * noise, rtol=1e-5, atol=1e-5)
    assert lockstep_graph.alive()


def test_policy_goals_that_do_not_fit_are_rejected_with_the_reason(ros_node, arm,
                                                                  lockstep_graph, tmp_path):
    import torch

    client = Client(ros_node)
    good = save_test_policy(arm, tmp_path / "good.pt")
    other_robot = save_test_policy(arm, tmp_path / "robot.pt",
                                   joints=[f"other{i}" for i in range(7)])
    other_layout = save_test_policy(arm, tmp_path / "layout.pt",
                                    layout=StateLayout(7, arm.layout.n_points + 1))
    nan = save_test_policy(arm, tmp_path / "nan.pt")
    payload = torch.load(nan, weights_only=True)
    payload["state_dict"]["body.2.bias"][3] = float("inf")
    torch.save(payload, nan)
    expected = {
        "was trained for joints": policy_goal(other_robot, 0, 5),
        "observes state entries": policy_goal(other_layout, 0, 5),
        "non-finite values in ['body.2.bias']": policy_goal(nan, 0, 5),
        "not found": policy_goal(tmp_path / "missing.pt", 0, 5),
        "policy_noise: expected 35 finite values": policy_goal(good, 0, 5, np.zeros(30)),
        "horizon: a policy goal needs": policy_goal(good, 0, 0),
        "unknown condition 9": policy_goal(good, 9, 5),
    }
    assert_refused(ros_node, client, expected, timeout=180)
    assert lockstep_graph.alive(), "the executor died on a bad policy goal"
    handle = client.send(policy_goal(good, 0, 5))
    assert handle.accepted
    assert client.result(handle).result.success
