"""Domain exceptions of the LQR-FLM core.

Every exception says what was expected and what was found, so that a message in a training log is
enough to locate the bad input. They subclass :class:`ValueError` (bad input) or
:class:`RuntimeError` (a numerical failure that the caller may recover from), so generic handlers
keep working.
"""

from __future__ import annotations


class CoreError(Exception):
    """Base class of all mbpl_ros.core errors."""


class ShapeError(CoreError, ValueError):
    """An array has the wrong number of dimensions or the wrong size."""

    @classmethod
    def expected(cls, what: str, expected: str, found: tuple[int, ...]) -> ShapeError:
        """Build the error for ``what`` with an expected shape description and the found shape."""
        return cls(f"{what}: expected shape {expected}, found {tuple(found)}")


class NonFiniteError(CoreError, ValueError):
    """An input holds NaN or infinity."""


class NotEnoughSamplesError(CoreError, ValueError):
    """Fewer samples than the computation needs."""


class MismatchError(CoreError, ValueError):
    """Two objects that must agree (state layouts, horizons, condition counts) do not."""


class CheckpointError(CoreError, ValueError):
    """A saved file is missing, corrupt, of another format version, or for another problem."""
