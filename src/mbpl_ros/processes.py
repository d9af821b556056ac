"""Node processes that stop with the process that started them.

The runners (`mbpl train --graph ros`, `mbpl bench control-loop`, `mbpl bench sim`) start the
nodes in sessions of their own, so that a Ctrl-C in the terminal does not reach them before the
runner stops them in order. A runner that dies without stopping them (SIGKILL, a crash in a
native library) would then leave a real-time bridge and executor running unattended; the kernel
sends each child SIGINT, a node's clean shutdown, when its parent dies.
"""

from __future__ import annotations

import ctypes
import signal
import sys

_PR_SET_PDEATHSIG = 1
# Looked up here, in the parent: a preexec_fn runs in the forked child of a process that has
# other threads, where loading a library could wait on a lock that no thread will release.
_prctl = ctypes.CDLL(None).prctl if sys.platform.startswith("linux") else None


def stop_with_parent() -> None:
    """``preexec_fn`` for a child process: SIGINT when the thread that started it exits (Linux;
    elsewhere nothing). Start children from a thread that lives as long as they should, such as
    the main thread."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, int(signal.SIGINT))
