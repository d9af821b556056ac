"""dynamics_fitter and gps_trainer as real processes over DDS, with controller executors stood in
for by RunTrial action servers in this process (an in-process MuJoCo arm), so that aborted trials
and a trainer killed mid-iteration can be staged exactly. The whole graph with the real
bridge/estimator/executor is in test_training_graph.py."""

from __future__ import annotations

import json
import signal
import threading
import time
from contextlib import contextmanager

import numpy as np
import pytest
import rclpy
from mbpl_interfaces.action import RunTrial
from mbpl_interfaces.srv import FitIteration
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.executors import MultiThreadedExecutor
from ros_helpers import call_service, node_process
from test_recording import read_with_rosbags

from mbpl_ros.conversions import controller_from_msg, dynamics_from_msg, rollout_to_msg
from mbpl_ros.core.lqr_flm import LQRFLMConfig
from mbpl_ros.nodes import gps_trainer
from mbpl_ros.nodes.dynamics_fitter import DynamicsFitterState, batches_from_rollouts
from mbpl_ros.nodes.gps_trainer import ROLLOUT_TOPIC, Slot, TrialWorker
from mbpl_ros.recording import read_messages
from mbpl_ros.training.config import TrainConfig
from mbpl_ros.training.direct import make_problem
from mbpl_ros.training.ros_graph import Graph
from mbpl_sim import make_sim

pytestmark = pytest.mark.ros


# ------------------------------------------------------------------------------ fitter alone

def synthetic_rollouts(iteration: int, M: int = 2, N: int = 4, T: int = 10, dX: int = 4,
                       dU: int = 2):
    rng = np.random.default_rng(iteration)
    A = np.eye(dX) + 0.05 * rng.standard_normal((dX, dX))
    B = rng.standard_normal((dX, dU))
    msgs = []
    for m in range(M):
        for s in range(N):
            X, U = np.zeros((T + 1, dX)), rng.standard_normal((T, dU))
            X[0] = rng.standard_normal(dX)
            for t in range(T):
                X[t + 1] = A @ X[t] + B @ U[t] + 0.01 * rng.standard_normal(dX)
            msgs.append(rollout_to_msg(X, U, m, 0.05, [f"x{j}" for j in range(dX)],
                                       trial_id=f"i{iteration}-c{m}-s{s}-a0"))
    return msgs


def fit_request(iteration, rollouts, reset=False, fit=True, M=2):
    return FitIteration.Request(iteration=iteration, conditions=M, rollouts=rollouts,
                                reset=reset, fit=fit)


def test_fitter_matches_in_process_fit_and_demands_replay(ros_node):
    FIT = "/dynamics_fitter/fit_iteration"
    reference = DynamicsFitterState(LQRFLMConfig())
    with node_process("mbpl_ros.nodes.dynamics_fitter"):
        for i in range(2):
            rollouts = synthetic_rollouts(i)
            response = call_service(ros_node, FitIteration, FIT, fit_request(i, rollouts),
                                    timeout=30)
            assert response.success, response.message
            assert response.iterations_held == i + 1 and len(response.dynamics) == 2
            expected = reference.add_iteration(batches_from_rollouts(rollouts, 2)).dynamics
            for msg, dyn in zip(response.dynamics, expected, strict=True):
                np.testing.assert_allclose(dynamics_from_msg(msg).Fm, dyn.Fm, atol=1e-9)
        # The same request again (a retried call) does not add its rollouts twice.
        again = call_service(ros_node, FitIteration, FIT, fit_request(1, rollouts))
        assert again.success and again.iterations_held == 2
        # A gap (as after a fitter restart) is refused until the trainer replays.
        gap = call_service(ros_node, FitIteration, FIT, fit_request(5, synthetic_rollouts(5)))
        assert not gap.success and gap.needs_replay and gap.iterations_held == 2
        replay = call_service(ros_node, FitIteration, FIT,
                              fit_request(0, synthetic_rollouts(0), reset=True, fit=False))
        assert replay.success and replay.iterations_held == 1 and not replay.dynamics
        # Aborted rollouts never enter a fit.
        bad = synthetic_rollouts(1)
        bad[0].aborted, bad[0].abort_reason = True, "stale state"
        refused = call_service(ros_node, FitIteration, FIT, fit_request(1, bad))
        assert not refused.success and "aborted" in refused.message


# ------------------------------------------------------------------------------ fake executors

