"""The missed-tick ratio pooled over several `mbpl bench control-loop` runs, with the bench's own
paired 1 s block bootstrap over the runs' windows laid end to end (fourteenth session: the
README's pooled figures).

    .venv/bin/python docs/experiments/pool_control_loop_runs.py WORKDIR [WORKDIR ...]

Each WORKDIR is a run's "logs in ..." directory (/tmp/mbpl_bench_control_loop_*). Its window is
taken as the executor's statistics window, the last SECONDS before the executor stopped (SECONDS
from the bare loop's tick count): the bench's own window ends tens of ms earlier, so a miss in
those last ms can be counted here and not by the bench.
"""

import json
import sys
from pathlib import Path

import numpy as np

from mbpl_ros.bench.control_loop import missed_ratio_interval

executor_missed, bare_missed, offset = [], [], 0.0
for workdir in map(Path, sys.argv[1:]):
    executor = json.loads((workdir / "executor_stats.json").read_text())
    bare = json.loads((workdir / "bare_loop.json").read_text())
    seconds = bare["stats"]["ticks"] * executor["period_s"]
    end = executor["cpu_log"][-1][0]  # (monotonic, ...) at the loop's last tick
    for pooled, times in ((executor_missed, executor["missed_at"]),
                          (bare_missed, bare["missed_at"])):
        times = np.asarray(times) - (end - seconds)
        pooled.append(times[(times >= 0) & (times < seconds)] + offset)
    offset += seconds
if not executor_missed:
    raise SystemExit(__doc__)
executor_missed, bare_missed = np.concatenate(executor_missed), np.concatenate(bare_missed)
low, high = missed_ratio_interval(executor_missed, bare_missed, 0.0, offset)
print(f"{len(sys.argv) - 1} runs, {offset:.0f} s: executor missed {executor_missed.size}, bare "
      f"loop {bare_missed.size}, ratio {executor_missed.size / max(bare_missed.size, 1):.2f}, "
      f"95 % interval {low:.2f}-{high:.2f}")
