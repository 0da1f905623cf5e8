"""Benchmark: ``lazymask.signal.clean`` vs ``nilearn.signal.clean`` on a (time × voxel) matrix.

Cases (each in its own process, see ``benchmarks/_harness.py``): detrend + ``zscore_sample`` + 6
confounds, without and with a 0.01–0.1 Hz band-pass (t_r = 2 s), on a (1200 × 50000) float32
matrix; lazymask alone on (1200 × 230000). The matrix is generated deterministically (seeded per block
of columns) and saved once to ``benchmarks/data/`` (git-ignored), so that every case cleans the
same numbers and none pays for generating them: nilearn loads the whole matrix; lazymask takes it
eagerly (numpy in, numpy out) and lazily (a dask array read from the file block by block, reduced
to the summary without keeping the result). Peak RSS includes the imports (~0.2 GB).
nilearn's band-pass case (one ``sosfiltfilt`` call per column) is slow, so it runs once.

    python -m benchmarks.bench_signal [--quick]
"""

from __future__ import annotations

import argparse
import functools
import time
import warnings
from pathlib import Path

import dask
import dask.array as da
import numpy as np
from nilearn import signal as nilearn_signal

from benchmarks._harness import measure, pair, report
from lazymask import signal as lazymask_signal

T_R = 2.0
BAND = {"low_pass": 0.1, "high_pass": 0.01, "t_r": T_R}
BLOCK_COLUMNS = 10000
DATA = Path(__file__).resolve().parent / "data"


def _block(n_time: int, start: int, stop: int) -> np.ndarray:
    """Columns ``start:stop`` of the benchmark matrix (float32; the same whatever the blocking)."""
    out = np.empty((n_time, stop - start), dtype=np.float32)
    for first in range(start - start % BLOCK_COLUMNS, stop, BLOCK_COLUMNS):
        rng = np.random.default_rng([7, first])
        block = rng.standard_normal((n_time, BLOCK_COLUMNS), dtype=np.float32)
        block += np.linspace(0, 2, n_time, dtype=np.float32)[:, None]
        block += rng.uniform(50, 150, BLOCK_COLUMNS).astype(np.float32)
        lo, hi = max(first, start), min(first + BLOCK_COLUMNS, stop)
        out[:, lo - start : hi - start] = block[:, lo - first : hi - first]
    return out


def _data_path(n_time: int, n_features: int) -> Path:
    return DATA / f"signal_{n_time}x{n_features}_float32_v1.npy"


def _ensure_data(n_time: int, n_features: int) -> Path:
    """Write the benchmark matrix once to ``benchmarks/data/`` (git-ignored), block by block."""
    path = _data_path(n_time, n_features)
    if not path.exists():
        DATA.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial.npy")
        matrix = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float32, shape=(n_time, n_features))
        for start in range(0, n_features, BLOCK_COLUMNS):
            stop = min(start + BLOCK_COLUMNS, n_features)
            matrix[:, start:stop] = _block(n_time, start, stop)
        matrix.flush()
        del matrix
        partial.rename(path)
    return path


def prepare_data(n_time: int, n_features: int) -> dict:
    """Benchmark case that only makes sure the matrix file exists."""
    return {"path": str(_ensure_data(n_time, n_features))}


def _matrix(n_time: int, n_features: int) -> np.ndarray:
    """The whole matrix in memory (what nilearn needs)."""
    return np.load(_data_path(n_time, n_features))


def _lazy_matrix(n_time: int, n_features: int):
    """The matrix as a dask array whose blocks of columns are read from the file on demand.

    Plain reads, not a memory map: pages of a mapped file count in the process's RSS.
    """
    path = _data_path(n_time, n_features)
    with path.open("rb") as stream:
        np.lib.format.read_magic(stream)
        np.lib.format.read_array_header_1_0(stream)
        header_bytes = stream.tell()
    chunks = ((n_time,), tuple(min(BLOCK_COLUMNS, n_features - s) for s in range(0, n_features, BLOCK_COLUMNS)))

    def read(block_info=None):
        start, stop = block_info[None]["array-location"][1]
        return _read_columns(path, header_bytes, n_time, n_features, start, stop)

    return da.map_blocks(read, chunks=chunks, dtype=np.float32, meta=np.empty((0, 0), np.float32))


def _read_columns(path, header_bytes, n_time, n_features, start, stop) -> np.ndarray:
    out = np.empty((n_time, stop - start), dtype=np.float32)
    with open(path, "rb", buffering=0) as stream:
        for row in range(n_time):
            stream.seek(header_bytes + (row * n_features + start) * 4)
            stream.readinto(memoryview(out[row]).cast("B"))
    return out


