"""Benchmark: two issue-13 speed targets, each side in its own process, in one run (ratios).

* ``NiftiMapsMasker`` with a 1 mm probabilistic atlas (100 smooth overlapping maps, 4D float32
  ``.nii.gz`` on the 182 x 218 x 182 MNI grid, generated once and cached in ``benchmarks/data``)
  on the 200-volume 2 mm ``.nii.gz`` run (``benchmarks.data.ensure_run``): ``fit_transform`` then
  compute on lazymask's side, ``fit_transform`` on nilearn's (both resample the maps onto the
  run's grid, linearly). Target: lazymask <= 0.15x nilearn.
* ``MultiNiftiMasker`` (``mask_strategy="epi"``, detrend, ``zscore_sample``, 6 confounds: the
  setting (b) of ``benchmarks/bench_maskers.py``) on 10 runs of 200 volumes: lazymask fits,
  transforms and streams every run into one zarr store (one ``save_signals`` call, one group per
  run: the runs of a memory-budget window computed together);
  nilearn's ``fit_transform`` with its default ``n_jobs=1``. The 10 runs are symbolic links, under
  10 names, to the one cached run (every run is opened and read on both sides). Target: lazymask
  <= 0.35x nilearn.

Each case returns its output (the maps case: every signal; the multi case: a strided sample of
every run and the sums of squares), and the outputs are checked equal (float32 tolerance). The
multi case times its work itself (fit, transform, the writes; on lazymask's side not the reading
back of the store for the check); the maps case is timed whole (``fit_transform`` and compute).

    python -m benchmarks.bench_regionspeed [--quick] [--only maps|multi]

``--quick``: 40 volumes, 3 runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from benchmarks import bench_maskers
from benchmarks._harness import RESULTS, measure, preload
from benchmarks.bench_regions import _atomic_save, brain_mask
from benchmarks.data import DATA_DIR, ensure_run

SHAPE_1MM = (182, 218, 182)
N_MAPS = 100
MAP_SIGMA_MM = 6.0
MAP_FLOOR = 0.01  # blobs truncated at 1 % of their peak
TARGETS = {"maps": 0.15, "multi": 0.35}


# -- data -------------------------------------------------------------------------------------------
def mni_affine_1mm() -> np.ndarray:
    """The FSL MNI152 1 mm grid (182 x 218 x 182): the 2 mm grid's corner, 1 mm voxels."""
    return np.array([[-1.0, 0, 0, 90], [0, 1.0, 0, -126], [0, 0, 1.0, -72], [0, 0, 0, 1]])


def brain_mask_1mm() -> np.ndarray:
    """The benchmark run's brain (2 mm) on the 1 mm grid, nearest voxel."""
    brain = brain_mask()
    index = [np.minimum(np.rint(np.arange(n) / 2).astype(int), m - 1) for n, m in zip(SHAPE_1MM, brain.shape,
                                                                                          strict=True)]
    return brain[np.ix_(*index)]


def ensure_maps_1mm(n_maps: int = N_MAPS) -> Path:
    """``n_maps`` smooth overlapping probabilistic maps (0..1, float32) at 1 mm, as a cached ``.nii.gz``.

    Gaussian blobs (sigma 6 mm, truncated at 1 % of the peak, peak uniform in 0.5..1) centred on
    seeded random brain voxels, cut to the brain: about 20 000 non-zero voxels per map.
    """
    import nibabel as nib

    path = DATA_DIR / f"bench-v1_maps{n_maps}_1mm.nii.gz"
    if path.exists():
        return path
    brain = brain_mask_1mm()
    inside = np.argwhere(brain)
    rng = np.random.default_rng([1, n_maps])
    centres = inside[rng.choice(len(inside), n_maps, replace=False)]
    half = int(np.ceil(MAP_SIGMA_MM * np.sqrt(-2 * np.log(MAP_FLOOR))))
    offsets = np.arange(-half, half + 1, dtype=np.float64)
    squared = offsets[:, None, None] ** 2 + offsets[None, :, None] ** 2 + offsets[None, None, :] ** 2
    box = np.exp(-squared / (2 * MAP_SIGMA_MM**2))
    box[box < MAP_FLOOR] = 0
    maps = np.zeros((*SHAPE_1MM, n_maps), dtype=np.float32, order="F")
    for index, centre in enumerate(centres):
        lo = centre - half
        where = tuple(slice(max(0, a), min(n, a + box.shape[0])) for a, n in zip(lo, SHAPE_1MM, strict=True))
        cut = tuple(slice(s.start - a, s.stop - a) for s, a in zip(where, lo, strict=True))
        volume = maps[..., index]
        volume[where] = box[cut] * rng.uniform(0.5, 1.0)
        volume *= brain
    _atomic_save(nib.Nifti1Image(maps, mni_affine_1mm()), path)
    return path


def run_links(path: str, n_runs: int, folder: str) -> list[str]:
    """``n_runs`` distinct names (symbolic links) of one run: each is opened and read as its own run."""
    return bench_maskers._run_links(path, n_runs, folder)


# -- cases (each in its own process) ----------------------------------------------------------------
@preload("lazymask.maskers", "distributed")  # every first dask.compute imports distributed
def lazymask_maps_case(path: str, maps: str) -> dict:
    from lazymask.maskers import NiftiMapsMasker

    signals = NiftiMapsMasker(maps).fit_transform(path).compute()
    return {"signals": np.asarray(signals.values).tolist(), "dtype": str(signals.dtype)}


