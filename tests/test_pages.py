"""lazymask._pages.empty: numpy.empty's array, in memory without the hugepage hint when large."""

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from lazymask._pages import empty

LARGE = (64, 64, 64, 16)  # 8 MiB of int16: above numpy's 4 MiB hint threshold


def _vm_flags(address: int) -> list[str]:
    """The VmFlags of this process's mapping that holds ``address`` (Linux)."""
    flags, inside = None, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            head = line.split()[0]
            if "-" in head and ":" not in head:
                start, end = (int(x, 16) for x in head.split("-"))
                inside = start <= address < end
            elif inside and line.startswith("VmFlags:"):
                flags = line.split()[1:]
    assert flags is not None, f"no mapping holds {address:#x}"
    return flags


@pytest.mark.parametrize("shape, dtype, order", [(LARGE, "int16", "F"), (LARGE, "float32", "C"), (7, "float64", "C"),
                                                  ((3, 0), "int8", "F"), ((2, 2), "int16", "C")])
def test_empty_is_numpy_empty_to_its_caller(shape, dtype, order):
    array = empty(shape, dtype, order=order)
    expected = np.empty(shape, dtype=dtype, order=order)
    assert array.shape == expected.shape and array.dtype == expected.dtype
    assert array.flags.writeable
    assert array.flags.f_contiguous == expected.flags.f_contiguous
    assert array.flags.c_contiguous == expected.flags.c_contiguous
    array[...] = 3
    copy = pickle.loads(pickle.dumps(array))
    assert copy.shape == array.shape and (copy == 3).all() and copy.flags.f_contiguous == array.flags.f_contiguous


def test_a_view_keeps_the_memory_alive():
    array = empty(LARGE, "int16", order="F")
    array[..., 5] = 7
    view = array[..., 5]
    del array
    assert (view == 7).all()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise and /proc/self/smaps are Linux's")
def test_large_buffers_are_not_marked_for_huge_pages():
    ours = empty((64, 64, 64, 160), "int16", order="F")  # 80 MiB: beyond malloc's recycling, a new mapping
    ours[...] = 1
    assert "hg" not in _vm_flags(ours.ctypes.data + (1 << 20))
    theirs = np.empty(LARGE, dtype="int16")
    theirs[...] = 1
    if np._core.multiarray._get_madvise_hugepage() and os.path.exists("/sys/kernel/mm/transparent_hugepage"):
        assert "hg" in _vm_flags(theirs.ctypes.data + (1 << 20))  # the check does see numpy's hint


def test_the_environment_variable_gives_numpy_empty_back():
    code = ("import numpy as np; from lazymask._pages import empty; "
            "a = empty((64, 64, 64, 16), 'int16'); print(type(a.base).__name__ if a.base is not None else 'own')")
    env = {**os.environ, "LAZYMASK_HUGEPAGES": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert done.stdout.strip() == "own"
    assert empty(LARGE, "int16").base is not None  # here: lazymask's own mapping


_FAULTS_CODE = """
import resource, threading
import numpy as np
from lazymask._pages import empty, prefault

def faults_writing(nbytes):
    before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    block = empty((nbytes,), "uint8")
    block[...] = 1
    return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before, block

size = 48 << 20
cold, kept = faults_writing(size)                  # fresh memory: faulted in by this thread
helper = threading.Thread(target=prefault, args=(size,))
helper.start(); helper.join()                       # another thread faults the next buffer in
warm, kept2 = faults_writing(size)
print(cold, warm, size // 4096)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread fault counts (RUSAGE_THREAD) are Linux's")
def test_prefault_moves_the_page_faults_to_the_thread_that_calls_it():
    out = subprocess.run([sys.executable, "-c", _FAULTS_CODE], capture_output=True, text=True, check=True,
                         env={**os.environ, "LAZYMASK_HUGEPAGES": "0"})
    cold, warm, pages = (int(x) for x in out.stdout.split())
    assert cold > pages // 2  # the writer paid a fault per page (at least half of them)
    assert warm < pages // 20  # the parked buffer was already mapped


def test_prefaulted_buffers_are_taken_by_size_and_bounded():
    from lazymask import _pages

    if _pages._libc is None:
        pytest.skip("LAZYMASK_HUGEPAGES=1 or not Linux: prefault is a no-op")  # the environment chose numpy.empty
    sizes = [5 << 20, 6 << 20, 7 << 20]
    for size in sizes:
        _pages.prefault(size)
    assert [n for n, _ in _pages._parked][-2:] == sizes[1:] and len(_pages._parked) <= 2  # the oldest freed
    block = empty((6 << 20,), "uint8")
    assert block.nbytes == 6 << 20 and (6 << 20) not in [n for n, _ in _pages._parked]
    block[...] = 2
    assert int(block.sum()) == 2 * (6 << 20)
    _pages.prefault(1024)  # small sizes are numpy's business: nothing parked
    assert 1024 not in [n for n, _ in _pages._parked]
