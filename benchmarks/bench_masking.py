"""Benchmark: compute_epi_mask and compute_multi_epi_mask, lazymask vs nilearn 0.14.

Run from the repository root::

    python -m benchmarks.bench_masking           # 2 mm runs (91x109x91), 200 int16 volumes, 10 runs
    python -m benchmarks.bench_masking --quick   # small runs, for a smoke test

The runs are generated once into ``benchmarks/data/`` (git-ignored): a smooth fake brain plus
noise, int16, gzipped by nibabel, so they compress like real EPI. Each case runs in its own
process (time of the call, peak RSS of the process). The reference row for the 10-run case is
decompressing the 10 files once with Python's ``gzip`` (zlib).
"""

from __future__ import annotations

import argparse
import gzip

from benchmarks._harness import ROOT, measure, pair, preload, report

DATA = ROOT / "benchmarks" / "data" / "masking"
SIZES = {
    "full": dict(shape=(91, 109, 91), n_volumes=200, voxel_size=2.0, n_runs=10),
    "quick": dict(shape=(30, 36, 30), n_volumes=40, voxel_size=6.0, n_runs=3),
}


def run_paths(size: str) -> list[str]:
    """Paths of the benchmark runs for ``size``, generating the missing ones."""
    import nibabel as nib

    from lazymask.testing import fake_fmri

    spec = SIZES[size]
    folder = DATA / size
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in range(spec["n_runs"]):
        path = folder / f"run-{seed:02d}_bold.nii.gz"
        if not path.exists():
            img = fake_fmri(spec["shape"], spec["n_volumes"], voxel_size=spec["voxel_size"], seed=seed)
            partial = path.with_name(f"partial-{path.name}")
            nib.save(img, partial)
            partial.rename(path)
            del img
        paths.append(str(path))
    return paths


# -- cases (each runs in its own process) ------------------------------------------------------------
@preload("lazymask.masking")
def lazymask_epi_mask(path: str) -> dict:
    from lazymask.masking import compute_epi_mask

    return {"voxels": int(compute_epi_mask(path).sum())}


@preload("nilearn.masking")
def nilearn_epi_mask(path: str) -> dict:
    from nilearn.masking import compute_epi_mask

    return {"voxels": int(compute_epi_mask(path).get_fdata().sum())}


@preload("lazymask.masking")
def lazymask_multi_epi_mask(paths: list[str]) -> dict:
    from lazymask.masking import compute_multi_epi_mask

    return {"voxels": int(compute_multi_epi_mask(paths).sum())}


@preload("nilearn.masking")
def nilearn_multi_epi_mask(paths: list[str]) -> dict:
    from nilearn.masking import compute_multi_epi_mask

    return {"voxels": int(compute_multi_epi_mask(paths, n_jobs=1).get_fdata().sum())}


def gzip_decompress(paths: list[str]) -> dict:
    total = 0
    for path in paths:
        with gzip.open(path, "rb") as stream:
            while block := stream.read(16 * 2**20):
                total += len(block)
    return {"bytes": total}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small runs (smoke test)")
    args = parser.parse_args(argv)
    size = "quick" if args.quick else "full"
    paths = run_paths(size)
    rows = []
    one = pair(
        "compute_epi_mask, 1 run",
        measure("benchmarks.bench_masking:lazymask_epi_mask", path=paths[0]),
        measure("benchmarks.bench_masking:nilearn_epi_mask", path=paths[0]),
        target="same mask",
    )
    rows.append(one)
    lazy_multi = measure("benchmarks.bench_masking:lazymask_multi_epi_mask", paths=paths)
    nilearn_multi = measure("benchmarks.bench_masking:nilearn_multi_epi_mask", paths=paths)
    unzip = measure("benchmarks.bench_masking:gzip_decompress", paths=paths)
    rows.append(pair(f"compute_multi_epi_mask, {len(paths)} runs", lazy_multi, nilearn_multi,
                     target="time <= 0.6x nilearn, RSS <= nilearn"))
    rows.append(pair(f"  vs gzip-decompressing the {len(paths)} files once", lazy_multi, unzip,
                     target="time <= 1.3x", reference_name="gzip"))
    for row in rows[:2]:
        if row["lazymask"]["result"] != row["reference"]["result"]:
            raise SystemExit(f"{row['case']}: lazymask and nilearn masks differ: "
                             f"{row['lazymask']['result']} vs {row['reference']['result']}")
    report("masking" + ("-quick" if args.quick else ""), rows)


if __name__ == "__main__":
    main()
