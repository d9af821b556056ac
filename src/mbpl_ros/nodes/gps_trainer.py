"""gps_trainer: LQR-FLM or guided policy search (MDGPS, BADMM) iterations run through the ROS
graph, one training session per process.

Every iteration, in order:
  1. sampling    N noisy trials per condition through the controller executors' ``RunTrial``
                 action (``<namespace>/controller_executor/run_trial``; several namespaces run
                 trials in parallel). The exploration noise is drawn here from a generator
                 seeded by (seed, iteration, condition, sample) and folded into k, so the
                 executor runs a deterministic controller and the rollout is exactly what it
                 applied. Each rollout is recorded to the session's MCAP bag (``<out>/rollouts``)
                 before it is used. An aborted trial (executor abort, timeout, executor
                 unavailable, malformed result) is recorded with its reason, kept out of the fit,
                 listed in the summary and retried up to ``trial_retries`` times. Every goal
                 carries its condition's q0, target and ee point goals from the trainer's table
                 (:func:`~mbpl_ros.training.direct.task_conditions`, that of the direct loop), and
                 with ``record_images`` asks for the camera frame of every step (in the rollout).
  2. fitting     the iteration's rollouts go to the dynamics_fitter (``FitIteration``), which keeps
                 the buffers and the GMM prior across iterations and returns one fitted dynamics per
                 condition.
  3. optimising  ``LQRFLM.iteration(batches, cost, dynamics=fitted)``.
  4. evaluating  one noiseless trial per condition with the new controllers.
  5. done        checkpoint: summary.json, controllers.npz (``LQRFLM.save``), training.png;
                 ``training_status`` (mbpl_interfaces/TrainingStatus) is published at every phase
                 and recorded in the bag.

Resume (``resume: true``): the algorithm is restored from controllers.npz, the summary is cut to
the checkpointed iterations, the fitter's state is rebuilt by replaying the recorded rollouts of
those iterations (``FitIteration`` with ``reset``/``fit: false``), and every trial already
recorded without abort in the interrupted iteration is reused instead of re-run (its noise is
reproducible from the seed, so the slot is the same trial). The same replay runs whenever the
fitter answers ``needs_replay`` (it was restarted).

The summary has the format of ``mbpl train --graph direct`` (shared code in
:mod:`mbpl_ros.training.direct`), plus per iteration ``aborted`` (trial id, condition, reason,
worker) and the running count ``aborted_trials``.

Guided policy search (``algorithm`` mdgps or badmm; the iteration of
:mod:`mbpl_ros.training.gps_loop` through ROS):
  1. sampling    as above with the local controllers, or (MDGPS ``sample_on_policy``, from the
                 second iteration on) with the global policy: the goal names the policy file and
                 carries this slot's standard-normal noise (seeded like the controllers'), which the
                 executor scales by the policy's standard deviation;
  2. fitting     the dynamics_fitter, as above;
  3. optimising  ``MDGPS`` / ``BADMM`` iteration on those dynamics (policy linearisation, C-step,
                 S-step: the policy is trained here, in the trainer);
  4. evaluating  the new policy is saved to ``<out>/policies/iteration_NNN.pt`` (and
                 ``<out>/policy.pt``) and run noiselessly by the executors from that path (a file
                 system the executors share) on every training condition and on the held-out
                 ``test_conditions`` (their q0 and target sent in the goal);
  5. done        summary.json with the GPS fields of the direct loop (``train_success_rate``,
                 ``test_success_rate``, ``policy_cost``, ..., ``best_policy``), controllers.npz,
                 policy.pt, best_policy.pt (a copy of the iteration file that did best on the
                 training conditions), plots, and ``gps_state.pt``: the whole algorithm state
                 (policy, optimiser, policy prior, step sizes, duals) for ``resume``.
Only the state-based MLP policy trains through ROS: a visuomotor policy's vision pretraining
needs images of random arm poses and targets, which this trainer has no simulator for (the
executor runs a visuomotor policy trained with ``--graph direct``, in lockstep).
"""

from __future__ import annotations

import fcntl
import json
import re
import shutil
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from queue import Queue

import numpy as np
import rclpy
from action_msgs.msg import GoalStatus
from mbpl_interfaces.action import RunTrial
from mbpl_interfaces.msg import ExecutorStatus, Rollout, TrainingStatus
from mbpl_interfaces.srv import FitIteration
from rclpy.action import ActionClient
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from mbpl_ros.conversions import (
    MessageError,
    controller_to_msg,
    dynamics_from_msg,
    rollout_from_msg,
)
from mbpl_ros.core.controllers import LinearGaussianController, smoothed_noise
from mbpl_ros.core.lqr_flm import LQRFLM, LQRFLMConfig
from mbpl_ros.core.samples import SampleBatch
from mbpl_ros.nodes.parameters import declare_parameters
from mbpl_ros.processes import stop_with_parent
from mbpl_ros.recording import BagWriter, read_messages
from mbpl_ros.training.config import InitialControllerConfig, TrainConfig
from mbpl_ros.training.direct import (
    Evaluation,
    iteration_record,
    make_problem,
    new_summary,
    status_line,
    write_run,
)
from mbpl_sim.tasks import Condition

ROLLOUT_TOPIC = "/rollouts"
EVAL_TOPIC = "/evaluation_rollouts"
STATUS_TOPIC = "/training_status"
BAG_DIR = "rollouts"
_TRIAL_ID = re.compile(r"^i(\d+)-([ct])(\d+)-(?:s(\d+)|(eval))-a(\d+)$")
STATUS_GRACE_S = 10.0
"""At start, wait at most this long for each executor's status topic (after its action server):
discovery took over 3 s on a loaded CI machine."""
GOAL_RESEND_S = 10.0
"""Send a trial goal again when it has gone unanswered this long (see TrialWorker._send), so that
a send whose answer was lost is repeated twice within server_timeout_s (30 s by default). Not
shorter: on a loaded machine an answer can take several seconds, and a goal sent twice whose first
copy was only slow runs a second trial before the cancel arrives (seen at 5 s with both cores
busy)."""
FIT_RESEND_S = 30.0
"""Send a fit request again when it has gone unanswered this long (its response can be lost like
a goal's answer, see TrialWorker._send); the fitter answers a repeated request without adding its
rollouts twice, and the first answer counts."""
STATUS_QOS = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.TRANSIENT_LOCAL)
RESUME_KEYS = ("task", "backend", "algorithm", "conditions", "samples", "horizon", "dt", "seed",
               "urdf", "ee_link", "noise_smoothing")
