"""Benchmark: voxel signals of runs of any length, with flat memory (issue 12).

Every case runs ``NiftiMasker(mask_img=..., detrend=True, standardize="zscore_sample", band-pass
0.01-0.1 Hz, t_r=2 s)`` on a lazy synthetic 2 mm run (``lazymask.datasets.lazy_synthetic_run``:
float32 volumes made chunk by chunk on demand, no file) and streams the signals to a zarr store
with ``save_signals``; each case in its own process (``benchmarks/_harness.py``):

* ``1200``: 1200 volumes (4.3 GB of voxel data) on the threaded scheduler — the reference for the
  time per volume;
* ``big``: ``--big-gb`` GB of voxel data (default 30: about 8300 volumes) — peak RSS must stay
  <= 2 GB and the time per volume within 20 % of the 1200-volume run's;
* ``cluster``: 1200 volumes on ``LocalCluster(n_workers=2, threads_per_worker=1,
  memory_limit="1GiB")``: no worker may be paused for memory, restarted or killed (checked from
  the workers' identities and logs); the workers' peak RSS is reported too. The workers share
  this machine's disk, so the regroup goes through the on-disk intermediate; ``--p2p`` forces
  dask's P2P rechunk instead (with buffers sized for 1 GiB workers, ``P2P_SMALL_WORKERS``).

    python -m benchmarks.bench_scale [--big-gb 30] [--skip-big] [--skip-cluster] [--p2p] [--quick]

``--big-gb`` takes any size (``--big-gb 8``: 2215 volumes). Each case prints its wall time per
volume and its CPU time per volume (user + system, all threads of the process): on a shared
machine the wall time follows the others' load, the CPU time much less.

Measured on 2026-12-01 with the previous on-disk intermediate (one ``.npy`` file per time chunk
and feature block; 2 shared cores, others working: times are noisy): 1200 volumes 30.4 s (25.1
ms/volume), peak RSS 0.49 GB; 8309 volumes (30 GB of voxel data) 506 s (60.6 ms/volume, 2.4x
the 1200-volume run's; 214 000 files of 32 kB, the 6.9 GB intermediate and the 6.9 GB store no
longer in the page cache), peak RSS 0.63 GB; cluster, 1200 volumes: 62 ms/volume, workers
unchanged, no pause, workers' peak RSS 0.28 GB (with ``--p2p``: 83 ms/volume, both workers paused
at 80 % memory, peaks 0.85-0.89 GB).

Measured later that day, previous layout against one file per group of time chunks (now), the
two run alternately in one session (load average 2.7-5.4 on the 2 cores; wall times of identical
runs differ by up to 2x, so the ratios of one run to the next are noise): 1200 volumes 12.7-31.7
ms/volume (CPU 18.6-23.1) before, 11.5-32.7 (CPU 17.1-24.6) now; 2215 volumes (8 GB) before
18.0-19.3 ms/volume (CPU 18.4-20.0, 0.96-1.08x the 1200-volume run's), now 10.8-26.2 (CPU
15.1-18.1, 0.88-0.94x); 4431 volumes (16 GB) before 14.6-20.4 ms/volume (CPU 19.9-21.9,
1.01-1.06x), now 12.6-24.2 (CPU 19.1-19.6, 0.97-1.11x), peak RSS 0.51-0.52 GB before, 0.55 GB now.
At these sizes the intermediate stays in the page cache and both layouts scale; the 30 GB run
(not repeated here) is where the previous layout's 214 000 small files left the cache: with
every file dropped from the cache after writing, reading the blocks of an 8309-volume
intermediate took 14.6 ms/volume before and 1.4-2.9 now (see ``lazymask/signal/_regroup.py``).
Cluster, 1200 volumes: 16-37 ms/volume now against 18-35 before, workers unchanged and no pause
in any run (9 now, 4 before), workers' peak RSS 0.29-0.35 GB now (once 0.69 GB), 0.28-0.29 before.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks._harness import measure, pair, preload, report

SHAPE = (91, 109, 91)
T_R = 2.0
MASKER = {"detrend": True, "standardize": "zscore_sample", "low_pass": 0.1, "high_pass": 0.01, "t_r": T_R}
VOLUME_BYTES = SHAPE[0] * SHAPE[1] * SHAPE[2] * 4
P2P_SMALL_WORKERS = {"distributed.p2p.comm.buffer": "128MiB", "distributed.p2p.storage.buffer": "64MiB"}
PAUSE_OR_LOSS = ("pausing worker", "paused", "restarting worker", "exceeded", "killed", "memory budget")


def _extract(n_volumes: int, store: Path) -> dict:
    import numpy as np

    from lazymask.datasets import lazy_synthetic_run
    from lazymask.maskers import NiftiMasker, open_signals, save_signals

    run = lazy_synthetic_run(SHAPE, n_volumes=n_volumes, seed=0, t_r=T_R)
    masker = NiftiMasker(mask_img=run.mask, **MASKER)
    start, cpu = time.perf_counter(), _cpu_seconds()
    signals = masker.fit_transform(run.func)
    save_signals(signals, store, masker=masker)
    seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
    stored = open_signals(store)
    head = np.asarray(stored[:3, :5].values, dtype=float)
    return {"n_volumes": n_volumes, "n_voxels": int(stored.shape[1]), "voxel_gb": n_volumes * VOLUME_BYTES / 1e9,
            "seconds_per_volume": seconds / n_volumes, "cpu_seconds_per_volume": cpu / n_volumes,
            "head": head.ravel().tolist()}


def _cpu_seconds() -> float:
    """User + system CPU time of this process (all its threads) so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _scratch() -> Path:
    return Path(tempfile.mkdtemp(prefix="bench-scale-", dir=os.environ.get("BENCH_SCALE_DIR")))


