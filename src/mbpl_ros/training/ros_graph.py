"""LQR-FLM or guided policy search through a graph of ROS 2 node processes (`mbpl train --graph
ros`, `--algorithm lqr-flm | mdgps | badmm`).

Starts, as separate processes talking over DDS, per simulated arm (namespace /arm0, /arm1, ...)
a sim_bridge, a state_estimator and a controller_executor (both ends in lockstep, so a trial runs
as fast as the processes exchange messages), then the dynamics_fitter and the gps_trainer,
which runs the session and writes the run directory (summary.json in the format of
``--graph direct``, training.png, controllers.npz, the rollouts/ MCAP bag; with MDGPS/BADMM also
the GPS fields of :mod:`mbpl_ros.training.gps_loop`, policy.pt, policies/ and policy.png). The
policy files are read by the executors from that path: on several machines, a shared file
system). Every node gets a parameter file (``/**: ros__parameters:``) written to
``<out>/params/``: the defaults of ``config/<node>.yaml`` (if present) updated with this run's
settings. Logs go to ``<out>/logs/<node>.log``.

The parent waits for the trainer, showing progress from its ``training_status`` topic, then
stops every process (SIGINT, then SIGKILL after a grace period). Unless ROS_DOMAIN_ID is set,
the run gets its own domain id so that concurrent runs on one machine do not see each other.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from mbpl_ros.processes import child_environment
from mbpl_ros.training.config import TrainConfig

if TYPE_CHECKING:
    from mbpl_ros.training.gps_loop import GPSSettings

ROOT = Path(__file__).resolve().parents[3]
CONFIG_DIR = ROOT / "config"
SIM_TIMESTEP = 0.001
"""Physics step of the simulators, s (lockstep advances dt / SIM_TIMESTEP steps per command)."""
STOP_GRACE_S = 5.0
LOCKSTEP_TIMEOUT_S = 5.0
"""Executor: abort a lockstep trial when the simulator leaves a command unanswered this long."""


class GraphError(RuntimeError):
    """A node process failed (the message carries the tail of its log)."""


def worker_namespaces(workers: int) -> list[str]:
    return [f"/arm{w}" for w in range(workers)]


GPS_ALGORITHMS = ("mdgps", "badmm")


def check_gps(config: TrainConfig, gps: GPSSettings | None) -> None:
    """Refuse what the ROS graph cannot train (raises GraphError with the reason)."""
    if config.algorithm not in ("lqr-flm", *GPS_ALGORITHMS):
        raise GraphError(f"algorithm: expected lqr-flm, mdgps or badmm, found "
                         f"{config.algorithm!r}")
    if config.algorithm in GPS_ALGORITHMS and gps is not None and gps.policy != "mlp":
        raise GraphError(f"--graph ros --policy {gps.policy}: the ROS graph trains the "
                         "state-based mlp policy only (vision pretraining needs images of random "
                         "arm poses and targets, which the ROS trainer has no simulator for); "
                         "use --graph direct for a visuomotor policy (the controller executor "
                         "can then run its policy.pt in lockstep)")


def gps_parameters(gps: GPSSettings) -> dict:
    """The gps_trainer parameters of GPS settings (see its PARAMETERS)."""
    return {"policy": gps.policy, "test_conditions": gps.test_conditions,
            "test_seed": -1 if gps.test_seed is None else gps.test_seed,
            "sample_on_policy": gps.sample_on_policy, "hidden": [int(h) for h in gps.hidden],
            "policy_steps": gps.policy_steps, "first_policy_steps": gps.first_policy_steps,
            "batch_size": gps.batch_size, "torch_threads": gps.threads or 0}


def node_parameters(config: TrainConfig, namespaces: list[str],
                    gps: GPSSettings | None = None,
                    record_images: bool = False) -> dict[str, dict]:
    """This run's parameters per node (on top of config/<node>.yaml); ``record_images``: every
    trial's rollout carries the camera frame of each policy step (the bridges render one per
    step)."""
    urdf = "" if config.urdf is None else str(Path(config.urdf).resolve())
    ee_link = config.ee_link or ""
    arm = {"urdf": urdf, "ee_link": ee_link, "task": config.task}
    lockstep_steps = max(1, round(config.dt / SIM_TIMESTEP))
    lqr, prior, init = config.lqr, config.lqr.prior, config.initial
    return {
        "sim_bridge": {**arm, "backend": config.backend, "mode": "lockstep",
                       "lockstep_steps": lockstep_steps, "conditions": config.conditions,
                       "seed": config.seed,
                       "camera_rate_hz": 1.0 / float(config.dt) if record_images else 0.0},
        "state_estimator": {**arm, "conditions": config.conditions, "seed": config.seed},
        "controller_executor": {**arm, "mode": "lockstep", "dt": float(config.dt),
                                "conditions": config.conditions, "seed": config.seed,
                                # lockstep waits on messages: no SCHED_FIFO thread competing
                                # with the other processes of the graph for the CPUs
                                "realtime_priority": 0,
                                # a loaded CI machine can stall one exchange for seconds
                                "lockstep_timeout_s": LOCKSTEP_TIMEOUT_S},
        "dynamics_fitter": {
            "max_clusters": prior.max_clusters,
            "min_samples_per_cluster": prior.min_samples_per_cluster,
            "max_samples": prior.max_samples, "strength": float(prior.strength),
            "max_em_iterations": prior.max_em_iterations,
            "em_relative_tol": float(prior.em_relative_tol),
            "covariance_regularization": float(prior.covariance_regularization),
            "use_prior": lqr.use_prior,
            "dynamics_regularization": float(lqr.dynamics_regularization),
            "initial_state_var": float(lqr.initial_state_var),
            "blas_threads": lqr.blas_threads or 0},
        "gps_trainer": {
            **arm, "backend": config.backend, "conditions": config.conditions,
            "samples": config.samples, "iterations": config.iterations,
            "horizon": config.horizon, "dt": float(config.dt), "seed": config.seed,
            "noise_smoothing": float(config.noise_smoothing),
            "out": str(Path(config.out).resolve()), "resume": config.resume,
            "namespaces": list(namespaces), "trial_retries": config.trial_retries,
            "kl_step": float(lqr.kl_step), "min_step_mult": float(lqr.min_step_mult),
            "max_step_mult": float(lqr.max_step_mult), "init_var": float(init.init_var),
            "stiffness": float(init.stiffness), "stiffness_vel": float(init.stiffness_vel),
            "final_weight": float(init.final_weight), "algorithm": config.algorithm,
            "record_images": record_images,
            **(gps_parameters(gps) if gps is not None and config.algorithm in GPS_ALGORITHMS
               else {})},
    }


def write_params_file(path: Path, node: str, overrides: dict) -> Path:
    """``config/<node>.yaml``'s parameters updated with ``overrides``, as a params file."""
    params: dict = {}
    base = CONFIG_DIR / f"{node}.yaml"
    if base.is_file():
        content = yaml.safe_load(base.read_text()) or {}
        params.update(content.get("/**", {}).get("ros__parameters", {}) or {})
    params.update(overrides)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}, sort_keys=False))
    return path


