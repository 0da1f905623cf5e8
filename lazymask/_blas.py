"""Single-threaded BLAS while cleaning kernels or smoothing filters run (inside dask tasks).

A cleaning kernel's matrix products are thin (``(time, features)`` by a handful of confounds). OpenBLAS
runs them on its own thread pool, which is 10-30x slower on such shapes than one thread, and
worse when several kernels run at once (dask threads, or the eager path's threads) and their BLAS
threads compete for the cores. :func:`single_threaded_blas` limits BLAS to one thread while a
kernel runs. Smoothing (:mod:`lazymask.image._smooth`) filters a chunk by products with a banded
matrix: one thread each took 1.6 s of CPU for a 200-volume 2 mm run, OpenBLAS's own threads inside
dask's threads 3.9 s and twice the wall time.

How. OpenBLAS (as numpy and scipy ship it, 0.3.27 and later) takes the setting per calling thread
through ``openblas_set_num_threads_local``: each kernel sets 1 in its own thread. A process-wide
limit set by the first of several concurrent kernels did not hold for the others: four cleaning blocks (200 x 36k) on two threads took 0.85-1.19 s with
threadpoolctl's reference-counted process-wide limit against 0.14-0.17 s with the per-thread
setting (0.18 s one after the other), and a NiftiMasker (b) extraction 2.8-3.2 s against 0.7-1.0 s
(2 cores). When the last running kernel ends, the thread count found at the first use is set
again (in that thread), so that the user's setting is what remains; a kernel that ends while others
run leaves its thread at one BLAS thread (putting the count back there would, where the setting
is process-wide, make the running kernels multi-threaded). So the threads of a dask pool that ran
kernels concurrently may keep one BLAS thread afterwards, as ``distributed``'s workers do by default. Libraries without the per-thread call (MKL,
BLIS, older OpenBLAS) get threadpoolctl's process-wide limit, reference-counted so that concurrent
kernels do not undo each other's limit, restored when the last one ends.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading

__all__ = ["single_threaded_blas"]

_lock = threading.Lock()
_state = {"users": 0, "limiter": None, "found": False, "setters": [], "originals": [], "others": None}


@contextlib.contextmanager
def single_threaded_blas():
    """Within the block, BLAS libraries use one thread (nested and concurrent uses are fine).

    Examples
    --------
    >>> import numpy as np
    >>> with single_threaded_blas():
    ...     float((np.ones((3, 3)) @ np.ones(3))[0])
    3.0
    """
    for setter in _enter():
        setter(1)
    try:
        yield
    finally:
        _exit()


def _find_libraries() -> None:
    """The per-thread setters of the loaded OpenBLAS libraries, and a controller of the others (once)."""
    from threadpoolctl import ThreadpoolController

    controller = ThreadpoolController().select(user_api="blas")
    setters, originals, others = [], [], []
    for library in controller.lib_controllers:
        setter = getattr(library.dynlib, "openblas_set_num_threads_local", None) if library.internal_api == "openblas" else None
        if setter is None:
            others.append(library.filepath)
            continue
        setter.restype, setter.argtypes = ctypes.c_int, [ctypes.c_int]
        setters.append(setter)
        originals.append(library.num_threads)
    _state.update(found=True, setters=setters, originals=originals,
                  others=controller.select(filepath=others) if others else None)


def _enter() -> list:
    with _lock:
        if not _state["found"]:
            _find_libraries()
        if _state["users"] == 0 and _state["others"] is not None:
            _state["limiter"] = _state["others"].limit(limits=1)
        _state["users"] += 1
        return _state["setters"]


def _exit() -> None:
    with _lock:
        _state["users"] -= 1
        if _state["users"] == 0:
            for setter, original in zip(_state["setters"], _state["originals"], strict=True):
                setter(original)  # what the user had, whatever order concurrent kernels ended in
            if _state["limiter"] is not None:
                _state["limiter"].restore_original_limits()
                _state["limiter"] = None
