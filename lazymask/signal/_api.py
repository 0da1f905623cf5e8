"""The public :func:`clean`: validate once, then run the kernel eagerly (numpy) or lazily (dask)."""

from __future__ import annotations

import warnings

import dask.array as da
import numpy as np
import xarray as xr

from lazymask import config
from lazymask._pages import empty
from lazymask.signal._clean import clean_block
from lazymask.signal._confounds import load_confounds
from lazymask.signal._inputs import time_feature_data
from lazymask.signal._lazy import clean_dask
from lazymask.signal._params import CleanPlan, float_dtype, make_plan
from lazymask.signal._threads import single_threaded_blas

__all__ = ["clean"]

def clean(
    signals,
    runs=None,
    detrend: bool = True,
    standardize="zscore_sample",
    sample_mask=None,
    confounds=None,
    standardize_confounds: bool = True,
    filter="butterworth",
    low_pass: float | None = None,
    high_pass: float | None = None,
    t_r: float | None = 2.5,
    ensure_finite: bool = False,
    extrapolate: bool = False,
    **kwargs,
):
    """Clean ``(time, features)`` signals: detrend, filter, regress confounds out, standardize.

    Computes what ``nilearn.signal.clean`` (0.14) computes, with its parameters and its order of
    steps, on numpy arrays (eagerly) or on dask arrays and DataArrays (lazily, block by block).
    Per run: cosine drifts are added to the confounds (``filter="cosine"``); censored volumes
    (``sample_mask``) are interpolated by a cubic spline before a Butterworth filter and removed
    after it, or removed first otherwise; then the signals (and confounds) are detrended, filtered,
    the confounds regressed out, and the result standardized. Every step acts on each feature
    separately, so features can be cleaned in any grouping with the same result.

    Lazy input: cleaning needs whole time series, so **time is rechunked to a single chunk**.
    Feature chunks are kept as they came when a whole-time block of them stays under 32 MiB,
    otherwise features are rechunked to blocks of about 32 MiB (``lazymask.config``'s
    ``clean_max_block_bytes`` and ``clean_target_block_bytes``); the regroup from time chunks to
    such blocks stays within ``memory_budget`` (in memory, or through disk). Nothing is computed
    until asked.
    Numpy input is cleaned in blocks of columns in the calling thread (lazymask starts no pool of
    its own; pass a dask array to clean on the dask scheduler's workers). While a block is
    cleaned, BLAS is limited to one thread (process-wide; restored afterwards), because its
    thread pool makes the kernel's thin matrix products many times slower.

    Parameters
    ----------
    signals : numpy.ndarray, dask.array.Array or xarray.DataArray, shape (n_time, n_features)
        Time series, one per column. A DataArray keeps its dims, coords (the time coordinate is
        subset to the kept volumes) and attrs. Integer data is cleaned as float (float64 for
        8-byte integers, float32 otherwise); float data keeps its precision.
    runs : array-like of shape (n_time,), optional
        A run label per time point. Each run is cleaned on its own, with every option; the output
        stacks the runs in the order of their sorted labels.
    detrend : bool, default=True
        Remove each series' mean and linear trend (and the confounds').
    standardize : {"zscore_sample", "zscore", "psc", True, False, None}, default="zscore_sample"
        ``"zscore_sample"``: centre and divide by the standard deviation with ddof=1 (``True`` is
        the same); ``"zscore"``: the same with ddof=0; ``"psc"``: percent signal change;
        ``False``/``None``: no scaling.
    sample_mask : array-like or list of array-like, optional
        Volumes to keep (scrubbing), as a boolean mask (True = keep) or as integer indices; with
        ``runs``, a list of one mask per run, indices relative to the run.
    confounds : array-like, DataFrame, path, or list of these, optional
        Regressors, shape (n_time, n_confounds) or (n_time,): numpy arrays, DataFrames, CSV/TSV
        files with or without a header (leading ``n/a`` values, as fMRIPrep writes in derivative
        columns, are filled with the first value), dask arrays or DataArrays.
    standardize_confounds : bool, default=True
        z-score the confounds before regressing them out (else scale them by their maximum).
    filter : {"butterworth", "cosine", False}, default="butterworth"
        ``"butterworth"``: zero-phase Butterworth filter with ``low_pass``/``high_pass``;
        ``"cosine"``: DCT drift regressors up to ``high_pass`` added to the confounds.
    low_pass, high_pass : float, optional
        Cutoff frequencies in Hz. A cutoff at or above the Nyquist frequency ``0.5 / t_r`` is
        lowered to just below it with a warning, as nilearn does.
    t_r : float, default=2.5
        Repetition time in seconds (needed by both filters and by interpolation).
    ensure_finite : bool, default=False
        Replace NaN and inf by 0 before cleaning.
    extrapolate : bool, default=False
        With a Butterworth filter, extrapolate censored volumes at the ends of a run instead of
        dropping them before filtering.
    **kwargs
        ``butterworth__order`` (default 5), ``butterworth__padtype`` (default "odd") and
        ``butterworth__padlen`` (default scipy's), passed to the Butterworth filter.

    Returns
    -------
    numpy.ndarray, dask.array.Array or xarray.DataArray, shape (n_kept_time, n_features)
        The cleaned signals, of the same kind as ``signals`` (lazy in, lazy out).

    Raises
    ------
    lazymask.exceptions.ParameterError
        For an unknown option, filtering without ``t_r``, a run shorter than the Butterworth
        filter's padding, confounds (or an empty confounds file), runs or sample masks of the wrong
        length or out of range — all when the graph is built.

    Warns
    -----
    UserWarning
        A cutoff at or above Nyquist (lowered, as in nilearn).

    Examples
    --------
    >>> import numpy as np
    >>> signals = np.random.default_rng(0).standard_normal((100, 3)).astype("float32")
    >>> cleaned = clean(signals, low_pass=0.1, t_r=2.0)
    >>> cleaned.shape, cleaned.dtype
    ((100, 3), dtype('float32'))
    """
    data = time_feature_data(signals)
    if isinstance(standardize, (bool, np.bool_)):
        warnings.warn(
            "boolean values for 'standardize' will be deprecated in nilearn 0.15.0 (as nilearn warns). "
            "Use 'zscore_sample' instead of 'True' or use 'None' instead of 'False'.",
            FutureWarning, stacklevel=2,
        )
    if confounds is not None and not detrend and not standardize_confounds:
        warnings.warn(
            "When confounds are provided, one must perform detrend and/or standardize confounds "
            f"(as nilearn warns). You provided detrend={detrend}, standardize_confounds={standardize_confounds}: "
            "unless the confounds were demeaned before, the signals will not be correctly cleaned.",
            UserWarning, stacklevel=2,
        )
    plan = make_plan(
        data.shape[0], runs=runs, detrend=detrend, standardize=standardize, sample_mask=sample_mask,
        standardize_confounds=standardize_confounds, filter=filter, low_pass=low_pass,
        high_pass=high_pass, t_r=t_r, ensure_finite=ensure_finite, extrapolate=extrapolate, **kwargs,
    )
    confounds = load_confounds(confounds, data.shape[0])
    if isinstance(data, da.Array) or isinstance(confounds, da.Array):
        cleaned = clean_dask(da.asarray(data), plan, confounds)
    else:
        cleaned = _clean_numpy(data, plan, confounds)
    if isinstance(signals, xr.DataArray):
        return _as_dataarray(cleaned, signals, plan)
    return cleaned


