"""A bare 1 kHz DeadlineLoop at SCHED_FIFO 80 with several spin margins, in alternating rounds:
what the spin before each deadline costs in CPU and buys in lateness (eighth session).

    .venv/bin/python docs/experiments/spin_margin.py SECONDS 100,50,25,0 ROUNDS
"""

import sys
import threading

from mbpl_ros.realtime import DeadlineLoop, try_realtime_priority

seconds = float(sys.argv[1])
margins_us = [float(m) for m in sys.argv[2].split(",")]
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 2


def run(margin_s: float) -> tuple[bool, object]:
    out = {}

    def body() -> None:
        out["fifo"] = try_realtime_priority(80)
        loop = DeadlineLoop(0.001, spin_margin_s=margin_s, history=int(seconds * 1000))
        loop.run(lambda i: True, threading.Event(), max_ticks=int(seconds * 1000))
        out["stats"] = loop.stats()

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    return out["fifo"], out["stats"]


for r in range(rounds):
    for margin in margins_us:
        fifo, s = run(margin * 1e-6)
        print(f"round {r} spin {margin:4.0f} µs (FIFO {fifo}): missed {s.missed:4d}, lateness "
              f"p50 {s.p50_us:6.1f} p99 {s.p99_us:7.1f} p99.9 {s.p999_us:7.1f} max "
              f"{s.max_us:7.0f} µs, CPU {100 * s.cpu_frac:5.1f} % of a core", flush=True)
