"""Benchmark: the two measured choices behind the decode-and-keep pass (issue 13).

Each case in its own process (``benchmarks/_harness.py``), on the 200-volume 2 mm int16
``.nii.gz`` (``benchmarks.data.ensure_run``):

* **ISA-L's input buffer** (``lazymask.io._gzip._ISAL_INPUT_BUFFER``): its C gzip reader
  decompressing the file into one reused 30 MiB buffer, with 512 kB input reads (what
  ``isal.igzip.IGzipFile`` uses) or 16 MiB (lazymask's), alone and beside a thread spinning in
  Python (the reader takes the GIL back at every refill).
* **numpy's hugepage hint** (``lazymask._pages``): first touch of 360 MiB of fresh anonymous memory
  with ``madvise(MADV_HUGEPAGE)`` and without (and the kernel's fault counters), then the pass that
  ``NiftiMasker.fit_transform`` runs first on the file (decode and keep the run, sum its mean:
  ``io.persist_within_budget(derived=time_mean_volume)``) with ``LAZYMASK_HUGEPAGES=1`` (numpy's
  allocations) and without (lazymask's); and a streaming pass, the mean over time of the
  1200-volume ``.nii.gz`` (chunks freed as they are added: malloc recycles them), both ways, with
  the process's page faults. The cases alternate, a few seconds apart, so that memory freed by one
  case is not what the next one touches.

    python -m benchmarks.bench_reader [--quick] [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import time

from benchmarks._harness import measure
from benchmarks.data import DATA_DIR, ensure_run

_SETTLE_SECONDS = 3  # freed memory is handed back to the host after a while (free page reporting)


def isal_reader_case(path: str, buffer_bytes: int, busy: bool) -> dict:
    """ISA-L's C reader over the whole file into one reused buffer, optionally beside a busy thread."""
    import threading

    from isal.isal_zlib import _GzipReader

    stop = threading.Event()

    def spin():
        count = 0
        while not stop.is_set():
            count += 1

    spinner = threading.Thread(target=spin)
    if busy:
        spinner.start()
    out, total = bytearray(30 << 20), 0
    start = time.perf_counter()
    with open(path, "rb") as f:
        reader = _GzipReader(f, buffer_bytes)
        while got := reader.readinto(out):
            total += got
    seconds = time.perf_counter() - start
    stop.set()
    if busy:
        spinner.join()
    return {"inner_seconds": seconds, "bytes": total}


def first_touch_case(mib: int, hint: bool) -> dict:
    """Fault in ``mib`` MiB of fresh private anonymous memory, with or without the hugepage hint."""
    import mmap

    import numpy as np

    def counters() -> dict:
        with open("/proc/vmstat") as vmstat:
            pairs = (line.split() for line in vmstat)
            return {k: int(v) for k, v in pairs if k in ("pgfault", "thp_fault_alloc", "compact_stall")}

    memory = mmap.mmap(-1, mib << 20, flags=mmap.MAP_PRIVATE)
    if hint:
        memory.madvise(mmap.MADV_HUGEPAGE)
    pages = np.frombuffer(memory, np.uint8)
    before = counters()
    start = time.perf_counter()
    pages[::4096] = 1
    seconds = time.perf_counter() - start
    after = counters()
    return {"inner_seconds": seconds, **{k: after[k] - before[k] for k in after}}


def persist_case(path: str, numpy_pages: bool) -> dict:
    """fit_transform's first pass: decode and keep the run, sum its mean (lazymask imported here,
    after choosing the allocator)."""
    os.environ["LAZYMASK_HUGEPAGES"] = "1" if numpy_pages else "0"
    import distributed  # noqa: F401 - dask.compute imports it on first use: not the pass's cost

    from lazymask.image import time_mean_volume
    from lazymask.io import open_nifti, persist_within_budget

    image = open_nifti(path)
    start = time.perf_counter()
    ((kept, mean),) = persist_within_budget([image], derived=time_mean_volume)
    seconds = time.perf_counter() - start
    return {"inner_seconds": seconds, "mean_sum": float(mean.sum().compute())}


