"""`mbpl bench control-loop`: the controller executor's 1 kHz loop next to a bare Python
absolute-deadline loop, on the same machine load, plus the state-to-command latency.

What runs (processes over DDS, this machine):
  1. a sim_bridge in real-time mode (physics paced at 1 kHz, a joint state every physics step) and
     a state_estimator (with condition 0's target, so it computes the full x) - kept running for
     both measurements;
     and a probe process that records the DDS source timestamp of every joint state (also kept
     running: both loops see bridge + estimator + probe);
  2. the controller_executor as its own process in hold mode (as deployed: its loop thread takes
     the states and publishes the commands, its EventsExecutor thread serves the rest, and its
     Fast DDS reception threads run at the loop's priority where SCHED_FIFO is permitted:
     ``realtime_dds_variables``); after a warm-up,
  3. at the same time as the executor is measured, a bare DeadlineLoop with a trivial tick in a
     process of its own (no ROS in it), asking for the same SCHED_FIFO priority. Measuring both
     over the same seconds matters on this VM: a bare loop alone misses anywhere from 0.1 % to
     4 % of its deadlines depending on the minute, so loops measured one after the other
     compare the minutes more than the loops. Each loop sees the other's load as well as the
     bridge's, the estimator's and the probe's. When the bare loop ends, the executor is stopped
     with SIGINT and writes its loop statistics (``stats_file``) over the same window.

Figures:
  * executor / bare: lateness of tick starts vs their absolute deadlines (µs) over the last
    ``--seconds`` s of each loop; ``missed`` = ticks late by more than a period plus deadlines
    skipped after an overrunning tick; ``cpu_frac``: CPU time of the loop thread / wall time over
    the window (``process_cpu_frac``: the whole executor process, ROS thread and DDS threads
    included); ``work_p50_us``/``work_p99_us``: how long the executor's tick itself took,
    ``publish_p50_us``/``publish_p99_us``: the command publish inside it.
  * state_to_command_us: for each joint state the executor used, from the bridge publishing it
    (its DDS source timestamp, read by the probe) to the return of
    ``publish`` of the first command the executor computed from the ArmState derived from it
    (recorded by the executor with time.time()): the bridge-to-estimator hop, the estimator's
    work, the estimator-to-executor hop, waiting for the next 1 kHz tick (0-1 ms), the control
    step and the publish. Matched by the joint state's header stamp (sim time, unique per
    physics step). Both times are this machine's wall clock, so no cross-machine sync is
    involved; a subscriber that lags only drops samples, it never biases them.
  * vm_steal_frac: the share of all CPUs' time the hypervisor took (/proc/stat steal) while both
    loops ran: 0.1-10 % on this VM (2026-11-29). Most of the executor's missed ticks were gaps
    of 2-3 ms that began while its loop slept (traced per tick), so its missed count is a few
    dozen such stalls per 30 s, and the ratio to the bare loop's count is noisy.
  * missed_ratio: the executor's missed ticks / max(the bare loop's, 1), with a 95 % bootstrap
    interval from the deadlines each loop missed, counted in paired 1 s blocks
    (``missed_ratio_interval``). Two identical bare loops run side by side failed the 1.5x
    criterion in 4 of 32 comparisons of 30 s (2026-11-30), so one short run's verdict on it
    says little; the interval says whether the run had enough misses to decide.
  * missed_split: the missed deadlines in stalls both loops saw (the machine's) and in stalls
    only one loop saw (its own work, or its own CPU stalled), with the number of such own
    bursts and how many of the own misses followed a tick that had started on time and overran
    (``shared_and_own_misses``; the rest were late wake-ups).
  * executor_thread_wakeups_per_s: how often the executor's threads blocked and were woken
    again, per second of the window, by thread name (``thread_blocks``): the loop sleeps once
    per tick; each wake-up of a Fast DDS thread ("dds.ev" timed events, "dds.shm"/"dds.udp"
    reception) is one more chance for the loop to meet it on a lock or on the other CPU.
Also saves a PNG (latency histogram, lateness percentiles, and when each loop missed its
deadlines) next to the run's logs, or where ``--png`` says, and prints its path.
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
import warnings
from pathlib import Path

import numpy as np
from scipy.stats import DegenerateDataWarning, bootstrap

from mbpl_ros.processes import child_environment, stop_with_parent
from mbpl_ros.realtime import DeadlineLoop, realtime_dds_variables, try_realtime_priority

LOOP_KEYS = ("ticks", "missed", "p50_us", "p99_us", "p999_us", "max_us")


def _start(module: str, params: dict, env: dict, log: Path) -> subprocess.Popen:
    args = [sys.executable, "-m", module, "--ros-args"]
    for key, value in params.items():
        value = str(value).lower() if isinstance(value, bool) else value
        args += ["-p", f"{key}:={value}"]
    with open(log, "ab") as out:
        return subprocess.Popen(args, env=child_environment(env), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _bare_loop(seconds: float, priority: int, out: Path) -> None:
    """Bare-loop process: a DeadlineLoop with a trivial tick for ``seconds`` in its own thread, as
    the executor runs its loop; prints ``started`` when the loop starts, writes its statistics
    (JSON) to ``out``."""
    loop = DeadlineLoop(0.001, history=max(1, round(seconds * 1000)))
    granted = []
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop_with_parent()

    def body() -> None:
        granted.append(priority > 0 and try_realtime_priority(priority))
        print("started", flush=True)
        loop.run(lambda i: True, stop, max_ticks=round(seconds * 1000))

    thread = threading.Thread(target=body, name="bare_loop")
    thread.start()
    thread.join()
    stats = loop.stats().as_dict()
    out.write_text(json.dumps({"stats": {k: stats[k] for k in LOOP_KEYS},
                               "sched_fifo": bool(granted and granted[0]),
                               "missed_at": loop.missed_deadlines().tolist(),
                               "overrun_at": loop.overrun_deadlines().tolist()}))


def _window_cpu(cpu_log: list, t0: float, t1: float) -> tuple[float, float]:
    """(loop-thread, process) CPU fraction between the log entries nearest inside [t0, t1]."""
    inside = [e for e in cpu_log if t0 <= e[0] <= t1 + 0.5]
    if len(inside) < 2:
        inside = cpu_log[-2:]
    if len(inside) < 2:
        return float("nan"), float("nan")
    (w0, th0, p0), (w1, th1, p1) = inside[0], inside[-1]
    return (th1 - th0) / (w1 - w0), (p1 - p0) / (w1 - w0)


def missed_ratio_interval(executor_missed: np.ndarray, bare_missed: np.ndarray, t0: float,
                          t1: float, block_s: float = 1.0, confidence: float = 0.95,
                          seed: int = 0) -> tuple[float, float]:
    """Bootstrap interval of the ratio of two loops' missed deadlines measured side by side.

    The deadlines each loop missed (one clock, s) between ``t0`` and ``t1`` are counted in blocks
    of ``block_s``, and the blocks are resampled in pairs, so that a minute that was noisy for
    both loops stays noisy for both in every resample. The statistic is the bench's own:
    executor misses / max(bare misses, 1). A single run's ratio of two small counts swings
    widely: the stalls come in bursts of several deadlines, and in a quiet minute a handful of
    them decide the count. The interval says whether a run had enough misses to tell the loops
    apart."""
    blocks = int((t1 - t0) // block_s)
    if blocks < 2:
        return float("nan"), float("nan")
    edges = t0 + block_s * np.arange(blocks + 1)
    counts = [np.histogram(times, bins=edges)[0] for times in (executor_missed, bare_missed)]

    def ratio(executor: np.ndarray, bare: np.ndarray, axis: int = -1) -> np.ndarray:
        return executor.sum(axis=axis) / np.maximum(bare.sum(axis=axis), 1)

    with warnings.catch_warnings():  # all blocks alike (e.g. no misses at all): a point
        warnings.simplefilter("ignore", DegenerateDataWarning)
        interval = bootstrap(counts, ratio, paired=True, vectorized=True, method="percentile",
                             confidence_level=confidence, n_resamples=9999,
                             rng=np.random.default_rng(seed)).confidence_interval
    return float(interval.low), float(interval.high)


def _bursts(missed: np.ndarray, gap: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first, last, index of the burst of each miss) of the runs of missed deadlines no more
    than ``gap`` apart."""
    if missed.size == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.int64)
    starts = np.concatenate([[0], np.nonzero(np.diff(missed) > gap)[0] + 1])
    ends = np.concatenate([starts[1:], [missed.size]])
    return missed[starts], missed[ends - 1], np.repeat(np.arange(starts.size), ends - starts)


