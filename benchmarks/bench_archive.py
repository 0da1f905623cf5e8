"""Benchmark: a whole fMRIPrep dataset into one archive (lazymask) vs the loop a nilearn user writes.

The dataset: ``N`` runs in fMRIPrep's layout (``sub-XX/ses-1/func/``), each a 2 mm int16 ``.nii.gz``
(91 x 109 x 91, the run of ``benchmarks.data.write_run`` with its own seed) with its sidecar,
brain mask and a confounds TSV holding the columns of the ``"simple"`` strategy; the 400-parcel
atlas of ``benchmarks.bench_regions``. Generated once, cached in ``benchmarks/data/``.

Cases, each in its own process (``benchmarks/_harness.py``), timed from the masker's creation until
the job is done (the archive built; nilearn: every run's ``.npy`` saved), before the outputs are
read back and compared (the whole case's time is printed too, "with the read-back"):

* lazymask ``build_archive`` (``NiftiLabelsMasker``, 400 parcels, ``"simple"`` confounds, detrend,
  ``zscore_sample``) on the default threaded scheduler, against nilearn's
  ``load_confounds_strategy`` + ``NiftiLabelsMasker.fit_transform`` per run with joblib
  ``n_jobs=2``, each saved to ``.npy``; results compared;
* the same build on a ``distributed.LocalCluster(n_workers=2, threads_per_worker=1)``;
* peak RSS of the build for ``N / 4`` and ``N`` runs;
* a build killed (SIGKILL) when half its runs are complete, then resumed: the resume's time
  against a full build's, and the resumed archive against the uninterrupted one.

    python -m benchmarks.bench_archive [--quick] [--repeat N]   # --quick: 4 runs of 50 volumes
    python -m benchmarks.bench_archive --runs 40 --volumes 200
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from benchmarks._harness import JOB_SECONDS, ROOT, _env, measure, pair, preload, report
from benchmarks.data import DATA_DIR, T_R, compress, write_run

WORK = DATA_DIR / "archive-work"


# -- data ---------------------------------------------------------------------------------------------
def _confounds_tsv(path: Path, n_volumes: int, seed: int) -> None:
    rng = np.random.default_rng([seed, 7])
    columns = {}
    motion = np.cumsum(rng.normal(0, 0.02, (n_volumes, 6)), axis=0) * np.array([1, 1, 1, 0.01, 0.01, 0.01])
    names = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]
    series = dict(zip(names, motion.T, strict=True))
    series.update(csf=rng.normal(900, 5, n_volumes), white_matter=rng.normal(600, 3, n_volumes),
                  global_signal=rng.normal(700, 4, n_volumes))
    for name, values in series.items():
        derivative = np.concatenate([[np.nan], np.diff(values)])
        columns.update({name: values, f"{name}_derivative1": derivative, f"{name}_power2": values**2,
                        f"{name}_derivative1_power2": derivative**2})
    time_index = np.arange(n_volumes)
    for k in range(1, int(2 * n_volumes * T_R / 128.0) + 1):
        columns[f"cosine{k - 1:02d}"] = np.sqrt(2 / n_volumes) * np.cos(np.pi * (2 * time_index + 1) * k / (2 * n_volumes))
    fd = np.concatenate([[np.nan], np.abs(np.diff(motion, axis=0)).sum(axis=1)])
    columns.update(framewise_displacement=fd, std_dvars=np.concatenate([[np.nan], rng.gamma(9, 1 / 9, n_volumes - 1)]))
    columns["non_steady_state_outlier00"] = (time_index == 0).astype(float)
    lines = ["\t".join(columns)] + ["\t".join("n/a" if not np.isfinite(v) else f"{v:.10g}" for v in row)
                                    for row in zip(*columns.values(), strict=True)]
    path.write_text("\n".join(lines) + "\n")


def ensure_dataset(n_runs: int, n_volumes: int) -> Path:
    """The cached fMRIPrep-layout dataset of ``n_runs`` runs (a larger cached one is reused by subsets)."""
    root = DATA_DIR / f"bench-v1_fmriprep_{n_volumes}vols"
    for number in range(1, n_runs + 1):
        func = root / f"sub-{number:02d}" / "ses-1" / "func"
        stem = f"sub-{number:02d}_ses-1_task-rest_run-1"
        bold = func / f"{stem}_space-MNI152NLin2009cAsym_res-2_desc-preproc_bold.nii.gz"
        if bold.exists():
            continue
        func.mkdir(parents=True, exist_ok=True)
        print(f"generating {bold.name} ...", file=sys.stderr, flush=True)
        raw = func / f".{stem}.nii"
        write_run(raw, n_volumes, seed=number)
        compress(raw, func / f".{stem}.nii.gz")
        raw.unlink()
        _confounds_tsv(func / f"{stem}_desc-confounds_timeseries.tsv", n_volumes, number)
        (func / f"{stem}_desc-confounds_timeseries.json").write_text("{}\n")
        (func / f"{stem}_space-MNI152NLin2009cAsym_res-2_desc-preproc_bold.json").write_text(
            json.dumps({"RepetitionTime": T_R}) + "\n")
        (func / f".{stem}.nii.gz").rename(bold)  # last: a run whose bold exists is complete
    return root


def _atlas() -> str:
    from benchmarks.bench_regions import ensure_parcellation

    return str(ensure_parcellation())


# -- cases --------------------------------------------------------------------------------------------
def _summary(stack: np.ndarray) -> dict:
    stack = np.asarray(stack, dtype=np.float64)
    return {"shape": list(stack.shape), "sum_abs": float(np.abs(stack).sum()),
            "sample": stack[:, ::17, ::41].ravel().tolist()}


def _children_peak_gb() -> float:
    """The largest peak RSS of this case's finished child processes (joblib's or the cluster's workers).

    The harness reports the case process's own peak; workers in other processes are not in it.
    """
    import resource

    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20


def _runs(dataset: str, n_runs: int):
    from lazymask.archive import find_runs

    return find_runs(dataset).iloc[:n_runs]


@preload("lazymask.archive", "lazymask.maskers", "distributed")
def lazymask_build(dataset: str, store: str, atlas: str, n_runs: int, cluster: bool = False) -> dict:
    from lazymask.archive import build_archive
    from lazymask.maskers import NiftiLabelsMasker

    start = time.perf_counter()
    masker = NiftiLabelsMasker(atlas, detrend=True, standardize="zscore_sample")
    if cluster:
        from distributed import Client, LocalCluster

        with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as local, Client(local) as client:
            archive = build_archive(_runs(dataset, n_runs), store, masker, confounds_strategy="simple",
                                    client=client, progress=False)
    else:
        archive = build_archive(_runs(dataset, n_runs), store, masker, confounds_strategy="simple", progress=False)
    seconds = time.perf_counter() - start  # the job: the archive built; what follows reads it back to compare
    failed = int((archive.runs["status"] != "complete").sum())
    return {JOB_SECONDS: seconds, "failed": failed, "worker_peak_rss_gb": _children_peak_gb(),
            **_summary(archive.stack().values)}


@preload("lazymask.archive", "lazymask.maskers", "distributed")
def lazymask_build_fresh(dataset: str, store: str, atlas: str, n_runs: int) -> dict:
    """:func:`lazymask_build` into an empty ``store`` (a repeated measurement removes the last one first)."""
    shutil.rmtree(store, ignore_errors=True)
    return lazymask_build(dataset, store, atlas, n_runs)


def _nilearn_run(bold: str, atlas: str, out: str) -> str:
    from nilearn.interfaces.fmriprep import load_confounds_strategy
    from nilearn.maskers import NiftiLabelsMasker

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        confounds, sample_mask = load_confounds_strategy(bold, "simple")
        signals = NiftiLabelsMasker(atlas, detrend=True, standardize="zscore_sample", t_r=T_R).fit_transform(
            bold, confounds=confounds, sample_mask=sample_mask)
    np.save(out, signals)
    return out


@preload("nilearn.maskers", "nilearn.interfaces.fmriprep", "joblib")
def nilearn_loop(dataset: str, out_dir: str, atlas: str, n_runs: int) -> dict:
    from joblib import Parallel, delayed

    start = time.perf_counter()
    runs = _runs(dataset, n_runs)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    outs = [str(Path(out_dir) / (group.replace("/", "_") + ".npy")) for group in runs["group"]]
    Parallel(n_jobs=2)(delayed(_nilearn_run)(bold, atlas, out) for bold, out in zip(runs["bold"], outs, strict=True))
    from joblib.externals.loky import get_reusable_executor

    get_reusable_executor().shutdown(wait=True)  # reap the workers, so their peak RSS is counted
    seconds = time.perf_counter() - start  # the job: every run's signals saved; what follows reads them back
    return {JOB_SECONDS: seconds, "worker_peak_rss_gb": _children_peak_gb(),
            **_summary(np.stack([np.load(out) for out in outs]))}


def _kill_halfway(dataset: str, store: Path, atlas: str, n_runs: int) -> int:
    """Start a build in a subprocess and SIGKILL it once half its runs are committed."""
    from lazymask.archive import open_archive

    def committed() -> int:
        try:
            history = open_archive(store).history
        except Exception:  # noqa: BLE001 - no repository (or no root) yet
            return 0
        return sum(c["message"].split("written: ")[1].count(", ") + 1 for c in history if "written: " in c["message"])

    script = ("import sys; from benchmarks.bench_archive import lazymask_build; "
              "lazymask_build(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))")
    process = subprocess.Popen([sys.executable, "-c", script, dataset, str(store), atlas, str(n_runs)],
                               cwd=ROOT, env=_env())
    while committed() < n_runs // 2 and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    return committed()


def _values(case: dict) -> dict:
    return {k: v for k, v in case["result"].items() if k != "worker_peak_rss_gb"}


def _same(a: dict, b: dict, atol: float = 1e-3) -> bool:
    return a["shape"] == b["shape"] and np.allclose(a["sample"], b["sample"], atol=atol) and np.isclose(
        a["sum_abs"], b["sum_abs"], rtol=1e-4)


def main(quick: bool = False, n_runs: int | None = None, n_volumes: int | None = None, repeat: int = 3) -> list[dict]:
    n_runs = n_runs or (4 if quick else 40)
    n_volumes = n_volumes or (50 if quick else 200)
    few = max(2, n_runs // 4)
    dataset, atlas = str(ensure_dataset(n_runs, n_volumes)), _atlas()
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)

    def store(name):
        return str(WORK / name)

    # the headline pair, ``repeat`` times each (min and median); each build starts from an empty store
    full = measure("benchmarks.bench_archive:lazymask_build_fresh", repeat=repeat, dataset=dataset,
                   store=store("full.zarr"), atlas=atlas, n_runs=n_runs)
    nilearn = measure("benchmarks.bench_archive:nilearn_loop", repeat=repeat, dataset=dataset, out_dir=store("npy"),
                      atlas=atlas, n_runs=n_runs)
    cluster = measure("benchmarks.bench_archive:lazymask_build", dataset=dataset, store=store("cluster.zarr"),
                      atlas=atlas, n_runs=n_runs, cluster=True)
    small = measure("benchmarks.bench_archive:lazymask_build", dataset=dataset, store=store("small.zarr"),
                    atlas=atlas, n_runs=few)
    done_before = _kill_halfway(dataset, WORK / "resumed.zarr", atlas, n_runs)
    resumed = measure("benchmarks.bench_archive:lazymask_build", dataset=dataset, store=store("resumed.zarr"),
                      atlas=atlas, n_runs=n_runs)
    name = f"{n_runs} runs x {n_volumes} vols"
    rows = [
        pair(f"archive {name} (threads)", full, nilearn, target="time <= 0.3x nilearn joblib(2)",
             reference_name="nilearn"),
        pair(f"archive {name} (LocalCluster 2x1)", cluster, nilearn, target="same archive",
             reference_name="nilearn"),
        pair(f"peak RSS: {n_runs} runs vs {few} runs", full, small, target="RSS within 10 %",
             reference_name=f"{few} runs"),
        pair(f"resume after SIGKILL ({done_before}/{n_runs} done)", resumed, full, target="time <= 0.55x full",
             reference_name="full build"),
    ]
    report("archive", rows)
    print(f"  {repeat} runs each (min / median): lazymask threads {min(full['all_seconds']):.1f} / "
          f"{full['median_seconds']:.1f} s, nilearn {min(nilearn['all_seconds']):.1f} / {nilearn['median_seconds']:.1f} s: "
          f"{min(full['all_seconds']) / min(nilearn['all_seconds']):.2f} / "
          f"{full['median_seconds'] / nilearn['median_seconds']:.2f}x (target <= 0.3x); all: "
          f"{[round(x, 1) for x in full['all_seconds']]} / {[round(x, 1) for x in nilearn['all_seconds']]}")
    print(f"  with the read-back: lazymask threads {full.get('seconds_with_check', 0):.1f} s, "
          f"nilearn {nilearn.get('seconds_with_check', 0):.1f} s")
    print(f"  load: {os.getloadavg()[0]:.2f} (1-minute average at the end; {os.cpu_count()} cores); other processes' "
          f"load during the threads build {full['others_load']:.2f}/core, nilearn {nilearn['others_load']:.2f}/core")
    checks = {
        "archive == nilearn": _same(full["result"], nilearn["result"]),
        "cluster == threads": _values(full) == _values(cluster),
        "resumed == uninterrupted": _values(full) == _values(resumed),
        "no failed run": not (full["result"]["failed"] or cluster["result"]["failed"] or resumed["result"]["failed"]),
    }
    for check, ok in checks.items():
        print(f"  {check}: {'yes' if ok else 'NO'}")
    for label, case in (("lazymask threads", full), ("lazymask cluster", cluster), ("nilearn joblib", nilearn)):
        print(f"  largest worker-process peak RSS, {label}: {case['result']['worker_peak_rss_gb']:.2f} GB")
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int)
    parser.add_argument("--volumes", type=int)
    parser.add_argument("--repeat", type=int, default=3, help="runs of the threads build and of nilearn's loop")
    args = parser.parse_args()
    main(args.quick, args.runs, args.volumes, args.repeat)