@preload("nilearn.maskers")
def nilearn_maps_case(path: str, maps: str) -> dict:
    from nilearn.maskers import NiftiMapsMasker

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        signals = NiftiMapsMasker(maps).fit_transform(path)
    return {"signals": np.asarray(signals).tolist(), "dtype": str(signals.dtype)}


@preload("lazymask.maskers", "distributed")
def lazymask_multi_case(path: str, n_runs: int, n_time: int) -> dict:
    """fit + transform + every run streamed to zarr: the work timed; then the store read back to check."""
    folder = tempfile.mkdtemp(prefix="bench-regionspeed-")
    try:
        runs = run_links(path, n_runs, folder)
        store = Path(folder) / "signals.zarr"
        start = time.perf_counter()
        groups = bench_maskers.multi_to_zarr(runs, n_time, store)
        work = time.perf_counter() - start
        return {**bench_maskers.stored_multi_summary(store, groups), "work_seconds": work}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@preload("nilearn.maskers")
def nilearn_multi_case(path: str, n_runs: int, n_time: int) -> dict:
    from nilearn.maskers import MultiNiftiMasker

    folder = tempfile.mkdtemp(prefix="bench-regionspeed-")
    try:
        runs = run_links(path, n_runs, folder)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            masker = MultiNiftiMasker(**bench_maskers._masker_kwargs("b"))  # n_jobs=1, nilearn's default
            signals = masker.fit_transform(runs, confounds=[bench_maskers._confounds("b", n_time)] * n_runs)
        work = time.perf_counter() - start
        return {**bench_maskers._multi_summary(signals), "work_seconds": work}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# -- checks and driver ------------------------------------------------------------------------------
def same_signals(ours: dict, reference: dict) -> str:
    """``assert_allclose`` at float32 tolerance (rtol 1e-4, atol 1e-4 of the largest signal)."""
    a, b = np.asarray(ours["signals"]), np.asarray(reference["signals"])
    if a.shape != b.shape:
        return f"DIFFERENT shapes {a.shape} vs {b.shape}"
    scale = float(np.max(np.abs(b))) or 1.0
    try:
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * scale)
        same = True
    except AssertionError:
        same = False
    return (f"equal: {same} (max abs diff {float(np.max(np.abs(a - b))):.2g} of max {scale:.3g}; "
            f"dtype {ours['dtype']} vs {reference['dtype']})")


def _timed(measured: dict) -> dict:
    """The case's own timing of its work when it reports one (the multi case: not the check's read-back)."""
    work = measured["result"].get("work_seconds")
    return measured if work is None else {**measured, "seconds": work, "call_seconds": measured["seconds"]}


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(quick: bool = False, only: str | None = None) -> list[dict]:
    n_time, n_runs = (40, 3) if quick else (200, 10)
    path = str(ensure_run(n_time, True))
    here = "benchmarks.bench_regionspeed"
    rows = []
    print(f"== regionspeed: {n_time}-volume .nii.gz, load average {_load()}", flush=True)
    cases = []
    if only in (None, "maps"):
        maps = str(ensure_maps_1mm())
        cases.append((f"NiftiMapsMasker {N_MAPS} maps 1 mm, {n_time} vols 2 mm", "maps",
                      f"{here}:lazymask_maps_case", f"{here}:nilearn_maps_case", {"path": path, "maps": maps},
                      same_signals))
    if only in (None, "multi"):
        cases.append((f"MultiNiftiMasker (b) {n_runs} x {n_time} vols -> zarr", "multi",
                      f"{here}:lazymask_multi_case", f"{here}:nilearn_multi_case",
                      {"path": path, "n_runs": n_runs, "n_time": n_time},
                      lambda a, b: bench_maskers._same(a, b)))
    for label, key, ours_target, reference_target, params, check in cases:
        load = _load()
        ours = _timed(measure(ours_target, **params))
        reference = _timed(measure(reference_target, **params))
        row = {"case": label, "seconds": ours["seconds"], "rss_gb": ours["peak_rss_gb"],
               "nilearn_seconds": reference["seconds"], "nilearn_rss_gb": reference["peak_rss_gb"],
               "x_nilearn": ours["seconds"] / reference["seconds"], "target": TARGETS[key],
               "check": check(ours["result"], reference["result"]), "load_before": load, "load_after": _load()}
        rows.append(row)
        print(f"{label:<46} lazymask {row['seconds']:6.2f} s ({row['rss_gb']:.2f} GB)  nilearn "
              f"{row['nilearn_seconds']:6.2f} s ({row['nilearn_rss_gb']:.2f} GB)  {row['x_nilearn']:.3f}x "
              f"(target <= {row['target']}x)  {row['check']}  load {load} -> {row['load_after']}", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "regionspeed.json").write_text(__import__("json").dumps(
        {"rows": rows, "time": time.ctime()}, indent=2, default=str))
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="40 volumes, 3 runs")
    parser.add_argument("--only", choices=("maps", "multi"), help="one case only")
    arguments = parser.parse_args()
    main(arguments.quick, arguments.only)
