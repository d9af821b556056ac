"""The loop building blocks: latest-value slot and absolute-deadline loop accounting."""

import threading
import time

import numpy as np
import pytest

from mbpl_ros.realtime import DeadlineLoop, LatenessStats, LatestValue, phase_locked_start


def test_latest_value_keeps_only_the_newest():
    slot: LatestValue[int] = LatestValue()
    assert slot.read() is None
    slot.write(1, stamp=1.0)
    slot.write(2, stamp=2.0)
    assert slot.read() == (2.0, 2)
    slot.reset()
    assert slot.read() is None


def test_deadline_loop_counts_deadlines_lost_to_an_overrunning_tick():
    loop = DeadlineLoop(0.001, history=100)

    def tick(i: int) -> bool:
        if i == 5:
            time.sleep(0.0035)  # overruns this deadline and at least the next two
        return True

    loop.run(tick, threading.Event(), max_ticks=20)
    stats = loop.stats()
    assert stats.ticks == 20
    assert stats.missed >= 2
    assert stats.max_us < 5_000  # the loop restarted its grid rather than reporting backlog
    # p99 of 20 ticks lies 81 % of the way from the second slowest tick to the slowest
    assert stats.work_p99_us >= 0.81 * 3_500


def test_lateness_stats_percentiles_against_numpy():
    lateness = np.random.default_rng(0).exponential(2e-4, size=1000)
    stats = LatenessStats.from_lateness(lateness, 1e-3, 0.1, work_s=lateness / 2)
    np.testing.assert_allclose(stats.p99_us, np.percentile(lateness, 99) * 1e6)
    np.testing.assert_allclose(stats.work_p50_us, np.median(lateness) / 2 * 1e6)
    assert stats.missed == np.count_nonzero(lateness > 1e-3)


def test_recent_stats_cover_only_the_newest_ticks_across_the_ring_wrap():
    loop = DeadlineLoop(0.001, history=50)

    def tick(i: int) -> bool:
        if i == 60:  # inside the last 10 of 70 ticks, after the ring (50) wrapped
            time.sleep(0.0035)
        elif i == 25:  # still inside the 50-tick history, outside the last 10
            time.sleep(0.0025)
        return True

    loop.run(tick, threading.Event(), max_ticks=70)
    whole, recent = loop.stats(), loop.stats(recent=10)
    assert (whole.ticks, recent.ticks) == (50, 10)
    assert recent.work_p99_us >= 0.9 * 3_500 and recent.missed >= 2
    assert whole.missed >= recent.missed + 1  # the tick 25 overrun is in the whole window only
    assert loop.stats(recent=500).ticks == 50  # more than the history: the whole window


@pytest.mark.parametrize("event", [10.0237, 9.5, 10.00005, 10.0004])
def test_phase_locked_start_puts_the_event_at_its_offset_on_the_grid(event):
    period, offset, now, margin = 0.001, 0.0004, 10.0, 0.0001
    first = phase_locked_start(now, event, period, offset, margin)
    assert now + margin <= first < now + margin + period
    # whole periods from a deadline to the event minus its offset, wherever the event lies
    periods = (event - offset - first) / period
    assert periods == pytest.approx(round(periods), abs=1e-6)
    with pytest.raises(ValueError):
        phase_locked_start(now, event, period, period)


def test_deadline_loop_starts_on_the_given_grid():
    loop = DeadlineLoop(0.001, history=100)
    starts: list[float] = []
    first = time.perf_counter() + 0.0053  # later than the default first deadline (now + 1 ms)

    def tick(i: int) -> bool:
        starts.append(time.perf_counter())
        return True

    loop.run(tick, threading.Event(), max_ticks=5, first_deadline=first)
    # a tick never starts before its deadline (the loop spins until it), whatever the load
    assert all(s >= first + i * 0.001 for i, s in enumerate(starts))