GPS_RESUME_KEYS = ("policy", "test_conditions", "test_seed", "sample_on_policy", "hidden")
"""GPS settings a resumed session must share with the stopped one."""
GPS_ALGORITHMS = ("mdgps", "badmm")
GPS_STATE = "gps_state.pt"
POLICY_DIR = "policies"
"""Settings a resumed session must share with the stopped one (iterations may grow)."""


class TrainingError(RuntimeError):
    """The session cannot go on (too few good trials, fitter failure, incompatible resume)."""


class Shutdown(Exception):
    """The ROS context was shut down (SIGINT) while waiting."""


# ------------------------------------------------------------------------------- trials

@dataclass(frozen=True)
class Slot:
    """One trial of the session: training sample ``sample`` (or the evaluation, sample None) of
    ``condition`` in ``iteration``; ``test``: held-out condition ``condition`` (evaluation only)."""

    iteration: int
    condition: int
    sample: int | None = None
    test: bool = False

    def trial_id(self, attempt: int) -> str:
        kind = "eval" if self.sample is None else f"s{self.sample}"
        table = "t" if self.test else "c"
        return f"i{self.iteration}-{table}{self.condition}-{kind}-a{attempt}"

    @staticmethod
    def parse(trial_id: str) -> tuple[Slot, int] | None:
        match = _TRIAL_ID.match(trial_id)
        if not match:
            return None
        i, table, m, s, _, a = match.groups()
        return Slot(int(i), int(m), None if s is None else int(s), table == "t"), int(a)


@dataclass(frozen=True)
class TrialJob:
    """What one slot runs: a controller (noise folded in), or a policy file with optional
    standard-normal noise (T, dU); ``condition``: q0 and target sent in the goal (a held-out
    condition) instead of the executor's table entry."""

    controller: LinearGaussianController | None = None
    policy_path: str = ""
    noise: np.ndarray | None = None
    condition: Condition | None = None


@dataclass
class Outcome:
    """What came back for one attempt at a slot."""

    slot: Slot
    attempt: int
    worker: str
    msg: Rollout
    X: np.ndarray | None = None
    U: np.ndarray | None = None
    faults: int = 0
    """Policy steps the executor replaced by zero torque (non-finite values)."""

    @property
    def aborted(self) -> bool:
        return bool(self.msg.aborted)

    @property
    def reason(self) -> str:
        return self.msg.abort_reason


def _wait(futures: Sequence, timeout: float, context) -> bool:
    """Wait from a non-executor thread until one of the rclpy ``futures`` is done; False on
    timeout.

    Raises:
        Shutdown: the context went down meanwhile.
    """
    done = threading.Event()
    for future in futures:
        future.add_done_callback(lambda _: done.set())
    end = time.monotonic() + timeout
    while not done.wait(0.05):
        if not context.ok():
            raise Shutdown
        if time.monotonic() > end:
            return any(f.done() for f in futures)
    return True


def call_with_resend(client, request, timeout: float, resend_s: float, context,
                     logger) -> object | None:
    """Call a service from a non-executor thread, sending the request again every ``resend_s``
    without an answer; the first response, or None after ``timeout``.

    Raises:
        Shutdown: the context went down meanwhile.
    """
    end = time.monotonic() + timeout
    futures: list = []
    while True:
        if futures:
            logger.warning(f"{client.srv_name}: no answer within {resend_s:g} s, "
                           "sending the request again")
        futures.append(client.call_async(request))
        _wait([f for f in futures if not f.done()], min(resend_s, end - time.monotonic()),
              context)
        for future in futures:
            if future.done() and future.result() is not None:
                return future.result()
        if time.monotonic() >= end:
            return None


class TrialWorker:
    """An action client to one arm's controller executor, and a subscription to its status (a
    status message received shows that the executor's side has discovered this node)."""

    def __init__(self, node: Node, namespace: str, action: str, group) -> None:
        ns = "/" + namespace.strip("/") if namespace.strip("/") else ""
        self.name = ns or "/"
        self.action_name = f"{ns}/{action.lstrip('/')}"
        self.node = node
        self.client = ActionClient(node, RunTrial, self.action_name, callback_group=group)
        self.status_heard = threading.Event()
        node.create_subscription(
            ExecutorStatus, f"{self.action_name.rsplit('/', 1)[0]}/status",
            lambda _: self.status_heard.set(),
            QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE), callback_group=group)

    def _send(self, goal: RunTrial.Goal, server_timeout: float):
        """The accepted goal handle, or (None, why not).

        A goal whose answer does not come within GOAL_RESEND_S is sent again (a new goal id),
        and whichever send is accepted first runs: an action client that has discovered the
        server can send before the server has discovered the client's response reader (a
        DDS discovery race, mostly right after start-up), and the executor's answer is then
        lost although the goal was accepted and runs. While that lost goal runs the executor
        refuses the next ones as busy, so refusals after a resend do not end the wait. Any
        other send accepted later is cancelled.
        """
        context = self.node.context
        sends: list = []
        deadline = time.monotonic() + server_timeout
        next_send = 0.0
        while True:
            now = time.monotonic()
            for send in sends:
                handle = send.result() if send.done() else None
                if handle is not None and handle.accepted:
                    for other in sends:
                        if other is not send:
                            other.add_done_callback(_cancel_if_accepted)
                    return handle, ""
                if handle is not None and len(sends) == 1:
                    return None, f"goal rejected by {self.action_name}"
            if now >= deadline:
                for other in sends:
                    other.add_done_callback(_cancel_if_accepted)
                return None, f"executor {self.action_name} did not answer the goal " \
                    f"({len(sends)} sends)"
            if now >= next_send:
                if sends:
                    self.node.get_logger().warning(
                        f"{self.action_name}: no answer to a goal within {GOAL_RESEND_S:g} s, "
                        "sending it again")
                sends.append(self.client.send_goal_async(goal))
                next_send = now + GOAL_RESEND_S
            if not context.ok():
                raise Shutdown
            time.sleep(0.02)

    def run(self, goal: RunTrial.Goal, timeout: float, server_timeout: float) -> tuple[
            Rollout | None, str, int]:
        """(The result rollout, "", policy faults), or (None or a partial rollout, abort reason,
        policy faults)."""
        context = self.node.context
        if not self.client.wait_for_server(timeout_sec=server_timeout):
            return None, f"executor {self.action_name} not available", 0
        handle, reason = self._send(goal, server_timeout)
        if handle is None:
            return None, reason, 0
        result_future = handle.get_result_async()
        if not _wait([result_future], timeout, context):
            handle.cancel_goal_async()
            return None, f"no result within {timeout:.0f} s (cancelled)", 0
        wrapped = result_future.result()
        result = wrapped.result
        if wrapped.status != GoalStatus.STATUS_SUCCEEDED or not result.success \
                or result.rollout.aborted:
            reason = result.rollout.abort_reason or result.message or \
                f"goal status {wrapped.status}"
            return result.rollout, reason, result.policy_faults
        return result.rollout, "", result.policy_faults


