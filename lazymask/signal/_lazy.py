"""Lazy cleaning: the numpy kernel mapped over ``(all time, some features)`` blocks of a dask array.

Contract: :func:`clean_dask` builds a graph and computes nothing. Cleaning needs whole time series,
so time is made one chunk: when the input comes chunked along time (as a masker's time-chunks of
images do) this is the one all-to-all step, which goes through
:func:`~lazymask.signal._regroup.whole_time_blocks` (in memory within
``lazymask.config.get("memory_budget")``, else through disk). Feature chunks are kept as they came
when a whole-time block of them stays under ``config.get("clean_max_block_bytes")``; otherwise
features are re-chunked so that a block holds about ``config.get("clean_target_block_bytes")``
(by default what a stored zarr chunk holds, so that ``save_signals`` writes the blocks as they
are, without a further rechunk).
The output has one time chunk and the same feature chunks as the cleaned blocks.
"""

from __future__ import annotations

import dask.array as da
import numpy as np

from lazymask import config
from lazymask.masking import map_gathered
from lazymask.signal._clean import clean_block
from lazymask.signal._params import CleanPlan, float_dtype
from lazymask.signal._regroup import whole_time_blocks

__all__ = ["clean_dask", "feature_chunks"]


def feature_chunks(n_time: int, chunks: tuple[int, ...], itemsize: int,
                   max_bytes: int | None = None, target_bytes: int | None = None) -> tuple[int, ...]:
    """Feature chunks for whole-time blocks: ``chunks`` if they fit ``max_bytes``, else at most ``target_bytes``.

    ``max_bytes`` and ``target_bytes`` default to lazymask.config's ``clean_max_block_bytes`` and
    ``clean_target_block_bytes``. Re-cut blocks are as many as blocks of ``target_bytes`` would
    be, as even as a regular chunking allows (only the last may be smaller, by less than one
    column per block): a small last block would leave a worker idle while the others finish
    full ones (a 200 x 219k run on 2 threads: 5 blocks and a quarter take the time of 6).

    Examples
    --------
    >>> feature_chunks(1200, (1000, 1000), 4)
    (1000, 1000)
    >>> feature_chunks(1200, (50000,), 4, max_bytes=2**27, target_bytes=96 * 2**20)
    (16667, 16667, 16666)
    """
    max_bytes = config.get("clean_max_block_bytes") if max_bytes is None else max_bytes
    target_bytes = config.get("clean_target_block_bytes") if target_bytes is None else target_bytes
    n_features = sum(chunks)
    if not chunks or max(chunks) * n_time * itemsize <= max_bytes:
        return tuple(chunks)
    size = max(1, target_bytes // (n_time * itemsize))
    n_blocks = -(-n_features // size)
    width = -(-n_features // n_blocks)
    return tuple(min(width, n_features - start) for start in range(0, n_features, width))


def clean_dask(signals: da.Array, plan: CleanPlan, confounds=None) -> da.Array:
    """Lazily clean a ``(time, features)`` dask array with the kernel, block by block."""
    dtype = float_dtype(signals.dtype)
    itemsize = max(dtype.itemsize, signals.dtype.itemsize)
    columns = feature_chunks(signals.shape[0], signals.chunks[1], itemsize)
    signals = whole_time_blocks(signals, columns, itemsize)
    arrays = () if confounds is None else (da.asarray(confounds).rechunk(-1),)
    in_place = map_gathered(signals, _clean_gathered, *arrays, plan=plan, rows=plan.n_output, dtype=dtype)
    if in_place is not None:  # a kept run's voxels, each block cleaned where it was gathered
        return in_place
    meta = np.empty((0, 0), dtype=dtype)
    if confounds is None:
        return signals.map_blocks(
            clean_block, plan=plan, dtype=dtype, meta=meta, chunks=((plan.n_output,), signals.chunks[1])
        )
    return da.blockwise(
        _clean_block_with_confounds, "tf",
        signals, "tf",
        arrays[0], "tc",
        plan=plan, dtype=dtype, meta=meta, adjust_chunks={"t": plan.n_output}, concatenate=True,
    )


def _clean_block_with_confounds(block, confounds, plan):
    return clean_block(block, plan, confounds)


def _clean_gathered(block, confounds=None, *, plan):
    return clean_block(block, plan, confounds, overwrite=True)  # the block is this task's own
