"""Real-time building blocks for the 1 kHz loops: a latest-value slot and an absolute-deadline loop.

No rclpy here: the loops publish through callables, so the same code runs in the sim bridge, the
controller executor and the benchmarks, and is measured the same way everywhere.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np

T = TypeVar("T")


class LatestValue(Generic[T]):
    """One slot that callbacks overwrite and a real-time loop reads.

    Writing and reading are single reference assignments of an immutable ``(stamp, value)`` tuple,
    atomic under the interpreter, so the loop never waits on a lock that a callback holds.
    ``read()`` returns ``None`` until the first value ("no value yet" is explicit).
    """

    def __init__(self) -> None:
        self._slot: tuple[float, T] | None = None

    def write(self, value: T, stamp: float | None = None) -> None:
        """Store ``value`` with a monotonic ``stamp`` (s; now if omitted)."""
        self._slot = (time.monotonic() if stamp is None else stamp, value)

    def read(self) -> tuple[float, T] | None:
        """The latest ``(stamp, value)`` or ``None`` if nothing was written since the last reset."""
        return self._slot

    def reset(self) -> None:
        """Forget the stored value (on activate/deactivate, as ros2_controllers does)."""
        self._slot = None


@dataclass(frozen=True)
class LatenessStats:
    """How late the ticks of a deadline loop started, µs, and what it cost.

    Attributes:
        ticks: ticks run.
        missed: ticks that started more than one period after their deadline.
        p50_us, p99_us, p999_us, max_us: lateness percentiles and maximum, µs.
        cpu_frac: process CPU time of the loop thread divided by wall time (fraction of one core).
        work_p50_us, work_p99_us: how long the tick's own work took (tick start to return), µs.
    """

    ticks: int
    missed: int
    p50_us: float
    p99_us: float
    p999_us: float
    max_us: float
    cpu_frac: float
    work_p50_us: float = float("nan")
    work_p99_us: float = float("nan")

    @classmethod
    def from_lateness(
        cls, lateness_s: np.ndarray, period_s: float, cpu_frac: float,
        work_s: np.ndarray | None = None,
    ) -> LatenessStats:
        if lateness_s.size == 0:
            return cls(0, 0, float("nan"), float("nan"), float("nan"), float("nan"), cpu_frac)
        us = lateness_s * 1e6
        p50, p99, p999 = np.percentile(us, [50, 99, 99.9])
        work_p50, work_p99 = (np.percentile(work_s * 1e6, [50, 99]) if work_s is not None
                              and work_s.size else (float("nan"), float("nan")))
        return cls(
            ticks=int(us.size),
            missed=int(np.count_nonzero(lateness_s > period_s)),
            p50_us=float(p50),
            p99_us=float(p99),
            p999_us=float(p999),
            max_us=float(us.max()),
            cpu_frac=cpu_frac,
            work_p50_us=float(work_p50),
            work_p99_us=float(work_p99),
        )

    def as_dict(self) -> dict[str, float | int]:
        return dict(self.__dict__)


def try_realtime_priority(priority: int = 80) -> bool:
    """Ask for SCHED_FIFO for the calling thread; return whether it was granted."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except (PermissionError, OSError, AttributeError):
        return False
    return True


REALTIME_DDS_PROFILE = Path(__file__).resolve().parents[2] / "config" / "fastdds_realtime.xml"
"""Fast DDS profile that runs a process's reception and timed-events threads at SCHED_FIFO 80 and
keeps its writers from waking the timed-events thread at every sample (why: the file)."""


def realtime_permitted() -> bool:
    """Whether this process may put threads under SCHED_FIFO (tries on the calling thread and
    puts its policy back)."""
    policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
    if not try_realtime_priority(1):
        return False
    os.sched_setscheduler(0, policy, param)
    return True


def realtime_dds_variables(env: Mapping[str, str]) -> dict[str, str]:
    """The variables to add to ``env`` for a real-time controller_executor process:
    :data:`REALTIME_DDS_PROFILE` as Fast DDS's default profile, unless ``env`` names a profile
    file of its own or SCHED_FIFO is not permitted here (Fast DDS would then log an error for
    every reception thread)."""
    if "FASTDDS_DEFAULT_PROFILES_FILE" in env or not realtime_permitted():
        return {}
    return {"FASTDDS_DEFAULT_PROFILES_FILE": str(REALTIME_DDS_PROFILE)}


def phase_locked_start(now: float, event: float, period: float, offset: float,
                       margin: float = 0.0) -> float:
    """The first deadline after ``now + margin`` on the grid that has a periodic ``event`` (at
    time ``event``, repeating every whole number of periods) ``offset`` s after one of its
    deadlines, 0 <= offset < period. All times on one clock, s."""
    if not (period > 0 and 0 <= offset < period):
        raise ValueError(f"expected period > 0 and 0 <= offset < period, found {period}, {offset}")
    return now + margin + (event - offset - now - margin) % period


