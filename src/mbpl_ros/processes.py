"""Node processes that stop with the process that started them.

The runners (`mbpl train --graph ros`, `mbpl bench control-loop`, `mbpl bench sim`) start the
nodes in sessions of their own, so that a Ctrl-C in the terminal does not reach them before the
runner stops them in order. A runner that dies without stopping them (SIGKILL, a crash in a
native library) would then leave a real-time bridge and executor running unattended; the kernel
sends each child SIGINT, a node's clean shutdown, when its parent dies.

The child asks for that itself, first thing at start-up (:func:`stop_with_parent`), rather than
through a ``preexec_fn``: that would run Python in the forked copy of a runner that has other
threads, which Python's documentation calls unsafe (a lock held by another thread at the fork
stays held in the child). The runner names itself in the child's environment
(:func:`child_environment`), so that a child whose runner died before it got that far can tell.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Mapping

PARENT_VARIABLE = "MBPL_STOP_WITH_PARENT"
"""Environment variable holding the pid of the runner a node process stops with."""

_PR_SET_PDEATHSIG = 1


def child_environment(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` for a child that is to stop with this process (see :func:`stop_with_parent`). Start
    it from a thread that lives as long as it should, such as the main thread: the kernel's
    signal follows the thread that forked."""
    return {**env, PARENT_VARIABLE: str(os.getpid())}


def stop_with_parent() -> None:
    """In a child started with :func:`child_environment`: have the kernel send SIGINT when the
    parent exits, and exit now if it already has. Elsewhere (no variable, or not Linux) nothing.
    The variable is removed, so that this process's own children do not take it for theirs."""
    parent = os.environ.pop(PARENT_VARIABLE, None)
    if parent is None or not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, int(signal.SIGINT))
    if os.getppid() != int(parent):  # died before the prctl: no signal will come
        raise SystemExit(f"the process that started this one ({parent}) has exited")