class FakeExecutors:
    """RunTrial servers at /armN/controller_executor/run_trial running each goal on an
    in-process MuJoCo arm (reset to the goal's condition, the controller noiseless, x_T kept).

    ``abort``: goal numbers (1-based, over all servers) answered as aborted after half the
    trial; ``hold``: a goal number that blocks until :meth:`release`.
    """

    def __init__(self, config: TrainConfig, abort=(), hold: int | None = None) -> None:
        self.config = config
        self.sim = make_sim("mujoco", task=config.task)
        self.problem = make_problem(config, np.random.default_rng(config.seed), self.sim)
        self.names = self.problem.layout.names()
        self.abort, self.hold = set(abort), hold
        self.goals: list[tuple[str, int]] = []
        self.held = threading.Event()
        self._release = threading.Event()
        self._lock = threading.Lock()
        self.context = rclpy.context.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("fake_executors", context=self.context)
        group = ReentrantCallbackGroup()
        self.servers = [
            ActionServer(self.node, RunTrial, f"/arm{w}/controller_executor/run_trial",
                         lambda handle, w=w: self._execute(handle, f"/arm{w}"),
                         callback_group=group)
            for w in range(config.workers)]
        self.executor = MultiThreadedExecutor(num_threads=4, context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def release(self) -> None:
        self._release.set()

    def close(self) -> None:
        self._release.set()
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)
        self.thread.join(timeout=5)
        self.sim.close()

    def _execute(self, handle, worker: str):
        goal = handle.request
        with self._lock:
            self.goals.append((worker, goal.condition))
            number = len(self.goals)
        if number == self.hold:
            self.held.set()
            self._release.wait(60)
        controller = controller_from_msg(goal.controller, self.names)
        condition = self.problem.conditions[goal.condition]
        T = goal.horizon
        with self._lock:
            X, U = self._trial(condition, controller, T)
        result = RunTrial.Result()
        if number in self.abort:
            half = T // 2
            result.rollout = rollout_to_msg(X[:half], U[:half - 1] if half > 1 else U[:0],
                                            goal.condition, self.config.dt, self.names,
                                            aborted=True, abort_reason="injected: e-stop")
            result.success, result.message = False, "aborted"
            handle.abort()
            return result
        result.rollout = rollout_to_msg(X, U, goal.condition, self.config.dt, self.names)
        result.success = True
        handle.succeed()
        return result

    def _trial(self, condition, controller, T):
        sim, builder = self.sim, self.problem.builder
        sim.reset(condition)
        targets = sim.task.target_points(condition)
        steps = round(self.config.dt / sim.timestep)
        X, U = np.empty((T + 1, builder.layout.dim)), np.empty((T, builder.layout.action_dim))
        for t in range(T):
            X[t] = builder.state(sim.joint_positions(), sim.joint_velocities(), targets)
            U[t] = sim.step(controller.act(t, X[t]), steps)
        X[T] = builder.state(sim.joint_positions(), sim.joint_velocities(), targets)
        return X, U


def session_config(tmp_path, **overrides) -> TrainConfig:
    settings = dict(task="reach", graph="ros", conditions=2, samples=3, iterations=2,
                    horizon=20, seed=2, out=tmp_path / "run", progress=False)
    settings.update(overrides)
    return TrainConfig(**settings)


def wait_for(predicate, what: str, timeout: float = 120.0, procs=()) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        for p in procs:
            if p.process.poll() is not None:
                raise AssertionError(f"{p.label} exited ({p.process.returncode}) while waiting "
                                     f"for {what}:\n{p.log_tail()}")
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def summary_of(config) -> dict:
    return json.loads((config.out / "summary.json").read_text())


def recorded_training_rollouts(config) -> list:
    return [m for _, m, _ in read_messages(config.out / "rollouts", [ROLLOUT_TOPIC])]


