"""Lazy cleaning: the numpy kernel mapped over ``(all time, some features)`` blocks of a dask array.

Contract: :func:`clean_dask` builds a graph and computes nothing. Cleaning needs whole time series,
so time is made one chunk (a rechunk when the input comes chunked along time, as a masker's
time-chunks of images do). Feature chunks are kept as they came when a whole-time block of them
stays under :data:`MAX_BLOCK_BYTES`; otherwise features are re-chunked so that a block holds about
:data:`TARGET_BLOCK_BYTES`. The output has one time chunk and the same feature chunks as the
cleaned blocks.
"""

from __future__ import annotations

import dask.array as da
import numpy as np

from lazymask.signal._clean import clean_block
from lazymask.signal._params import CleanPlan, float_dtype

__all__ = ["clean_dask", "feature_chunks", "MAX_BLOCK_BYTES", "TARGET_BLOCK_BYTES"]

# Small blocks: the kernel makes a few copies of a block (float conversion, detrend, filter in
# float64, projection), two threads at once; 32 MiB blocks measured both faster and ~40 % lighter
# than 128 MiB ones on a 1200-volume whole-brain run (benchmarks/bench_maskers.py).
MAX_BLOCK_BYTES = 32 * 2**20
TARGET_BLOCK_BYTES = 24 * 2**20


def feature_chunks(n_time: int, chunks: tuple[int, ...], itemsize: int,
                   max_bytes: int = MAX_BLOCK_BYTES, target_bytes: int = TARGET_BLOCK_BYTES) -> tuple[int, ...]:
    """Feature chunks for whole-time blocks: ``chunks`` if they fit ``max_bytes``, else ~``target_bytes``.

    Examples
    --------
    >>> feature_chunks(1200, (1000, 1000), 4)
    (1000, 1000)
    >>> feature_chunks(1200, (50000,), 4, max_bytes=2**27, target_bytes=96 * 2**20)
    (20971, 20971, 8058)
    """
    n_features = sum(chunks)
    if not chunks or max(chunks) * n_time * itemsize <= max_bytes:
        return tuple(chunks)
    size = max(1, target_bytes // (n_time * itemsize))
    return tuple(min(size, n_features - start) for start in range(0, n_features, size))


def clean_dask(signals: da.Array, plan: CleanPlan, confounds=None) -> da.Array:
    """Lazily clean a ``(time, features)`` dask array with the kernel, block by block."""
    dtype = float_dtype(signals.dtype)
    columns = feature_chunks(signals.shape[0], signals.chunks[1], max(dtype.itemsize, signals.dtype.itemsize))
    signals = signals.rechunk({0: -1, 1: columns})
    meta = np.empty((0, 0), dtype=dtype)
    if confounds is None:
        return signals.map_blocks(
            clean_block, plan=plan, dtype=dtype, meta=meta, chunks=((plan.n_output,), signals.chunks[1])
        )
    confounds = da.asarray(confounds).rechunk(-1)
    return da.blockwise(
        _clean_block_with_confounds, "tf",
        signals, "tf",
        confounds, "tc",
        plan=plan, dtype=dtype, meta=meta, adjust_chunks={"t": plan.n_output}, concatenate=True,
    )


def _clean_block_with_confounds(block, confounds, plan):
    return clean_block(block, plan, confounds)
