"""`mbpl bench control-loop` runs end to end (bridge, estimator, executor, bare loop as
processes) and reports what DESIGN.md section 6 names. Its figures are not judged here: they are
a benchmark's, printed for a person."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from mbpl_ros.bench.control_loop import LOOP_KEYS, run

pytestmark = pytest.mark.ros


def test_control_loop_bench_reports_both_loops_and_the_latency(capsys):
    result = run(["--seconds", "1", "--warmup", "0.5", "--priority", "0",
                  "--estimator-priority", "0"])
    out = capsys.readouterr().out
    assert set(LOOP_KEYS) <= set(result["bare"])
    assert set(LOOP_KEYS) | {"cpu_frac"} <= set(result["executor"])
    for loop in ("executor", "bare"):
        # about one tick per ms of the measured second: the loop ran, at 1 kHz
        assert 900 <= result[loop]["ticks"] <= 1100, result[loop]
        assert 0 <= result[loop]["missed"] <= result[loop]["ticks"]
    assert 0 < result["executor"]["cpu_frac"] < 1
    assert result["state_to_command_samples"] > 100
    assert 0 < result["state_to_command_us"]["p50"] <= result["state_to_command_us"]["p99"]
    assert math.isnan(result["vm_steal_frac"]) or 0 <= result["vm_steal_frac"] < 1
    # every missed deadline is placed in time, in a stall both loops saw or in one of its own
    split = result["missed_split"]
    for loop in ("executor", "bare"):
        assert split[f"{loop}_in_shared"] + split[f"{loop}_own"] == result[loop]["missed"]
        assert 0 <= split[f"{loop}_own_overrun"] <= split[f"{loop}_own"]
    ratio = result["missed_ratio"]
    assert ratio["ratio"] == result["executor"]["missed"] / max(result["bare"]["missed"], 1)
    low, high = ratio["ci95"]
    assert low <= high or (math.isnan(low) and math.isnan(high))
    # read from the executor's process: its loop thread sleeps before most of its 1,000 ticks
    assert result["executor_thread_wakeups_per_s"]["python"] > 300
    # without --png the plots go next to the run's logs
    logs = Path(re.search(r"logs in (\S+)", out).group(1))
    png = Path(re.search(r"latency histogram: (\S+)", out).group(1))
    assert png.parent == logs and png.stat().st_size > 0
    json.dumps(result)  # the last line of the CLI
    assert "target missed <= 1.5x bare" in out