def test_aborted_trials_are_kept_out_flagged_and_retried_over_two_workers(tmp_path):
    config = session_config(tmp_path, workers=2)
    fakes = FakeExecutors(config, abort={2})
    try:
        with Graph(config) as graph:
            graph.start_fitter()
            trainer = graph.start_trainer()
            wait_for(lambda: trainer.process.poll() is not None, "the trainer", 180)
            assert trainer.process.returncode == 0, trainer.log_tail()
    finally:
        fakes.close()
    summary = summary_of(config)
    its = summary["iterations"]
    assert summary["graph"] == "ros" and summary["workers"] == ["/arm0", "/arm1"]
    assert [r["trials"] for r in its] == [6, 12]
    assert [r["env_steps"] for r in its] == [120, 240]
    assert its[-1]["aborted_trials"] == 1
    (flagged,) = its[0]["aborted"]
    assert "injected" in flagged["reason"] and flagged["trial_id"].endswith("-a0")
    # Both arms ran trials (6 + 2 eval per iteration, plus the retry).
    assert {w for w, _ in fakes.goals} == {"/arm0", "/arm1"} and len(fakes.goals) == 17
    rollouts = recorded_training_rollouts(config)
    aborted = [r for r in rollouts if r.aborted]
    assert [r.trial_id for r in aborted] == [flagged["trial_id"]]
    retry = flagged["trial_id"][:-1] + "1"
    assert any(r.trial_id == retry and not r.aborted for r in rollouts)
    assert len([r for r in rollouts if not r.aborted]) == 12


def test_killed_trainer_resumes_without_losing_or_repeating_a_trial(tmp_path):
    config = session_config(tmp_path, iterations=3)
    M, N = config.conditions, config.samples
    per_iteration = M * N + M  # training trials + evaluations
    hold = per_iteration + 3  # the 3rd training trial of iteration 1
    fakes = FakeExecutors(config, hold=hold)
    try:
        with Graph(config) as graph:
            fitter = graph.start_fitter()
            trainer = graph.start_trainer()
            wait_for(fakes.held.is_set, "iteration 1's third trial", 120, [trainer, fitter])
            trainer.process.send_signal(signal.SIGKILL)  # mid-iteration, 2 trials recorded
            trainer.process.wait()
            # The dead trainer's bag opens as is with a third-party reader.
            # Completed trials only: a trial aborted on a loaded machine is retried as "-a1".
            ids = [m.trial_id for t, m in read_with_rosbags(config.out / "rollouts")
                   if t in ("/rollouts", "/evaluation_rollouts") and not m.aborted]
            assert sorted(i for i in ids if i.startswith("i1-")) == ["i1-c0-s0-a0", "i1-c0-s1-a0"]
            assert len(ids) == per_iteration + 2
            graph.stop_process(fitter)  # the fitter's state goes too: the replay rebuilds it
            assert len(summary_of(config)["iterations"]) == 1
            fakes.release()
            graph.start_fitter()
            resumed = graph.start_trainer(resume=True)
            wait_for(lambda: resumed.process.poll() is not None, "the resumed trainer", 180)
            assert resumed.process.returncode == 0, resumed.log_tail()
            assert "fitter rebuilt from 6 recorded rollouts" in resumed.log_path.read_text()
    finally:
        fakes.close()
    summary = summary_of(config)
    assert [r["iteration"] for r in summary["iterations"]] == [0, 1, 2]
    assert [r["trials"] for r in summary["iterations"]] == [6, 12, 18]
    assert summary["resumed_at"] == [1]
    good = [r for r in recorded_training_rollouts(config) if not r.aborted]
    slots = [Slot.parse(r.trial_id)[0] for r in good]
    assert len(slots) == len(set(slots)) == 3 * M * N  # every trial once, none lost
    # The two trials recorded before the kill were reused, not run again: all goals the arms
    # saw are the 3 iterations' trials plus the one in flight when the trainer died, plus one
    # retry per trial that a loaded machine made fail (each recorded as aborted).
    retried = [m for t, m in read_with_rosbags(config.out / "rollouts")
               if t in ("/rollouts", "/evaluation_rollouts") and m.aborted]
    assert len(fakes.goals) == 3 * per_iteration + 1 + len(retried)


@contextmanager
def spinning_nodes(*names: str):
    """Nodes in rclpy contexts of their own, each spun by a MultiThreadedExecutor thread (a
    stand-in server and the trainer's side of it)."""
    started = []
    try:
        for name in names:
            context = rclpy.context.Context()
            rclpy.init(context=context)
            node = rclpy.create_node(name, context=context)
            executor = MultiThreadedExecutor(num_threads=4, context=context)
            executor.add_node(node)
            thread = threading.Thread(target=executor.spin, daemon=True)
            thread.start()
            started.append((node, executor, thread))
        yield [node for node, _, _ in started]
    finally:
        for node, executor, thread in started:
            context = node.context
            executor.shutdown()
            node.destroy_node()
            rclpy.shutdown(context=context)
            thread.join(timeout=5)


# ------------------------------------------------------------------ a goal's answer lost

