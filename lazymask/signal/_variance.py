"""``high_variance_confounds``: CompCor-like regressors from the highest-variance series.

Contract: needs a global view of the data (every feature's variance, a percentile over features,
an eigen-decomposition of the selected series' time × time Gram matrix), so on dask input it is an
explicit reduction that works on any chunking (time-chunks included) and computes nothing until
asked:

1. per feature, the mean of squares after (optional) linear detrending, from three sums over time
   (sum, ramp-weighted sum, sum of squares);
2. the threshold: the ``100 - percentile`` percentile of those over features; a feature is kept
   when its mean of squares is above it;
3. the Gram matrix ``X[:, kept] @ X[:, kept].T`` (a matrix product of the kept columns only,
   reduced over feature chunks), detrended on both sides (detrending is a projection ``D``: ``D X X^T D``);
4. its leading eigenvectors.

The data are used by steps 1 and 3, so a lazy input is read twice per compute unless persisted.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import xarray as xr
from scipy import linalg

from lazymask.exceptions import ParameterError
from lazymask.signal._clean import detrend as detrend_columns
from lazymask.signal._inputs import time_feature_data
from lazymask.signal._params import float_dtype

__all__ = ["high_variance_confounds"]


def high_variance_confounds(series, n_confounds: int = 5, percentile: float = 2.0, detrend: bool = True):
    """Confound time series from the features of highest variance (as ``nilearn.signal``'s).

    Keeps the ``percentile`` % of features with the highest mean of squares (after linear
    detrending when ``detrend``), and returns the ``n_confounds`` leading left singular vectors of
    those series. Eager on numpy input; lazy on dask arrays and DataArrays (a reduction, see the
    module's notes: the data are read twice per compute).

    Parameters
    ----------
    series : numpy.ndarray, dask.array.Array or xarray.DataArray, shape (n_time, n_features)
        Time series, one per column; any chunking.
    n_confounds : int, default=5
        Number of confounds to return.
    percentile : float, default=2.0
        Percentage (0 to 100) of highest-variance features to keep.
    detrend : bool, default=True
        Remove each series' mean and linear trend first.

    Returns
    -------
    numpy.ndarray, dask.array.Array or xarray.DataArray, shape (n_time, n_confounds)
        The confounds (signs are arbitrary, as for any singular vector). A DataArray keeps the
        time dimension and coordinate, with a ``"confound"`` dimension.

    Examples
    --------
    >>> import numpy as np
    >>> series = np.random.default_rng(0).standard_normal((50, 400))
    >>> high_variance_confounds(series, n_confounds=3, percentile=10).shape
    (50, 3)
    """
    if not (isinstance(n_confounds, (int, np.integer)) and n_confounds > 0):
        raise ParameterError(f"n_confounds must be a positive integer; got {n_confounds!r}.")
    if not 0 <= percentile <= 100:
        raise ParameterError(f"percentile must be between 0 and 100; got {percentile!r}.")
    data = time_feature_data(series, "series")
    dtype = float_dtype(data.dtype)
    if isinstance(data, da.Array):
        result = _lazy(data.astype(dtype), n_confounds, percentile, detrend)
    else:
        result = _eager(np.asarray(data, dtype=dtype), n_confounds, percentile, detrend)
    if isinstance(series, xr.DataArray):
        time_dim = series.dims[0]
        coords = {name: c for name, c in series.coords.items() if c.dims == (time_dim,)}
        return xr.DataArray(result, dims=(time_dim, "confound"), coords=coords)
    return result


def _eager(series: np.ndarray, n_confounds: int, percentile: float, detrend: bool) -> np.ndarray:
    if detrend:
        series = detrend_columns(series)
    mean_squares = (series.astype(np.float64) ** 2).mean(axis=0)
    kept = series[:, _above_percentile(mean_squares, percentile)]
    gram = kept.astype(np.float64) @ kept.T.astype(np.float64) / len(series)
    return _leading_eigenvectors(gram, n_confounds).astype(series.dtype)


def _lazy(series: da.Array, n_confounds: int, percentile: float, detrend: bool) -> da.Array:
    n_time = series.shape[0]
    as64 = series.astype(np.float64)
    mean_squares = (as64**2).sum(axis=0)
    if detrend:
        ramp = da.from_array(_unit_ramp(n_time), chunks=(series.chunks[0],))
        sums = as64.sum(axis=0)
        ramp_sums = (as64 * ramp[:, None]).sum(axis=0)
        mean_squares = mean_squares - sums**2 / n_time - ramp_sums**2
    mean_squares = mean_squares / n_time
    kept = mean_squares.rechunk(-1).map_blocks(
        _above_percentile, percentile, dtype=bool, meta=np.empty((0,), bool)
    ).rechunk(series.chunks[1])
    gram = _kept_gram(as64, kept).rechunk(-1)
    return gram.map_blocks(
        _finish_gram, detrend, n_confounds, series.dtype, dtype=series.dtype, meta=np.empty((0, 0), series.dtype),
        chunks=((n_time,), (min(n_confounds, n_time),)),
    )


def _kept_gram(as64: da.Array, kept: da.Array) -> da.Array:
    """``X[:, kept] @ X[:, kept].T`` from the kept columns only (the others never enter a product).

    One piece per pair of time chunks and feature chunk, summed over feature chunks (a tree
    reduction), as dask's matmul is built; each piece selects its block's kept columns first.
    """
    pieces = da.blockwise(
        _gram_piece, "ijk", as64, "ik", as64, "jk", kept, "k",
        adjust_chunks={"k": 1}, dtype=np.float64, meta=np.empty((0, 0, 0), np.float64),
    )
    return pieces.sum(axis=2)


def _gram_piece(left: np.ndarray, right: np.ndarray, kept: np.ndarray) -> np.ndarray:
    return (left[:, kept] @ right[:, kept].T)[:, :, None]


def _finish_gram(gram: np.ndarray, detrend: bool, n_confounds: int, dtype) -> np.ndarray:
    n_time = len(gram)
    if detrend:
        ramp = _unit_ramp(n_time)
        projection = np.eye(n_time) - 1.0 / n_time - np.outer(ramp, ramp)
        gram = projection @ gram @ projection
    return _leading_eigenvectors(gram / n_time, n_confounds).astype(dtype)


def _unit_ramp(n_time: int) -> np.ndarray:
    """The centred, unit-norm linear trend that detrending removes."""
    ramp = np.arange(n_time, dtype=np.float64)
    ramp -= ramp.mean()
    norm = np.sqrt((ramp**2).sum())
    return ramp / norm if norm > 0 else ramp


def _above_percentile(values: np.ndarray, percentile: float) -> np.ndarray:
    return values > np.nanpercentile(values, 100.0 - percentile)


def _leading_eigenvectors(gram: np.ndarray, n_confounds: int) -> np.ndarray:
    eigenvalues, eigenvectors = linalg.eigh(gram)
    order = np.argsort(eigenvalues)[::-1][:n_confounds]
    return eigenvectors[:, order]
