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


def test_realtime_dds_variables_name_the_profile_only_where_it_can_apply(monkeypatch):
    from mbpl_ros import realtime

    monkeypatch.setattr(realtime, "realtime_permitted", lambda: True)
    env = {"PATH": "/bin"}
    assert realtime.realtime_dds_variables(env) == {
        "FASTDDS_DEFAULT_PROFILES_FILE": str(realtime.REALTIME_DDS_PROFILE)}
    assert env == {"PATH": "/bin"}  # the caller's mapping is left alone
    own = {"FASTDDS_DEFAULT_PROFILES_FILE": "/etc/site.xml"}
    assert realtime.realtime_dds_variables(own) == {}  # a site's own profile wins
    monkeypatch.setattr(realtime, "realtime_permitted", lambda: False)
    assert realtime.realtime_dds_variables(env) == {}  # Fast DDS would log an error per thread


def test_realtime_dds_profile_runs_both_transports_at_the_executor_loop_priority():
    import xml.etree.ElementTree as ET

    import yaml

    from mbpl_ros.realtime import REALTIME_DDS_PROFILE

    ns = {"dds": "http://www.eprosima.com"}
    root = ET.parse(REALTIME_DDS_PROFILE).getroot()
    transports = {t.findtext("dds:transport_id", namespaces=ns): t for t in
                  root.iterfind("dds:profiles/dds:transport_descriptors/dds:transport_descriptor",
                                ns)}
    assert sorted(t.findtext("dds:type", namespaces=ns) for t in transports.values()) == \
        ["SHM", "UDPv4"]
    params = yaml.safe_load((REALTIME_DDS_PROFILE.parent / "controller_executor.yaml").read_text())
    loop_priority = params["/**"]["ros__parameters"]["realtime_priority"]
    for transport in transports.values():
        threads = transport.find("dds:default_reception_threads", ns)
        assert threads.findtext("dds:scheduling_policy", namespaces=ns) == "1"  # SCHED_FIFO
        assert int(threads.findtext("dds:priority", namespaces=ns)) == loop_priority
    participant = root.find("dds:profiles/dds:participant", ns)
    assert participant.get("is_default_profile") == "true"
    rtps = participant.find("dds:rtps", ns)
    assert rtps.findtext("dds:useBuiltinTransports", namespaces=ns) == "false"
    assert sorted(e.text for e in rtps.iterfind("dds:userTransports/dds:transport_id", ns)) == \
        sorted(transports)


def test_missed_deadlines_are_the_ones_the_stats_count_and_lie_at_the_overrun():
    loop = DeadlineLoop(0.001, history=100)
    overrun_start: list[float] = []

    def tick(i: int) -> bool:
        if i == 10:
            overrun_start.append(time.perf_counter())
            time.sleep(0.0045)
        return True

    loop.run(tick, threading.Event(), max_ticks=30)
    missed = loop.missed_deadlines()
    assert missed.size == loop.stats().missed >= 3
    assert np.all(np.diff(missed) > 0)
    # The lost deadlines lie inside the 4.5 ms the tick overran (one loaded tick elsewhere may
    # add its own; all of the overrun's are there).
    inside = (missed > overrun_start[0]) & (missed < overrun_start[0] + 0.0045)
    assert np.count_nonzero(inside) >= 3
    # they sit on the loop's grid: whole periods apart
    gaps = np.diff(missed[inside]) / 0.001
    np.testing.assert_allclose(gaps, np.round(gaps), atol=1e-6)
    # and were lost to the tick's own work, not to a late wake-up
    assert set(missed[inside]) <= set(loop.overrun_deadlines())


def test_deadlines_lost_to_a_late_start_are_not_counted_as_overruns():
    loop = DeadlineLoop(0.001, history=100)
    first = time.perf_counter() - 0.0055  # the first tick starts 5.5 ms late, as after a stall
    loop.run(lambda i: True, threading.Event(), max_ticks=10, first_deadline=first)
    missed = loop.missed_deadlines()
    lost_to_the_start = missed[missed < first + 0.006]
    assert lost_to_the_start.size >= 5  # the late tick's own deadline and those it skipped
    assert not set(lost_to_the_start) & set(loop.overrun_deadlines())


def test_a_last_tick_after_the_ring_wrapped_keeps_no_older_ticks_skips():
    loop = DeadlineLoop(0.001, history=10)

    def tick(i: int) -> bool:
        if i == 3:
            time.sleep(0.0045)  # skips deadlines; its slot comes round again at tick 13
        return i < 13  # tick 13 ends the run in that slot

    loop.run(tick, threading.Event())
    assert loop.stats().ticks == 10  # ticks 4..13
    # Tick 3's overrun is outside the history now; its skips must not linger in the slot that
    # tick 13 took over: no deadline after the last tick's can have been missed.
    last_deadline = loop._deadline.max()
    assert not (loop.missed_deadlines() > last_deadline).any()
    assert loop.missed_deadlines().size == loop.stats().missed
