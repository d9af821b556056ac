"""State-staleness watchdog: how old the newest state may be before the loop stops trusting it.

Levels, by the age of the newest state (s):

* ``NO_STATE``   nothing received yet: zero torque.
* ``FRESH``      age <= hold_after_s: the modes run normally.
* ``HOLD_LAST``  hold_after_s < age <= stop_after_s: repeat the last command sent (a short
  dropout on the network or a late callback should not make the arm twitch).
* ``STOPPED``    age > stop_after_s: zero torque; a running trial or reset is aborted.

The caller decides what "age" means: in real time it is the wall-clock time since the newest state
arrived; in lockstep it is the time since a command was sent that has not been answered by a new
state yet (a lockstep simulator only moves when commanded, so silence without a pending command is
normal).
"""

from __future__ import annotations

import enum


class Freshness(enum.Enum):
    NO_STATE = "no state"
    FRESH = "fresh"
    HOLD_LAST = "hold last command"
    STOPPED = "stopped"


class StalenessWatchdog:
    """Maps a state age to a :class:`Freshness` level and remembers the last transition."""

    def __init__(self, hold_after_s: float, stop_after_s: float) -> None:
        if not 0 < hold_after_s <= stop_after_s:
            raise ValueError(f"watchdog: expected 0 < hold_after_s <= stop_after_s, found "
                             f"{hold_after_s} and {stop_after_s}")
        self.hold_after_s = hold_after_s
        self.stop_after_s = stop_after_s
        self.level = Freshness.NO_STATE
        self.previous = Freshness.NO_STATE
        self.age_s: float | None = None

    def update(self, age_s: float | None) -> Freshness:
        """The level for a state of age ``age_s`` (None: no state yet); sets :attr:`previous`."""
        self.previous = self.level
        self.age_s = age_s
        if age_s is None:
            self.level = Freshness.NO_STATE
        elif age_s <= self.hold_after_s:
            self.level = Freshness.FRESH
        elif age_s <= self.stop_after_s:
            self.level = Freshness.HOLD_LAST
        else:
            self.level = Freshness.STOPPED
        return self.level

    @property
    def changed(self) -> bool:
        """Whether the last :meth:`update` changed the level."""
        return self.level is not self.previous

    def describe(self) -> str:
        """A reason for logs and status messages, e.g. "stale state: 23.4 ms without a new
        state (limit 20.0 ms)"."""
        if self.age_s is None:
            return "no state received yet"
        limit = self.stop_after_s if self.level is Freshness.STOPPED else self.hold_after_s
        return (f"stale state: {self.age_s * 1e3:.1f} ms without a new state (limit "
                f"{limit * 1e3:.1f} ms)")
