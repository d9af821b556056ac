"""A visuomotor policy file run by the controller executor over real DDS (sim bridge, state
estimator and executor as processes, lockstep), against the direct loop as the independent
reference: ``gps_loop.policy_rollout`` on the same backend, camera and condition renders the same
frames and must give the same actions step by step. Then the goals it must refuse (image size,
field of view, no camera, real time) with the executor alive, and a trial whose frames stop
coming (the bridge renders every other step) aborted with the reason instead of run on an older
frame."""

from __future__ import annotations

import time

import numpy as np
import pytest
from mbpl_interfaces.action import RunTrial
from mbpl_interfaces.msg import ExecutorStatus
from rclpy.action import ActionClient
from ros_helpers import node_process, spin_until, unmatched_after
from test_executor import DT, EXECUTOR, QOS, Arm, Client, Graph, assert_refused

from mbpl_ros.conversions import rollout_from_msg

pytestmark = pytest.mark.ros
torch = pytest.importorskip("torch")

from mbpl_ros.camera import decode_rgb  # noqa: E402
from mbpl_ros.gps.networks import VisuomotorNet, VisuomotorSpec  # noqa: E402
from mbpl_ros.gps.policy import (  # noqa: E402
    Normalizer,
    ObservationSpec,
    load_policy,
    make_policy,
    save_policy,
    to_image_tensor,
)
from mbpl_ros.training.gps_loop import policy_rollout  # noqa: E402
from mbpl_sim import make_sim  # noqa: E402

ARM = {"task": "reach", "conditions": 2, "seed": 3}
SIZE = (24, 24)
FOVY, SUPERSAMPLE = 35.0, 2
CAMERA = {"camera_rate_hz": 1.0 / DT, "image_height": SIZE[0], "image_width": SIZE[1],
          "camera_fovy_deg": FOVY, "camera_supersample": SUPERSAMPLE}
T = 15


def make_sim_like_training():
    return make_sim("mujoco", task=ARM["task"], camera_fovy_deg=FOVY,
                    camera_supersample=SUPERSAMPLE)