def claim_domain_id(lock_dir: Path | None = None) -> tuple[str, object | None]:
    """A ROS_DOMAIN_ID no other run on this machine holds: random in 1..100 (0 is what an
    unconfigured ROS install uses; Fast DDS maps ids above ~230 to invalid ports), claimed with an
    flock on ``<tmp>/mbpl_ros_domain_<id>.lock`` that lasts while the returned handle is open."""
    lock_dir = Path(lock_dir or tempfile.gettempdir())
    candidates = list(range(1, 101))
    random.SystemRandom().shuffle(candidates)
    for domain in candidates:
        handle = open(lock_dir / f"mbpl_ros_domain_{domain}.lock", "a")  # noqa: SIM115
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        return str(domain), handle
    return str(candidates[0]), None


@dataclass
class NodeProcess:
    name: str
    namespace: str
    process: subprocess.Popen
    log_path: Path

    @property
    def label(self) -> str:
        return f"{self.namespace.strip('/')}/{self.name}".lstrip("/")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Graph:
    """The node processes of one run; a context manager that stops them all on exit."""

    def __init__(self, config: TrainConfig, env: dict | None = None,
                 gps: GPSSettings | None = None, record_images: bool = False) -> None:
        check_gps(config, gps)
        self.config = config
        self.out = Path(config.out)
        self.namespaces = worker_namespaces(config.workers)
        self.parameters = node_parameters(config, self.namespaces, gps, record_images)
        self.env = dict(os.environ if env is None else env)
        self._domain_lock = None
        if not self.env.get("ROS_DOMAIN_ID"):
            self.env["ROS_DOMAIN_ID"], self._domain_lock = claim_domain_id()
        self.env.setdefault("MUJOCO_GL", "egl")
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        self.processes: list[NodeProcess] = []

    def __enter__(self) -> Graph:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def params_file(self, node: str, **overrides) -> Path:
        params = {**self.parameters.get(node, {}), **overrides}
        suffix = "_resume" if overrides.get("resume") else ""
        return write_params_file(self.out / "params" / f"{node}{suffix}.yaml", node, params)

    def start(self, node: str, namespace: str = "", params_file: Path | None = None,
              log_name: str | None = None) -> NodeProcess:
        """``mbpl node <node> --ros-args --params-file ... -r __ns:=<namespace>``."""
        params_file = params_file or self.params_file(node)
        cmd = [sys.executable, "-m", "mbpl_ros.cli", "node", node, "--ros-args",
               "--params-file", str(params_file)]
        if namespace:
            cmd += ["-r", f"__ns:={namespace}"]
        label = log_name or f"{namespace.strip('/')}_{node}".lstrip("_")
        log_path = self.out / "logs" / f"{label}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                    env=child_environment(self.env), start_new_session=True)
        handle = NodeProcess(node, namespace, proc, log_path)
        self.processes.append(handle)
        return handle

    def start_workers(self) -> list[NodeProcess]:
        """Bridge, estimator and executor of every simulated arm."""
        started = []
        for ns in self.namespaces:
            for node in ("sim_bridge", "state_estimator", "controller_executor"):
                started.append(self.start(node, ns))
        return started

    def start_fitter(self) -> NodeProcess:
        return self.start("dynamics_fitter")

    def start_trainer(self, resume: bool | None = None, **overrides) -> NodeProcess:
        resume = self.config.resume if resume is None else resume
        return self.start("gps_trainer",
                          params_file=self.params_file("gps_trainer", resume=resume, **overrides))

    def check_alive(self, exclude: tuple[NodeProcess, ...] = ()) -> None:
        """Raise GraphError if a node (other than ``exclude``) has exited."""
        for p in self.processes:
            if p not in exclude and p.process.poll() is not None:
                raise GraphError(f"node {p.label} exited with code {p.process.returncode}:\n"
                                 f"{p.log_tail()}")

    def stop_process(self, handle: NodeProcess, grace: float = STOP_GRACE_S) -> int:
        """SIGINT, then SIGKILL after ``grace`` s; returns the exit code."""
        proc = handle.process
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
        return proc.returncode

    def stop(self) -> None:
        """Stop every process, the trainer first and the bridges last; all at once."""
        live = [p for p in reversed(self.processes) if p.process.poll() is None]
        for p in live:
            try:
                os.killpg(p.process.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
        end = time.monotonic() + STOP_GRACE_S
        for p in live:
            try:
                p.process.wait(timeout=max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for p in live:
            if p.process.poll() is None:
                try:
                    os.killpg(p.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.process.wait()
        if self._domain_lock is not None:
            self._domain_lock.close()
            self._domain_lock = None


class StatusMonitor:
    """Subscribes to the trainer's training_status in its own rclpy context (a thread) and
    calls ``on_status(msg)`` for each message."""

    def __init__(self, domain_id: str, on_status: Callable) -> None:
        self._on_status = on_status
        self._domain_id = domain_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, name="training-status", daemon=True)
        self._ready = threading.Event()
        self.error: Exception | None = None

    def __enter__(self) -> StatusMonitor:
        self._thread.start()
        self._ready.wait(30)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _spin(self) -> None:
        try:
            import rclpy
            from mbpl_interfaces.msg import TrainingStatus
            from rclpy.executors import SingleThreadedExecutor

            from mbpl_ros.nodes.gps_trainer import STATUS_QOS

            context = rclpy.context.Context()
            rclpy.init(context=context, domain_id=int(self._domain_id),
                       signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
        except Exception as err:  # noqa: BLE001 - progress display is optional
            self.error = err
            self._ready.set()
            return
        try:
            node = rclpy.create_node(f"training_monitor_{os.getpid()}", context=context)
            node.create_subscription(TrainingStatus, "/training_status", self._on_status,
                                     STATUS_QOS)
            executor = SingleThreadedExecutor(context=context)
            executor.add_node(node)
            self._ready.set()
            while not self._stop.is_set():
                executor.spin_once(timeout_sec=0.1)
            executor.shutdown()
            node.destroy_node()
        finally:
            self._ready.set()
            rclpy.shutdown(context=context)


class _Progress:
    """Turns training_status messages into a tqdm bar (or status lines with --quiet)."""

    def __init__(self, config: TrainConfig, start_iteration: int) -> None:
        from tqdm import tqdm

        self.config = config
        self.name = {"lqr-flm": "LQR-FLM"}.get(config.algorithm, config.algorithm.upper())
        self.bar = tqdm(total=config.iterations, initial=start_iteration,
                        desc=f"{self.name} (ros)", unit="it", disable=not config.progress)
        self.lock = threading.Lock()
        self.done: set[int] = set(range(start_iteration))

    def __call__(self, msg) -> None:
        with self.lock:
            if self.config.progress:
                self.bar.set_description(f"{self.name} (ros) it {msg.iteration} {msg.phase}",
                                         refresh=False)
            if msg.phase == "done" and msg.iteration not in self.done:
                self.done.add(msg.iteration)
                successes = sum(bool(s) for s in msg.success)
                if self.config.progress:
                    self.bar.update(1)
                    self.bar.set_postfix(cost=f"{msg.mean_cost:.2f}",
                                         success=f"{successes}/{len(msg.success)}")
                else:
                    print(f"iteration {msg.iteration}: sample cost {msg.mean_cost:.3f}, "
                          f"success {successes}/{len(msg.success)}, {msg.trials} trials",
                          flush=True)
            elif self.config.progress:
                self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def _start_iteration(config: TrainConfig) -> int:
    path = Path(config.out) / "summary.json"
    if config.resume and path.exists():
        try:
            return len(json.loads(path.read_text()).get("iterations", []))
        except ValueError:
            return 0
    return 0


def train(config: TrainConfig, gps: GPSSettings | None = None,
          record_images: bool = False) -> dict:
    """Run the session through the node graph; returns the summary the trainer wrote.

    ``gps``: the policy settings of ``config.algorithm`` mdgps / badmm (None: the defaults);
    ``record_images``: every trial records the camera frame of each policy step (rollouts, bag).

    Raises:
        GraphError: the trainer failed, or another node died before it finished (with the tail
            of that node's log).
    """
    out = Path(config.out)
    check_gps(config, gps)
    out.mkdir(parents=True, exist_ok=True)
    if not config.resume and (out / "rollouts").exists():
        raise GraphError(f"{out} already holds a session: resume it with --resume or choose "
                         "another --out")
    progress = _Progress(config, _start_iteration(config))
    with Graph(config, gps=gps, record_images=record_images) as graph:
        graph.start_workers()
        graph.start_fitter()
        trainer = graph.start_trainer()
        try:
            with StatusMonitor(graph.env["ROS_DOMAIN_ID"], progress):
                while trainer.process.poll() is None:
                    time.sleep(0.2)
                    graph.check_alive(exclude=(trainer,))
        except KeyboardInterrupt:
            print(f"\ninterrupted: stopping the graph; continue with --resume --out {out}",
                  file=sys.stderr, flush=True)
            raise SystemExit(130) from None
        finally:
            progress.close()
        code = trainer.process.returncode
        if code != 0:
            raise GraphError(f"gps_trainer exited with code {code}:\n{trainer.log_tail()}")
    return json.loads((out / "summary.json").read_text())