def shared_and_own_misses(executor_missed: np.ndarray, bare_missed: np.ndarray,
                          executor_overruns: np.ndarray | tuple = (),
                          bare_overruns: np.ndarray | tuple = (), period_s: float = 0.001,
                          tolerance_s: float = 0.003) -> dict:
    """Split two loops' missed deadlines (one clock, s, ascending) into the stalls both saw and
    those only one saw. A burst of missed deadlines (consecutive ones at most 1.5 periods apart)
    is shared when a burst of the other loop lies within ``tolerance_s`` of it. Shared stalls are
    the machine's; a loop's own bursts are its own work or its own CPU's stalls, which is where an
    executor that misses more than a bare loop differs from it. Of each loop's own misses, those
    among its ``*_overruns`` (``DeadlineLoop.overrun_deadlines``) were lost to its tick's work,
    the rest to late wake-ups."""
    missed = [np.asarray(m, dtype=float) for m in (executor_missed, bare_missed)]
    executor, bare = (_bursts(m, 1.5 * period_s) for m in missed)

    def own(mine, theirs) -> np.ndarray:
        shared = np.any((theirs[0][None, :] <= mine[1][:, None] + tolerance_s)
                        & (theirs[1][None, :] >= mine[0][:, None] - tolerance_s), axis=1)
        return ~shared[mine[2]] if mine[2].size else np.zeros(0, dtype=bool)

    split = {}
    for name, times, mine, theirs, overruns in (
            ("executor", missed[0], executor, bare, executor_overruns),
            ("bare", missed[1], bare, executor, bare_overruns)):
        is_own = own(mine, theirs)
        split[f"{name}_in_shared"] = int(np.count_nonzero(~is_own))
        split[f"{name}_own"] = int(np.count_nonzero(is_own))
        split[f"{name}_own_bursts"] = int(np.unique(mine[2][is_own]).size)
        split[f"{name}_own_overrun"] = int(np.count_nonzero(np.isin(times[is_own], overruns)))
    return split