def stream_mean_case(path: str, numpy_pages: bool) -> dict:
    """The mean over time of a run, streamed (lazymask imported here, after choosing the allocator)."""
    import resource

    os.environ["LAZYMASK_HUGEPAGES"] = "1" if numpy_pages else "0"
    import distributed  # noqa: F401 - dask.compute imports it on first use: not the pass's cost

    from lazymask.io import open_nifti

    image = open_nifti(path)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    mean = image.mean("time").compute()
    seconds = time.perf_counter() - start
    return {"inner_seconds": seconds, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults,
            "mean_sum": float(mean.sum())}


def main(quick: bool = False, repeat: int = 2) -> list[dict]:
    repeat = 1 if quick else repeat
    rows = []
    copied = DATA_DIR / "bench-v1_2mm_200vols_bold.nii.gz"
    path = str(copied if copied.exists() else ensure_run(200, True))
    here = "benchmarks.bench_reader"

    def run(case: str, **params) -> dict:
        time.sleep(_SETTLE_SECONDS)
        return measure(f"{here}:{case}", **params)["result"]

    print(f"== reader: 200-volume .nii.gz ({os.path.getsize(path) / 1e6:.0f} MB), load {os.getloadavg()[0]:.2f}")
    for _ in range(repeat):
        row = {(size, busy): run("isal_reader_case", path=path, buffer_bytes=size, busy=busy)["inner_seconds"]
               for busy in (False, True) for size in (512 << 10, 16 << 20)}
        rows.append({"case": "isal input buffer", "seconds": {f"{s}-{'busy' if b else 'alone'}": v
                                                             for (s, b), v in row.items()}})
        print(f"ISA-L C reader, 512 kB / 16 MiB input buffer: alone {row[512 << 10, False]:.2f} / "
              f"{row[16 << 20, False]:.2f} s; beside a spinning thread {row[512 << 10, True]:.2f} / "
              f"{row[16 << 20, True]:.2f} s", flush=True)
    for _ in range(repeat):
        hinted, plain = run("first_touch_case", mib=360, hint=True), run("first_touch_case", mib=360, hint=False)
        rows.append({"case": "first touch 360 MiB", "hint": hinted, "no_hint": plain})
        print(f"first touch of 360 MiB: hugepage hint {hinted['inner_seconds']:.3f} s ({hinted['thp_fault_alloc']} huge "
              f"faults, {hinted['compact_stall']} compaction stalls), 4 KiB pages {plain['inner_seconds']:.3f} s "
              f"({plain['pgfault']} faults): {hinted['inner_seconds'] / plain['inner_seconds']:.1f}x", flush=True)
    for _ in range(repeat):
        numpy_pages, ours = run("persist_case", path=path, numpy_pages=True), run("persist_case", path=path,
                                                                                   numpy_pages=False)
        same = numpy_pages["mean_sum"] == ours["mean_sum"]
        rows.append({"case": "decode-and-keep pass", "numpy": numpy_pages, "lazymask": ours, "same": same})
        print(f"decode-and-keep pass (persist + mean): numpy's allocations {numpy_pages['inner_seconds']:.2f} s, "
              f"lazymask's {ours['inner_seconds']:.2f} s: {ours['inner_seconds'] / numpy_pages['inner_seconds']:.2f}x; "
              f"same mean: {same}", flush=True)
    long_run = str(ensure_run(1200, True))
    for _ in range(repeat):
        numpy_pages, ours = (run("stream_mean_case", path=long_run, numpy_pages=flag) for flag in (True, False))
        rows.append({"case": "streamed mean 1200 volumes", "numpy": numpy_pages, "lazymask": ours})
        print(f"streamed mean, 1200 volumes: numpy's allocations {numpy_pages['inner_seconds']:.2f} s "
              f"({numpy_pages['faults']} faults), lazymask's {ours['inner_seconds']:.2f} s ({ours['faults']} faults): "
              f"{ours['inner_seconds'] / numpy_pages['inner_seconds']:.2f}x; "
              f"same mean: {numpy_pages['mean_sum'] == ours['mean_sum']}", flush=True)
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="each measurement once")
    parser.add_argument("--repeat", type=int, default=2)
    arguments = parser.parse_args()
    main(arguments.quick, arguments.repeat)
