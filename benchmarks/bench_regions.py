"""Benchmark: region maskers (labels, maps, spheres) of lazymask vs nilearn on a 2 mm int16 run.

Cases (each in its own process, see ``benchmarks/_harness.py``), on the cached ``.nii.gz`` run of
``benchmarks.data.ensure_run`` (200 volumes; 20 with ``--quick``):

* a 400-parcel labels atlas (Voronoi cells of seeded random points inside the brain), ``mean``
  and ``median``;
* 1024 probabilistic maps (DiFuMo-1024 size: smooth positive blobs truncated at 5 % of their
  peak, float32, 4D; 64 maps with ``--quick``);
* the 264 Power 2011 spheres at 5 mm.

Atlas and maps are generated deterministically and cached in ``benchmarks/data/``.

    python -m benchmarks.bench_regions [--quick]
"""

from __future__ import annotations

import argparse
import os
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from nilearn import maskers as nilearn_maskers

from benchmarks._harness import measure, pair, preload, report
from benchmarks.data import DATA_DIR, SHAPE, baseline_volume, ensure_run, mni_affine
from lazymask import maskers as lazymask_maskers  # both imported here: the harness times the call only

N_PARCELS = 400
BLOB_SIGMA_VOXELS = 3.0
POWER_CSV = Path(__import__("nilearn").__file__).parent / "datasets" / "data" / "power_2011.csv"


# -- data -------------------------------------------------------------------------------------------
def brain_mask() -> np.ndarray:
    """The benchmark run's brain: voxels of the synthetic mean volume above 20 % of its maximum."""
    volume = baseline_volume().reshape(SHAPE, order="F")
    return volume > 0.2 * volume.max()


def _atomic_save(img, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{''.join(path.suffixes)}")
    nib.save(img, tmp)
    os.replace(tmp, path)


def _random_brain_voxels(n: int, seed: int):
    """The brain, its voxel indices, ``n`` of them drawn without replacement, and the generator (for more draws)."""
    brain = brain_mask()
    inside = np.argwhere(brain)
    rng = np.random.default_rng(seed)
    return brain, inside, inside[rng.choice(len(inside), n, replace=False)], rng


def ensure_parcellation(n_parcels: int = N_PARCELS) -> Path:
    """Voronoi parcellation of the brain from ``n_parcels`` seeded random points (int16 labels 1..n)."""
    path = DATA_DIR / f"bench-v1_parcels{n_parcels}_2mm.nii.gz"
    if path.exists():
        return path
    from scipy.spatial import cKDTree

    _, inside, centres, _ = _random_brain_voxels(n_parcels, seed=400)
    _, nearest = cKDTree(centres).query(inside)
    labels = np.zeros(SHAPE, dtype=np.int16)
    labels[tuple(inside.T)] = nearest + 1
    _atomic_save(nib.Nifti1Image(labels, mni_affine()), path)
    return path


def ensure_maps(n_maps: int) -> Path:
    """``n_maps`` smooth positive blobs (Gaussian, truncated at 5 % of the peak) in the brain, float32 4D."""
    path = DATA_DIR / f"bench-v1_maps{n_maps}_2mm.nii"
    if path.exists():
        return path
    brain, _, centres, rng = _random_brain_voxels(n_maps, seed=1024)
    half = int(np.ceil(BLOB_SIGMA_VOXELS * np.sqrt(2 * np.log(20))))
    offsets = np.arange(-half, half + 1)
    box = np.exp(-(offsets[:, None, None] ** 2 + offsets[None, :, None] ** 2 + offsets[None, None, :] ** 2)
                 / (2 * BLOB_SIGMA_VOXELS**2))
    box[box < 0.05] = 0
    header = nib.Nifti1Header()
    header.set_data_dtype(np.float32)
    header.set_data_shape((*SHAPE, n_maps))
    header.set_qform(mni_affine(), code=4)
    header.set_sform(mni_affine(), code=4)
    header["vox_offset"] = 352
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:  # one map at a time: bounded memory
        header.write_to(f)
        f.write(b"\x00" * (352 - f.tell()))
        for centre in centres:
            volume = np.zeros(SHAPE, dtype=np.float32)
            lo = centre - half
            slices = tuple(slice(max(0, a), min(n, a + box.shape[0])) for a, n in zip(lo, SHAPE, strict=True))
            cut = tuple(slice(s.start - a, s.stop - a) for s, a in zip(slices, lo, strict=True))
            volume[slices] = box[cut] * rng.uniform(0.5, 1.0)
            volume *= brain
            f.write(volume.tobytes(order="F"))
    os.replace(tmp, path)
    return path


def power_seeds() -> list[list[float]]:
    return pd.read_csv(POWER_CSV)[["X", "Y", "Z"]].to_numpy(dtype=float).tolist()


# -- cases ----------------------------------------------------------------------------------------------
def _summary(signals) -> dict:
    signals = np.asarray(signals, dtype=np.float64)
    return {"shape": list(signals.shape), "sum": float(signals.sum()),
            "sample": signals[:: max(1, signals.shape[0] // 7), :: max(1, signals.shape[1] // 11)].ravel().tolist()}


def _masker(kind: str, package: str, **options):
    maskers = nilearn_maskers if package == "nilearn" else lazymask_maskers
    if kind == "labels":
        return maskers.NiftiLabelsMasker(str(ensure_parcellation()), strategy=options["strategy"])
    if kind == "maps":
        return maskers.NiftiMapsMasker(str(ensure_maps(options["n_maps"])))
    return maskers.NiftiSpheresMasker(power_seeds(), radius=5.0, allow_overlap=True)


@preload("lazymask.maskers")
def lazymask_case(path: str, kind: str, **options) -> dict:
    signals = _masker(kind, "lazymask", **options).fit_transform(path)
    return _summary(signals.compute().values)


@preload("nilearn.maskers")
def nilearn_case(path: str, kind: str, **options) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _summary(_masker(kind, "nilearn", **options).fit_transform(path))


def _same(a: dict, b: dict, atol: float = 1e-2) -> bool:
    return a["shape"] == b["shape"] and np.allclose(a["sample"], b["sample"], rtol=1e-4, atol=atol)


def main(quick: bool = False) -> list[dict]:
    n_volumes, n_maps = (20, 64) if quick else (200, 1024)
    path = str(ensure_run(n_volumes, compressed=True))
    ensure_parcellation()
    ensure_maps(n_maps)
    here = "benchmarks.bench_regions"
    cases = [
        (f"labels {N_PARCELS} mean, {n_volumes} vols .nii.gz", "labels", {"strategy": "mean"}),
        (f"labels {N_PARCELS} median, {n_volumes} vols", "labels", {"strategy": "median"}),
        (f"maps {n_maps} (float32 4D), {n_volumes} vols", "maps", {"n_maps": n_maps}),
        (f"spheres Power 264 r=5mm, {n_volumes} vols", "spheres", {}),
    ]
    rows = []
    for label, kind, options in cases:
        ours = measure(f"{here}:lazymask_case", path=path, kind=kind, **options)
        reference = measure(f"{here}:nilearn_case", path=path, kind=kind, **options)
        # nilearn averages the spheres of an int16 run into int16 (truncating): compare within 1
        same = _same(ours["result"], reference["result"], atol=1.0 if kind == "spheres" else 1e-2)
        rows.append(pair(label, ours, reference, target=f"time <= 0.3x, RSS <= 1x; results equal: {same}"))
    report("regions", rows)
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 volumes, 64 maps")
    main(parser.parse_args().quick)
