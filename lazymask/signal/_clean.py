"""The cleaning kernel: the whole sequence of :func:`lazymask.signal.clean` on one numpy block.

Contract: :func:`clean_block` takes a ``(n_time, n_features)`` block holding *every* time point of
some features, the (already loaded) confounds and a :class:`~lazymask.signal._params.CleanPlan`,
and returns the cleaned ``(plan.n_output, n_features)`` block in ``float_dtype(block.dtype)``.
Every step is independent across columns, so the same kernel serves every block of a lazy array,
and the result does not depend on how features are chunked.

Per run, in nilearn 0.14's order: cosine drifts added to the confounds → censored volumes
interpolated (Butterworth) or removed (otherwise) → detrend → Butterworth filter → censored
volumes removed → confounds regressed out → standardize.
"""

from __future__ import annotations

import threading
import warnings
from collections import OrderedDict

import dask
import numpy as np
from scipy import linalg
from scipy.interpolate import CubicSpline

from lazymask import config
from lazymask._pages import empty
from lazymask.signal._filters import (
    add_cosine_drift,
    butterworth_filter,
    butterworth_sos,
    cosine_drift,
)
from lazymask.signal._params import CleanPlan, RunPlan, float_dtype
from lazymask.signal._threads import single_threaded_blas

__all__ = ["clean_block", "detrend", "standardize"]

EPS = np.finfo(np.float64).eps


#: Columns cleaned at a time inside a block: bounds the kernel's temporaries (a few copies of a
#: batch, some in float64) whatever the block size.
BATCH_BYTES = config.get("kernel_batch_bytes")  # the default: kernels run inside tasks, which read no settings


#: Columns the one-matrix kernel (:class:`LinearMap`) takes at a time: a batch and its products
#: stay near the core (L2/L3) through every step, and each batch's dozen numpy calls are few.
#: Measured (AMD EPYC, 1 MiB L2 per core; 32 MiB float32 blocks, zscore_sample and 6 confounds)
#: per block, 200 / 1200 volumes: 256 kB 27.8 / 39.8 ms, 512 kB 24.1 / 29.1 ms, 768 kB 21.6 /
#: 25.8 ms, 1 MiB 21.8 / 24.9 ms, 1.5 MiB 42.8 / 23.4 ms (a cliff at 200 volumes).
MAP_BATCH_BYTES = 768 << 10