def _cancel_if_accepted(send) -> None:
    handle = send.result()
    if handle is not None and handle.accepted:
        handle.cancel_goal_async()


# ------------------------------------------------------------------------------- the node

PARAMETERS = {
    "task": ("reach", "reach or peg"),
    "backend": ("mujoco", "simulator backend (recorded in the summary)"),
    "urdf": ("", "robot description; empty: the project's arm7"),
    "ee_link": ("", "end-effector link of urdf"),
    "conditions": (2, "training conditions (the condition table of seed)"),
    "samples": (5, "noisy trials per condition and iteration"),
    "iterations": (10, "iterations of the session"),
    "algorithm": ("lqr-flm", "lqr-flm (local controllers), mdgps or badmm (guided policy search: "
                             "also a global neural-network policy)"),
    "horizon": (100, "policy steps T per trial"),
    "dt": (0.05, "policy step, s"),
    "seed": (0, "seeds the condition table and the exploration noise"),
    "noise_smoothing": (2.0, "std of the temporal smoothing of exploration noise, steps"),
    "out": ("", "run directory: summary.json, controllers.npz, plots, rollouts/ bag"),
    "resume": (False, "continue the session in out from its last checkpoint"),
    "namespaces": (["/"], "robot namespaces whose controller executors run trials"),
    "executor_action": ("controller_executor/run_trial", "RunTrial action, relative to a "
                        "namespace"),
    "fitter_service": ("/dynamics_fitter/fit_iteration", "FitIteration service"),
    "trial_retries": (2, "extra attempts of an aborted trial"),
    "record_images": (False, "trials record the camera frame of every policy step into their "
                             "rollouts (and so into the bag); the sim bridges need their camera "
                             "on at one frame per policy step (camera_rate_hz = 1 / dt)"),
    "retry_delay_s": (0.5, "wait before the first retry of a trial, s (doubles per retry)"),
    "trial_timeout_s": (0.0, "result timeout per trial, s; 0: 60 + 10 * horizon * dt"),
    "startup_timeout_s": (120.0, "wait for the executors and the fitter at start, s"),
    "server_timeout_s": (30.0, "wait for an executor or the fitter to appear later on, s"),
    "fit_timeout_s": (300.0, "wait for a fit, s"),
    "kl_step": (0.2, "LQR-FLM base KL step per time step"),
    "min_step_mult": (0.01, "lower bound of the step multiplier"),
    "max_step_mult": (10.0, "upper bound of the step multiplier"),
    "init_var": (1.0, "initial controller's action variance, (N m)^2"),
    "stiffness": (1.0, "initial hold-x0 LQR: joint position weight"),
    "stiffness_vel": (0.5, "initial hold-x0 LQR: relative velocity weight"),
    "final_weight": (1.0, "initial hold-x0 LQR: final-step multiplier"),
    "policy": ("mlp", "GPS: mlp (state-based policy on all of x); visuomotor is refused through "
                      "ROS (its vision pretraining needs a simulator; train it with --graph "
                      "direct)"),
    "test_conditions": (0, "GPS: held-out conditions evaluated every iteration"),
    "test_seed": (-1, "GPS: seed of the held-out conditions; -1: seed + 1000"),
    "sample_on_policy": (False, "MDGPS: sample the global policy from the second iteration on"),
    "hidden": ([64, 64], "GPS: hidden layer widths of the policy network"),
    "policy_steps": (300, "GPS: gradient steps per S-step"),
    "first_policy_steps": (1000, "GPS: gradient steps of the first S-step"),
    "batch_size": (128, "GPS: S-step minibatch size"),
    "torch_threads": (1, "GPS: torch threads of the S-step; 0: torch's default"),
}


def config_from_parameters(p: dict) -> TrainConfig:
    """The session's :class:`TrainConfig` from the node's parameter values."""
    if not p["out"]:
        raise ValueError("out: expected the run directory, found ''")
    namespaces = [n for n in p["namespaces"]] or ["/"]
    return TrainConfig(
        task=p["task"], backend=p["backend"], graph="ros", conditions=p["conditions"],
        samples=p["samples"], iterations=p["iterations"], horizon=p["horizon"], dt=p["dt"],
        seed=p["seed"], urdf=Path(p["urdf"]) if p["urdf"] else None,
        ee_link=p["ee_link"] or None, out=Path(p["out"]), noise_smoothing=p["noise_smoothing"],
        progress=False, workers=len(namespaces), resume=p["resume"], algorithm=p["algorithm"],
        trial_retries=p["trial_retries"],
        initial=InitialControllerConfig(init_var=p["init_var"], stiffness=p["stiffness"],
                                        stiffness_vel=p["stiffness_vel"],
                                        final_weight=p["final_weight"]),
        lqr=LQRFLMConfig(kl_step=p["kl_step"], min_step_mult=p["min_step_mult"],
                         max_step_mult=p["max_step_mult"]))


def gps_settings_from_parameters(p: dict):
    """The session's :class:`~mbpl_ros.training.gps_loop.GPSSettings` (GPS algorithms)."""
    from mbpl_ros.training.gps_loop import GPSSettings

    return GPSSettings(policy=p["policy"], test_conditions=p["test_conditions"],
                       test_seed=None if p["test_seed"] < 0 else p["test_seed"],
                       sample_on_policy=p["sample_on_policy"],
                       hidden=tuple(int(h) for h in p["hidden"]),
                       policy_steps=p["policy_steps"],
                       first_policy_steps=p["first_policy_steps"],
                       batch_size=p["batch_size"],
                       threads=p["torch_threads"] or None)