def _confounds(n_time: int) -> np.ndarray:
    return np.random.default_rng(11).standard_normal((n_time, 6))


def _options(n_time: int, band: bool) -> dict:
    options = {"detrend": True, "standardize": "zscore_sample", "confounds": _confounds(n_time)}
    return {**options, **BAND} if band else options


def _summary(cleaned) -> dict:
    """Numbers to compare both sides with: a strided sample of values and global sums.

    Computed column block by column block (numpy) or chunk by chunk (dask), so that the summary
    adds no full-size temporary to the peak memory being measured.
    """
    sample = cleaned[:: max(1, cleaned.shape[0] // 13), :: max(1, cleaned.shape[1] // 17)]
    if isinstance(cleaned, da.Array):
        sample, total, squares = dask.compute(sample, abs(cleaned).sum(dtype=np.float64),
                                              (cleaned.astype(np.float64) ** 2).sum())
    else:
        total = squares = 0.0
        for start in range(0, cleaned.shape[1], 2000):
            block = cleaned[:, start : start + 2000].astype(np.float64)
            total += float(np.abs(block).sum())
            squares += float((block**2).sum())
    return {"sample": np.asarray(sample).ravel().tolist(), "sum_abs": float(total), "sum_squares": float(squares),
            "shape": list(cleaned.shape), "dtype": str(cleaned.dtype)}


def _with_cpu_time(case):
    """Add the case's CPU seconds (all threads) to its result: a measure robust to a busy machine."""

    @functools.wraps(case)
    def timed(**params):
        start = time.process_time()
        result = case(**params)
        return {**result, "cpu_seconds": time.process_time() - start}

    return timed


@_with_cpu_time
def nilearn_case(n_time: int, n_features: int, band: bool) -> dict:
    signals = _matrix(n_time, n_features)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _summary(nilearn_signal.clean(signals, **_options(n_time, band)))


@_with_cpu_time
def lazymask_eager_case(n_time: int, n_features: int, band: bool) -> dict:
    signals = _matrix(n_time, n_features)
    return _summary(lazymask_signal.clean(signals, **_options(n_time, band)))


@_with_cpu_time
def lazymask_lazy_case(n_time: int, n_features: int, band: bool) -> dict:
    return _summary(lazymask_signal.clean(_lazy_matrix(n_time, n_features), **_options(n_time, band)))


def _same(a: dict, b: dict) -> bool:
    return (a["shape"] == b["shape"] and a["dtype"] == b["dtype"]
            and np.allclose(a["sample"], b["sample"], rtol=1e-4, atol=1e-4)
            and np.isclose(a["sum_squares"], b["sum_squares"], rtol=1e-4))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (about a minute)")
    args = parser.parse_args(argv)
    n_time, n_features, n_large = (200, 5000, 20000) if args.quick else (1200, 50000, 230000)
    here = "benchmarks.bench_signal"
    for size in (n_features, n_large):  # in a child process: on Linux a child's peak RSS counts
        measure(f"{here}:prepare_data", n_time=n_time, n_features=size)  # its parent's at fork
    rows = []
    for band, label, time_target in [(False, "detrend+zscore+6 conf", "0.5x"), (True, "+ band-pass 0.01-0.1", "0.05x")]:
        size = dict(n_time=n_time, n_features=n_features, band=band)
        reference = measure(f"{here}:nilearn_case", **size)  # once: the band-pass case is slow
        for kind in ("eager", "lazy"):
            ours = measure(f"{here}:lazymask_{kind}_case", **size)
            same = _same(ours["result"], reference["result"])
            rows.append(pair(f"{label} {n_time}x{n_features} ({kind})", ours, reference,
                             target=f"time <= {time_target}, RSS <= 0.5x; results equal: {same}"))
    for band, label in [(False, "detrend+zscore+6 conf"), (True, "+ band-pass 0.01-0.1")]:
        ours = measure(f"{here}:lazymask_lazy_case", n_time=n_time, n_features=n_large, band=band)
        rows.append(pair(f"{label} {n_time}x{n_large} (lazy)", ours, None, target="lazymask alone"))
    report("signal", rows)
    print("\nCPU seconds (user + system, all threads; robust to other load on the machine):")
    for row in rows:
        ours = row["lazymask"]["result"]["cpu_seconds"]
        ref = row["reference"]["result"]["cpu_seconds"] if row["reference"] else None
        ratio = f"{ours / ref:5.2f}x" if ref else "    -"
        ref_text = f"{ref:7.2f}" if ref is not None else "      -"
        print(f"  {row['case']:<44} lazymask {ours:7.2f}  nilearn {ref_text}  {ratio}")


if __name__ == "__main__":
    main()