def _cpu_jiffies() -> tuple[int, int] | None:
    """(steal, total) CPU time of all CPUs from /proc/stat, in clock ticks (None: not Linux)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal [guest guest_nice, counted in user/nice]
    return (fields[7], sum(fields[:8])) if len(fields) >= 8 else None


def thread_blocks(pid: int) -> dict[str, int]:
    """How many times the threads of process ``pid`` have blocked so far (voluntary context
    switches, each followed by a wake-up), summed by thread name without its trailing number
    ("dds.shm.7411" -> "dds.shm"). Threads that end while being read are left out."""
    counts: dict[str, int] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            status = (task / "status").read_text()
        except OSError:
            continue
        blocked = int(status.split("\nvoluntary_ctxt_switches:", 1)[1].split()[0])
        kind = name.rstrip("0123456789").rstrip(".") or name
        counts[kind] = counts.get(kind, 0) + blocked
    return counts


def _probe(path: Path) -> None:
    """Probe process: record each joint state's header stamp (ns) and its DDS source timestamp
    (the bridge's publish time, wall clock, s) until SIGINT/SIGTERM, then write them to ``path``
    (JSON). Takes the serialized messages itself every half millisecond instead of spinning an
    executor, so that it loads the machine far less than the loops it helps to measure."""
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rclpy.signals import SignalHandlerOptions
    from sensor_msgs.msg import JointState

    from mbpl_ros.cdr import header_stamp_ns

    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop_with_parent()
    node = rclpy.create_node("bench_control_loop_probe")
    published: dict[int, float] = {}
    sub = node.create_subscription(JointState, "joint_states", lambda _: None,
                                   QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE))
    while not stop.is_set():
        while (taken := sub.handle.take_message(JointState, True)) is not None:
            raw, info = taken
            # Exact however late this subscriber gets to the message.
            published[header_stamp_ns(raw)] = info["source_timestamp"] * 1e-9
        time.sleep(0.0005)
    node.destroy_node()
    rclpy.try_shutdown()
    path.write_text(json.dumps({"stamp_ns": list(published), "published": list(
        published.values())}))


def _measure(seconds: float, warmup: float, priority: int, env: dict, workdir: Path,
             executor_params: dict) -> tuple[dict, dict, dict]:
    """Run the executor process in hold mode; after its warm-up, run the bare loop process for
    ``seconds`` alongside it, then stop the executor. Returns the executor's report, the bare
    loop's and the measurement window (monotonic and wall clock)."""
    import rclpy
    from mbpl_interfaces.msg import ExecutorStatus

    stats_file = workdir / "executor_stats.json"
    params = {"mode": "realtime", "initial_mode": "hold", "stats_file": str(stats_file),
              "stats_window_s": seconds, **executor_params}
    executor_env = {**env, **realtime_dds_variables(env)} if priority > 0 else env
    executor = _start("mbpl_ros.nodes.controller_executor", params, executor_env,
                      workdir / "controller_executor.log")
    log = workdir / "controller_executor.log"

    def check_executor() -> None:
        if executor.poll() is not None:
            raise RuntimeError(f"the executor exited; see {log}")

    bare_file = workdir / "bare_loop.json"
    try:
        context = rclpy.context.Context()
        rclpy.init(context=context)
        node = rclpy.create_node("bench_control_loop", context=context)
        statuses: list = []
        node.create_subscription(ExecutorStatus, "/controller_executor/status", statuses.append,
                                 10)
        spinner = rclpy.executors.SingleThreadedExecutor(context=context)
        spinner.add_node(node)
        try:
            deadline = time.monotonic() + 120
            while not (statuses and statuses[-1].mode == "hold" and statuses[-1].ticks > 1000):
                spinner.spin_once(timeout_sec=0.05)
                check_executor()
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the executor did not start its loop; see {log}")
        finally:  # nothing of ROS left in this process while the loops are measured
            spinner.shutdown()
            node.destroy_node()
            rclpy.shutdown(context=context)
        time.sleep(warmup)
        check_executor()
        bare = subprocess.Popen([sys.executable, "-m", "mbpl_ros.bench.control_loop", "--bare",
                                 str(seconds), str(priority), str(bare_file)],
                                env=child_environment(env), stdout=subprocess.PIPE, text=True,
                                start_new_session=True)
        if bare.stdout.readline().strip() != "started":
            raise RuntimeError("the bare loop process did not start")
        t0, wall0, jiffies0 = time.monotonic(), time.time(), _cpu_jiffies()
        blocks0 = thread_blocks(executor.pid)
        if bare.wait() != 0:
            raise RuntimeError(f"the bare loop process failed (exit {bare.returncode})")
        blocks1 = thread_blocks(executor.pid)
        t1, wall1, jiffies1 = time.monotonic(), time.time(), _cpu_jiffies()
        check_executor()
    finally:
        _stop(executor)
    if not stats_file.is_file():
        raise RuntimeError(f"the executor wrote no statistics; see {log}")
    report = json.loads(stats_file.read_text())
    steal = float("nan")
    if jiffies0 and jiffies1 and jiffies1[1] > jiffies0[1]:
        steal = (jiffies1[0] - jiffies0[0]) / (jiffies1[1] - jiffies0[1])
    return report, json.loads(bare_file.read_text()), {
        "t0": t0, "t1": t1, "wall0": wall0, "wall1": wall1, "steal": steal,
        "wakeups_per_s": {kind: (blocks1[kind] - blocks0.get(kind, 0)) / (t1 - t0)
                          for kind in sorted(blocks1)},
        "dds_profile": executor_env.get("FASTDDS_DEFAULT_PROFILES_FILE")}


def _latencies(report: dict, window: dict, probe_file: Path) -> np.ndarray:
    """State-to-command latencies (s) of the states the executor used inside the window."""
    probe = json.loads(probe_file.read_text())
    published = dict(zip(probe["stamp_ns"], probe["published"], strict=True))
    stamps = np.array(report["command_state_stamp_ns"], dtype=np.int64)
    times = np.array(report["command_time"])
    keep = (times >= window["wall0"]) & (times <= window["wall1"])
    return np.array([t - published[s] for t, s in zip(times[keep], stamps[keep].tolist(),
                                                       strict=True) if s in published])


def _plot(path: Path, latency_us: np.ndarray, executor: dict, bare: dict,
          missed_at: dict[str, np.ndarray], t0: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right, timeline) = plt.subplots(1, 3, figsize=(16, 4))
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
    right.set_title("1 kHz loop lateness (measured side by side)")
    right.legend()
    for name, times in missed_at.items():
        timeline.step(np.concatenate([[0.0], times - t0]), np.arange(times.size + 1),
                      where="post", label=name)
    timeline.set_xlabel("s into the measurement")
    timeline.set_ylabel("missed deadlines, cumulative")
    timeline.set_title("when each loop missed its deadlines")
    timeline.legend()
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
    parser.add_argument("--png", type=Path, default=None,
                        help="where to save the plots (default: the run's log directory)")
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
                                  str(probe_file)], env=child_environment(env), stdout=out,
                                 stderr=subprocess.STDOUT, start_new_session=True)
    try:
        report, bare_report, window = _measure(args.seconds, args.warmup, args.priority, env,
                                               workdir, executor_params)
        bare, bare_fifo = bare_report["stats"], bare_report["sched_fifo"]
    finally:
        for proc in (probe, estimator, bridge):
            _stop(proc)
    latency = _latencies(report, window, probe_file)

    lateness = report["lateness"]
    loop_cpu, process_cpu = _window_cpu(report["cpu_log"], window["t0"], window["t1"])
    executor = {k: lateness[k] for k in LOOP_KEYS}
    executor["cpu_frac"] = loop_cpu
    executor["work_p50_us"], executor["work_p99_us"] = lateness["work_p50_us"], \
        lateness["work_p99_us"]
    executor["publish_p50_us"], executor["publish_p99_us"] = report["publish_us"]["p50"], \
        report["publish_us"]["p99"]
    latency_us = latency * 1e6
    missed_at = {"executor loop": np.asarray(report["missed_at"]),
                 "bare deadline loop": np.asarray(bare_report["missed_at"])}
    ratio_low, ratio_high = missed_ratio_interval(*missed_at.values(), window["t0"],
                                                  window["t1"])
    missed_ratio = executor["missed"] / max(bare["missed"], 1)
    split = shared_and_own_misses(*missed_at.values(), report["overrun_at"],
                                  bare_report["overrun_at"])
    p50, p99 = (np.percentile(latency_us, [50, 99]) if latency_us.size
                else (float("nan"), float("nan")))
    result = {
        "executor": executor,
        "bare": bare,
        "state_to_command_us": {"p50": float(p50), "p99": float(p99)},
        "executor_process_cpu_frac": process_cpu,
        "sched_fifo": {"executor": report["sched_fifo"], "bare": bare_fifo},
        "state_to_command_samples": int(latency_us.size),
        "vm_steal_frac": window["steal"],
        "missed_ratio": {"ratio": missed_ratio, "ci95": [ratio_low, ratio_high],
                         "block_s": 1.0},
        "missed_split": split,
        "executor_dds_profile": window["dds_profile"],
        "executor_thread_wakeups_per_s": window["wakeups_per_s"],
    }
    for name, stats in (("executor", executor), ("bare", bare)):
        print(f"{name:>8}: {stats['ticks']} ticks, {stats['missed']} missed, lateness p50 "
              f"{stats['p50_us']:.0f} µs, p99 {stats['p99_us']:.0f} µs, p99.9 "
              f"{stats['p999_us']:.0f} µs, max {stats['max_us']:.0f} µs"
              + (f"; tick work p50 {stats['work_p50_us']:.0f} µs, p99 {stats['work_p99_us']:.0f} "
                 f"µs, of which the command publish p50 {stats['publish_p50_us']:.0f} µs, p99 "
                 f"{stats['publish_p99_us']:.0f} µs" if "work_p50_us" in stats else ""))
    print(f"executor: loop thread {loop_cpu:.0%} of a core, whole process {process_cpu:.0%}; "
          f"SCHED_FIFO executor {report['sched_fifo']}, bare {bare_fifo}; Fast DDS profile "
          f"{window['dds_profile'] or 'none (default threads)'}")
    print("executor's threads woken per second, by name: " + ", ".join(
        f"{kind} {rate:.0f}" for kind, rate in window["wakeups_per_s"].items() if rate >= 1)
        + " (\"python\": the loop, the ROS thread and the policy loader together)")
    print(f"CPU time taken by the hypervisor (steal) while both loops ran: {window['steal']:.1%} "
          "(it stalls whichever loop's virtual CPU it hits, often for milliseconds)")
    print(f"state -> command: p50 {p50:.0f} µs, p99 {p99:.0f} µs over {latency_us.size} states "
          "the executor used (joint state published by the bridge -> command published)")
    ratio = executor["p99_us"] / bare["p99_us"] if bare["p99_us"] > 0 else float("inf")
    targets = [
        ("p99 lateness <= 1.5x bare or <= 100 µs",
         executor["p99_us"] <= 100 or ratio <= 1.5, f"{ratio:.2f}x"),
        ("missed <= 1.5x bare", missed_ratio <= 1.5,
         f"{executor['missed']} vs {bare['missed']}"),
        ("loop CPU <= 30% of a core", loop_cpu <= 0.30, f"{loop_cpu:.0%}"),
    ]
    for text, met, value in targets:
        print(f"target {text}: {'met' if met else 'MISSED'} ({value})")
    if ratio_high <= 1.5:
        verdict = "the executor misses at most 1.5x the bare loop's, with 95 % confidence"
    elif ratio_low > 1.5:
        verdict = "the executor misses more than 1.5x the bare loop's, with 95 % confidence"
    else:
        verdict = "too few missed deadlines to tell either way; a longer --seconds narrows it"
    print(f"missed deadlines in stalls both loops saw: executor {split['executor_in_shared']}, "
          f"bare {split['bare_in_shared']}; in stalls of one loop only: executor "
          f"{split['executor_own']} (bursts: {split['executor_own_bursts']}; after a tick that "
          f"overran: {split['executor_own_overrun']}), bare {split['bare_own']} (bursts: "
          f"{split['bare_own_bursts']}; overran: {split['bare_own_overrun']})")
    print(f"missed-tick ratio {missed_ratio:.2f}, 95 % interval {ratio_low:.2f}-{ratio_high:.2f} "
          f"(paired 1 s blocks, bootstrap): {verdict}")
    png = args.png or workdir / "control_loop_latency.png"
    _plot(png, latency_us, executor, bare, missed_at, window["t0"])
    print(f"latency histogram: {png.resolve()}")
    return result


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--probe":
        _probe(Path(sys.argv[2]))
    elif len(sys.argv) == 5 and sys.argv[1] == "--bare":
        _bare_loop(float(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]))
    else:
        raise SystemExit("usage: python -m mbpl_ros.bench.control_loop --probe OUT.json | "
                         "--bare SECONDS PRIORITY OUT.json (internal); run the bench with "
                         "`mbpl bench control-loop`")
