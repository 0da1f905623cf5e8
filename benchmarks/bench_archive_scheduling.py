"""Archive build: one task per run (chunks computed inside it) vs each run's graph on the active scheduler.

Usage: python benchmarks/bench_archive_scheduling.py [threads|distributed] [mode]
Without a mode, runs each mode in its own process and prints a table. 4 runs x 50 volumes.
Modes: "build_archive" (as shipped at this commit), "graph-per-run" (each run's fit + save_signals
submitted from the client, one run after the other, to the active scheduler: its chunks in parallel).
At commit 3cc2136 "build_archive" was one task per run computing its chunks with a nested
dask.compute(scheduler="sync"); the commit after it records both measurements.
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _graph_per_run(dataset, store, masker):
    """The alternative: no nested scheduler; each run's graph goes to the active scheduler."""
    from sklearn.base import clone

    from lazymask.archive import find_runs
    from lazymask.interfaces.fmriprep import confounds_from_table, strategy_parameters
    from lazymask.maskers import save_signals

    params = strategy_parameters("simple")
    for row in find_runs(dataset).to_dict("records"):
        frame, sample_mask = confounds_from_table(row["confounds"], **params)
        fitted = clone(masker).set_params(t_r=row["t_r"])
        signals = fitted.fit_transform(row["bold"], confounds=frame, sample_mask=sample_mask)
        save_signals(signals, store, row["group"], masker=fitted)


def _one(scheduler: str, mode: str) -> dict:
    import dask

    from lazymask.archive import build_archive
    from lazymask.datasets import make_fmriprep_dataset
    from lazymask.io import _gzip
    from lazymask.maskers import NiftiLabelsMasker

    root = Path(tempfile.mkdtemp())
    dataset = make_fmriprep_dataset(root / "ds", n_subjects=2, n_volumes=50, voxel_size=3.0)  # 4 runs
    masker = NiftiLabelsMasker(str(dataset / "atlas-demo_dseg.nii.gz"), detrend=True, standardize="zscore_sample")
    data_bytes = 0
    import nibabel as nib
    for bold in dataset.rglob("*_desc-preproc_bold.nii.gz"):
        data_bytes += nib.load(bold).dataobj.dtype.itemsize * int(__import__("numpy").prod(nib.load(bold).shape))
    client = None
    if scheduler == "distributed":
        import distributed
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None)
        client = distributed.Client(cluster)
        count = lambda: sum(client.run(_gzip.bytes_decompressed).values())  # noqa: E731
    else:
        dask.config.set(scheduler="threads", num_workers=2)
        count = _gzip.bytes_decompressed
    before, start = count(), time.perf_counter()
    if mode == "build_archive":
        build_archive(dataset, root / "a.zarr", masker, confounds_strategy="simple", progress=False)
    else:
        _graph_per_run(dataset, root / "a.zarr", masker)
    elapsed = time.perf_counter() - start
    decompressions = (count() - before) / data_bytes
    if client is not None:
        client.close()
        cluster.close()
    shutil.rmtree(root)
    return {"scheduler": scheduler, "mode": mode, "seconds": round(elapsed, 2),
            "decompressions_per_file": round(decompressions, 2),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}


if __name__ == "__main__":
    if len(sys.argv) == 3:
        print(json.dumps(_one(sys.argv[1], sys.argv[2])))
        sys.exit()
    schedulers = sys.argv[1:] or ["threads", "distributed"]
    rows = []
    for scheduler in schedulers:
        for mode in ("build_archive", "graph-per-run"):
            out = subprocess.run([sys.executable, __file__, scheduler, mode], capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{'scheduler':12s} {'mode':14s} {'seconds':>8s} {'decompr/file':>13s} {'peak RSS MB':>12s}")
    for r in rows:
        print(f"{r['scheduler']:12s} {r['mode']:14s} {r['seconds']:8.2f} {r['decompressions_per_file']:13.2f} "
              f"{r['peak_rss_mb']:12d}")
