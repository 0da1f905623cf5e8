"""I/O benchmark: the mean over time of a run, lazymask vs nibabel, against one zlib decompression.

Run ``python -m benchmarks.bench_io [--quick] [--decompressors]``. Each case runs in its own process
(:mod:`benchmarks._harness`), on the cached runs of :mod:`benchmarks.data` (2 mm, int16, 200 and
1200 volumes, ``.nii.gz`` and ``.nii``; files are read once before timing, so ``.nii`` timings are
from the page cache). ``--quick`` runs the 200-volume cases only.

Cases
-----
* lazymask: ``open_nifti(path).mean("time").compute()`` (dask's default threaded scheduler).
* nibabel:  ``nib.load(path).get_fdata().mean(-1)``, what nilearn's ``mean_img`` does. Its
  1200-volume cases need about 10 GB of memory and are run once.
* zlib:     decompress the ``.nii.gz`` once with Python's ``gzip`` module (16 MiB ``readinto``
  blocks, data discarded): the floor of any single-threaded zlib reader.

* decompressors (``--decompressors`` runs only these, 200 volumes): the same lazymask mean with the
  gzip reader's forward decompressor set to ISA-L (the default), zlib, or rapidgzip (its parallel
  seekable reader, ``parallelization`` = the CPU count), and one plain decompression with each,
  every time printed as a ratio to one single-thread ISA-L decompression of the same file.

Targets: on ``.nii.gz``, lazymask within 1.3x the zlib time; peak RSS under 0.5 GB for 1200 volumes.
Both sides must compute the same mean image (checked through the sum and the max abs difference).
"""

from __future__ import annotations

import argparse
import gzip
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks._harness import measure, pair, preload, report
from benchmarks.data import ensure_run

ZLIB_TARGET = 1.3
RSS_TARGET_GB = 0.5
_BLOCK = 16 * 2**20


# -- cases (run in their own processes) -------------------------------------------------------------
@preload("lazymask.io")
def lazymask_mean(path: str, out: str, chunks="auto", reader: str = "isal") -> dict:
    from lazymask.io import _gzip, open_nifti

    _gzip._READER = reader  # which forward decompressor the gzip reader uses (see decompressors)
    cpu = time.process_time()
    mean = open_nifti(path, chunks=chunks).mean("time").compute()
    return _summarise(np.asarray(mean), out, time.process_time() - cpu)


@preload("nibabel")
def nibabel_mean(path: str, out: str) -> dict:
    import nibabel as nib

    cpu = time.process_time()
    mean = nib.load(path).get_fdata().mean(-1)
    return _summarise(mean, out, time.process_time() - cpu)


def zlib_decompress(path: str) -> dict:
    cpu = time.process_time()
    buffer = bytearray(_BLOCK)
    total = 0
    with gzip.open(path, "rb") as stream:
        while n := stream.readinto(buffer):
            total += n
    return {"bytes": total, "cpu_seconds": time.process_time() - cpu}


def isal_decompress(path: str) -> dict:
    """One single-thread ISA-L decompression of the file (the unit of the decompressor ratios)."""
    from isal import isal_zlib

    cpu, total = time.process_time(), 0
    decompressor = isal_zlib.decompressobj(wbits=31)
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            total += len(decompressor.decompress(block))
    return {"bytes": total, "cpu_seconds": time.process_time() - cpu}


def rapidgzip_decompress(path: str) -> dict:
    import rapidgzip

    cpu, total, buffer = time.process_time(), 0, bytearray(_BLOCK)
    with rapidgzip.open(path, parallelization=os.cpu_count()) as stream:
        while n := stream.readinto(buffer):
            total += n
    return {"bytes": total, "cpu_seconds": time.process_time() - cpu}