@preload("lazymask.maskers", "lazymask.datasets")
def threads_case(n_volumes: int) -> dict:
    scratch = _scratch()
    try:
        return _extract(n_volumes, scratch / "signals.zarr")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@preload("lazymask.maskers", "lazymask.datasets", "distributed")
def cluster_case(n_volumes: int, p2p: bool = False) -> dict:
    import dask
    from distributed import Client, LocalCluster

    scratch = _scratch()
    # --p2p: P2P's defaults buffer up to 1 GiB of shards per worker, as much as these workers have;
    # smaller buffers for them (the workers read these settings when the cluster starts).
    with dask.config.set({**P2P_SMALL_WORKERS, "array.rechunk.method": "p2p"} if p2p else {}), \
            LocalCluster(n_workers=2, threads_per_worker=1, memory_limit="1GiB", processes=True,
                      dashboard_address=":0", local_directory=str(scratch / "workers")) as cluster, \
            Client(cluster) as client:
        before = {w["id"] for w in client.scheduler_info(n_workers=-1)["workers"].values()}
        try:
            result = _extract(n_volumes, scratch / "signals.zarr")
        finally:
            shutil.rmtree(scratch / "signals.zarr", ignore_errors=True)
        after = {w["id"] for w in client.scheduler_info(n_workers=-1)["workers"].values()}
        logs = [line for worker_logs in client.get_worker_logs().values() for _, line in worker_logs]
        logs += [line for _, line in client.get_scheduler_logs()]
        incidents = [line for line in logs if any(word in line.lower() for word in PAUSE_OR_LOSS)]
        peaks = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    shutil.rmtree(scratch, ignore_errors=True)
    result.update({"workers_unchanged": before == after, "incidents": incidents[:10],
                   "worker_peak_rss_gb": sorted(peaks.values())})
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big-gb", type=float, default=30.0, help="voxel data of the big run, in GB")
    parser.add_argument("--skip-big", action="store_true")
    parser.add_argument("--quick", action="store_true", help="the 1200-volume case only (no big run, no cluster)")
    parser.add_argument("--skip-cluster", action="store_true")
    parser.add_argument("--p2p", action="store_true", help="cluster case: force dask's P2P rechunk")
    args = parser.parse_args(argv)
    if args.quick:
        args.skip_big = args.skip_cluster = True
    rows, lines = [], []
    reference = measure("benchmarks.bench_scale:threads_case", n_volumes=1200)
    rows.append(pair("1200 vols (4.3 GB), threads", reference, None, target="reference"))
    per_volume = reference["result"]["seconds_per_volume"]
    cpu_per_volume = reference["result"]["cpu_seconds_per_volume"]
    lines.append(f"1200 vols: {per_volume * 1e3:.1f} ms/volume (CPU {cpu_per_volume * 1e3:.1f} ms/volume), "
                 f"peak RSS {reference['peak_rss_gb']:.2f} GB")
    if not args.skip_big:
        n_big = int(args.big_gb * 1e9 / VOLUME_BYTES)
        big = measure("benchmarks.bench_scale:threads_case", n_volumes=n_big)
        ratio = big["result"]["seconds_per_volume"] / per_volume
        cpu_ratio = big["result"]["cpu_seconds_per_volume"] / cpu_per_volume
        rows.append(pair(f"{n_big} vols ({args.big_gb:g} GB), threads", big, None,
                         target="RSS <= 2 GB, time/volume within 20 %"))
        lines.append(f"{n_big} vols: {big['result']['seconds_per_volume'] * 1e3:.1f} ms/volume "
                     f"({ratio:.2f}x the 1200-volume run's; CPU {big['result']['cpu_seconds_per_volume'] * 1e3:.1f} "
                     f"ms/volume, {cpu_ratio:.2f}x), peak RSS {big['peak_rss_gb']:.2f} GB")
    if not args.skip_cluster:
        cluster = measure("benchmarks.bench_scale:cluster_case", n_volumes=1200, p2p=args.p2p)
        rows.append(pair("1200 vols, LocalCluster(2 x 1 GiB)", cluster, None, target="no pause/restart/kill"))
        result = cluster["result"]
        lines.append(f"cluster: {result['seconds_per_volume'] * 1e3:.1f} ms/volume, "
                     f"workers unchanged {result['workers_unchanged']}, incidents {result['incidents']}, "
                     f"worker peak RSS {result['worker_peak_rss_gb']} GB, client {cluster['peak_rss_gb']:.2f} GB")
    report("scale", rows)
    lines.append("load average (1, 5, 15 min) at the end: " + ", ".join(f"{load:.2f}" for load in os.getloadavg()))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
