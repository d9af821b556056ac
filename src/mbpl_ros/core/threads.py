"""BLAS thread limits for the small-matrix kernels of the core.

On few cores, OpenBLAS runs the many small products of the dynamics fit, the GMM EM and the LQR
passes slower with several threads than with one; the core limits it with threadpoolctl, and
parallelises over conditions instead.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

from threadpoolctl import ThreadpoolController

_CONTROLLER: ThreadpoolController | None = None


def blas_threads(n: int | None) -> AbstractContextManager:
    """Context limiting BLAS to ``n`` threads (no-op for None); restores the previous limit."""
    global _CONTROLLER
    if n is None:
        return nullcontext()
    if _CONTROLLER is None:
        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=n, user_api="blas")
