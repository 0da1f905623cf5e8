"""Single-threaded BLAS while cleaning kernels or smoothing filters run (inside dask tasks).

A cleaning kernel's matrix products are thin (``(time, features)`` by a handful of confounds). OpenBLAS
runs them on its own thread pool, which is 10-30x slower on such shapes than one thread, and
worse when several kernels run at once (dask threads, or the eager path's threads) and their BLAS
threads compete for the cores. :func:`single_threaded_blas` limits BLAS to one thread while at
least one kernel runs (reference-counted, so concurrent kernels do not undo each other's limit) and
restores the previous setting when the last one ends. The limit is process-wide: BLAS calls made
by other threads meanwhile also run on one thread. Smoothing (:mod:`lazymask.image._smooth`)
filters a chunk by products with a banded matrix: one thread each took 1.6 s of CPU for a
200-volume 2 mm run, OpenBLAS's own threads inside dask's threads 3.9 s and twice the wall time.
"""

from __future__ import annotations

import contextlib
import threading

__all__ = ["single_threaded_blas"]

_lock = threading.Lock()
_state = {"users": 0, "limiter": None, "controller": None}


@contextlib.contextmanager
def single_threaded_blas():
    """Within the block, BLAS libraries use one thread (nested and concurrent uses are fine)."""
    _enter()
    try:
        yield
    finally:
        _exit()


def _enter() -> None:
    with _lock:
        if _state["users"] == 0:
            if _state["controller"] is None:
                from threadpoolctl import ThreadpoolController

                _state["controller"] = ThreadpoolController()
            _state["limiter"] = _state["controller"].limit(limits=1, user_api="blas")
        _state["users"] += 1


def _exit() -> None:
    with _lock:
        _state["users"] -= 1
        if _state["users"] == 0:
            _state["limiter"].restore_original_limits()
            _state["limiter"] = None
