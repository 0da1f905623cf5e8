"""Benchmark: a ``.nii.gz`` costs one decompression on a multi-process cluster too (issue 12, item 3).

Every case computes ``open_nifti(path).mean("time")`` (default chunks) of the cached 200-volume
2 mm ``.nii.gz`` run (:func:`benchmarks.data.ensure_run`), for one file or for four (symbolic links
to it under other names: four files to the reader, one file's pages in the page cache; a link
leaves the shared file's identity untouched, a hard link would change its ctime), each case in its
own process (``benchmarks/_harness.py``):

* ``threads``: dask's threaded scheduler (the reference);
* ``cluster``: ``LocalCluster(n_workers=2, threads_per_worker=1, processes=True)``. The clock runs
  over the compute only (cluster start-up and the workers' first import of lazymask are not the
  pass); the bytes each worker decompressed during it are read with ``client.run(bytes_decompressed)``.

Targets: one file, cluster time / threaded time <= 1.2; four files on the cluster >= 1.7x the
throughput (files per second) of one file; each file decompressed once in all (the sum over workers
of the bytes decompressed / the bytes of data: 1.00 per file).

    python -m benchmarks.bench_cluster [--quick] [--repeat N] [--busy SECONDS] [--reader isal|zran]

``--repeat`` runs every case N times in fresh processes and prints each ratio's spread. ``--busy``
adds downstream work to every chunk (a sleep of that many seconds in ``map_blocks``: it holds a
worker's thread as a filter would, without taking a core), which is when work stealing moves reads
between workers. ``--reader zran`` gives the workers resumable streams (:mod:`lazymask.io._zran`:
zlib through ctypes, each chained read leaving a resume point for the next one, wherever it runs)
instead of ISA-L's.

Measured on 2026-12-01, 2 cores shared with other agents (load average 2-5.5, so times are noisy;
each figure is one run, threads and cluster measured back to back):

* one file, no downstream work: cluster / threads 1.19-2.84 (median 1.8, 9 runs) with ISA-L streams,
  1.31-2.85 (median 1.8, 8 runs) with resumable ones; always 1.00 decompression in all (the whole chain in
  one worker). At load 0.5 the first run gave 2.17 s / 0.97 s = 2.2. The 1.2 target is out of reach
  for a structural reason, not because chains move: one worker with one thread runs a file's reads
  and the tasks on their blocks one after the other (task stream: 1.25 s of reads, 1.8 s of mean
  tasks on one worker, the other idle), where two threads of one process overlap them; moving the
  downstream tasks instead costs a 30 MB block's transfer each.
* four files vs one on the cluster, throughput: at load 2 (23:14 UTC) 2.13 and 1.92 (ISA-L), 2.10
  (resumable), each file decompressed once (722 MB per worker); at load 4-5, where the second worker
  has no free core to run on, 0.77-1.37 (ISA-L) and 0.93-2.50 (resumable).
* with 0.3 s of downstream work per chunk (``--busy 0.3``), one file: ISA-L streams decompress 1.51,
  1.77, 1.85, 1.85, 1.94 files' worth (work stealing moves reads to the idle worker, which starts
  over), four files 5.19; resumable streams 1.00 every time (reads move and resume: 123-239 MB per
  worker), four files 4.00; cluster time 5.1-8.7 s (ISA-L) vs 6.1-6.5 s (resumable).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks._harness import measure, pair, preload, report
from benchmarks.data import ensure_run

TIME_TARGET = 1.2
THROUGHPUT_TARGET = 1.7
N_FILES = 4


def _links(path: str, n_files: int) -> tuple[Path, list[str]]:
    """``n_files`` names for the run at ``path``: the file itself, then symbolic links to it."""
    scratch = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    names = [path]
    for n in range(1, n_files):
        link = scratch / f"copy-{n}_bold.nii.gz"
        link.symlink_to(path)
        names.append(str(link))
    return scratch, names


def _hold(block, seconds: float):
    """Downstream work of ``seconds`` per chunk (a sleep: it holds the worker's thread, not a core)."""
    time.sleep(seconds)
    return block


def _means(paths: list[str], busy: float = 0.0) -> tuple[float, dict]:
    """Compute the mean over time of every file at once; (seconds, checks)."""
    import dask
    import numpy as np

    from lazymask.io import open_nifti

    images = [open_nifti(p) for p in paths]
    if busy:
        images = [img.copy(data=img.data.map_blocks(_hold, busy, dtype=img.dtype)) for img in images]
    start = time.perf_counter()
    means = dask.compute(*[img.mean("time") for img in images])
    seconds = time.perf_counter() - start
    sums = [float(np.asarray(m, dtype=np.float64).sum()) for m in means]
    data_bytes = sum(_data_bytes(p) for p in paths)
    return seconds, {"sums": sums, "n_chunks": len(images[0].chunks[-1]), "data_bytes": data_bytes}


def _data_bytes(path: str) -> int:
    """Bytes of voxel data in the file (as stored, before scaling)."""
    import nibabel as nib
    import numpy as np

    header = nib.load(path).header
    return int(np.prod(header.get_data_shape())) * header.get_data_dtype().itemsize


def _use_reader(reader: str) -> None:
    """The gzip streams' kind in this process and in the worker processes it starts (see _gzip._READER)."""
    from lazymask.io import _gzip

    os.environ["LAZYMASK_GZIP_READER"] = _gzip._READER = reader


@preload("lazymask.io")
def threads_case(path: str, n_files: int = 1, busy: float = 0.0, reader: str = "isal") -> dict:
    import dask

    from lazymask.io import _gzip

    _use_reader(reader)
    scratch, paths = _links(path, n_files)
    try:
        with dask.config.set(scheduler="threads"):
            before = _gzip.bytes_decompressed()
            seconds, result = _means(paths, busy)
            result["per_worker"] = [_gzip.bytes_decompressed() - before]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {"seconds": seconds, **result}


def _warm_worker() -> None:
    import lazymask.io  # noqa: F401 - imported before the clock, as the threaded case's preload


@preload("lazymask.io", "distributed")
def cluster_case(path: str, n_files: int = 1, busy: float = 0.0, reader: str = "isal") -> dict:
    from distributed import Client, LocalCluster

    from lazymask.io import _gzip

    _use_reader(reader)
    scratch, paths = _links(path, n_files)
    try:
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                          worker_dashboard_address=None, local_directory=str(scratch)) as cluster, \
                Client(cluster) as client:
            client.run(_warm_worker)
            before = client.run(_gzip.bytes_decompressed)
            seconds, result = _means(paths, busy)
            after = client.run(_gzip.bytes_decompressed)
            result["per_worker"] = [after[w] - before[w] for w in sorted(after)]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {"seconds": seconds, **result}


