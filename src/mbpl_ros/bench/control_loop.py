"""`mbpl bench control-loop`: the controller executor's 1 kHz loop next to a bare Python
absolute-deadline loop, on the same machine load, plus the state-to-command latency.

What runs (processes over DDS, this machine):
  1. a sim_bridge in real-time mode (physics paced at 1 kHz, a joint state every physics step) and
     a state_estimator (with condition 0's target, so it computes the full x) - kept running for
     both measurements;
     and a probe process that records the DDS source timestamp of every joint state (also kept
     running: both loops see bridge + estimator + probe);
  2. the controller_executor as its own process in hold mode (as deployed: its loop thread, its
     EventsExecutor thread). After ``--seconds`` s of measurement (after a warm-up) it is
     stopped with SIGINT and writes its loop statistics (``stats_file``);
  3. then, one after the other (not concurrently, so they do not compete for the 2 cores), a bare
     DeadlineLoop with a trivial tick runs for ``--seconds`` s in a thread of this process (no
     ROS node left in it), asking for the same SCHED_FIFO priority as the executor's loop.

Figures:
  * executor / bare: lateness of tick starts vs their absolute deadlines (µs) over the last
    ``--seconds`` s of each loop; ``missed`` = ticks late by more than a period plus deadlines
    skipped (for the executor: skipped since its loop started); ``cpu_frac``: CPU time of the loop
    thread / wall time over the window (``process_cpu_frac``: the whole executor process, ROS
    thread and DDS threads included).
  * state_to_command_us: for each joint state the executor used, from the bridge publishing it
    (its DDS source timestamp, read by the probe) to the return of
    ``publish`` of the first command the executor computed from the ArmState derived from it
    (recorded by the executor with time.time()): the bridge-to-estimator hop, the estimator's
    work, the estimator-to-executor hop, waiting for the next 1 kHz tick (0-1 ms), the control
    step and the publish. Matched by the joint state's header stamp (sim time, unique per
    physics step). Both times are this machine's wall clock, so no cross-machine sync is
    involved; a subscriber that lags only drops samples, it never biases them.
Also saves a PNG (latency histogram and lateness percentiles) and prints its path.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from mbpl_ros.realtime import DeadlineLoop, try_realtime_priority

LOOP_KEYS = ("ticks", "missed", "p50_us", "p99_us", "p999_us", "max_us")


def _start(module: str, params: dict, env: dict, log: Path) -> subprocess.Popen:
    args = [sys.executable, "-m", module, "--ros-args"]
    for key, value in params.items():
        value = str(value).lower() if isinstance(value, bool) else value
        args += ["-p", f"{key}:={value}"]
    with open(log, "ab") as out:
        return subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _bare_loop(seconds: float, priority: int) -> tuple[dict, bool]:
    """A DeadlineLoop with a trivial tick in its own thread, as the executor runs its loop."""
    loop = DeadlineLoop(0.001, history=max(1, round(seconds * 1000)))
    stop = threading.Event()
    granted = []

    def body() -> None:
        granted.append(priority > 0 and try_realtime_priority(priority))
        loop.run(lambda i: True, stop, max_ticks=round(seconds * 1000))

    thread = threading.Thread(target=body, name="bare_loop")
    thread.start()
    thread.join()
    stats = loop.stats().as_dict()
    return {k: stats[k] for k in LOOP_KEYS}, bool(granted and granted[0])


def _window_cpu(cpu_log: list, t0: float, t1: float) -> tuple[float, float]:
    """(loop-thread, process) CPU fraction between the log entries nearest inside [t0, t1]."""
    inside = [e for e in cpu_log if t0 <= e[0] <= t1 + 0.5]
    if len(inside) < 2:
        inside = cpu_log[-2:]
    if len(inside) < 2:
        return float("nan"), float("nan")
    (w0, th0, p0), (w1, th1, p1) = inside[0], inside[-1]
    return (th1 - th0) / (w1 - w0), (p1 - p0) / (w1 - w0)


def _probe(path: Path) -> None:
    """Probe process: record each joint state's header stamp (ns) and its DDS source timestamp
    (the bridge's publish time, wall clock, s) until SIGINT/SIGTERM, then write them to ``path``
    (JSON)."""
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rclpy.signals import SignalHandlerOptions
    from sensor_msgs.msg import JointState

    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    node = rclpy.create_node("bench_control_loop_probe")
    published: dict[int, float] = {}

    def on_joint_state(msg: JointState, info) -> None:
        # Exact however late this Python subscriber gets to the message.
        published[msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec] = \
            info["source_timestamp"] * 1e-9

    node.create_subscription(JointState, "joint_states", on_joint_state,
                             QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE))
    # (the EventsExecutor cannot pass MessageInfo to a callback: SystemError)
    spinner = rclpy.executors.SingleThreadedExecutor()
    spinner.add_node(node)
    while not stop.is_set():
        spinner.spin_once(timeout_sec=0.05)
    node.destroy_node()
    rclpy.try_shutdown()
    path.write_text(json.dumps({"stamp_ns": list(published), "published": list(
        published.values())}))


def _measure_executor(seconds: float, warmup: float, env: dict, workdir: Path,
                      executor_params: dict) -> tuple[dict, dict]:
    """Run the executor process in hold mode for warm-up + ``seconds``; returns its report and
    the measurement window (monotonic and wall clock)."""
    import rclpy
    from mbpl_interfaces.msg import ExecutorStatus

    stats_file = workdir / "executor_stats.json"
    params = {"mode": "realtime", "initial_mode": "hold", "stats_file": str(stats_file),
              "stats_window_s": seconds, **executor_params}
    executor = _start("mbpl_ros.nodes.controller_executor", params, env,
                      workdir / "controller_executor.log")
    context = rclpy.context.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("bench_control_loop", context=context)
    statuses: list = []
    node.create_subscription(ExecutorStatus, "/controller_executor/status", statuses.append, 10)
    spinner = rclpy.executors.SingleThreadedExecutor(context=context)
    spinner.add_node(node)

    def wait(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            spinner.spin_once(timeout_sec=0.05)
            if executor.poll() is not None:
                raise RuntimeError(f"the executor exited; see "
                                   f"{workdir / 'controller_executor.log'}")

    try:
        deadline = time.monotonic() + 120
        while not (statuses and statuses[-1].mode == "hold" and statuses[-1].ticks > 1000):
            wait(0.1)
            if time.monotonic() > deadline:
                raise RuntimeError("the executor did not start its loop; see "
                                   f"{workdir / 'controller_executor.log'}")
        wait(warmup)
        t0, wall0 = time.monotonic(), time.time()
        wait(seconds)
        t1, wall1 = time.monotonic(), time.time()
    finally:
        spinner.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
        _stop(executor)
    if not stats_file.is_file():
        raise RuntimeError(f"the executor wrote no statistics; see "
                           f"{workdir / 'controller_executor.log'}")
    report = json.loads(stats_file.read_text())
    return report, {"t0": t0, "t1": t1, "wall0": wall0, "wall1": wall1}


def _latencies(report: dict, window: dict, probe_file: Path) -> np.ndarray:
    """State-to-command latencies (s) of the states the executor used inside the window."""
    probe = json.loads(probe_file.read_text())
    published = dict(zip(probe["stamp_ns"], probe["published"], strict=True))
    stamps = np.array(report["command_state_stamp_ns"], dtype=np.int64)
    times = np.array(report["command_time"])
    keep = (times >= window["wall0"]) & (times <= window["wall1"])
    return np.array([t - published[s] for t, s in zip(times[keep], stamps[keep].tolist(),
                                                       strict=True) if s in published])


def _plot(path: Path, latency_us: np.ndarray, executor: dict, bare: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    if latency_us.size:
        positive = np.maximum(latency_us, 1.0)
        bins = np.logspace(np.log10(positive.min()), np.log10(positive.max()) + 1e-9, 60)
        left.hist(positive, bins=bins, color="tab:blue")
        left.set_xscale("log")
        for q, style in ((50, "--"), (99, ":")):
            value = np.percentile(latency_us, q)
            left.axvline(value, color="k", linestyle=style, label=f"p{q} {value:.0f} µs")
        left.legend()
    left.set_xlabel("joint state published by the bridge -> command published, µs")
    left.set_ylabel("count")
    left.set_title("state to command latency")
    labels = ["p50_us", "p99_us", "p999_us", "max_us"]
    x = np.arange(len(labels))
    right.bar(x - 0.2, [executor[k] for k in labels], 0.4, label="executor loop")
    right.bar(x + 0.2, [bare[k] for k in labels], 0.4, label="bare deadline loop")
    right.set_xticks(x, [k.replace("_us", "") for k in labels])
    right.set_yscale("log")
    right.set_ylabel("tick lateness, µs")
    right.set_title("1 kHz loop lateness (same load, one after the other)")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _parse_params(items: list[str]) -> dict:
    params = {}
    for item in items:
        key, sep, value = item.partition(":=")
        if not sep:
            raise SystemExit(f"--executor-param: expected key:=value, found {item!r}")
        params[key] = value
    return params


def run(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="mbpl bench control-loop", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="per measured loop")
    parser.add_argument("--warmup", type=float, default=2.0, help="executor warm-up, s")
    parser.add_argument("--backend", choices=["mujoco", "pybullet"], default="mujoco")
    parser.add_argument("--priority", type=int, default=80,
                        help="SCHED_FIFO priority asked for both loops (0: none)")
    parser.add_argument("--estimator-priority", type=int, default=70,
                        help="SCHED_FIFO priority of the estimator's thread (0: none)")
    parser.add_argument("--png", type=Path, default=Path("control_loop_latency.png"))
    parser.add_argument("--executor-param", action="append", default=[],
                        metavar="KEY:=VALUE", help="extra controller_executor parameter")
    args = parser.parse_args(argv or [])
    if args.seconds <= 0:
        raise SystemExit(f"--seconds: expected > 0, found {args.seconds}")

    env = dict(os.environ)
    env.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 100)))
    env.setdefault("MUJOCO_GL", "egl")
    os.environ["ROS_DOMAIN_ID"] = env["ROS_DOMAIN_ID"]
    workdir = Path(tempfile.mkdtemp(prefix="mbpl_bench_control_loop_"))
    executor_params = {"realtime_priority": args.priority, **_parse_params(args.executor_param)}
    print(f"control-loop bench: bridge (realtime, {args.backend}) + estimator + executor "
          f"(hold), {args.seconds:g} s per loop, ROS_DOMAIN_ID {env['ROS_DOMAIN_ID']}, "
          f"logs in {workdir}")
    bridge = _start("mbpl_ros.nodes.sim_bridge", {"mode": "realtime", "backend": args.backend},
                    env, workdir / "sim_bridge.log")
    estimator = _start("mbpl_ros.nodes.state_estimator",
                       {"initial_target_condition": 0,
                        "ros_thread_priority": args.estimator_priority}, env,
                       workdir / "state_estimator.log")
    probe_file = workdir / "joint_states_published.json"
    with open(workdir / "probe.log", "ab") as out:
        probe = subprocess.Popen([sys.executable, "-m", "mbpl_ros.bench.control_loop", "--probe",
                                  str(probe_file)], env=env, stdout=out,
                                 stderr=subprocess.STDOUT, start_new_session=True)
    try:
        report, window = _measure_executor(args.seconds, args.warmup, env, workdir,
                                           executor_params)
        bare, bare_fifo = _bare_loop(args.seconds, args.priority)
    finally:
        for proc in (probe, estimator, bridge):
            _stop(proc)
    latency = _latencies(report, window, probe_file)

    lateness = report["lateness"]
    loop_cpu, process_cpu = _window_cpu(report["cpu_log"], window["t0"], window["t1"])
    executor = {k: lateness[k] for k in LOOP_KEYS}
    executor["cpu_frac"] = loop_cpu
    latency_us = latency * 1e6
    p50, p99 = (np.percentile(latency_us, [50, 99]) if latency_us.size
                else (float("nan"), float("nan")))
    result = {
        "executor": executor,
        "bare": bare,
        "state_to_command_us": {"p50": float(p50), "p99": float(p99)},
        "executor_process_cpu_frac": process_cpu,
        "sched_fifo": {"executor": report["sched_fifo"], "bare": bare_fifo},
        "state_to_command_samples": int(latency_us.size),
    }
    for name, stats in (("executor", executor), ("bare", bare)):
        print(f"{name:>8}: {stats['ticks']} ticks, {stats['missed']} missed, lateness p50 "
              f"{stats['p50_us']:.0f} µs, p99 {stats['p99_us']:.0f} µs, p99.9 "
              f"{stats['p999_us']:.0f} µs, max {stats['max_us']:.0f} µs")
    print(f"executor: loop thread {loop_cpu:.0%} of a core, whole process {process_cpu:.0%}; "
          f"SCHED_FIFO executor {report['sched_fifo']}, bare {bare_fifo}")
    print(f"state -> command: p50 {p50:.0f} µs, p99 {p99:.0f} µs over {latency_us.size} states "
          "the executor used (joint state published by the bridge -> command published)")
    ratio = executor["p99_us"] / bare["p99_us"] if bare["p99_us"] > 0 else float("inf")
    targets = [
        ("p99 lateness <= 1.5x bare or <= 100 µs",
         executor["p99_us"] <= 100 or ratio <= 1.5, f"{ratio:.2f}x"),
        ("missed <= 1.5x bare", executor["missed"] <= 1.5 * max(bare["missed"], 1),
         f"{executor['missed']} vs {bare['missed']}"),
        ("loop CPU <= 30% of a core", loop_cpu <= 0.30, f"{loop_cpu:.0%}"),
    ]
    for text, met, value in targets:
        print(f"target {text}: {'met' if met else 'MISSED'} ({value})")
    _plot(args.png, latency_us, executor, bare)
    print(f"latency histogram: {args.png.resolve()}")
    return result


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--probe":
        _probe(Path(sys.argv[2]))
    else:
        raise SystemExit("usage: python -m mbpl_ros.bench.control_loop --probe OUT.json "
                         "(internal); run the bench with `mbpl bench control-loop`")