def clean_block(block: np.ndarray, plan: CleanPlan, confounds: np.ndarray | None = None,
                overwrite: bool = False) -> np.ndarray:
    """Clean every column of ``block`` (all time points of some features) as ``plan`` says.

    With ``overwrite``, the cleaned values go into ``block`` itself when it can hold them (a
    writeable float block of the output's dtype, no volume removed): no new block is allocated.
    """
    dtype = float_dtype(block.dtype)
    if overwrite and block.dtype == dtype and plan.n_output == len(block) and block.flags.writeable:
        out = block  # each batch of columns is copied out before its cleaned values are written back
    else:
        out = empty((plan.n_output, block.shape[1]), dtype)  # without numpy's hugepage hint (lazymask._pages)
    confounds = None if confounds is None else np.asarray(confounds)
    with single_threaded_blas():
        linear_map = LinearMap.of(plan, confounds, len(block))
        if linear_map is not None:
            linear_map.clean_into(block, out)
            return out
        batch = max(1, BATCH_BYTES // (8 * max(1, block.shape[0])))
        for first in range(0, block.shape[1], batch):
            _clean_columns(block, slice(first, first + batch), plan, confounds, out)
    return out


class LinearMap:
    """The steps before standardizing as one ``(n_time, n_time)`` matrix, and the kernel that applies it.

    With one run and nothing censored, detrending, filtering (Butterworth or cosine drifts) and
    regressing confounds out are linear in each column and the same for every column: together
    they are one matrix ``M``, found by running those steps on the identity (in float64, so the
    same code decides every step). Without a Butterworth filter ``M = I - U U^T`` is a projection
    of low rank (the constant, the trend, the confounds): applied as two thin products. A batch
    of columns is centred first (so the products work on small numbers), mapped, then
    standardized, all while it sits in cache: a few passes over the signals instead of a dozen.
    Same values as the step-by-step kernel to float rounding.
    """

    def __init__(self, matrix: np.ndarray, plan: CleanPlan):
        self.plan = plan
        n_time = len(matrix)
        removed = np.eye(n_time) - matrix
        self.basis = None
        if plan.filter != "butterworth" and np.allclose(removed, removed.T, atol=1e-10):
            values, vectors = np.linalg.eigh((removed + removed.T) / 2)
            basis = vectors[:, values > 0.5]
            if basis.shape[1] <= n_time // 4 and np.allclose(basis @ basis.T, removed, atol=1e-9):
                self.basis = basis
        self.matrix = matrix
        self.of_constant = matrix.sum(axis=1)  # M @ 1: what the map makes of a column's mean
        if np.abs(self.of_constant).max() < 1e-10:
            self.of_constant = None

    @classmethod
    def of(cls, plan: CleanPlan, confounds: np.ndarray | None, n_time: int) -> LinearMap | None:
        """The map of ``plan``, or None when the step-by-step kernel must run (several runs,
        censored volumes, ``psc``, fewer than 3 time points, a filter without detrending).

        Found once per process for a plan and its confounds (the blocks of one run share them:
        at 1200 volumes finding it takes 0.1-0.5 s)."""
        if (len(plan.runs) != 1 or plan.runs[0].kept is not None or n_time < 3 or plan.n_output != n_time
                or plan.standardize not in (None, "zscore", "zscore_sample")):
            return None
        key = dask.base.tokenize(plan, confounds, n_time)
        with _MAPS_LOCK:
            if key in _MAPS:
                _MAPS.move_to_end(key)
                return _MAPS[key]
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            linear_map = cls._found(plan, confounds, n_time)
        for warning in said:  # said again, and not cached: every call warns as the steps do
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
        if not said:
            with _MAPS_LOCK:
                _MAPS[key] = linear_map
                while len(_MAPS) > _MAX_MAPS:
                    _MAPS.popitem(last=False)
        return linear_map

    @classmethod
    def _found(cls, plan: CleanPlan, confounds: np.ndarray | None, n_time: int) -> LinearMap | None:
        if confounds is not None:
            confounds = confounds[plan.runs[0].rows]
        if plan.filter == "cosine":
            confounds = add_cosine_drift(confounds, cosine_drift(plan.high_pass, plan.t_r, n_time))
        matrix = _linear_steps(np.eye(n_time), confounds, None, plan, overwrite=True)
        linear_map = cls(np.asarray(matrix, dtype=np.float64), plan)
        if linear_map.basis is None and linear_map.of_constant is not None:
            return None  # a dense map that keeps the mean: adding the mean back after it rounds worse than the steps
        return linear_map

    def clean_into(self, block: np.ndarray, out: np.ndarray) -> None:
        """Clean ``block``'s columns into ``out`` (same shape, a float dtype)."""
        dtype = out.dtype
        basis = None if self.basis is None else self.basis.astype(dtype)
        matrix = self.matrix.astype(dtype) if basis is None else None
        of_constant = None if self.of_constant is None else self.of_constant.astype(dtype)[:, np.newaxis]
        n_time = len(block)
        batch = max(1, MAP_BATCH_BYTES // (dtype.itemsize * n_time))
        for first in range(0, block.shape[1], batch):
            columns = slice(first, first + batch)
            signals = np.array(block[:, columns], dtype=dtype)
            if self.plan.ensure_finite:
                signals[~np.isfinite(signals)] = 0
            mean = signals.mean(axis=0)
            signals -= mean
            if basis is not None:
                signals -= basis @ (basis.T @ signals)
            else:
                signals = matrix @ signals
            if of_constant is not None:
                signals += of_constant * mean
            if self.plan.standardize is not None:
                signals = standardize(signals, self.plan.standardize, inplace=True)
            out[:, columns] = signals


_MAPS: OrderedDict = OrderedDict()  # token of (plan, confounds, n_time) -> LinearMap or None
_MAPS_LOCK = threading.Lock()
_MAX_MAPS = 8


def _clean_columns(block, columns: slice, plan: CleanPlan, confounds, out: np.ndarray) -> None:
    """Clean ``block[:, columns]`` run by run into ``out[:, columns]``."""
    start = 0
    for run in plan.runs:
        signals = _take_rows(block[:, columns], run.rows, out.dtype)
        if plan.ensure_finite:
            signals[~np.isfinite(signals)] = 0
        run_confounds = None if confounds is None else confounds[run.rows]
        cleaned = _clean_run(signals, run_confounds, run, plan)
        out[start : start + len(cleaned), columns] = cleaned
        start += len(cleaned)


def _take_rows(block: np.ndarray, rows: np.ndarray, dtype) -> np.ndarray:
    """A new ``dtype`` array of ``block``'s ``rows`` (one copy, not two, when all rows are taken)."""
    if len(rows) == len(block) and (rows == np.arange(len(block))).all():
        return np.array(block, dtype=dtype)
    return np.asarray(block[rows], dtype=dtype)


def _clean_run(signals: np.ndarray, confounds, run: RunPlan, plan: CleanPlan) -> np.ndarray:
    if plan.filter == "cosine":
        confounds = add_cosine_drift(confounds, cosine_drift(plan.high_pass, plan.t_r, len(signals)))
    restored_mean = None
    if plan.standardize == "psc" and _removes_mean(confounds, run.kept, plan, len(signals)):
        restored_mean = _scrub(signals, None, run.kept, plan)[0].mean(axis=0)
    cleaned = _linear_steps(signals, confounds, run.kept, plan, overwrite=True)
    if plan.standardize is None:
        return cleaned
    if restored_mean is not None:
        cleaned += restored_mean
    return standardize(cleaned, plan.standardize, inplace=True)


def _linear_steps(signals, confounds, kept, plan: CleanPlan, overwrite: bool = False) -> np.ndarray:
    """Scrub, detrend, filter and regress confounds out: a linear map of the signals.

    With ``overwrite``, ``signals`` (never the confounds) may be modified in place.
    """
    signals, confounds, kept = _scrub(signals, confounds, kept, plan)
    if plan.detrend:
        signals = detrend(signals, inplace=overwrite)
        confounds = None if confounds is None else detrend(confounds)
    if plan.filter == "butterworth":
        options = dict(plan.butterworth)
        sos = butterworth_sos(plan.t_r, plan.low_pass, plan.high_pass, options.pop("order", 5))
        signals = butterworth_filter(signals, sos, **options)
        confounds = None if confounds is None else butterworth_filter(confounds, sos, **options)
        if kept is not None:
            signals = signals[kept]
            confounds = None if confounds is None else confounds[kept]
    if confounds is not None:
        signals = _regress_out(signals, confounds, plan.standardize_confounds)
    return signals


def _removes_mean(confounds, kept, plan: CleanPlan, n_time: int) -> bool:
    """Whether the linear steps remove the mean: less than 10 % of a constant series survives.

    nilearn decides this from the data (mean absolute mean after cleaning over mean absolute mean
    before, below 0.1); on a constant series the two agree whenever the decision is meaningful,
    and this one is the same for every block (see docs/differences_from_nilearn.md).
    """
    constant = np.ones((n_time, 1))
    return abs(_linear_steps(constant, confounds, kept, plan, overwrite=True).mean()) < 0.1


def _scrub(signals, confounds, kept, plan: CleanPlan):
    """Handle censored volumes; return ``(signals, confounds, kept-after-filtering or None)``."""
    if kept is None:
        return signals, confounds, None
    if plan.filter != "butterworth":
        return signals[kept], None if confounds is None else confounds[kept], None
    signals = _interpolate_censored(signals, kept, plan.t_r, plan.extrapolate)
    if confounds is not None:
        confounds = _interpolate_censored(confounds, kept, plan.t_r, plan.extrapolate)
    if not plan.extrapolate:
        kept = kept - kept[0]
    return signals, confounds, kept


def _interpolate_censored(volumes: np.ndarray, kept: np.ndarray, t_r: float, extrapolate: bool) -> np.ndarray:
    """Replace the censored volumes by a cubic spline through the kept ones (times ``k * t_r``).

    Without ``extrapolate``, censored volumes before the first or after the last kept one are
    dropped instead (the result starts at the first kept volume).
    """
    times = np.arange(len(volumes)) * t_r
    censored = np.setdiff1d(np.arange(len(volumes)), kept)
    if not extrapolate:
        censored = censored[(censored > kept[0]) & (censored < kept[-1])]
    volumes = volumes.copy()
    if censored.size:
        spline = CubicSpline(times[kept], volumes[kept], axis=0, extrapolate=extrapolate)
        volumes[censored] = spline(times[censored])
    return volumes if extrapolate else volumes[kept[0] : kept[-1] + 1]


def detrend(signals: np.ndarray, inplace: bool = False) -> np.ndarray:
    """Remove each column's mean and linear trend (in place, or in a new array of the same dtype).

    A single time point is returned as it is, with a warning (nilearn's rule: detrending it would
    give zeros).
    """
    n_time = len(signals)
    if n_time == 1:
        warnings.warn("Detrending of 3D signal has been requested but would lead to zero values. Skipping "
                      "(a single time point).", UserWarning, stacklevel=2)
        return signals if inplace else signals.copy()
    if inplace:
        signals -= signals.mean(axis=0)
    else:
        signals = signals - signals.mean(axis=0)
    ramp = np.arange(n_time, dtype=signals.dtype)
    ramp -= ramp.mean()
    ramp /= np.sqrt((ramp**2).sum())
    signals -= np.outer(ramp, ramp @ signals)
    return signals


def _regress_out(signals: np.ndarray, confounds: np.ndarray, standardize_confounds: bool) -> np.ndarray:
    """Project ``signals`` on the orthogonal of the confounds' span (pivoted QR, rank-revealing)."""
    confounds = np.asarray(confounds, dtype=np.float64)
    if standardize_confounds:
        confounds = standardize(confounds, "zscore_sample")
    else:
        scale = np.abs(confounds).max(axis=0)
        scale[scale == 0] = 1
        confounds = confounds / scale
    q, r, _ = linalg.qr(confounds, mode="economic", pivoting=True)
    q = q[:, np.abs(np.diag(r)) > EPS * 100.0].astype(signals.dtype)
    coefficients = (signals.T @ q).T  # faster than q.T @ signals for a (time, features) C array
    signals -= q @ coefficients
    return signals


def standardize(signals: np.ndarray, strategy: str, inplace: bool = False) -> np.ndarray:
    """Centre and scale each column: ``zscore_sample`` (ddof=1), ``zscore`` (ddof=0) or ``psc``.

    Columns with a standard deviation below float64's epsilon are only centred; under ``psc``,
    columns whose mean is (nearly) zero are set to 0 with a warning.
    """
    if len(signals) == 1:
        warnings.warn("Standardizing a single time point would zero it; skipped.", UserWarning, stacklevel=2)
        return signals
    mean = signals.mean(axis=0)
    if strategy == "psc":
        invalid = np.abs(mean) < EPS
        scale = np.where(invalid, 1, np.abs(mean))
        out = (signals - mean) / scale * 100
        if invalid.any():
            warnings.warn(
                f"psc standardization strategy is meaningless for features that have a mean of 0: "
                f"{invalid.sum()} such time series are set to 0.",
                UserWarning,
                stacklevel=2,
            )
            out[:, invalid] = 0
        return out.astype(signals.dtype, copy=False)
    out = signals if inplace else signals.copy()
    out -= mean
    ddof = 1 if strategy == "zscore_sample" else 0
    std = np.sqrt(np.einsum("ij,ij->j", out, out) / (len(out) - ddof))
    std[std < EPS] = 1.0
    out /= std
    return out