def _clean_numpy(signals: np.ndarray, plan: CleanPlan, confounds) -> np.ndarray:
    """Run the kernel over batches of columns, in the calling thread, into one output.

    No pool is started here: parallelism is the caller's (a dask scheduler runs the lazy path).
    """
    dtype = float_dtype(signals.dtype)
    out = empty((plan.n_output, signals.shape[1]), dtype)
    batch = max(1, config.get("clean_max_block_bytes") // (max(signals.shape[0], 1) * dtype.itemsize))
    with single_threaded_blas():  # held across blocks: limited once, restored once
        for start in range(0, signals.shape[1], batch):
            columns = slice(start, start + batch)
            out[:, columns] = clean_block(signals[:, columns], plan, confounds)
    return out


def _as_dataarray(cleaned, original: xr.DataArray, plan: CleanPlan) -> xr.DataArray:
    """``cleaned`` labelled as ``original`` was, its time coordinates subset to the kept volumes."""
    time_dim = original.dims[0]
    coords = {}
    for name, coord in original.coords.items():
        if time_dim in coord.dims:
            coord = coord.isel({time_dim: plan.output_rows})
        coords[name] = coord.variable
    return xr.DataArray(cleaned, dims=original.dims, coords=coords, attrs=dict(original.attrs), name=original.name)
