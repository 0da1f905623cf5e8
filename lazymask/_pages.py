"""Large buffers that lazymask fills itself, allocated without numpy's hugepage hint.

numpy marks every array of 4 MiB or more ``madvise(MADV_HUGEPAGE)`` on Linux, so that its pages
are faulted in 2 MiB at a time. Where huge pages are cheap that saves faults; where they are not,
each 2 MiB fault stalls: under the ``madvise`` defrag policy the kernel may compact memory
synchronously to find one (numpy/numpy#31590), and in a virtual machine whose host reclaims the
guest's free memory (free page reporting, as on Firecracker), a huge page comes from a block the
host has taken back and must supply again. Measured on this project's machines (Firecracker, THP
``enabled=madvise``, ``defrag=madvise``), first touch of 360 MiB: 0.92-0.93 s with the hint, 0.15 s
with 4 KiB pages; the 200-volume benchmark run kept in memory by ``fit_transform`` (360 MB of
decoded chunks): decode-and-mean pass 1.43-1.64 s with numpy's hint, 0.93-1.05 s without.

The buffers here are the bulk of what lazymask allocates (decoded chunks, extracted signals), each
written once in full: :func:`empty` takes them from the C library's ``malloc`` as numpy does, but
without the hint. Freed buffers are recycled by ``malloc`` as numpy's are (a pass that streams a
run through chunk-sized buffers faults no new memory per chunk; fresh anonymous mappings per
chunk made a 1200-volume mean 590 000 page faults and 5.9-7.7 s instead of 85 000 and 5.6 s).
Where THP is ``always``, the kernel still backs them with huge pages when it has some at hand
(no synchronous compaction for unadvised memory under the default defrag policy). Set
``LAZYMASK_HUGEPAGES=1`` to allocate them with :func:`numpy.empty` as before (read at import).

First touch is the other cost: a fresh page costs a fault (the kernel zeroes and maps it), about
0.27 s for the 360 MB that ``fit_transform`` keeps of the benchmark run, paid by the thread that
writes it first -- the decompressing thread, the one a ``.nii.gz`` pass waits on. :func:`prefault`
lets another thread pay it ahead: it allocates a buffer, faults its pages in
(``madvise(MADV_POPULATE_WRITE)``, or a write per page) and parks it; the next :func:`empty` of
exactly that size in this process takes it. At most two buffers are parked (a third frees the
oldest), so a prefault that is never used costs bounded memory.

Contract
--------
* ``empty(shape, dtype, order)`` is :func:`numpy.empty`'s result in every respect a caller sees
  (shape, dtype, order, writable, owns no other data, pickles as an ndarray); its memory is
  freed (to ``malloc``) when the array and its views are gone. lazymask never adds the hint;
  memory that ``malloc`` recycles from an array numpy hinted may keep it (numpy/numpy#31590).
* ``prefault(nbytes)`` changes no result: it only moves the cost of faulting a buffer's pages in
  to the thread that calls it (a no-op for small sizes, off Linux, or with ``LAZYMASK_HUGEPAGES=1``).
"""

from __future__ import annotations

import ctypes
import mmap
import os
import sys
import threading
import weakref

import numpy as np

__all__ = ["empty", "prefault"]

_MIN_BYTES = 4 << 20  # numpy hints from 4 MiB: smaller arrays are left to numpy
_USE_NUMPY = os.environ.get("LAZYMASK_HUGEPAGES", "0") == "1" or not sys.platform.startswith("linux")
_libc = None if _USE_NUMPY else ctypes.CDLL(None)
if _libc is not None:
    _libc.malloc.restype, _libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    _libc.free.restype, _libc.free.argtypes = None, [ctypes.c_void_p]
    _libc.madvise.restype, _libc.madvise.argtypes = ctypes.c_int, [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_MADV_POPULATE_WRITE = 23  # Linux >= 5.14; older kernels say EINVAL and the pages are touched instead
_MAX_PARKED = 2
_parked: list[tuple[int, int]] = []  # (nbytes, address) of prefaulted buffers, oldest first
_parked_lock = threading.Lock()


def empty(shape, dtype, order: str = "C") -> np.ndarray:
    """An uninitialised array, as :func:`numpy.empty`, without the hugepage hint when large (see the module).

    Examples
    --------
    >>> block = empty((64, 64, 64, 8), "int16", order="F")
    >>> block.shape, block.dtype, block.flags.f_contiguous, block.flags.writeable
    ((64, 64, 64, 8), dtype('int16'), True, True)
    """
    dtype = np.dtype(dtype)
    shape = tuple(int(n) for n in np.atleast_1d(shape)) if np.ndim(shape) else (int(shape),)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if _libc is None or nbytes < _MIN_BYTES or dtype.hasobject:
        return np.empty(shape, dtype=dtype, order=order)
    address = _take_parked(nbytes) or _malloc(nbytes)
    memory = (ctypes.c_char * nbytes).from_address(address)
    release = weakref.finalize(memory, _libc.free, address)  # freed with the last array or view using it
    release.atexit = False  # never at interpreter exit, while arrays may still point at it
    return np.frombuffer(memory, dtype=dtype).reshape(shape, order=order)


def prefault(nbytes: int) -> None:
    """Allocate a buffer of ``nbytes``, fault its pages in on this thread, and park it for the next
    :func:`empty` of that size in this process (see the module).

    Examples
    --------
    >>> prefault(8 << 20)
    >>> block = empty((8 << 20,), "uint8")   # the parked buffer: its pages are already mapped
    >>> block.nbytes
    8388608
    """
    nbytes = int(nbytes)
    if _libc is None or nbytes < _MIN_BYTES:
        return
    address = _malloc(nbytes)
    page = mmap.PAGESIZE
    first = -address % page
    if _libc.madvise(address + first, (nbytes - first) // page * page, _MADV_POPULATE_WRITE) != 0:
        np.frombuffer((ctypes.c_char * nbytes).from_address(address), np.uint8)[::page] = 0
    with _parked_lock:
        _parked.append((nbytes, address))
        dropped = _parked.pop(0) if len(_parked) > _MAX_PARKED else None
    if dropped is not None:
        _libc.free(dropped[1])


def _take_parked(nbytes: int) -> int | None:
    with _parked_lock:
        for index, (size, address) in enumerate(_parked):
            if size == nbytes:
                del _parked[index]
                return address
    return None


def _malloc(nbytes: int) -> int:
    address = _libc.malloc(nbytes)
    if not address:
        raise MemoryError(f"cannot allocate {nbytes} bytes")
    return address