def _decompressions(result: dict) -> float:
    """Bytes decompressed over all workers, in files' worth (headers aside: 352 bytes per file)."""
    return sum(result["per_worker"]) / result["data_bytes"]


def _timed(measured: dict) -> dict:
    """The harness's measurement with ``seconds`` replaced by the case's own clock (compute only)."""
    return {**measured, "seconds": measured["result"]["seconds"], "process_seconds": measured["seconds"]}


def run_once(path: str, quick: bool, busy: float = 0.0, reader: str = "isal") -> dict:
    threads = _timed(measure("benchmarks.bench_cluster:threads_case", path=path, busy=busy))
    cluster = _timed(measure("benchmarks.bench_cluster:cluster_case", path=path, busy=busy, reader=reader))
    figures = {"threads": threads, "cluster": cluster,
               "time_ratio": cluster["seconds"] / threads["seconds"]}
    assert threads["result"]["sums"] == cluster["result"]["sums"], "the cluster computed another mean"
    if not quick:
        four = _timed(measure("benchmarks.bench_cluster:cluster_case", path=path, n_files=N_FILES, busy=busy,
                              reader=reader))
        assert four["result"]["sums"] == cluster["result"]["sums"] * N_FILES
        figures["four"] = four
        figures["throughput_ratio"] = N_FILES * cluster["seconds"] / four["seconds"]
    return figures


def _describe(figures: dict) -> list[str]:
    lines = []
    for name in ("threads", "cluster", "four"):
        if name in figures:
            result = figures[name]["result"]
            per_worker = ", ".join(f"{n / 1e6:.1f}" for n in result["per_worker"])
            n_files = len(result["sums"])
            lines.append(f"  {name:8s} {figures[name]['seconds']:6.2f} s  decompressed "
                         f"{_decompressions(result) * n_files:.2f} files' worth for {n_files} file(s) "
                         f"(MB per worker: {per_worker})")
    line = f"  cluster / threads (1 file): {figures['time_ratio']:.2f} (target <= {TIME_TARGET})"
    if "throughput_ratio" in figures:
        line += f"; {N_FILES} files / 1 file throughput on the cluster: {figures['throughput_ratio']:.2f} " \
                f"(target >= {THROUGHPUT_TARGET})"
    return lines + [line]


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one file only (no four-file case)")
    parser.add_argument("--repeat", type=int, default=1, help="run every case this many times")
    parser.add_argument("--busy", type=float, default=0.0,
                        help="seconds of downstream work per chunk (a sleep in map_blocks; default none)")
    parser.add_argument("--reader", default="isal", choices=("isal", "zran"),
                        help="the workers' gzip streams: ISA-L (default) or resumable zlib (lazymask.io._zran)")
    args = parser.parse_args(argv)
    path = str(ensure_run(200, True))
    print(f"load average before: {os.getloadavg()}", flush=True)
    runs = []
    for n in range(args.repeat):
        figures = run_once(path, args.quick, args.busy, args.reader)
        runs.append(figures)
        print(f"run {n + 1}:", *_describe(figures), sep="\n", flush=True)
    last = runs[-1]
    rows = [pair("mean 200 vols .nii.gz, cluster 2x1 vs threads", last["cluster"], last["threads"],
                 target=f"time <= {TIME_TARGET}x", reference_name="threads")]
    if "four" in last:
        rows.append(pair(f"{N_FILES} files vs 1 file, cluster 2x1", last["four"], last["cluster"],
                         target=f"{N_FILES} x time / {THROUGHPUT_TARGET} (>= {THROUGHPUT_TARGET}x throughput)",
                         reference_name="1 file"))
    report("cluster", rows)
    for key in ("time_ratio", "throughput_ratio"):
        values = [r[key] for r in runs if key in r]
        if values:
            print(f"{key}: min {min(values):.2f}, max {max(values):.2f} over {len(values)} run(s): "
                  + ", ".join(f"{v:.2f}" for v in values))
    print(f"load average after: {os.getloadavg()}")
    return rows


if __name__ == "__main__":
    main()
