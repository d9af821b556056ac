"""Read the per-tick trace of one `mbpl bench control-loop` run made with trace.patch applied
(see README.md here) and print where the missed ticks came from.

    .venv/bin/python docs/experiments/control_loop_trace/analyze.py TRACE_DIR

For the bare loop, the executor and the bridge's physics loop over the bare loop's window: the
ticks that started more than a period late, the deadlines skipped after an overrunning tick, and
the ticks whose own work took more than 0.9 ms ("long ticks"). Then every missed-tick event of
the executor and of the bare loop with the largest lateness of the other two loops within
±5 ms (a stall both loops saw, or one of their own), and each long tick of the executor: the take
and the control step (ms), the context switches of each (v: voluntary, the thread blocked;
i: involuntary, it was preempted), its CPU time over the tick (ms) and the ROS thread's callbacks
that overlapped it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

PERIOD_S = 1e-3
LONG_S = 0.9e-3


def load_loops(trace_dir: Path) -> dict[str, dict[str, np.ndarray]]:
    loops = {}
    for path in trace_dir.glob("loop_*.npz"):
        z = np.load(path)
        argv = " ".join(z["argv"].tolist())
        name = ("bare" if "--bare" in argv else "bridge" if "sim_bridge" in argv
                else "executor" if "controller_executor" in argv else argv)
        count, size = int(z["count"]), z["start"].size
        order = np.arange(max(0, count - size), count) % size  # oldest first
        loops[name] = {key: z[key][order] for key in ("start", "lateness", "work", "skipped")}
    return loops


def window(loop: dict[str, np.ndarray], t0: float, t1: float) -> dict[str, np.ndarray]:
    inside = (loop["start"] >= t0) & (loop["start"] <= t1)
    return {key: value[inside] for key, value in loop.items()}


def max_lateness_near(loop: dict[str, np.ndarray], t: float) -> float:
    near = np.abs(loop["start"] - t) < 5e-3
    return float(loop["lateness"][near].max() * 1e3) if near.any() else float("nan")


def main(trace_dir: Path) -> None:
    loops = load_loops(trace_dir)
    t0, t1 = loops["bare"]["start"][0], loops["bare"]["start"][-1]
    loops = {name: window(loop, t0, t1) for name, loop in loops.items()}
    for name, loop in loops.items():
        print(f"{name}: {loop['start'].size} ticks, {np.count_nonzero(loop['lateness'] > PERIOD_S)}"
              f" started > 1 period late, {int(loop['skipped'].sum())} deadlines skipped, "
              f"{np.count_nonzero(loop['work'] > LONG_S)} long ticks")
    for name, other in (("executor", "bare"), ("bare", "executor")):
        loop = loops[name]
        print(f"--- {name}: missed-tick events (s into the window; lateness and work ms; "
              f"missed; the largest lateness of the {other} loop and of the bridge within ±5 ms)")
        for k in np.nonzero((loop["lateness"] > PERIOD_S) | (loop["skipped"] > 0))[0]:
            t = loop["start"][k]
            missed = int(loop["lateness"][k] > PERIOD_S) + int(loop["skipped"][k])
            print(f"{t - t0:8.3f}  late {loop['lateness'][k] * 1e3:5.2f}  work "
                  f"{loop['work'][k] * 1e3:5.2f}  missed {missed}  {other} "
                  f"{max_lateness_near(loops[other], t):5.2f}  bridge "
                  f"{max_lateness_near(loops['bridge'], t):5.2f}")

    files = list(trace_dir.glob("ticks_*.npz"))
    if not files:
        return
    z = np.load(files[0])
    ticks, callbacks = z["ticks"], z["callbacks"].reshape(-1, 3)
    ticks = ticks[(ticks[:, 0] >= t0) & (ticks[:, 0] <= t1)]
    long = ticks[ticks[:, 2] - ticks[:, 0] > LONG_S]
    print("--- executor: long ticks (take ms v/i, control step and publish ms v/i, CPU ms, "
          "overlapping ROS callbacks: start relative to the tick and length, ms)")
    for a, b, c, take_v, take_i, step_v, step_i, cpu in long:
        overlap = [(round((s - a) * 1e3, 2), round((e - s) * 1e3, 2))
                   for s, e, _ in callbacks if e > a and s < c]
        print(f"{a - t0:8.3f}  take {(b - a) * 1e3:5.2f} v{take_v:.0f}/i{take_i:.0f}  step "
              f"{(c - b) * 1e3:5.2f} v{step_v:.0f}/i{step_i:.0f}  CPU {cpu * 1e3:5.2f}  {overlap}")
    blocked = np.count_nonzero(long[:, 3] + long[:, 5] > 0)
    preempted = np.count_nonzero(long[:, 4] + long[:, 6] > 0)
    busy = np.count_nonzero(long[:, 7] > 0.8 * (long[:, 2] - long[:, 0]))
    print(f"long ticks: {len(long)}; blocked (a voluntary switch) {blocked}, preempted "
          f"{preempted}, CPU time over 80 % of the tick's length {busy}")
    for name, column in (("take", ticks[:, 1] - ticks[:, 0]), ("step", ticks[:, 2] - ticks[:, 1])):
        p50, p99, top = np.percentile(column * 1e6, [50, 99, 100])
        print(f"{name}: p50 {p50:.0f} µs, p99 {p99:.0f} µs, max {top:.0f} µs")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]))