def decompressors(scratch: Path) -> list[dict]:
    """Ratios to one ISA-L decompression: lazymask's mean with each forward decompressor, and each alone."""
    path = ensure_run(200, compressed=True)
    _warm_page_cache(path)
    unit = measure("benchmarks.bench_io:isal_decompress", repeat=2, path=str(path))
    rows, sums = [], set()
    for reader in ("isal", "zlib", "rapidgzip"):
        lm = measure("benchmarks.bench_io:lazymask_mean", repeat=2, path=str(path),
                     out=str(scratch / f"{reader}.npy"), reader=reader)
        sums.add(lm["result"]["checksum"])
        rows.append(pair(f"mean 200 vols .nii.gz, reader {reader}", lm, unit, reference_name="isal x1"))
    if len(sums) != 1:
        raise AssertionError(f"the decompressors gave different means: {sums}")
    for name in ("zlib_decompress", "rapidgzip_decompress"):
        alone = measure(f"benchmarks.bench_io:{name}", repeat=2, path=str(path))
        rows.append(pair(f"  {name.replace('_', ' ')} once", alone, unit, reference_name="isal x1"))
    return rows


def _summarise(mean: np.ndarray, out: str, cpu_seconds: float) -> dict:
    """What a case returns: the checksum of its mean image (saved to ``out`` for a full diff)."""
    np.save(out, mean)
    return {"checksum": float(mean.sum(dtype=np.float64)), "shape": list(mean.shape), "cpu_seconds": cpu_seconds}


# -- the benchmark ---------------------------------------------------------------------------------
def main(quick: bool = False, only_decompressors: bool = False) -> list[dict]:
    """Run every case, print the table and the targets, and return the table's rows."""
    if only_decompressors:
        with tempfile.TemporaryDirectory(prefix="lazymask-bench-io-") as scratch:
            rows = decompressors(Path(scratch))
        report("io-decompressors", rows)
        unit_cpu = rows[0]["reference"]["result"]["cpu_seconds"]
        for row in rows:
            cpu = row["lazymask"]["result"]["cpu_seconds"]
            print(f"{row['case'].strip():<44} CPU {cpu:6.2f} s = {cpu / unit_cpu:.2f}x one ISA-L decompression's CPU")
        print(f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; time x = ratio to one ISA-L decompression)")
        return rows
    sizes = (200,) if quick else (200, 1200)
    rows, notes = [], []
    with tempfile.TemporaryDirectory(prefix="lazymask-bench-io-") as scratch:
        for n_volumes in sizes:
            for compressed in (True, False):
                rows += _cases(n_volumes, compressed, Path(scratch), notes)
            rows.append(_zarr_case(n_volumes, Path(scratch)))
    report("io", rows)
    for note in notes:
        print(note)
    memory_rows = _memory_by_chunk_size(sizes)
    report("io-memory", memory_rows)
    print("(peak RSS follows the chunk size, not the run's length: lazymask only, .nii, mean over time)")
    print(f"(load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; CPU seconds "
          "are the process's user+system time, less sensitive to other jobs than wall time.)")
    if not quick:
        print("(nibabel's 1200-volume cases ran once each: they need ~10 GB and a while.)")
    return rows


def _cases(n_volumes: int, compressed: bool, scratch: Path, notes: list[str]) -> list[dict]:
    path = ensure_run(n_volumes, compressed)
    _warm_page_cache(path)
    label = f"mean {n_volumes} vols {'.nii.gz' if compressed else '.nii'}"
    lazymask_out, nibabel_out = scratch / "lazymask.npy", scratch / "nibabel.npy"
    lm = measure("benchmarks.bench_io:lazymask_mean", repeat=2, path=str(path), out=str(lazymask_out))
    nb = measure("benchmarks.bench_io:nibabel_mean", repeat=1, path=str(path), out=str(nibabel_out))
    notes.append(_check_same_result(label, lm, nb, lazymask_out, nibabel_out))
    rss_target = f"RSS < {RSS_TARGET_GB} GB" if n_volumes >= 1200 else ""
    rows = [pair(label, lm, nb, target=rss_target, reference_name="nibabel")]
    if compressed:
        zlib = measure("benchmarks.bench_io:zlib_decompress", repeat=2, path=str(path))
        rows.append(pair(f"  {label} vs zlib decompress once", lm, zlib, reference_name="zlib",
                         target=f"time <= {ZLIB_TARGET}x zlib"))
        notes.append(_target_note(label, lm, zlib, n_volumes))
    elif n_volumes >= 1200:
        notes.append(_rss_note(label, lm))
    return rows


