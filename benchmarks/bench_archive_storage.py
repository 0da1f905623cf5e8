"""Benchmark: a 20-run archive into icechunk on S3 (moto's server on loopback) vs on the local disk.

The dataset: ``make_fmriprep_dataset(n_subjects=12)`` (20 runs: eight subjects with two sessions, four
without), ``--volumes`` volumes each, its 15-region atlas; generated once in ``benchmarks/data/``.
Each build: ``build_archive`` with ``NiftiLabelsMasker`` (detrend, ``zscore_sample``) and the
``"simple"`` confounds, threaded scheduler, into a new icechunk repository

* on the local disk (``icechunk.local_filesystem_storage``), or
* on S3: ``s3://<bucket>/<prefix>`` of ``lazymask.testing.s3_test_server`` (moto's S3 server,
  started by this script in its own process, on 127.0.0.1).

Each build runs in its own process (``benchmarks/_harness.py``), ``--repeat`` times per kind,
alternating kinds; the table shows the minimum (and the JSON the median) wall time, the ratio
S3/local of the minima and of the medians, and the load average before and after. Target: S3 <=
1.3x local.

    python -m benchmarks.bench_archive_storage [--repeat 3] [--volumes 60]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import uuid

from benchmarks._harness import measure, pair, report
from benchmarks.data import DATA_DIR

WORK = DATA_DIR / "archive-storage-work"


def build(dataset: str, store: str, storage_options: dict | None = None) -> dict:
    """One case: build the archive (in this process, the threaded scheduler)."""
    import dask

    from lazymask.archive import build_archive
    from lazymask.maskers import NiftiLabelsMasker

    masker = NiftiLabelsMasker(f"{dataset}/atlas-demo_dseg.nii.gz", lut=f"{dataset}/atlas-demo_dseg.tsv",
                               detrend=True, standardize="zscore_sample")
    with dask.config.set(scheduler="threads"):
        archive = build_archive(dataset, store, masker, confounds_strategy="simple", progress=False,
                                storage_options=storage_options)
    return {"runs": len(archive._record["runs"]), "failed": len(archive._record["failures"]),
            "commits": len(archive.history)}


build.preload = ("lazymask.archive", "lazymask.maskers", "icechunk", "s3fs")


def _dataset(volumes: int) -> str:
    from lazymask.datasets import make_fmriprep_dataset

    path = make_fmriprep_dataset(DATA_DIR / f"archive-storage-ds-{volumes}", n_subjects=12, n_volumes=volumes)
    return str(path)


def _check(store: str, storage_options: dict | None) -> float:
    from lazymask.archive import open_archive

    archive = open_archive(store, storage_options=storage_options)
    runs = archive.runs
    assert (runs["status"] == "complete").all(), runs
    return round(sum(float(abs(archive.signals(group=g).values).sum()) for g in runs["group"]), 6)


def _summary(seconds: list[float], result: dict) -> dict:
    return {"seconds": min(seconds), "median_seconds": statistics.median(seconds), "all_seconds": seconds,
            "peak_rss_gb": 0.0, "result": result}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--volumes", type=int, default=60)
    parser.add_argument("--quick", action="store_true", help="one build of each kind, 30 volumes")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeat, args.volumes = 1, 30

    from lazymask.testing import s3_test_server

    dataset = _dataset(args.volumes)
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    times: dict[str, list[float]] = {"local": [], "s3": []}
    results, rss = {}, {"local": 0.0, "s3": 0.0}
    load_before = os.getloadavg()
    with s3_test_server() as server:
        bucket = server.bucket("bench-archive")
        for _ in range(args.repeat):
            for kind in ("local", "s3"):
                name = f"archive-{uuid.uuid4().hex[:8]}"
                store, options = ((str(WORK / name), None) if kind == "local"
                                  else (f"{bucket}/{name}", server.storage_options))
                done = measure("benchmarks.bench_archive_storage:build", dataset=dataset, store=store,
                               storage_options=options)
                done["result"]["values"] = _check(store, options)  # every run complete, outside the clock
                if kind == "local":
                    shutil.rmtree(WORK / name)
                times[kind].append(done["seconds"])
                rss[kind] = max(rss[kind], done["peak_rss_gb"])
                results[kind] = done["result"]
    load_after = os.getloadavg()
    assert results["local"] == {**results["s3"]}, results  # the same archive (runs, commits, a value)
    local, s3 = _summary(times["local"], results["local"]), _summary(times["s3"], results["s3"])
    local["peak_rss_gb"], s3["peak_rss_gb"] = rss["local"], rss["s3"]
    row = pair(f"{results['local']['runs']}-run archive, {args.volumes} vol: S3 vs local", s3, local,
               target="S3 <= 1.3x local", reference_name="local")
    row["median_ratio"] = s3["median_seconds"] / local["median_seconds"]
    row["load_average"] = {"before": load_before, "after": load_after}
    report("bench_archive_storage", [row])
    print(f"S3    min {s3['seconds']:.2f} s  median {s3['median_seconds']:.2f} s  ({', '.join(f'{t:.2f}' for t in times['s3'])})")
    print(f"local min {local['seconds']:.2f} s  median {local['median_seconds']:.2f} s  "
          f"({', '.join(f'{t:.2f}' for t in times['local'])})")
    print(f"ratio S3/local: min {row['time_ratio']:.2f}, median {row['median_ratio']:.2f} (target <= 1.3); "
          f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after; "
          f"{results['local']['commits']} commits per build")


if __name__ == "__main__":
    main()
