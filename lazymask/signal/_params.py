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

from lazymask.exceptions import ParameterError
from lazymask.signal._filters import butterworth_sos

__all__ = ["CleanPlan", "RunPlan", "SampleMaskError", "make_plan", "float_dtype"]

STANDARDIZE_OPTIONS = ("zscore_sample", "zscore", "psc", True, False, None)
FILTER_OPTIONS = ("butterworth", "cosine", False, None)
BUTTERWORTH_OPTIONS = ("order", "padtype", "padlen")


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
            raise ParameterError(f"{name} must be True or False; got {value!r}.")
    filter_type, low_pass, high_pass, t_r = _check_filter(filter, low_pass, high_pass, t_r)
    plan = CleanPlan(
        n_time=n_time,
        runs=_run_plans(n_time, runs, sample_mask),
        detrend=bool(detrend),
        standardize=_check_standardize(standardize),
        standardize_confounds=bool(standardize_confounds),
        filter=filter_type,
        low_pass=low_pass,
        high_pass=high_pass,
        t_r=t_r,
        ensure_finite=bool(ensure_finite),
        extrapolate=bool(extrapolate),
        butterworth=_butterworth_options(kwargs),
    )
    if plan.filter == "butterworth":
        _check_filter_length(plan)
    return plan


def _filtered_length(run: RunPlan, extrapolate: bool) -> int:
    """Points the Butterworth filter sees for ``run`` (censored volumes are interpolated first)."""
    if run.kept is None or extrapolate or not len(run.kept):
        return len(run.rows)
    return int(run.kept[-1] - run.kept[0] + 1)


def _check_filter_length(plan: CleanPlan) -> None:
    """Refuse, before any data is read, a run shorter than the zero-phase filter's padding.

    ``scipy.signal.sosfiltfilt`` pads each end by ``padlen`` points (by default three times the
    filter's length) and fails at compute time when a run is not longer than that.
    """
    options = dict(plan.butterworth)
    if options.get("padtype", "odd") is None:
        return
    order = options.get("order", 5)
    sos = butterworth_sos(plan.t_r, plan.low_pass, plan.high_pass, order)
    padlen = options.get("padlen")
    if padlen is None:
        padlen = 3 * (2 * len(sos) + 1 - min((sos[:, 2] == 0).sum(), (sos[:, 5] == 0).sum()))
    for i, run in enumerate(plan.runs):
        n_points = _filtered_length(run, plan.extrapolate)
        if n_points <= padlen:
            where = f"run {i + 1} of {len(plan.runs)}" if len(plan.runs) > 1 else "the signal"
            raise ParameterError(
                f"the Butterworth filter (low_pass={plan.low_pass}, high_pass={plan.high_pass}, "
                f"order {order}) pads each end by padlen={int(padlen)} time points, but {where} has "
                f"{n_points} time point(s); it needs more than {int(padlen)}. Use a longer run, "
                "butterworth__padlen (or a lower butterworth__order), filter='cosine' for a "
                "high-pass, or no low_pass/high_pass."
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
            f"filter={filter!r} is not a known filter; use 'butterworth', 'cosine' or False."
        )
    for name, value in [("low_pass", low_pass), ("high_pass", high_pass), ("t_r", t_r)]:
        if value is not None and not (np.isscalar(value) and np.isreal(value) and value > 0):
            raise ParameterError(f"{name} must be a positive number or None; got {value!r}.")
    if filter in (False, None):
        return None, None, None, t_r
    if filter == "cosine":
        if t_r is None or high_pass is None:
            raise ParameterError(
                f"filter='cosine' needs the repetition time and a high-pass cutoff; got "
                f"t_r={t_r!r} and high_pass={high_pass!r}. Pass both (in seconds and Hz)."
            )
        if low_pass is not None:
            warnings.warn(
                f"filter='cosine' only removes slow drifts (high_pass); low_pass={low_pass!r} is "
                "ignored. Use filter='butterworth' for a low-pass or band-pass filter.",
                UserWarning,
                stacklevel=4,
            )
        return "cosine", None, float(high_pass), float(t_r)
    if low_pass is None and high_pass is None:
        return None, None, None, t_r
    if t_r is None:
        raise ParameterError(
            f"Butterworth filtering (low_pass={low_pass!r}, high_pass={high_pass!r}) needs the "
            "repetition time; got t_r=None. Pass t_r in seconds."
        )
    nyquist = 0.5 / t_r
    for name, value in [("low_pass", low_pass), ("high_pass", high_pass)]:
        if value is not None and value >= nyquist:
            raise ParameterError(
                f"{name}={value} Hz is at or above the Nyquist frequency {nyquist:g} Hz of "
                f"t_r={t_r} s; pass a cutoff below {nyquist:g} Hz (or None to disable it)."
            )
    if low_pass is not None and high_pass is not None and high_pass >= low_pass:
        raise ParameterError(
            f"high_pass ({high_pass} Hz) must be below low_pass ({low_pass} Hz) for a band-pass "
            "filter; swap them or drop one."
        )
    as_float = lambda v: None if v is None else float(v)  # noqa: E731
    return "butterworth", as_float(low_pass), as_float(high_pass), float(t_r)


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
                f"runs must give one run label per time point: the signals have {n_time} time "
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
        bad = mask[(mask < 0) | (mask >= n_volumes)]
        if bad.size:
            raise SampleMaskError(
                f"{where} holds indices out of range: {bad[:10].tolist()}; indices must be in "
                f"[0, {n_volumes - 1}]."
            )
        kept = np.unique(mask)
        if kept.size != mask.size:
            raise SampleMaskError(f"{where} holds repeated indices; give each volume once.")
    else:
        raise ParameterError(
            f"{where} must be a 1D boolean mask or 1D integer indices; got dtype {mask.dtype} "
            f"and shape {mask.shape}."
        )
    if kept.size == 0:
        raise ParameterError(f"{where} removes every volume; keep at least one.")
    if kept.size == n_volumes:
        return None
    return kept