def test_a_goal_left_unanswered_is_sent_again_and_the_late_copy_is_cancelled(monkeypatch):
    """The DDS discovery race of TrialWorker._send, staged: the server holds its answer to the
    first goal past the resend interval, so the client sends again; the second copy runs the
    trial, and the first, accepted late, is cancelled by the client."""
    # With the defaults a lost answer is sent again twice before the trainer gives up.
    assert 2 * gps_trainer.GOAL_RESEND_S < gps_trainer.PARAMETERS["server_timeout_s"][0]
    monkeypatch.setattr(gps_trainer, "GOAL_RESEND_S", 0.5)
    action = "/arm0/controller_executor/run_trial"
    answers, cancelled, late_done = [], threading.Event(), threading.Event()
    release = threading.Event()

    def on_goal(goal):
        answers.append(goal.condition)
        if len(answers) == 1:
            release.wait(10)
        return GoalResponse.ACCEPT

    def on_cancel(_handle):
        cancelled.set()
        return CancelResponse.ACCEPT

    def execute(handle):
        result = RunTrial.Result()
        if not release.is_set():  # the second copy: the trial that counts
            result.rollout = rollout_to_msg(np.zeros((3, 2)), np.ones((2, 1)), 0, 0.05,
                                            ["a", "b"], trial_id="ran")
            result.success = True
            handle.succeed()
            return result
        end = time.monotonic() + 10
        while not handle.is_cancel_requested and time.monotonic() < end:
            time.sleep(0.01)
        if handle.is_cancel_requested:
            handle.canceled()
        else:
            handle.abort()
        late_done.set()
        return result

    with spinning_nodes("stand_in_executor", "trainer_side") as (server, client):
        ActionServer(server, RunTrial, action, execute, goal_callback=on_goal,
                     cancel_callback=on_cancel, callback_group=ReentrantCallbackGroup())
        try:
            worker = TrialWorker(client, "/arm0", "controller_executor/run_trial",
                                 ReentrantCallbackGroup())
            goal = RunTrial.Goal(condition=4, horizon=2)
            rollout, reason, faults = worker.run(goal, timeout=20.0, server_timeout=10.0)
            release.set()  # the first copy's answer now goes out, late
            assert reason == "" and faults == 0
            assert rollout.trial_id == "ran"
            assert answers == [4, 4], "the unanswered goal was not sent again"
            assert cancelled.wait(10), "the first copy, accepted late, was not cancelled"
            late_done.wait(10)
            time.sleep(0.2)  # its result goes out before the nodes are destroyed
        finally:
            release.set()


def test_a_fit_request_left_unanswered_is_sent_again_and_the_first_answer_counts():
    requests, release, hold_every = [], threading.Event(), threading.Event()

    def fit(request, response):
        requests.append(request.iteration)
        if len(requests) == 1 or hold_every.is_set():
            release.wait(10)  # this answer comes after the client has its response
        response.success, response.message = True, f"answer to request {len(requests)}"
        return response

    with spinning_nodes("stand_in_fitter", "trainer_side") as (server, client):
        server.create_service(FitIteration, "/stand_in/fit_iteration", fit,
                              callback_group=ReentrantCallbackGroup())
        fitter = client.create_client(FitIteration, "/stand_in/fit_iteration")
        try:
            assert fitter.wait_for_service(timeout_sec=30)
            response = gps_trainer.call_with_resend(
                fitter, fit_request(3, []), timeout=20.0, resend_s=0.5, context=client.context,
                logger=client.get_logger())
            # (A loaded machine may have sent it a third time meanwhile.)
            assert response is not None and response.message != "answer to request 1"
            assert len(requests) >= 2 and set(requests) == {3}
            # No answer at all: None once the timeout has passed, after a send per interval.
            release.clear()
            hold_every.set()
            requests.clear()
            start = time.monotonic()
            assert gps_trainer.call_with_resend(
                fitter, fit_request(4, []), timeout=1.2, resend_s=0.5, context=client.context,
                logger=client.get_logger()) is None
            assert time.monotonic() - start >= 1.2
            end = time.monotonic() + 2
            while len(requests) < 3 and time.monotonic() < end:
                time.sleep(0.01)
            # Sends at 0, 0.5 and 1.0 s (the last one late on a loaded machine, or not sent).
            assert requests in ([4, 4], [4, 4, 4]), "not one send per interval"
        finally:
            release.set()
            time.sleep(0.2)
