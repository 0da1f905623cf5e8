"""Archive build: how runs are scheduled (build_archive as shipped vs each run's graph sent from the client).

Usage: python benchmarks/bench_archive_scheduling.py [--quick] | SCHEDULER MODE [4x50|1x200]
(SCHEDULER: threads or distributed, a 2-process LocalCluster). Without arguments, every case in
its own process, as a table: 4 runs x 50 volumes, and 1x200 (one run of 200 volumes, where only
chunk-level parallelism can use both workers). Peak RSS is the client process's.
Modes: "build_archive" (as shipped at this commit), "graph-per-run" (each run's fit + save_signals
submitted from the client, one run after the other, to the active scheduler: its chunks in parallel).
To compare with the former design (one task per run, its chunks computed with a nested
dask.compute(scheduler="sync")), run a case with PYTHONPATH set to a checkout of commit 3cc2136;
docs/archive.md gives the figures.
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


def _graph_per_run(dataset, store, masker, **filters):
    """The alternative: no nested scheduler; each run's graph goes to the active scheduler."""
    from sklearn.base import clone

    from lazymask.archive import find_runs
    from lazymask.interfaces.fmriprep import confounds_from_table, strategy_parameters
    from lazymask.maskers import save_signals

    params = strategy_parameters("simple")
    for row in find_runs(dataset, **filters).to_dict("records"):
        frame, sample_mask = confounds_from_table(row["confounds"], **params)
        fitted = clone(masker).set_params(t_r=row["t_r"])
        signals = fitted.fit_transform(row["bold"], confounds=frame, sample_mask=sample_mask)
        save_signals(signals, store, row["group"], masker=fitted)


def _one(scheduler: str, mode: str, case: str = "4x50") -> dict:
    import dask

    from lazymask.archive import build_archive, find_runs
    from lazymask.datasets import make_fmriprep_dataset
    from lazymask.io import _gzip
    from lazymask.maskers import NiftiLabelsMasker

    root = Path(tempfile.mkdtemp())
    n_volumes = 50 if case == "4x50" else 200
    filters = {} if case == "4x50" else {"subjects": "01", "sessions": "1"}  # "1x200": one long run
    dataset = make_fmriprep_dataset(root / "ds", n_subjects=2, n_volumes=n_volumes, voxel_size=3.0)  # 4 runs
    masker = NiftiLabelsMasker(str(dataset / "atlas-demo_dseg.nii.gz"), detrend=True, standardize="zscore_sample")
    data_bytes = 0
    import nibabel as nib
    for bold in find_runs(dataset, **filters)["bold"]:
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
        build_archive(dataset, root / "a.zarr", masker, confounds_strategy="simple", progress=False, **filters)
    else:
        _graph_per_run(dataset, root / "a.zarr", masker, **filters)
    elapsed = time.perf_counter() - start
    decompressions = (count() - before) / data_bytes
    if client is not None:
        client.close()
        cluster.close()
    shutil.rmtree(root)
    return {"case": case, "scheduler": scheduler, "mode": mode, "seconds": round(elapsed, 2),
            "decompressions_per_file": round(decompressions, 2),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}


def main(quick: bool = False) -> list[dict]:
    """Each (case, scheduler, mode) in its own process; print the table and return its rows."""
    rows = []
    for case in ("4x50",) if quick else ("4x50", "1x200"):
        for scheduler in ("threads", "distributed"):
            for mode in ("build_archive", "graph-per-run"):
                out = subprocess.run([sys.executable, __file__, scheduler, mode, case], capture_output=True,
                                     text=True, check=True)
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{'case':6s} {'scheduler':12s} {'mode':14s} {'seconds':>8s} {'decompr/file':>13s} {'peak RSS MB':>12s}")
    for r in rows:
        print(f"{r['case']:6s} {r['scheduler']:12s} {r['mode']:14s} {r['seconds']:8.2f} "
              f"{r['decompressions_per_file']:13.2f} {r['peak_rss_mb']:12d}")
    return rows


if __name__ == "__main__":
    if len(sys.argv) >= 3:
        print(json.dumps(_one(*sys.argv[1:4])))
    else:
        main("--quick" in sys.argv)