class GpsTrainer(Node):
    """Parameters, clients and publishers of one session; :meth:`run` trains."""

    def __init__(self, **node_kwargs) -> None:
        super().__init__("gps_trainer", **node_kwargs)
        p = declare_parameters(self, PARAMETERS)
        self.params = p
        self.config = config_from_parameters(p)
        algorithms = ("lqr-flm", *GPS_ALGORITHMS)
        if self.config.algorithm not in algorithms:
            raise ValueError(f"algorithm: expected one of {algorithms}, found "
                             f"{self.config.algorithm!r}")
        self.gps = gps_settings_from_parameters(p) if self.config.algorithm in GPS_ALGORITHMS \
            else None
        if self.gps is not None and self.gps.policy != "mlp":
            raise ValueError(f"policy {self.gps.policy!r}: the ROS graph trains the state-based "
                             "mlp policy only (vision pretraining needs images of random arm "
                             "poses and targets, which this trainer has no simulator for); "
                             "train a visuomotor policy with --graph direct (the controller "
                             "executor can then run it in lockstep)")
        self.namespaces = list(p["namespaces"]) or ["/"]
        T = self.config.horizon
        self.trial_timeout = p["trial_timeout_s"] or 60.0 + 10.0 * T * self.config.dt
        self.server_timeout = p["server_timeout_s"]
        self.startup_timeout = p["startup_timeout_s"]
        self.retry_delay = p["retry_delay_s"]
        self.fit_timeout = p["fit_timeout_s"]
        group = ReentrantCallbackGroup()
        self.workers = [TrialWorker(self, ns, p["executor_action"], group)
                        for ns in self.namespaces]
        self.fitter = self.create_client(FitIteration, p["fitter_service"], callback_group=group)
        self.status_pub = self.create_publisher(TrainingStatus, "training_status", STATUS_QOS)

    # ---------------------------------------------------------------- session set-up

    def run(self) -> dict:
        """Train; returns the summary (also in <out>/summary.json)."""
        cfg = self.config
        cfg.out.mkdir(parents=True, exist_ok=True)
        self._lock_session(cfg.out)
        self.problem = make_problem(cfg, np.random.default_rng(cfg.seed))
        self.tests: list[Condition] = []
        if self.gps is not None:
            import torch

            from mbpl_ros.training.gps_loop import test_condition_table

            if self.gps.threads is not None:
                torch.set_num_threads(self.gps.threads)
            self.tests = test_condition_table(cfg, self.gps, self.problem.setup,
                                              self.problem.conditions)
        layout = self.problem.layout
        self.state_names = layout.names()
        bag_path = cfg.out / BAG_DIR
        if bag_path.exists() and not cfg.resume:
            raise TrainingError(f"{cfg.out} already holds a session (rollouts/): resume it "
                                "(--resume) or choose another run directory")
        self.recorded: dict[Slot, list[Outcome]] = {}
        if cfg.resume and bag_path.exists():
            self._load_recorded(bag_path)
        self.bag = BagWriter(bag_path)
        self.bag_lock = threading.Lock()
        algo, summary = self._restore_or_start()
        self.algo = algo
        start_iteration = algo.iterations_done
        last = summary["iterations"][-1] if summary["iterations"] else {}
        self.trials = last.get("trials", 0)
        self.env_steps = last.get("env_steps", 0)
        self.aborted_total = last.get("aborted_trials", 0)
        self.wall_offset = last.get("wall_s", 0.0)
        self.eval_trials = last.get("eval_trials", 0)
        self.start = time.perf_counter()
        log = self.get_logger()
        log.info(f"session {cfg.out}: {cfg.task}, {cfg.conditions} conditions x {cfg.samples} "
                 f"samples, T={cfg.horizon}, iterations {start_iteration}..{cfg.iterations - 1}, "
                 f"workers {[w.action_name for w in self.workers]}")
        self._wait_for_graph()
        if cfg.resume and start_iteration > 0:
            self._replay_fitter(start_iteration)
        for i in range(start_iteration, cfg.iterations):
            if self.gps is not None:
                self._gps_iteration(i, summary)
            else:
                self._iteration(i, summary)
        self._publish_status(cfg.iterations - 1 if cfg.iterations else 0, "finished",
                             summary["iterations"][-1] if summary["iterations"] else None)
        return summary

    def _lock_session(self, out: Path) -> None:
        """One trainer per run directory (held until the process exits)."""
        self._session_lock = open(out / ".session.lock", "a")  # noqa: SIM115
        try:
            fcntl.flock(self._session_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            raise TrainingError(f"another trainer is running a session in {out}") from err

    def _wait_for_graph(self) -> None:
        """Wait (up to startup_timeout_s) for every executor and the fitter: node processes
        starting together on a busy machine take a while. Missing executors are only logged
        (their trials go to the others); no executor or no fitter ends the session."""
        end = time.monotonic() + self.startup_timeout
        pending = [w for w in self.workers if not w.client.server_is_ready()]
        while time.monotonic() < end and (pending or not self.fitter.service_is_ready()):
            self._sleep(0.1)
            pending = [w for w in pending if not w.client.server_is_ready()]
        # The server discovered is not the server discovering this node: an executor's status
        # message arriving shows its side has (it publishes at status_rate_hz). Not required: a
        # stand-in server may publish none, and an unanswered goal is sent again anyway.
        unheard = [w for w in self.workers if w not in pending and not w.status_heard.is_set()]
        status_end = min(end, time.monotonic() + STATUS_GRACE_S)
        while unheard and time.monotonic() < status_end:
            self._sleep(0.05)
            unheard = [w for w in unheard if not w.status_heard.is_set()]
        if not self.fitter.service_is_ready():
            raise TrainingError(f"dynamics fitter {self.fitter.srv_name} did not appear within "
                                f"{self.startup_timeout:.0f} s")
        if len(pending) == len(self.workers):
            raise TrainingError(f"no controller executor appeared within "
                                f"{self.startup_timeout:.0f} s: "
                                f"{[w.action_name for w in pending]}")
        if pending:
            self.get_logger().warning(f"executors not available, continuing without them for "
                                      f"now: {[w.action_name for w in pending]}")

    def _restore_or_start(self) -> tuple[LQRFLM, dict]:
        cfg, problem = self.config, self.problem
        layout = problem.layout
        checkpoint = cfg.out / "controllers.npz"
        summary_path = cfg.out / "summary.json"
        extra = {"workers": [w.name for w in self.workers], "recording": BAG_DIR}
        if self.gps is not None:
            return self._restore_or_start_gps(summary_path, extra)
        if cfg.resume and checkpoint.exists() and summary_path.exists():
            summary = json.loads(summary_path.read_text())
            self._check_resume_settings(summary)
            algo = LQRFLM.load(checkpoint, layout=layout, config=cfg.lqr)
            return algo, self._resumed_summary(summary, extra, algo.iterations_done)
        algo = LQRFLM(cfg.lqr, layout, layout.action_dim, cfg.horizon, cfg.dt, problem.initial)
        return algo, new_summary(cfg, problem.setup.description, **extra)

    def _load_recorded(self, bag_path: Path) -> None:
        """Every recorded attempt of the stopped session, by slot."""
        for _, msg, _ in read_messages(bag_path, [ROLLOUT_TOPIC, EVAL_TOPIC]):
            parsed = Slot.parse(msg.trial_id)
            if parsed is None:
                continue
            slot, attempt = parsed
            outcome = Outcome(slot, attempt, "recorded", msg)
            if not outcome.aborted:
                self._check_rollout(outcome)
            self.recorded.setdefault(slot, []).append(outcome)

    # ---------------------------------------------------------------- one iteration

    def _collect(self, i: int, jobs: list) -> tuple[list[list], list[SampleBatch], list[dict]]:
        """Run iteration ``i``'s sample trials: per condition the good outcomes and their batch,
        and the aborted trials. Raises TrainingError if a condition kept fewer than 2 good
        trials."""
        cfg = self.config
        M, N, T = cfg.conditions, cfg.samples, cfg.horizon
        results, aborted = self._run_slots(jobs)
        good = [[results[Slot(i, m, s)] for s in range(N)
                 if results[Slot(i, m, s)] is not None] for m in range(M)]
        short = [m for m in range(M) if len(good[m]) < 2]
        if short:
            raise TrainingError(f"iteration {i}: conditions {short} have fewer than 2 good "
                                f"trials after {cfg.trial_retries} retries; last reasons "
                                f"{[a['reason'] for a in aborted][-3:]}")
        self.trials += sum(len(g) for g in good)
        self.env_steps += sum(len(g) for g in good) * T
        batches = [SampleBatch(np.stack([o.X[:T] for o in g]), np.stack([o.U for o in g]))
                   for g in good]
        return good, batches, aborted

    def _iteration(self, i: int, summary: dict) -> None:
        cfg, problem, algo = self.config, self.problem, self.algo
        M, N = cfg.conditions, cfg.samples
        self.bag.split()
        self._publish_status(i, "sampling")
        controllers = algo.controllers
        jobs = [(Slot(i, m, s), TrialJob(self._noisy(controllers[m], i, m, s)))
                for m in range(M) for s in range(N)]
        good, batches, aborted = self._collect(i, jobs)

        self._publish_status(i, "fitting")
        dynamics = self._fit(i, [o.msg for g in good for o in g])
        self._publish_status(i, "optimising")
        report = algo.iteration(batches, problem.cost, dynamics=dynamics)

        self._publish_status(i, "evaluating")
        eval_jobs = [(Slot(i, m), TrialJob(c)) for m, c in enumerate(algo.controllers)]
        eval_results, eval_aborted = self._run_slots(eval_jobs, reuse=False)
        evaluation = [self._evaluate(problem.conditions[m], eval_results[Slot(i, m)],
                                     f"condition {m}") for m in range(M)]
        aborted += eval_aborted
        self.aborted_total += len(aborted)
        record = iteration_record(
            i, report, evaluation, self.trials, self.env_steps,
            self.wall_offset + time.perf_counter() - self.start,
            aborted_trials=self.aborted_total, aborted=aborted,
            fit_s=self._last_fit_s, prior_clusters=self._last_clusters)
        summary["iterations"].append(record)
        write_run(cfg, summary, algo)
        self._publish_status(i, "done", record)
        self.get_logger().info(status_line(record) + (f", {len(aborted)} aborted trials"
                                                       if aborted else ""))

    def _noisy(self, controller: LinearGaussianController, i: int, m: int,
               s: int) -> LinearGaussianController:
        """The controller with this slot's exploration noise folded into k (reproducible)."""
        cfg = self.config
        rng = np.random.default_rng([cfg.seed, i, m, s])
        noise = smoothed_noise(rng, cfg.horizon, controller.dU, cfg.noise_smoothing)
        return controller.fold_noise(noise)

    def _evaluate(self, condition: Condition, outcome: Outcome | None,
                  label: str) -> Evaluation:
        if outcome is None:
            raise TrainingError(f"the evaluation trial of {label} aborted "
                                f"{1 + self.config.trial_retries} times")
        problem = self.problem
        q_final = outcome.X[-1][problem.layout.joint_positions]
        points = problem.builder.kinematics.ee_points(q_final)
        cost = float(np.sum(problem.cost.eval(outcome.X[:self.config.horizon], outcome.U).l))
        return Evaluation(problem.setup.task.distance(points, condition),
                          bool(problem.setup.task.success(points, condition)), cost)

    # ---------------------------------------------------------------- guided policy search

    def _new_gps(self):
        """A fresh MDGPS / BADMM (each iteration gets its dynamics from the fitter node)."""
        from mbpl_ros.gps.algorithm import BADMM, MDGPS, GPSConfig
        from mbpl_ros.gps.policy import ObservationSpec, make_policy
        from mbpl_ros.gps.policy_opt import PolicyOptConfig

        cfg, st, problem = self.config, self.gps, self.problem
        layout = problem.layout
        spec = ObservationSpec.full_state(layout, tuple(problem.setup.description.joint_names))
        policy = make_policy(spec, layout.action_dim, st.hidden, st.channels, seed=cfg.seed)
        gps_config = GPSConfig(
            lqr=cfg.lqr,
            policy_opt=PolicyOptConfig(steps=st.policy_steps, batch_size=st.batch_size,
                                       seed=cfg.seed),
            first_policy_steps=st.first_policy_steps, sample_on_policy=st.sample_on_policy)
        cls = {"mdgps": MDGPS, "badmm": BADMM}[cfg.algorithm]
        return cls(gps_config, layout.dim, layout.action_dim, cfg.horizon, problem.initial,
                   policy)

    def _restore_or_start_gps(self, summary_path: Path, extra: dict) -> tuple[object, dict]:
        import torch

        from mbpl_ros.training.gps_loop import settings_dict

        cfg = self.config
        settings = settings_dict(self.gps)
        state_path = cfg.out / GPS_STATE
        algo = self._new_gps()
        if not (cfg.resume and state_path.exists() and summary_path.exists()):
            summary = new_summary(cfg, self.problem.setup.description, gps=settings, **extra)
            return algo, summary
        summary = json.loads(summary_path.read_text())
        self._check_resume_settings(summary, settings)
        try:
            # The trainer's own checkpoint in its run directory (a pickle: policy, optimiser,
            # GMM policy prior, step sizes, duals), hence weights_only=False.
            payload = torch.load(state_path, map_location="cpu", weights_only=False)
        except Exception as err:  # noqa: BLE001 - any unreadable checkpoint
            raise TrainingError(f"--resume: cannot read {state_path}: {err}") from err
        if not isinstance(payload, dict) or payload.get("format") != GPS_STATE_FORMAT \
                or payload.get("algorithm") != cfg.algorithm:
            raise TrainingError(f"--resume: {state_path} is not a {cfg.algorithm} state of "
                                "this trainer")
        algo.__dict__.update(payload["state"])
        return algo, self._resumed_summary(summary, extra, algo.iterations_done)

    def _check_resume_settings(self, summary: dict, gps_settings: dict | None = None) -> None:
        """Raises TrainingError if this run's settings differ from the stopped session's."""
        saved, new = summary.get("config", {}), self.config.to_dict()
        diff = {k: (saved.get(k), new[k]) for k in RESUME_KEYS if saved.get(k) != new[k]}
        if gps_settings is not None:
            saved_gps = summary.get("gps", {})
            diff.update({f"gps.{k}": (saved_gps.get(k), gps_settings[k])
                         for k in GPS_RESUME_KEYS if saved_gps.get(k) != gps_settings[k]})
        if diff:
            raise TrainingError(f"--resume: settings differ from the stopped session "
                                f"(saved, now): {diff}")

    def _resumed_summary(self, summary: dict, extra: dict, done: int) -> dict:
        """The stopped session's summary cut to its ``done`` checkpointed iterations."""
        summary["iterations"] = summary["iterations"][:done]
        summary["config"] = self.config.to_dict()
        summary.update(extra)
        summary.setdefault("resumed_at", []).append(done)
        self.get_logger().info(f"resuming {self.config.algorithm} after iteration {done - 1} "
                               f"({sum(len(v) for v in self.recorded.values())} recorded "
                               "trials)")
        return summary

    def _policy_noise(self, i: int, m: int, s: int) -> np.ndarray:
        """Standard-normal exploration noise (T, dU) of a policy sample (reproducible)."""
        cfg = self.config
        rng = np.random.default_rng([cfg.seed, i, m, s])
        return smoothed_noise(rng, cfg.horizon, self.problem.layout.action_dim,
                              cfg.noise_smoothing)

    def _iteration_policy(self, i: int) -> Path:
        """The policy file after iteration ``i`` (written now if missing); executors read it."""
        from mbpl_ros.gps.policy import save_policy

        path = self.config.out / POLICY_DIR / f"iteration_{i:03d}.pt"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            cfg = self.config
            save_policy(self.algo.policy, path, task=cfg.task, dt=cfg.dt,
                        algorithm=cfg.algorithm, iteration=i)
        return path.resolve()

    def _gps_iteration(self, i: int, summary: dict) -> None:
        from mbpl_ros.gps.algorithm import Observations

        cfg, problem, algo = self.config, self.problem, self.algo
        M, N = cfg.conditions, cfg.samples
        self.bag.split()
        self._publish_status(i, "sampling")
        on_policy = algo.samples_from_policy()
        if on_policy:
            path = str(self._iteration_policy(i - 1))
            jobs = [(Slot(i, m, s), TrialJob(policy_path=path, noise=self._policy_noise(i, m, s)))
                    for m in range(M) for s in range(N)]
        else:
            controllers = algo.controllers
            jobs = [(Slot(i, m, s), TrialJob(self._noisy(controllers[m], i, m, s)))
                    for m in range(M) for s in range(N)]
        good, batches, aborted = self._collect(i, jobs)
        faults = sum(o.faults for g in good for o in g)
        spec = algo.policy.observation
        observations = [Observations(spec.from_states(b.X)) for b in batches]

        self._publish_status(i, "fitting")
        dynamics = self._fit(i, [o.msg for g in good for o in g])
        self._publish_status(i, "optimising")
        report = algo.iteration(batches, observations, problem.cost, dynamics=dynamics)

        self._publish_status(i, "evaluating")
        path = str(self._iteration_policy(i))
        eval_jobs = [(Slot(i, m), TrialJob(policy_path=path)) for m in range(M)]
        eval_jobs += [(Slot(i, j, test=True), TrialJob(policy_path=path, condition=c))
                      for j, c in enumerate(self.tests)]
        eval_results, eval_aborted = self._run_slots(eval_jobs, reuse=False)
        train_eval = [self._evaluate(problem.conditions[m], eval_results[Slot(i, m)],
                                     f"condition {m}") for m in range(M)]
        test_eval = [self._evaluate(c, eval_results[Slot(i, j, test=True)],
                                    f"held-out condition {j}") for j, c in enumerate(self.tests)]
        faults += sum(o.faults for o in eval_results.values() if o is not None)
        self.eval_trials += len(eval_jobs)
        aborted += eval_aborted
        self.aborted_total += len(aborted)
        record = iteration_record(
            i, report, train_eval, self.trials, self.env_steps,
            self.wall_offset + time.perf_counter() - self.start,
            eval_trials=self.eval_trials,
            train_success_rate=_rate(train_eval),
            test_success_rate=_rate(test_eval) if self.tests else None,
            policy_cost=float(np.mean([e.cost for e in train_eval])),
            test_policy_cost=float(np.mean([e.cost for e in test_eval])) if self.tests
            else None,
            test_conditions=[{"condition": j, "final_distance": e.final_distance,
                              "success": e.success, "eval_cost": e.cost}
                             for j, e in enumerate(test_eval)],
            policy_loss=report.policy_loss_after, policy_kl=list(report.policy_kl),
            policy_s=report.policy_s, sampled="policy" if on_policy else "controllers",
            policy_faults=faults, policy_file=str(Path(path).relative_to(cfg.out.resolve())),
            aborted_trials=self.aborted_total, aborted=aborted,
            fit_s=self._last_fit_s, prior_clusters=self._last_clusters)
        summary["iterations"].append(record)
        self._write_gps_run(summary)
        self._publish_status(i, "done", record)
        line = status_line(record).replace("noiseless cost", "policy cost")
        if self.tests:
            line += f", test success {record['test_success_rate']:.0%} ({len(self.tests)})"
        self.get_logger().info(line + f", policy update {report.policy_s:.1f} s"
                               + (f", {len(aborted)} aborted trials" if aborted else ""))

    def _write_gps_run(self, summary: dict) -> None:
        """summary.json first, then the algorithm state: a crash in between leaves a summary
        that ``resume`` cuts back to the state's iterations."""
        import torch

        from mbpl_ros.gps.policy import save_policy
        from mbpl_ros.training.gps_loop import best_iteration, write_policy_plot
        from mbpl_ros.training.report import write_plots

        cfg, algo, out = self.config, self.algo, self.config.out
        best = summary["best_policy"] = best_iteration(summary["iterations"])
        path = out / "summary.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(summary, indent=2))
        tmp.replace(path)
        save_policy(algo.policy, out / "policy.pt", task=cfg.task, dt=cfg.dt,
                    algorithm=cfg.algorithm, iteration=algo.iterations_done - 1)
        if best is not None:
            record = next(r for r in summary["iterations"] if r["iteration"] == best["iteration"])
            shutil.copyfile(out / record["policy_file"], out / "best_policy.pt")
        ctrls = algo.controllers
        np.savez(out / "controllers.npz", K=np.stack([c.K for c in ctrls]),
                 k=np.stack([c.k for c in ctrls]), covar=np.stack([c.covar for c in ctrls]),
                 state_names=np.array(self.state_names))
        state = out / GPS_STATE
        tmp = state.with_suffix(".pt.tmp")
        torch.save({"format": GPS_STATE_FORMAT, "algorithm": cfg.algorithm,
                    "iterations_done": algo.iterations_done, "state": algo.__dict__}, tmp)
        tmp.replace(state)
        write_plots(summary, out)
        write_policy_plot(summary, out)

    # ---------------------------------------------------------------- running trials

    def _run_slots(self, jobs: list[tuple[Slot, TrialJob]],
                   reuse: bool = True) -> tuple[dict[Slot, Outcome | None], list[dict]]:
        """Run every slot (in parallel over the workers) until it succeeds or runs out of
        attempts; reuse recorded good attempts (resume). Returns the good outcome per slot (None
        if all attempts aborted) and the aborted attempts as summary entries."""
        free: Queue[TrialWorker] = Queue()
        for w in self.workers:
            free.put(w)
        results: dict[Slot, Outcome | None] = {}
        aborted: list[dict] = []
        lock = threading.Lock()

        def note(outcome: Outcome) -> None:
            with lock:
                aborted.append({"trial_id": outcome.slot.trial_id(outcome.attempt),
                                "condition": outcome.slot.condition, "reason": outcome.reason,
                                "worker": outcome.worker})

        def run(slot: Slot, job: TrialJob) -> None:
            previous = self.recorded.get(slot, []) if reuse else []
            for outcome in previous:
                if not outcome.aborted:
                    results[slot] = outcome
                    return
                note(outcome)
            first = max((o.attempt + 1 for o in self.recorded.get(slot, [])), default=0)
            for k, attempt in enumerate(range(first, first + 1 + self.config.trial_retries)):
                if k:  # back off, so that a restarting bridge or executor can come back
                    self._sleep(min(self.retry_delay * 2 ** (k - 1), 30.0))
                worker = free.get()
                outcome = None
                try:
                    outcome = self._attempt(worker, slot, attempt, job)
                finally:
                    if outcome is not None and outcome.aborted and "not available" in \
                            outcome.reason:
                        time.sleep(1.0)  # a missing executor: let another worker take the next
                    free.put(worker)
                if not outcome.aborted:
                    results[slot] = outcome
                    return
                note(outcome)
                self.get_logger().warning(f"trial {slot.trial_id(attempt)} on {worker.name} "
                                          f"aborted: {outcome.reason}")
            results[slot] = None

        with ThreadPoolExecutor(max_workers=len(self.workers)) as pool:
            futures = [pool.submit(run, slot, c) for slot, c in jobs]
            for f in futures:
                f.result()
        return results, aborted

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if not self.context.ok():
                raise Shutdown
            time.sleep(min(0.05, max(0.0, end - time.monotonic())))

    def _attempt(self, worker: TrialWorker, slot: Slot, attempt: int, job: TrialJob) -> Outcome:
        cfg = self.config
        goal = RunTrial.Goal()
        goal.condition = slot.condition
        goal.horizon = cfg.horizon
        if job.controller is not None:
            goal.controller = controller_to_msg(job.controller, slot.condition, cfg.dt,
                                                self.state_names)
        else:
            goal.policy_path = job.policy_path
            goal.controller.dt = float(cfg.dt)
            if job.noise is not None:
                goal.policy_noise = np.ascontiguousarray(job.noise, dtype=float).ravel().tolist()
        # Every goal names its q0 and targets: the trainer's table (that of the direct loop) is
        # the one that counts, whatever table a worker was started with.
        condition = job.condition if job.condition is not None \
            else self.problem.conditions[slot.condition]
        goal.joint_positions = [float(v) for v in condition.joint_positions]
        goal.target_position = [float(v) for v in condition.target_position]
        goal.target_points = [float(v) for v in
                              self.problem.setup.task.target_points(condition).ravel()]
        goal.reset_first = True
        goal.record_images = bool(self.params["record_images"])
        faults = 0
        try:
            msg, reason, faults = worker.run(goal, self.trial_timeout, self.server_timeout)
        except Shutdown:
            raise
        except Exception as err:  # noqa: BLE001 - a broken worker must not end the session
            msg, reason = None, f"{type(err).__name__}: {err}"
        if msg is None:
            msg = Rollout()
        msg.trial_id = slot.trial_id(attempt)
        msg.condition = slot.condition
        if reason:
            msg.aborted = True
            msg.abort_reason = reason
        outcome = Outcome(slot, attempt, worker.name, msg, faults=faults)
        if not outcome.aborted:
            self._check_rollout(outcome)
        with self.bag_lock:  # recorded before anything uses it
            self.bag.write(EVAL_TOPIC if slot.sample is None else ROLLOUT_TOPIC, outcome.msg)
        return outcome

    def _check_rollout(self, outcome: Outcome) -> None:
        """Decode the rollout into outcome.X, U; a malformed one is marked aborted."""
        cfg, msg = self.config, outcome.msg
        try:
            X, U = rollout_from_msg(msg)
            dX, dU = self.problem.layout.dim, self.problem.layout.action_dim
            if U.shape != (cfg.horizon, dU) or X.shape[1] != dX:
                raise MessageError(f"expected T={cfg.horizon}, dX={dX}, dU={dU}, found "
                                   f"T={U.shape[0]}, dX={X.shape[1]}, dU={U.shape[1]}")
            if len(msg.state_names) and list(msg.state_names) != self.state_names:
                raise MessageError("state layout differs from the trainer's")
        except MessageError as err:
            msg.aborted = True
            msg.abort_reason = f"malformed rollout: {err}"
            return
        outcome.X, outcome.U = X, U

    # ---------------------------------------------------------------- fitting

    _last_fit_s = 0.0
    _last_clusters = 0

    def _call_fitter(self, request: FitIteration.Request) -> FitIteration.Response:
        if not self.fitter.wait_for_service(timeout_sec=self.server_timeout):
            raise TrainingError(f"dynamics fitter {self.fitter.srv_name} not available")
        response = call_with_resend(self.fitter, request, self.fit_timeout, FIT_RESEND_S,
                                    self.context, self.get_logger())
        if response is None:
            raise TrainingError(f"dynamics fitter: no answer within {self.fit_timeout:.0f} s")
        return response

    def _fit(self, i: int, rollouts: list[Rollout]):
        request = FitIteration.Request(iteration=i, conditions=self.config.conditions,
                                       rollouts=[_without_images(r) for r in rollouts],
                                       reset=False, fit=True)
        response = self._call_fitter(request)
        if response.needs_replay:
            self.get_logger().warning(f"fitter: {response.message}; replaying the recording")
            self._replay_fitter(i)
            response = self._call_fitter(request)
        if not response.success:
            raise TrainingError(f"dynamics fit of iteration {i} failed: {response.message}")
        self._last_fit_s = response.fit_s
        self._last_clusters = response.prior_clusters
        return [dynamics_from_msg(d) for d in response.dynamics]

    def _replay_fitter(self, upto: int) -> None:
        """Rebuild the fitter's buffers and prior from the recorded iterations < ``upto``."""
        per_iteration: dict[int, dict[Slot, Rollout]] = {}
        bag_path = self.config.out / BAG_DIR
        with self.bag_lock:
            messages = list(read_messages(bag_path, [ROLLOUT_TOPIC]))
        for _, msg, _ in messages:
            parsed = Slot.parse(msg.trial_id)
            if parsed is None or msg.aborted or parsed[0].iteration >= upto:
                continue
            per_iteration.setdefault(parsed[0].iteration, {}).setdefault(parsed[0], msg)
        missing = [j for j in range(upto) if j not in per_iteration]
        if missing:
            raise TrainingError(f"cannot rebuild the fitter: no recorded rollouts of "
                                f"iterations {missing} in {bag_path}")
        for j in range(upto):
            response = self._call_fitter(FitIteration.Request(
                iteration=j, conditions=self.config.conditions,
                rollouts=[_without_images(r) for r in per_iteration[j].values()],
                reset=(j == 0), fit=False))
            if not response.success:
                raise TrainingError(f"replaying iteration {j} to the fitter: "
                                    f"{response.message}")
        self.get_logger().info(f"fitter rebuilt from {sum(map(len, per_iteration.values()))} "
                               f"recorded rollouts of iterations 0..{upto - 1}")

    # ---------------------------------------------------------------- status

    def _publish_status(self, i: int, phase: str, record: dict | None = None) -> None:
        msg = TrainingStatus()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.iteration = i
        msg.phase = phase
        msg.trials = self.trials
        msg.env_steps = self.env_steps
        if record is not None:
            msg.mean_cost = float(record["mean_cost"])
            msg.final_distances = [float(c["final_distance"]) for c in record["conditions"]]
            msg.success = [bool(c["success"]) for c in record["conditions"]]
        self.status_pub.publish(msg)
        with self.bag_lock:
            self.bag.write(STATUS_TOPIC, msg)


# ------------------------------------------------------------------------------- GPS state

GPS_STATE_FORMAT = "mbpl_ros.gps_trainer_state"


def _without_images(msg: Rollout) -> Rollout:
    """The rollout without its camera frames (the fitter needs states and actions only)."""
    if not len(msg.images):
        return msg
    fields = {name: getattr(msg, name) for name in Rollout.get_fields_and_field_types()
              if name != "images"}
    return Rollout(**fields)


def _rate(evals: list[Evaluation]) -> float | None:
    return float(np.mean([e.success for e in evals])) if evals else None


def main(args: list[str] | None = None) -> None:
    rclpy.init(args=args)  # its SIGINT handler: shutdown, as the parent's death signal asks
    stop_with_parent()
    node = None
    code = 0
    executor = MultiThreadedExecutor(num_threads=4)
    spinner = None
    try:
        node = GpsTrainer()
        executor.add_node(node)
        spinner = threading.Thread(target=executor.spin, name="ros-spin", daemon=True)
        spinner.start()
        node.run()
    except (KeyboardInterrupt, Shutdown, rclpy.executors.ExternalShutdownException):
        code = 130
    except (TrainingError, ValueError, OSError) as err:
        if node is not None:
            node.get_logger().fatal(str(err))
        else:
            print(f"gps_trainer: {err}", flush=True)
        code = 1
    finally:
        # Stop spinning and join the spin thread before anything is destroyed under it.
        executor.shutdown(timeout_sec=5.0)
        if spinner is not None:
            spinner.join(timeout=5.0)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    if code:
        raise SystemExit(code)


if __name__ == "__main__":
    main()
