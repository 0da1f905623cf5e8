"""Benchmark data: realistic 2 mm int16 runs, generated once and cached in ``benchmarks/data/``.

``ensure_run(n_volumes, compressed)`` returns the path of a 91 x 109 x 91 (MNI 2 mm) int16 run of
``n_volumes`` volumes, as ``.nii`` or ``.nii.gz``, generating it on first use. The brain is the
synthetic anatomy of :mod:`lazymask.datasets._synthetic` (tissue contrast, bias field, dropout,
ghost), with slow drift and thermal noise; the background is noisy like raw EPI, so gzip compresses
the run about as well as a real one (1200 volumes: 2.17 GB raw, about 1.17 GB gzipped).

The ``.nii`` is written slab by slab (a few volumes at a time, bounded memory), then compressed
to ``.nii.gz`` with ISA-L at a ratio close to nibabel's default (zlib level 1). Files are written
under a temporary name and renamed when complete, so an existing file is a complete one.

Run ``python -m benchmarks.data 200 1200`` to generate ahead of time.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np

DATA_DIR = Path(__file__).resolve().parent / "data"
SHAPE = (91, 109, 91)
VOXEL_SIZE = 2.0
T_R = 0.8
NOISE_SIGMA = 16.0
SLAB_VOLUMES = 25
_ISAL_LEVEL = 2  # compresses these runs like zlib level 1, nibabel's default
_COPY_BLOCK = 16 * 2**20
_VERSION = "v1"


def ensure_run(n_volumes: int, compressed: bool) -> Path:
    """Path of the cached benchmark run of ``n_volumes`` volumes (``.nii.gz`` if ``compressed``)."""
    nii = DATA_DIR / f"bench-{_VERSION}_2mm_{n_volumes}vols_bold.nii"
    if not nii.exists():
        _log(f"generating {nii.name} ...")
        _atomic_write(nii, lambda tmp: write_run(tmp, n_volumes))
    if not compressed:
        return nii
    gz = nii.with_name(nii.name + ".gz")
    if not gz.exists():
        _log(f"compressing {gz.name} ...")
        _atomic_write(gz, lambda tmp: compress(nii, tmp))
    return gz


def mni_affine() -> np.ndarray:
    """The affine of the MNI152 2 mm grid (91 x 109 x 91)."""
    return np.array([[-2.0, 0, 0, 90], [0, 2.0, 0, -126], [0, 0, 2.0, -72], [0, 0, 0, 1]])


def baseline_volume() -> np.ndarray:
    """The mean EPI volume (float32), flattened in Fortran (NIfTI) order."""
    from lazymask.datasets._synthetic import Grid, baseline_image, tissue_fractions

    grid = Grid(SHAPE, VOXEL_SIZE, (-90.0, -126.0, -72.0))  # same voxels as MNI, x not flipped
    image = baseline_image(grid, tissue_fractions(grid))[::-1]  # flip x to match the MNI affine
    return image.ravel(order="F").astype(np.float32)


def write_run(path: Path, n_volumes: int, seed: int = 0) -> None:
    """Write a run as an uncompressed NIfTI-1 file, ``SLAB_VOLUMES`` volumes at a time."""
    rng = np.random.default_rng([seed, n_volumes])
    base = baseline_volume()
    time_s = np.arange(n_volumes) * T_R
    drift = 0.01 * time_s / max(time_s[-1], 1.0) + 0.004 * np.sin(2 * np.pi * time_s / 97.0)
    header = _header(n_volumes)
    with open(path, "wb") as f:
        header.write_to(f)
        f.write(b"\x00" * (int(header["vox_offset"]) - f.tell()))
        for start in range(0, n_volumes, SLAB_VOLUMES):
            stop = min(start + SLAB_VOLUMES, n_volumes)
            slab = rng.standard_normal((stop - start, base.size), dtype=np.float32)
            slab *= np.float32(NOISE_SIGMA)
            slab += base[None, :] * (1.0 + drift[start:stop, None]).astype(np.float32)
            np.abs(slab, out=slab)  # magnitude image: the background is half-normal, not zero
            np.rint(slab, out=slab)
            f.write(slab.astype("<i2").tobytes())  # rows are volumes in Fortran voxel order


def compress(src: Path, dst: Path) -> None:
    """Gzip ``src`` into ``dst`` with ISA-L, streaming in 16 MiB blocks."""
    from isal import igzip

    with open(src, "rb") as raw, igzip.open(dst, "wb", compresslevel=_ISAL_LEVEL) as gz:
        while block := raw.read(_COPY_BLOCK):
            gz.write(block)


def _header(n_volumes: int) -> nib.Nifti1Header:
    header = nib.Nifti1Header()
    header.set_data_dtype(np.int16)
    header.set_data_shape((*SHAPE, n_volumes))
    header.set_zooms((VOXEL_SIZE,) * 3 + (T_R,))
    header.set_xyzt_units("mm", "sec")
    header.set_qform(mni_affine(), code=4)
    header.set_sform(mni_affine(), code=4)
    header["vox_offset"] = 352
    return header


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    start = time.perf_counter()
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _log(f"  {path.name}: {path.stat().st_size / 1e9:.2f} GB in {time.perf_counter() - start:.0f} s")


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    for n in [int(arg) for arg in sys.argv[1:]] or [200, 1200]:
        for gz in (False, True):
            print(ensure_run(n, gz))
