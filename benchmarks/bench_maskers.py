"""Benchmark: ``NiftiMasker.fit_transform`` (mask_strategy="epi") and ``MultiNiftiMasker`` vs nilearn.

Settings, on 2 mm int16 runs (``benchmarks.data.ensure_run``): (a) no cleaning; (b) detrend +
``standardize="zscore_sample"`` + 6 confounds; (c) (b) + band-pass 0.01-0.1 Hz at t_r = 2 s;
(d) (c) + ``smoothing_fwhm=6``; on a 200-volume ``.nii.gz``, a 1200-volume ``.nii.gz`` and a
1200-volume ``.nii``. Each case runs in its own process (``benchmarks/_harness.py``) and returns
a summary of its output (strided sample, sums) so both sides are checked equal.

lazymask's single-run cases reduce the signals to that summary in the same computation as the
extraction (nothing holds the whole matrix); the multi-run case streams every run to one zarr
store (``save_signals``, one group per run) and reads the summary back from the store. nilearn's
slow cases run once; its (c)/(d) at 1200 volumes are not run (about 20 min each), nor any of its
(c)/(d) with ``--quick`` (about 90 s each whatever the length: one filter call per voxel). The
multi-run case links one run under 10 names, so that every run is read on both sides.

    python -m benchmarks.bench_maskers [--quick]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import dask
import numpy as np

from benchmarks._harness import measure, pair, preload, report
from benchmarks.data import ensure_run

T_R = 2.0
SETTINGS = {
    "a": {},
    "b": {"detrend": True, "standardize": "zscore_sample"},
    "c": {"detrend": True, "standardize": "zscore_sample", "low_pass": 0.1, "high_pass": 0.01, "t_r": T_R},
    "d": {"detrend": True, "standardize": "zscore_sample", "low_pass": 0.1, "high_pass": 0.01, "t_r": T_R,
          "smoothing_fwhm": 6},
}
NILEARN_ESTIMATES = {"c": "~20 min", "d": "~20 min"}


def _confounds(setting: str, n_time: int):
    if setting == "a":
        return None
    return np.random.default_rng(11).standard_normal((n_time, 6))


def _summary(signals) -> dict:
    """Numbers both sides are compared with; lazy signals are reduced in one computation."""
    sample = signals[:: max(1, signals.shape[0] // 13), :: max(1, signals.shape[1] // 17)]
    as64 = signals.astype(np.float64)
    sample, total, squares = dask.compute(sample, abs(as64).sum(), (as64**2).sum())
    return {"sample": np.asarray(sample).ravel().tolist(), "sum_abs": float(total), "sum_squares": float(squares),
            "shape": list(signals.shape), "dtype": str(signals.dtype)}


def _masker_kwargs(setting: str) -> dict:
    return {"mask_strategy": "epi", **SETTINGS[setting]}


# -- cases (run in their own process) ---------------------------------------------------------------
@preload("lazymask.maskers")
def lazymask_case(path: str, setting: str, n_time: int) -> dict:
    from lazymask.maskers import NiftiMasker

    signals = NiftiMasker(**_masker_kwargs(setting)).fit_transform(path, confounds=_confounds(setting, n_time))
    return _summary(signals.data)


@preload("nilearn.maskers")
def nilearn_case(path: str, setting: str, n_time: int) -> dict:
    from nilearn.maskers import NiftiMasker

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        signals = NiftiMasker(**_masker_kwargs(setting)).fit_transform(path, confounds=_confounds(setting, n_time))
    return _summary(signals)


def _run_links(path: str, n_runs: int, folder: str) -> list[str]:
    """``n_runs`` distinct paths (symbolic links) to one run, so every run is read on both sides."""
    links = []
    for index in range(n_runs):
        link = Path(folder) / f"run-{index + 1:02d}_{Path(path).name}"
        os.symlink(path, link)
        links.append(str(link))
    return links


def _multi_summary(runs: list) -> dict:
    parts = [_summary(run) for run in runs]
    return {"runs": len(parts), "sample": [v for p in parts for v in p["sample"]],
            "sum_squares": sum(p["sum_squares"] for p in parts), "shape": parts[0]["shape"],
            "dtype": parts[0]["dtype"]}


def multi_to_zarr(runs: list[str], n_time: int, store: Path) -> list[str]:
    """lazymask's multi case: MultiNiftiMasker (b) fitted and applied to ``runs``, every run written
    to ``store`` by one ``save_signals`` call (one group per run); returns the groups."""
    from lazymask.maskers import MultiNiftiMasker, save_signals

    masker = MultiNiftiMasker(**_masker_kwargs("b"))
    signals = masker.fit_transform(runs, confounds=[_confounds("b", n_time)] * len(runs))
    groups = [f"run-{index + 1:02d}" for index in range(len(runs))]
    save_signals(signals, store, groups, masker=masker)
    return groups


def stored_multi_summary(store: Path, groups: list[str]) -> dict:
    """:func:`_multi_summary` of the runs :func:`multi_to_zarr` wrote, read back from the store."""
    from lazymask.maskers import open_signals

    return _multi_summary([open_signals(store, group).data for group in groups])


@preload("lazymask.maskers")
def lazymask_multi_case(path: str, n_runs: int, n_time: int) -> dict:
    folder = tempfile.mkdtemp(prefix="bench-maskers-")
    try:
        store = Path(folder) / "signals.zarr"
        return stored_multi_summary(store, multi_to_zarr(_run_links(path, n_runs, folder), n_time, store))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@preload("nilearn.maskers")
def nilearn_multi_case(path: str, n_runs: int, n_time: int) -> dict:
    from nilearn.maskers import MultiNiftiMasker

    folder = tempfile.mkdtemp(prefix="bench-maskers-")
    try:
        runs = _run_links(path, n_runs, folder)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            masker = MultiNiftiMasker(n_jobs=2, **_masker_kwargs("b"))
            signals = masker.fit_transform(runs, confounds=[_confounds("b", n_time)] * n_runs)
        return _multi_summary(signals)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# -- driver -----------------------------------------------------------------------------------------
def _same(a: dict, b: dict) -> str:
    if a["shape"] != b["shape"] or a["dtype"] != b["dtype"]:
        return f"DIFFERENT shape/dtype {a['shape']} {a['dtype']} vs {b['shape']} {b['dtype']}"
    diff = float(np.max(np.abs(np.subtract(a["sample"], b["sample"]))))
    same = np.allclose(a["sample"], b["sample"], rtol=1e-4, atol=1e-4 * max(1.0, np.max(np.abs(b["sample"]))))
    same = same and np.isclose(a["sum_squares"], b["sum_squares"], rtol=1e-4)
    return f"equal: {bool(same)} (sample max abs diff {diff:.2g})"


TARGETS = {"a": "time <= 0.4x", "b": "time <= 0.4x", "c": "time <= 0.05x", "d": "time <= 0.05x"}


def main(quick: bool = False) -> list[dict]:
    """Run every case (``quick``: small runs, a few minutes) and print the table."""
    here = "benchmarks.bench_maskers"
    short, long = (40, 60) if quick else (200, 1200)
    inputs = [(short, True), (long, True), (long, False)]
    rows = []
    for n_time, compressed in inputs:
        path = str(ensure_run(n_time, compressed))
        label = f"{n_time} vols {'.nii.gz' if compressed else '.nii'}"
        for setting in SETTINGS:
            ours = measure(f"{here}:lazymask_case", path=path, setting=setting, n_time=n_time)
            target = TARGETS[setting] + ("; RSS <= 0.3x" if n_time == long else "")
            if setting in NILEARN_ESTIMATES and (n_time == long or quick):
                # nilearn band-passes voxel by voxel: ~90 s at any length, ~20 min at 1200 volumes
                estimate = NILEARN_ESTIMATES[setting] if n_time == long and not quick else "~90 s"
                rows.append(pair(f"({setting}) {label}", ours, None, target=f"nilearn not run (est. {estimate})"))
                continue
            reference = measure(f"{here}:nilearn_case", path=path, setting=setting, n_time=n_time)
            rows.append(pair(f"({setting}) {label}", ours, reference,
                             target=f"{target}; {_same(ours['result'], reference['result'])}"))
    n_runs = 3 if quick else 10
    path = str(ensure_run(short, True))
    ours = measure(f"{here}:lazymask_multi_case", path=path, n_runs=n_runs, n_time=short)
    reference = measure(f"{here}:nilearn_multi_case", path=path, n_runs=n_runs, n_time=short)
    rows.append(pair(f"Multi (b) {n_runs}x{short} vols -> zarr", ours, reference,
                     target=f"nilearn n_jobs=2; {_same(ours['result'], reference['result'])}"))
    report("maskers", rows)
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small runs, nilearn without band-pass (a few minutes)")
    main(parser.parse_args().quick)
