"""The whole training graph as processes over real DDS: sim bridge (lockstep), state estimator,
controller executor (lockstep), dynamics fitter and trainer, started by `mbpl train --graph ros`
(or by the same Graph class, to stage faults)."""

from __future__ import annotations

import json
import os
import signal
import time

import numpy as np
import pytest
from rclpy.qos import QoSProfile, ReliabilityPolicy
from ros_helpers import destroy_client_node, make_client_node, unmatched_after
from rosbags.highlevel import AnyReader
from sensor_msgs.msg import JointState
from test_recording import typestore

from mbpl_ros.cli import main
from mbpl_ros.core.lqr_flm import LQRFLM
from mbpl_ros.training.config import TrainConfig
from mbpl_ros.training.direct import make_problem
from mbpl_ros.training.ros_graph import ROOT, Graph

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def read_bag(path):
    with AnyReader([path], default_typestore=typestore()) as reader:
        return [(c.topic, reader.deserialize(raw, c.msgtype)) for c, _, raw in reader.messages()]


def test_graph_trains_a_reach_session_and_cost_goes_down(tmp_path):
    out = tmp_path / "run"
    start = time.perf_counter()
    assert main(["train", "--graph", "ros", "--task", "reach", "--conditions", "2",
                 "--samples", "4", "--iterations", "3", "--horizon", "30", "--seed", "1",
                 "--out", str(out), "--quiet"]) == 0
    wall = time.perf_counter() - start
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["graph"], summary["task"], summary["algorithm"]) == ("ros", "reach", "lqr-flm")
    its = summary["iterations"]
    assert [r["iteration"] for r in its] == [0, 1, 2]
    assert [r["trials"] for r in its] == [8, 16, 24]
    assert [r["env_steps"] for r in its] == [240, 480, 720]
    for record in its:
        assert [c["condition"] for c in record["conditions"]] == [0, 1]
        assert record["aborted"] == [] and record["test_success_rate"] is None
    assert its[-1]["eval_cost"] < its[0]["mean_cost"]
    assert its[-1]["mean_cost"] < its[0]["mean_cost"]
    assert (out / "training.png").stat().st_size > 1000
    assert LQRFLM.load(out / "controllers.npz").iterations_done == 3
    # Every trial is in the bag, read by a library other than the writer's.
    messages = read_bag(out / "rollouts")
    rollouts = [m for t, m in messages if t == "/rollouts"]
    assert len(rollouts) == 24 and not any(r.aborted for r in rollouts)
    assert len([m for t, m in messages if t == "/evaluation_rollouts"]) == 6
    assert [m.phase for t, m in messages if t == "/training_status"].count("done") == 3
    for name in ("sim_bridge", "state_estimator", "controller_executor"):
        assert (out / "logs" / f"arm0_{name}.log").exists()
    print(f"graph session: {wall:.1f} s wall")


def test_graph_trains_a_reach_for_an_arm_given_by_its_urdf_on_the_direct_loops_conditions(
        tmp_path):
    out, urdf = tmp_path / "run", ROOT / "tests" / "sim" / "data" / "arm3.urdf"
    start = time.perf_counter()
    assert main(["train", "--graph", "ros", "--task", "reach", "--urdf", str(urdf),
                 "--ee-link", "hand", "--conditions", "2", "--samples", "4", "--iterations", "3",
                 "--horizon", "30", "--seed", "1", "--out", str(out), "--quiet"]) == 0
    wall = time.perf_counter() - start
    summary = json.loads((out / "summary.json").read_text())
    assert summary["robot"]["joints"] == ["yaw", "shoulder", "elbow"]
    its = summary["iterations"]
    assert [r["trials"] for r in its] == [8, 16, 24]
    assert all(r["aborted"] == [] for r in its)
    assert its[-1]["mean_cost"] < its[0]["mean_cost"]
    assert its[-1]["eval_cost"] < its[0]["mean_cost"]
    # Every trial started where the direct loop's table puts that condition (goals from the arm's
    # own forward kinematics), as measured by the real estimator: q0 and the first ee point's
    # offset from its goal, then every ee point's.
    config = TrainConfig(task="reach", urdf=urdf, ee_link="hand", conditions=2, horizon=30,
                         seed=1, out=out)
    problem = make_problem(config, np.random.default_rng(1))
    layout = problem.layout
    rollouts = [m for t, m in read_bag(out / "rollouts") if t == "/rollouts"]
    assert len(rollouts) == 24
    for rollout in rollouts:
        condition = problem.conditions[rollout.condition]
        x0 = np.asarray(rollout.states[:layout.dim])
        q0 = condition.joint_positions
        expected = problem.builder.state(q0, np.zeros_like(q0),
                                         problem.setup.task.target_points(condition))
        np.testing.assert_allclose(x0[layout.joint_positions], q0, atol=1e-9)
        np.testing.assert_allclose(x0, expected, atol=1e-6)
    print(f"arm3 graph session: {wall:.1f} s wall")


def test_bridge_killed_mid_trial_aborts_it_out_of_the_fit_and_the_session_recovers(tmp_path):
    config = TrainConfig(task="reach", graph="ros", conditions=1, samples=3, iterations=1,
                         horizon=30, seed=3, out=tmp_path / "run", progress=False,
                         trial_retries=5)
    node = make_client_node()
    executor = node.executor_for_test
    # In lockstep the bridge publishes a joint state per reset and per command: a handful of
    # them means the first trial is under way (30 steps).
    states: list[JointState] = []
    subscription = node.create_subscription(
        JointState, "/arm0/joint_states", states.append,
        QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
    try:
        with Graph(config) as graph:
            workers = graph.start_workers()
            bridge = workers[0]
            graph.start_fitter()
            # The whole session takes a few seconds: this node must hear the bridge before it
            # starts (discovery took longer than that on a loaded CI machine).
            unmatched = unmatched_after(node, [subscription])
            graph.check_alive()
            assert not unmatched, "the bridge's joint_states never matched"
            trainer = graph.start_trainer()
            end = time.monotonic() + 120
            while len(states) < 5:
                executor.spin_once(timeout_sec=0.01)
                assert time.monotonic() < end and trainer.process.poll() is None, \
                    trainer.log_tail()
            os.killpg(bridge.process.pid, signal.SIGKILL)
            bridge.process.wait()
            time.sleep(1.0)
            graph.start("sim_bridge", "/arm0", log_name="arm0_sim_bridge_restarted")
            while trainer.process.poll() is None:
                executor.spin_once(timeout_sec=0.1)
            assert trainer.process.returncode == 0, trainer.log_tail()
    finally:
        destroy_client_node(node)
    summary = json.loads((config.out / "summary.json").read_text())
    (record,) = summary["iterations"]
    assert record["aborted"], "the trial cut by the bridge's death was not flagged"
    assert record["trials"] == 3 and record["aborted_trials"] == len(record["aborted"])
    rollouts = [m for t, m in read_bag(config.out / "rollouts") if t == "/rollouts"]
    assert len([r for r in rollouts if not r.aborted]) == 3
    assert {r.trial_id for r in rollouts if r.aborted} == {a["trial_id"]
                                                           for a in record["aborted"]}
    assert np.isfinite(record["mean_cost"])
