"""The bench's interval for the ratio of two loops' missed deadlines, checked by Monte Carlo on
simulated stall processes whose true ratio is known."""

import numpy as np

from mbpl_ros.bench.control_loop import missed_ratio_interval, shared_and_own_misses


def _stalls(rng: np.random.Generator, seconds: float, rate_hz: float) -> np.ndarray:
    """Missed deadlines of a loop hit by Poisson stalls, each costing a burst of consecutive
    deadlines on a 1 ms grid (geometric, mean 2.5), as a stall of the VM does."""
    starts = rng.uniform(0, seconds, rng.poisson(rate_hz * seconds))
    lengths = rng.geometric(0.4, starts.size)
    return np.sort(np.concatenate([s + 0.001 * np.arange(n) for s, n in
                                   zip(starts, lengths, strict=True)]
                                  or [np.zeros(0)]))


def _run(rng, seconds, shared_hz, own_hz_executor, own_hz_bare):
    """One side-by-side run: stalls both loops see plus stalls of each loop's own."""
    shared = _stalls(rng, seconds, shared_hz)
    executor = np.sort(np.concatenate([shared, _stalls(rng, seconds, own_hz_executor)]))
    bare = np.sort(np.concatenate([shared, _stalls(rng, seconds, own_hz_bare)]))
    return executor, bare


def test_interval_covers_the_true_ratio_about_as_often_as_it_claims():
    rng = np.random.default_rng(7)
    # Stall rates chosen so that a run has ~100 misses; true ratio (1 + 0.6) / (1 + 0.2) = 4 / 3.
    true_ratio = (0.5 + 0.3) / (0.5 + 0.1)
    covered = 0
    runs = 120
    for seed in range(runs):
        executor, bare = _run(rng, 60.0, 0.5, 0.3, 0.1)
        low, high = missed_ratio_interval(executor, bare, 0.0, 60.0, seed=seed)
        assert low <= executor.size / max(bare.size, 1) <= high
        covered += low <= true_ratio <= high
    # 95 % nominal; a percentile bootstrap of 60 blocks runs a little under. Binomial spread of
    # 120 runs at 0.93 is about 0.023, so this fails for an interval that is too narrow or too
    # wide by more than a few percent.
    assert 0.86 <= covered / runs <= 0.985, covered


def test_interval_separates_a_real_difference_only_when_there_are_enough_misses():
    rng = np.random.default_rng(3)
    # Executor misses twice the bare loop's: a short quiet run cannot tell; a long one can.
    short = _run(rng, 30.0, 0.0, 0.2, 0.1)
    low, high = missed_ratio_interval(*short, 0.0, 30.0)
    assert low < 1.5 < high
    long = _run(rng, 600.0, 0.0, 0.2, 0.1)
    low, high = missed_ratio_interval(*long, 0.0, 600.0)
    assert 1.5 < low < 2.0 < high
    # Identical loops (every stall shared) give exactly 1 in every resample.
    same = _stalls(rng, 600.0, 0.3)
    assert missed_ratio_interval(same, same, 0.0, 600.0) == (1.0, 1.0)


def test_interval_needs_two_blocks():
    low, high = missed_ratio_interval(np.array([0.5]), np.array([0.2]), 0.0, 1.5)
    assert np.isnan(low) and np.isnan(high)


def test_stalls_both_loops_saw_are_told_from_each_loops_own():
    ms = 0.001
    shared_stall_executor = 10.0 + ms * np.arange(4)  # both loops, 4 and 3 deadlines
    shared_stall_bare = 10.0005 + ms * np.arange(3)
    executor_own = 20.0 + ms * np.arange(2)  # one burst of 2, then a lone one
    executor_lone = np.array([30.0])
    bare_own = np.array([40.0, 40.001, 40.002, 50.0])  # a burst of 3 and a lone one
    near = np.array([60.0])  # within the tolerance of the bare loop's 60.0025: shared
    split = shared_and_own_misses(
        np.concatenate([shared_stall_executor, executor_own, executor_lone, near]),
        np.concatenate([shared_stall_bare, bare_own, [60.0025]]),
        # overruns: the executor's own burst of 2 and one deadline of the shared stall
        executor_overruns=np.concatenate([executor_own, [10.001]]), bare_overruns=[])
    assert split == {"executor_in_shared": 5, "bare_in_shared": 4, "executor_own": 3,
                     "bare_own": 4, "executor_own_bursts": 2, "bare_own_bursts": 2,
                     "executor_own_overrun": 2, "bare_own_overrun": 0}
    empty = shared_and_own_misses(np.zeros(0), np.array([1.0]))
    assert (empty["bare_own"], empty["executor_own"], empty["bare_in_shared"]) == (1, 0, 0)
    assert empty["bare_own_bursts"] == 1 and empty["executor_own_bursts"] == 0