class DeadlineLoop:
    """Runs ``tick(i)`` every ``period_s`` on absolute deadlines in the calling thread.

    Sleeps until ``spin_margin_s`` before each deadline, then spins, which on this VM gives tens
    of µs of lateness where a plain sleep gives hundreds. Deadlines stay on the original grid; a
    loop that fell more than a period behind skips the deadlines it lost (counted as missed)
    rather than bursting through them with stale inputs.
    """

    def __init__(self, period_s: float, spin_margin_s: float = 100e-6, history: int = 600_000):
        if period_s <= 0:
            raise ValueError(f"period_s: expected > 0, found {period_s}")
        self.period_s = period_s
        self.spin_margin_s = spin_margin_s
        self._lateness = np.zeros(history)
        self._deadline = np.zeros(history)
        self._work = np.zeros(history)
        self._skipped_after = np.zeros(history, dtype=np.int64)
        self._count = 0
        self._cpu_s = 0.0
        self._wall_s = 0.0

    def run(self, tick: Callable[[int], bool], stop: threading.Event, max_ticks: int | None = None,
            first_deadline: float | None = None):
        """Call ``tick(i)`` until it returns False, ``stop`` is set or ``max_ticks`` ran; the
        deadlines are ``first_deadline`` (``time.perf_counter`` s; None: one period from now)
        plus whole periods."""
        period = self.period_s
        perf = time.perf_counter
        cpu0, wall0 = time.thread_time(), perf()
        deadline = wall0 + period if first_deadline is None else first_deadline
        i = 0
        while not stop.is_set() and (max_ticks is None or i < max_ticks):
            remaining = deadline - perf() - self.spin_margin_s
            if remaining > 0:
                time.sleep(remaining)
            while perf() < deadline:
                pass
            now = perf()
            slot = self._count % self._lateness.size
            self._lateness[slot] = now - deadline
            self._deadline[slot] = deadline
            self._skipped_after[slot] = 0  # the slot may hold an older tick's (ring wrapped)
            self._count += 1
            keep_going = tick(i)
            self._work[slot] = perf() - now
            if not keep_going:
                break
            i += 1
            deadline += period
            # A loop that fell more than one period behind restarts its grid at now instead of
            # bursting through the backlog; each skipped deadline counts as missed.
            if perf() > deadline + period:
                skipped = int((perf() - deadline) // period)
                deadline += skipped * period
                self._skipped_after[slot] = skipped
        self._cpu_s += time.thread_time() - cpu0
        self._wall_s += perf() - wall0

    def _window(self, recent: int | None) -> np.ndarray | slice:
        n = min(self._count, self._lateness.size)
        if recent is not None and recent < n:
            return np.arange(self._count - recent, self._count) % self._lateness.size
        return slice(0, n)

    def missed_deadlines(self, recent: int | None = None) -> np.ndarray:
        """The deadlines (``time.perf_counter`` s, ascending) that :meth:`stats` counts as
        missed over the same window: those of ticks that started more than a period late, and
        those skipped after an overrunning tick. Comparing when two loops missed, rather than
        how often, tells a stall they shared from one that hit only one of them."""
        late, skipped_after_late, overrun = self._missed(recent)
        return np.sort(np.concatenate([late, skipped_after_late, overrun]))

    def overrun_deadlines(self, recent: int | None = None) -> np.ndarray:
        """The missed deadlines (as :meth:`missed_deadlines`) lost to a tick's own work: skipped
        after a tick that had started on time (less than a period late) and ran past the next
        deadline but one. The rest were lost to a late wake-up: a stall, or the CPU busy with
        something else."""
        return np.sort(self._missed(recent)[2])

    def _missed(self, recent: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(late ticks' deadlines, deadlines skipped after a late tick, skipped after an on-time
        tick), s."""
        window = self._window(recent)
        deadlines = self._deadline[window]
        started_late = self._lateness[window] > self.period_s
        skipped_after = self._skipped_after[window]

        def skipped(ticks: np.ndarray) -> np.ndarray:
            # Tick at deadline d then skipping k: deadlines d + period, ..., d + k * period.
            counts = np.where(ticks, skipped_after, 0)
            offsets = np.concatenate([np.arange(1, k + 1) for k in counts[counts > 0]]
                                     or [np.zeros(0)])
            return np.repeat(deadlines, counts) + offsets * self.period_s

        return deadlines[started_late], skipped(started_late), skipped(~started_late)

    def stats(self, recent: int | None = None) -> LatenessStats:
        """Statistics over the history window, or over its ``recent`` newest ticks only (cheap
        enough to compute while the loop runs: a percentile over a minute of ticks holds the
        interpreter for milliseconds, which a loop thread of the same process waits out)."""
        window = self._window(recent)
        cpu_frac = self._cpu_s / self._wall_s if self._wall_s > 0 else float("nan")
        stats = LatenessStats.from_lateness(self._lateness[window], self.period_s, cpu_frac,
                                            self._work[window])
        # Deadlines skipped after the ticks in the window count as missed.
        return replace(stats, missed=stats.missed + int(self._skipped_after[window].sum()))