def save_visuomotor_policy(arm: Arm, path, size=SIZE, seed: int = 0, **camera):
    """A tiny visuomotor network whose actions depend on the image: feature points standardised
    on frames of the arm's scene and a fresh pose layer (random initial vision layers alone
    barely react to a scene). Torques of N m on the heavy joints, little on the wrist."""
    sim = make_sim_like_training()
    rng = np.random.default_rng(seed)
    frames = []
    try:
        for c in arm.conditions:
            sim.reset(c)
            for _ in range(6):
                q = c.joint_positions + rng.uniform(-0.3, 0.3, 7)
                sim.set_state(np.clip(q, arm.description.lower, arm.description.upper),
                              np.zeros(7))
                frames.append(sim.render(size[1], size[0]))
    finally:
        sim.close()
    spec = ObservationSpec.visuomotor(arm.layout, arm.description.joint_names, size)
    policy = make_policy(spec, 7, hidden=(16, 16), channels=4, seed=seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = VisuomotorNet(VisuomotorSpec(spec.dim, 7, size, 4, (16, 16), pose_dim=6,
                                           head_points=False))
        net.vision.standardize_points(to_image_tensor(np.stack(frames)))
        torch.nn.init.normal_(net.vision.pose_layer.weight, std=1.0)
    policy.network = net
    scale = np.array([10.0, 10.0, 10.0, 10.0, 0.05, 0.05, 0.05])
    policy.action_norm = Normalizer(np.zeros(7), scale)
    policy.variance = (0.3 * scale) ** 2
    return save_policy(policy, path, dt=DT, **camera)


def policy_goal(path, condition: int, horizon: int = T, record_images: bool = False):
    goal = RunTrial.Goal()
    goal.condition = condition
    goal.horizon = horizon
    goal.policy_path = str(path)
    goal.reset_first = True
    goal.record_images = record_images
    return goal


class NamespacedClient(Client):
    """Goals and statuses of an executor in ``namespace`` (no command or joint-state logs)."""

    def __init__(self, node, namespace: str) -> None:
        self.node, self.statuses = node, []
        self.action = ActionClient(node, RunTrial, f"{namespace}/controller_executor/run_trial")
        sub = node.create_subscription(ExecutorStatus, f"{namespace}/controller_executor/status",
                                       self.statuses.append, QOS)
        assert self.action.wait_for_server(timeout_sec=60), f"no executor in {namespace}"
        assert not unmatched_after(node, [sub], 30)


def camera_graph_processes() -> Graph:
    """Bridge (camera on, one frame per policy step), estimator and executor, lockstep."""
    return Graph("lockstep", {"lockstep_timeout_s": 2.0, "frame_timeout_s": 0.5},
                 bridge_params=CAMERA, arm=ARM)


@pytest.fixture(scope="module")
def arm() -> Arm:
    return Arm()


@pytest.fixture(scope="module")
def camera_graph():
    with camera_graph_processes() as graph:
        yield graph
    timings = [line for line in graph.log.splitlines() if "visuomotor trial:" in line]
    print("\n".join(timings))


def test_executor_runs_the_visuomotor_policy_as_the_direct_loop_does(ros_node, arm, camera_graph,
                                                                     tmp_path):
    path = save_visuomotor_policy(arm, tmp_path / "vm.pt", camera_fovy_deg=FOVY,
                                  camera_supersample=SUPERSAMPLE)
    policy = load_policy(path)
    condition = 1
    sim = make_sim_like_training()
    try:
        reference = policy_rollout(sim, arm.builder, arm.conditions[condition], policy, T, DT)
    finally:
        sim.close()
    assert reference.faults == 0
    assert np.abs(reference.U).max() > 0.5, "a trivial policy proves little"

    client = Client(ros_node, joint_states=False)
    started = time.monotonic()
    handle = client.send(policy_goal(path, condition, record_images=True), timeout=180)
    assert handle.accepted, client.statuses[-1].reason if client.statuses else ""
    result = client.result(handle, timeout=120).result
    wall = time.monotonic() - started
    assert result.success and result.policy_faults == 0, result.message
    states, actions = rollout_from_msg(result.rollout)
    assert states.shape == (T + 1, arm.layout.dim) and actions.shape == (T, 7)

    # The frames the policy saw are the ones the direct loop rendered for the same states ...
    frames = np.stack([decode_rgb(i.height, i.width, i.encoding, i.step, i.data)
                       for i in result.rollout.images])
    assert frames.shape == (T, *SIZE, 3)
    # ... and the executed actions are the policy's on (state, frame of that step) ...
    # (the executor's head runs in float64, the torch network in float32: 1e-4 N m of ~1-10)
    np.testing.assert_allclose(actions, policy.mean_actions(states[:T, :14], frames),
                               rtol=1e-4, atol=1e-4)
    # ... which, step by step, are the direct loop's: same states, same images, same actions.
    print(f"visuomotor trial of {T} steps in {wall:.1f} s (goal to result); max |action - "
          f"direct loop| {np.abs(actions - reference.U).max():.2e} N m, max |x - direct loop| "
          f"{np.abs(states[:T] - reference.X).max():.2e}, frames differing from the direct "
          f"loop's: {int(np.sum(np.any(frames != reference.images, axis=(1, 2, 3))))}")
    np.testing.assert_allclose(states[:T], reference.X, atol=1e-5)
    np.testing.assert_array_equal(frames, reference.images)
    np.testing.assert_allclose(actions, reference.U, rtol=1e-4, atol=1e-4)
    # Another condition's image really changes the action (the policy looks at the image).
    swapped = policy.mean_actions(states[:T, :14], frames[::-1])
    assert np.abs(swapped - actions).max() > 0.05
    assert camera_graph.alive()


def test_visuomotor_goals_the_camera_cannot_feed_are_refused(ros_node, arm, camera_graph,
                                                             tmp_path):
    client = Client(ros_node, joint_states=False)
    small = save_visuomotor_policy(arm, tmp_path / "small.pt", size=(16, 16))
    wide = save_visuomotor_policy(arm, tmp_path / "wide.pt", camera_fovy_deg=55.0,
                                  camera_supersample=1)
    expected = {
        "for 16x16 px (HxW) images; the camera on /camera/image_raw gives 24x24":
            policy_goal(small, 0),
        "the field of view and supersample differ": policy_goal(wide, 0),
    }
    assert_refused(ros_node, client, expected, timeout=180)
    assert camera_graph.alive(), "the executor died on a refused visuomotor goal"

    # Executors without a camera, and in real time, refuse them too (one process each, in a
    # namespace of their own so they drive nothing here).
    good = save_visuomotor_policy(arm, tmp_path / "good.pt", camera_fovy_deg=FOVY,
                                  camera_supersample=SUPERSAMPLE)
    for namespace, mode, reason in (
            ("/nocam", "lockstep", "nothing publishes /nocam/camera/image_raw"),
            ("/rt", "realtime", "runs those in lockstep mode only")):
        # (no SCHED_FIFO: this machine's other work must not feel a test's real-time loop)
        params = {**ARM, "mode": mode, "realtime_priority": 0, "ros_thread_priority": 0}
        with node_process(EXECUTOR, params, namespace=namespace) as proc:
            other = NamespacedClient(ros_node, namespace)
            assert_refused(ros_node, other, {reason: policy_goal(good, 0)}, timeout=180)
            assert proc.poll() is None, "the executor died on a refused visuomotor goal"
    # The graph's executor still runs it.
    handle = client.send(policy_goal(good, 0, horizon=3), timeout=60)
    assert handle.accepted
    assert client.result(handle).result.success


def test_a_step_whose_frame_never_comes_aborts_the_trial_with_the_reason(ros_node, arm,
                                                                         camera_graph, tmp_path):
    path = save_visuomotor_policy(arm, tmp_path / "vm.pt", camera_fovy_deg=FOVY,
                                  camera_supersample=SUPERSAMPLE)
    # A bridge whose camera renders every other policy step: x_1 has no frame of its own.
    camera_graph.stop_bridge()
    camera_graph.start_bridge(camera_rate_hz=0.5 / DT)
    try:
        client = Client(ros_node, joint_states=False)
        assert spin_until(ros_node, lambda: ros_node.count_publishers("/camera/image_raw") > 0,
                          60), "the new bridge's camera did not come up"
        handle = client.send(policy_goal(path, 0), timeout=180)
        assert handle.accepted, client.statuses[-1].reason if client.statuses else ""
        result = client.result(handle).result
        assert not result.success and result.rollout.aborted
        reason = result.rollout.abort_reason
        assert "visuomotor policy: no camera frame on /camera/image_raw stamped like the state " \
               "at 0.050000 s" in reason, reason
        states, actions = rollout_from_msg(result.rollout)
        assert len(actions) == 1, "the policy ran on a state without its frame"
        assert client.wait_mode("hold")
        assert camera_graph.alive()
    finally:
        camera_graph.stop_bridge()
        camera_graph.start_bridge()