def _zarr_case(n_volumes: int, scratch: Path) -> dict:
    """The same mean over a zarr copy of the run (converted once, not timed) vs the .nii.gz pass."""
    from lazymask.io import open_nifti, to_zarr

    gz = ensure_run(n_volumes, compressed=True)
    store = gz.with_name(gz.name.replace(".nii.gz", ".zarr"))
    if not (store / "zarr.json").exists():
        to_zarr(open_nifti(gz), store)
    lm_zarr = measure("benchmarks.bench_io:lazymask_mean", repeat=2, path=str(store), out=str(scratch / "z.npy"))
    lm_gz = measure("benchmarks.bench_io:lazymask_mean", repeat=2, path=str(gz), out=str(scratch / "g.npy"))
    if not np.array_equal(np.load(scratch / "z.npy"), np.load(scratch / "g.npy")):
        raise AssertionError(f"mean of {store} differs from the mean of {gz}")
    return pair(f"mean {n_volumes} vols zarr (vs lazymask on .nii.gz)", lm_zarr, lm_gz, reference_name=".nii.gz")


def _memory_by_chunk_size(sizes) -> list[dict]:
    """Peak RSS of the mean over time for several chunk sizes and run lengths (bounded memory)."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="lazymask-bench-io-") as scratch:
        for chunk_volumes in (8, 32, 128):
            for n_volumes in sizes:
                path = ensure_run(n_volumes, compressed=False)
                lm = measure("benchmarks.bench_io:lazymask_mean", path=str(path), out=f"{scratch}/m.npy",
                             chunks=chunk_volumes)
                chunk_mb = chunk_volumes * _volume_nbytes(path) / 2**20
                rows.append(pair(f"chunks of {chunk_volumes} vols ({chunk_mb:.0f} MB), {n_volumes} vols", lm, None))
    return rows


def _volume_nbytes(path: Path) -> int:
    import nibabel as nib

    header = nib.load(path).header
    return int(np.prod(header.get_data_shape()[:3])) * header.get_data_dtype().itemsize


def _check_same_result(label, lm, nb, lazymask_out, nibabel_out) -> str:
    a, b = np.load(lazymask_out), np.load(nibabel_out)
    max_diff = float(np.max(np.abs(a - b)))
    sums = lm["result"]["checksum"], nb["result"]["checksum"]
    same = a.shape == b.shape and np.isclose(*sums, rtol=1e-9) and max_diff < 1e-6
    if not same:
        raise AssertionError(f"{label}: lazymask and nibabel disagree: sums {sums}, max abs diff {max_diff}")
    return f"{label}: same mean image (sum {sums[0]:.6e} vs {sums[1]:.6e}, max abs diff {max_diff:.1e})"


def _target_note(label, lm, zlib, n_volumes) -> str:
    ratio = lm["seconds"] / zlib["seconds"]
    cpu_ratio = lm["result"]["cpu_seconds"] / zlib["result"]["cpu_seconds"]
    verdict = "met" if ratio <= ZLIB_TARGET else "MISSED"
    note = (f"{label}: lazymask / zlib-decompress = {ratio:.2f} wall (target <= {ZLIB_TARGET}: {verdict}), "
            f"{cpu_ratio:.2f} CPU ({lm['result']['cpu_seconds']:.1f} s vs {zlib['result']['cpu_seconds']:.1f} s)")
    return note + ("; " + _rss_note(label, lm) if n_volumes >= 1200 else "")


def _rss_note(label, lm) -> str:
    rss = lm["peak_rss_gb"]
    verdict = "met" if rss < RSS_TARGET_GB else "MISSED"
    return f"{label}: lazymask peak RSS {rss:.2f} GB (target < {RSS_TARGET_GB} GB: {verdict})"


def _warm_page_cache(path: Path) -> None:
    with open(path, "rb", buffering=0) as f:
        while f.read(_BLOCK):
            pass


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200-volume cases only")
    parser.add_argument("--decompressors", action="store_true", help="only the decompressor comparison")
    arguments = parser.parse_args()
    main(arguments.quick, arguments.decompressors)
