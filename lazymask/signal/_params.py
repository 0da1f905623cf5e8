"""Validation of :func:`lazymask.signal.clean`'s parameters, and the plan the kernel follows.

Contract: everything here is a pure function of the parameters and of the number of time points;
no signal value is read. Every check that can fail fails here, at graph-build time, with an error
that names the parameter, what was found and what is expected. The result is a :class:`CleanPlan`,
a small picklable object that every block of a lazy computation receives unchanged.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from lazymask.exceptions import AllVolumesRemovedError, ParameterError
from lazymask.signal._filters import butterworth_sos

__all__ = ["CleanPlan", "RunPlan", "SampleMaskError", "make_plan", "float_dtype"]

STANDARDIZE_OPTIONS = ("zscore_sample", "zscore", "psc", True, False, None)
FILTER_OPTIONS = ("butterworth", "cosine", False, None)
BUTTERWORTH_OPTIONS = ("order", "padtype", "padlen")


class SampleMaskTypeError(ParameterError, TypeError):
    """``sample_mask`` of a type ``clean`` cannot use (also a ``TypeError``, as in nilearn)."""


class SampleMaskError(ParameterError, IndexError):
    """``sample_mask`` selects volumes that do not exist (also an ``IndexError``, as in nilearn)."""


@dataclass(frozen=True)
class RunPlan:
    """One run: the rows of the input it covers and the volumes it keeps (``None``: all)."""

    rows: np.ndarray
    kept: np.ndarray | None = None

    @property
    def output_rows(self) -> np.ndarray:
        return self.rows if self.kept is None else self.rows[self.kept]


@dataclass(frozen=True)
class CleanPlan:
    """What the cleaning kernel does, decided once from the parameters (see :func:`make_plan`)."""

    n_time: int
    runs: tuple[RunPlan, ...]
    detrend: bool = True
    standardize: str | None = "zscore_sample"
    standardize_confounds: bool = True
    filter: str | None = None
    low_pass: float | None = None
    high_pass: float | None = None
    t_r: float | None = None
    ensure_finite: bool = False
    extrapolate: bool = False
    butterworth: dict = field(default_factory=dict)

    @property
    def output_rows(self) -> np.ndarray:
        """Index (into the input's time axis) of each output time point, in output order."""
        return np.concatenate([run.output_rows for run in self.runs])

    @property
    def n_output(self) -> int:
        return sum(len(run.output_rows) for run in self.runs)


def float_dtype(dtype) -> np.dtype:
    """The floating dtype ``clean`` returns for ``dtype`` (nilearn's rule: 8-byte ints → float64)."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return dtype
    return np.dtype(np.float64 if dtype.itemsize == 8 else np.float32)


def make_plan(
    n_time: int,
    runs=None,
    detrend: bool = True,
    standardize="zscore_sample",
    sample_mask=None,
    standardize_confounds: bool = True,
    filter="butterworth",
    low_pass=None,
    high_pass=None,
    t_r=2.5,
    ensure_finite: bool = False,
    extrapolate: bool = False,
    **kwargs,
) -> CleanPlan:
    """Check every parameter of ``clean`` for a signal of ``n_time`` points; return the plan."""
    for name, value in [("detrend", detrend), ("standardize_confounds", standardize_confounds),
                        ("ensure_finite", ensure_finite), ("extrapolate", extrapolate)]:
        if not isinstance(value, (bool, np.bool_)):
            raise ParameterError(f"'{name}' must be one of True or False; got {value!r}.")
    filter_type, low_pass, high_pass, t_r = _check_filter(filter, low_pass, high_pass, t_r)
    butterworth = _butterworth_options(kwargs)
    run_plans = _run_plans(n_time, runs, sample_mask)
    if filter_type == "butterworth":
        _check_filter_length(run_plans, low_pass, high_pass, t_r, butterworth, bool(extrapolate))
    return CleanPlan(
        n_time=n_time,
        runs=run_plans,
        detrend=bool(detrend),
        standardize=_check_standardize(standardize),
        standardize_confounds=bool(standardize_confounds),
        filter=filter_type,
        low_pass=low_pass,
        high_pass=high_pass,
        t_r=t_r,
        ensure_finite=bool(ensure_finite),
        extrapolate=bool(extrapolate),
        butterworth=butterworth,
    )



def _check_standardize(standardize) -> str | None:
    if isinstance(standardize, (bool, np.bool_)) or standardize is None:
        return "zscore_sample" if standardize else None
    if standardize in ("zscore_sample", "zscore", "psc"):
        return standardize
    raise ParameterError(
        f"standardize={standardize!r} is not a known strategy; use one of 'zscore_sample' "
        "(ddof=1), 'zscore' (ddof=0), 'psc' (percent signal change), True (= 'zscore_sample') "
        "or False/None (no standardization)."
    )


def _check_filter(filter, low_pass, high_pass, t_r):
    """Return ``(filter_type, low_pass, high_pass, t_r)``; ``filter_type`` None means no filter."""
    if filter not in FILTER_OPTIONS:
        raise ParameterError(
            f"Filter method {filter} not implemented: filter={filter!r} is not a known filter; use "
            "'butterworth', 'cosine' or False."
        )
    for name, value in [("low_pass", low_pass), ("high_pass", high_pass), ("t_r", t_r)]:
        if value is not None and not (np.isscalar(value) and np.isreal(value) and value > 0):
            raise ParameterError(f"{name} must be a positive number or None; got {value!r}.")
    if filter in (False, None):
        if low_pass is not None or high_pass is not None:
            warnings.warn(
                f"No filter type selected (filter={filter!r}) but a cutoff frequency was provided "
                f"(low_pass={low_pass!r}, high_pass={high_pass!r}): will not perform filtering.",
                UserWarning, stacklevel=4,
            )
        return None, None, None, t_r
    if filter == "cosine":
        if t_r is None or high_pass is None:
            raise ParameterError(
                "Repetition time (t_r) and low cutoff frequency (high_pass) must be specified for cosine "
                "filtering: filter='cosine' needs the repetition time and a high-pass cutoff; got "
                f"t_r={t_r!r} and high_pass={high_pass!r}. Pass both (in seconds and Hz)."
            )
        if low_pass is not None:
            warnings.warn(
                f"low_pass is not implemented for filter='cosine': the cosine filter only removes slow "
                f"drifts (high_pass); low_pass={low_pass!r} is ignored. Use filter='butterworth' for a "
                "low-pass or band-pass filter.",
                UserWarning,
                stacklevel=4,
            )
        return "cosine", None, float(high_pass), float(t_r)
    if low_pass is None and high_pass is None:
        return None, None, None, t_r
    if t_r is None:
        raise ParameterError(
            f"Repetition time (t_r) must be specified for butterworth filtering (low_pass={low_pass!r}, "
            f"high_pass={high_pass!r}); got t_r=None. Pass t_r in seconds."
        )
    if low_pass is not None and high_pass is not None and high_pass >= low_pass:
        raise ParameterError(
            f"High pass cutoff frequency ({high_pass}) is greater than or equal to low pass filter "
            f"frequency ({low_pass}): high_pass must be below low_pass for a band-pass filter; swap them "
            "or drop one."
        )
    low_pass, high_pass = (_below_nyquist(name, value, float(t_r))
                           for name, value in [("low_pass", low_pass), ("high_pass", high_pass)])
    if low_pass is not None and low_pass == high_pass:
        warnings.warn(
            "Both cutoffs were lowered to just below the Nyquist frequency, so the band-pass is "
            "empty: the signals are not filtered (as nilearn does). Check t_r, low_pass and high_pass.",
            UserWarning,
            stacklevel=4,
        )
        return None, None, None, float(t_r)
    return "butterworth", low_pass, high_pass, float(t_r)


def _below_nyquist(name: str, value, t_r: float) -> float | None:
    """``value`` as a float; at or above Nyquist, lowered to just below it with a warning (nilearn's rule).

    nilearn 0.14 lowers such a cutoff to ``nyquist * (1 - 10 * eps(float32))`` and filters with it.
    """
    if value is None:
        return None
    nyquist = 0.5 / t_r
    if value < nyquist:
        return float(value)
    lowered = nyquist - nyquist * 10 * float(np.finfo(np.float32).eps)
    warnings.warn(
        f"{name}={value} Hz is at or above the Nyquist frequency {nyquist:g} Hz of t_r={t_r} s, which "
        f"a digital filter cannot handle; it is lowered to {lowered!r} Hz, as nilearn does. Pass a "
        f"cutoff below {nyquist:g} Hz (or None to disable it).",
        UserWarning,
        stacklevel=6,
    )
    return lowered


def _check_filter_length(runs, low_pass, high_pass, t_r: float, options: dict, extrapolate: bool) -> None:
    """Raise now, with the numbers, when a run is too short for the zero-phase filter's padding.

    ``sosfiltfilt`` pads each series by ``padlen`` points at both ends (by default 3 times the
    filter's number of taps) and needs more points than that; scipy says so only when the filter
    runs ("padlen" error, at compute time).
    """
    order = options.get("order", 5)
    padtype = options.get("padtype", "odd")
    padlen = options.get("padlen")
    if padtype is None:
        return
    if padlen is None:
        sos = butterworth_sos(t_r, low_pass, high_pass, order)
        taps = 2 * len(sos) + 1 - min(int((sos[:, 2] == 0).sum()), int((sos[:, 5] == 0).sum()))
        padlen = 3 * taps
    for i, run in enumerate(runs):
        n_filtered = len(run.rows)
        if run.kept is not None and not extrapolate:
            n_filtered = int(run.kept[-1] - run.kept[0] + 1)
        if n_filtered <= padlen:
            where = f"run {i + 1} of {len(runs)} has" if len(runs) > 1 else "the signals have"
            cutoffs = ", ".join(f"{n}={v:g} Hz" for n, v in [("low_pass", low_pass), ("high_pass", high_pass)] if v is not None)
            raise ParameterError(
                f"a Butterworth filter of order {order} ({cutoffs}, t_r={t_r:g} s) pads each series by "
                f"{padlen} time points and needs more than {padlen}, but {where} {n_filtered} time "
                "point(s) to filter. Use a longer run, a smaller butterworth__padlen (below "
                f"{n_filtered}) or butterworth__padtype=None, a lower butterworth__order, or no "
                "low_pass/high_pass."
            )


def _butterworth_options(kwargs: dict) -> dict:
    options = {}
    for key, value in kwargs.items():
        name = key.removeprefix("butterworth__")
        if not key.startswith("butterworth__") or name not in BUTTERWORTH_OPTIONS:
            raise ParameterError(
                f"clean() got an unknown keyword argument {key!r}; the only extra keywords are "
                + ", ".join(f"'butterworth__{o}'" for o in BUTTERWORTH_OPTIONS) + "."
            )
        options[name] = value
    return options


def _run_plans(n_time: int, runs, sample_mask) -> tuple[RunPlan, ...]:
    if runs is None:
        rows_per_run = [np.arange(n_time)]
    else:
        runs = np.asarray(runs)
        if runs.ndim != 1 or len(runs) != n_time:
            raise ParameterError(
                f"The length of the run vector ({runs.size}) does not match the length of the signals "
                f"({n_time}): runs must give one run label per time point: the signals have {n_time} time "
                f"points but runs has shape {runs.shape}."
            )
        rows_per_run = [np.flatnonzero(runs == label) for label in np.unique(runs)]
    masks = _split_sample_mask(sample_mask, len(rows_per_run))
    return tuple(
        RunPlan(rows=rows, kept=_kept_volumes(mask, len(rows), i, len(rows_per_run)))
        for i, (rows, mask) in enumerate(zip(rows_per_run, masks))
    )


def _split_sample_mask(sample_mask, n_runs: int) -> list:
    if sample_mask is None:
        return [None] * n_runs
    if isinstance(sample_mask, (list, tuple)) and len(sample_mask) and not np.isscalar(sample_mask[0]):
        masks = list(sample_mask)
    else:
        masks = [sample_mask]
    if len(masks) != n_runs:
        raise ParameterError(
            f"Number of sample_mask ({len(masks)}) not matching number of runs ({n_runs}): "
            f"sample_mask must hold one mask per run: got {len(masks)} mask(s) for {n_runs} "
            "run(s). With runs=..., pass a list of masks in the order of the sorted run labels."
        )
    return masks


def _kept_volumes(mask, n_volumes: int, i: int, n_runs: int) -> np.ndarray | None:
    """Sorted indices of the kept volumes of one run (``None`` when all are kept)."""
    if mask is None:
        return None
    where = f"sample_mask (run {i + 1} of {n_runs}, {n_volumes} volumes)"
    mask = np.asarray(mask)
    if mask.dtype == bool:
        if mask.shape != (n_volumes,):
            raise SampleMaskError(
                f"{where} is a boolean mask of shape {mask.shape}; a boolean mask needs one value "
                f"per volume, shape ({n_volumes},)."
            )
        kept = np.flatnonzero(mask)
    elif mask.dtype.kind in "iu" and mask.ndim == 1:
        if mask.size > n_volumes:
            raise SampleMaskError(
                f"{where} has more timepoints than the current run: it holds {mask.size} indices "
                f"but the run has {n_volumes} time points."
            )
        bad = mask[(mask < 0) | (mask >= n_volumes)]
        if bad.size:
            raise SampleMaskError(
                f"sample_mask contains invalid index {bad[:10].tolist()}: {where} holds indices out of range: "
                f"{bad[:10].tolist()}; indices must be in [0, {n_volumes - 1}]."
            )
        kept = np.unique(mask)
        if kept.size != mask.size:
            raise SampleMaskError(f"{where} holds repeated indices; give each volume once.")
    else:
        raise SampleMaskTypeError(
            f"sample_mask must be of type numpy.ndarray (1D boolean mask or integer indices) or a list of "
            f"these: {where} must be a 1D boolean mask or 1D integer indices; got dtype {mask.dtype} "
            f"and shape {mask.shape}."
        )
    if kept.size == 0:
        raise AllVolumesRemovedError(f"{where} removes every volume; keep at least one.")
    if kept.size == n_volumes:
        return None
    return kept
