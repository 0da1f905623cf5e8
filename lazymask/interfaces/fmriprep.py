"""fMRIPrep confounds selected as nilearn's ``nilearn.interfaces.fmriprep`` selects them.

Contract
--------
* :func:`load_confounds` and :func:`load_confounds_strategy` take nilearn 0.14's parameters and
  return what nilearn returns on the same files: the selected confounds as a DataFrame (columns
  sorted by name, first-row NaNs of derivatives replaced by the second row, demeaned over the
  kept volumes) and the sample mask (indices of the kept volumes, or ``None`` when no volume is
  censored). Censoring comes from the ``non_steady_state_outlier*`` columns and, with ``"scrub"``,
  from framewise displacement and standardised DVARS (segments shorter than ``scrub`` volumes are
  censored too).
* Supported noise components: ``motion``, ``wm_csf``, ``global_signal``, ``high_pass``, ``scrub``
  (and the implicit ``non_steady_state``); preset strategies ``"simple"`` and ``"scrubbing"``.
  ``compcor``, ``ica_aroma`` and ``tedana`` are refused with an error saying so.
* :func:`confounds_from_table` is the same selection given the confounds TSV itself (what
  :func:`lazymask.archive.build_archive` uses, with the path :func:`lazymask.interfaces.find_runs`
  found).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from lazymask.exceptions import ImageFileNotFoundError, ParameterError
from lazymask.storage import files_at

__all__ = ["load_confounds", "load_confounds_strategy", "confounds_from_table", "PRESETS"]

MODELS = ("basic", "derivatives", "power2", "full")
_SUFFIXES = {
    "basic": (),
    "derivatives": ("derivative1",),
    "power2": ("power2",),
    "full": ("derivative1", "power2", "derivative1_power2"),
}
_MOTION = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")
SUPPORTED = ("motion", "wm_csf", "global_signal", "high_pass", "scrub", "non_steady_state")
_UNSUPPORTED = ("compcor", "ica_aroma", "tedana")

PRESETS = {
    "simple": {"strategy": ("high_pass", "motion", "wm_csf"), "motion": "full", "wm_csf": "basic",
               "global_signal": None, "demean": True},
    "scrubbing": {"strategy": ("high_pass", "motion", "wm_csf", "scrub"), "motion": "full", "wm_csf": "full",
                  "scrub": 5, "fd_threshold": 0.5, "std_dvars_threshold": 1.5, "global_signal": None,
                  "demean": True},
}


def _with_suffixes(names, model: str) -> list[str]:
    return list(names) + [f"{name}_{suffix}" for name in names for suffix in _SUFFIXES[model]]


def _check_model(value, name: str) -> None:
    if value not in MODELS:
        raise ParameterError(f"{name}={value!r}: expected one of {', '.join(map(repr, MODELS))}.")


def _check_strategy(strategy) -> tuple[str, ...]:
    if not isinstance(strategy, tuple | list):
        raise ParameterError(f"strategy must be a tuple or list of str; got {type(strategy).__name__}.")
    for item in strategy:
        if item in _UNSUPPORTED:
            raise ParameterError(
                f"strategy component {item!r} is not supported by lazymask yet; use "
                "nilearn.interfaces.fmriprep for it and pass the confounds to the masker."
            )
        if item not in SUPPORTED:
            raise ParameterError(f"strategy component {item!r}: expected some of {', '.join(SUPPORTED)}.")
    return tuple(strategy)


def _columns(table: pd.DataFrame, names: list[str], component: str, missing: list[str]) -> list[str]:
    absent = [n for n in names if n not in table.columns]
    if len(absent) == len(names):
        missing.append(component)
        return []
    missing.extend(absent)
    return [] if absent else list(names)


def _containing(table: pd.DataFrame, keyword: str) -> list[str]:
    return [c for c in table.columns if keyword in c]


def _extend_short_segments(outliers: np.ndarray, n_scans: int, scrub: int) -> np.ndarray:
    """Censor also the kept segments shorter than ``scrub`` volumes (at the ends and in between)."""
    outliers = np.asarray(outliers, dtype=int)
    if outliers[0] < scrub:
        outliers = np.concatenate([np.arange(outliers[0]), outliers])
    if n_scans - (outliers[-1] + 1) < scrub:
        outliers = np.concatenate([outliers, np.arange(outliers[-1], n_scans)])
    gaps = np.diff(outliers)
    fill = [np.arange(outliers[i] + 1, outliers[i + 1]) for i in np.flatnonzero((gaps > 1) & (gaps < scrub + 1))]
    return np.unique(np.concatenate([outliers, *fill]))


def _scrub_outliers(table: pd.DataFrame, scrub: int, fd_threshold: float, std_dvars_threshold: float) -> np.ndarray:
    for column in ("framewise_displacement", "std_dvars"):
        if column not in table.columns:
            raise ParameterError(f"the confounds table has no {column!r} column, which strategy 'scrub' needs.")
    over = (table["framewise_displacement"].to_numpy() > fd_threshold) | (
        table["std_dvars"].to_numpy() > std_dvars_threshold)
    outliers = np.flatnonzero(over)
    if scrub > 0 and outliers.size:
        outliers = _extend_short_segments(outliers, len(table), scrub)
    return outliers


def read_confounds_table(path, storage_options=None) -> pd.DataFrame:
    """An fMRIPrep confounds TSV (a path or URL) as a DataFrame (``n/a`` read as NaN); checks fMRIPrep >= 1.2's header."""
    files, path = files_at(path, storage_options)
    if not files.is_file(path):
        raise ImageFileNotFoundError(f"confounds file {str(path)!r} does not exist.")
    try:
        table = pd.read_csv(io.BytesIO(files.read_bytes(path)), sep="\t", encoding="utf-8")
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ParameterError(f"confounds file {str(path)!r} is not a readable fMRIPrep confounds table "
                             f"({type(exc).__name__}: {exc}).") from exc
    if len(table.columns) and _looks_numeric(table.columns[0]):
        raise ParameterError(f"confounds file {str(path)!r} has no header row (fMRIPrep >= 1.2 writes one).")
    camel = [c for c in table.columns if any(ch.isupper() for ch in c) and "_" not in c and c[:1].islower()]
    if camel:
        raise ParameterError(
            f"confounds file {str(path)!r} has camel-case columns {camel[:3]}: the output of fMRIPrep "
            "1.0/1.1, which is not supported (fMRIPrep >= 1.2 is)."
        )
    return table


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def confounds_from_table(table, strategy=("motion", "high_pass", "wm_csf"), motion="full", scrub=5,
                         fd_threshold=0.5, std_dvars_threshold=1.5, wm_csf="basic", global_signal="basic",
                         demean=True, *, where: str = "the confounds table", storage_options=None):
    """Select confounds from an fMRIPrep confounds table (a path, a URL or a DataFrame).

    Parameters are those of :func:`load_confounds`; ``where`` names the table in errors;
    ``storage_options`` are fsspec's for a URL.

    Returns
    -------
    confounds : pandas.DataFrame or None
        ``None`` when ``strategy`` is empty.
    sample_mask : numpy.ndarray or None

    Examples
    --------
    >>> table = pd.DataFrame({"csf": [1.0, 2.0, 4.0], "white_matter": [0.0, 1.0, 0.0]})
    >>> confounds, sample_mask = confounds_from_table(table, strategy=("wm_csf",))
    >>> confounds.round(3).to_dict("list"), sample_mask
    ({'csf': [-1.333, -0.333, 1.667], 'white_matter': [-0.333, 0.667, -0.333]}, None)
    """
    strategy = _check_strategy(strategy)
    if not isinstance(table, pd.DataFrame):
        where = f"confounds file {str(table)!r}"
        table = read_confounds_table(table, storage_options=storage_options)
    for name, value in (("motion", motion), ("wm_csf", wm_csf), ("global_signal", global_signal)):
        if name in strategy:
            _check_model(value, name)
    missing: list[str] = []
    selected = {}
    for column in _containing(table, "non_steady_state"):
        selected[column] = table[column]
    for component in strategy:
        if component == "motion":
            names = _columns(table, _with_suffixes(_MOTION, motion), "motion", missing)
        elif component == "wm_csf":
            names = _columns(table, _with_suffixes(("csf", "white_matter"), wm_csf), "wm_csf", missing)
        elif component == "global_signal":
            names = _columns(table, _with_suffixes(("global_signal",), global_signal), "global_signal", missing)
        elif component == "high_pass":
            names = _containing(table, "cosine")
        elif component == "scrub":
            names = []
            for number, index in enumerate(_scrub_outliers(table, scrub, fd_threshold, std_dvars_threshold)):
                one_hot = np.zeros(len(table), dtype=int)
                one_hot[index] = 1
                selected[f"motion_outlier_{number}"] = pd.Series(one_hot, index=table.index)
        else:  # non_steady_state: always loaded above
            names = []
        for name in names:
            selected[name] = table[name]
    if missing:
        raise ParameterError(
            f"{where} lacks the columns or components {missing} that strategy {list(strategy)} needs; "
            "choose another strategy (or other motion=/wm_csf=/global_signal= models)."
        )
    confounds, sample_mask = _prepare(pd.DataFrame(selected, index=table.index), demean, where)
    return (None if not strategy else confounds), sample_mask


def _prepare(selected: pd.DataFrame, demean: bool, where: str = "the confounds table"):
    outlier_columns = sorted(c for c in selected.columns if "motion_outlier" in c or "non_steady_state" in c)
    kept_columns = sorted(set(selected.columns) - set(outlier_columns))
    sample_mask = None
    if outlier_columns:
        censored = selected[outlier_columns].to_numpy().sum(axis=1) != 0
        sample_mask = np.flatnonzero(~censored)
        if sample_mask.size == 0:
            warnings.warn("All volumes were marked as motion outliers: every volume would be scrubbed.",
                          RuntimeWarning, stacklevel=3)
    confounds = selected[kept_columns].astype(float)
    if confounds.size:
        first_nan = np.isnan(confounds.to_numpy()[0])
        if first_nan.any():  # derivatives start with n/a: nilearn takes the second row's value
            if len(confounds) < 2:
                raise ParameterError(
                    f"{where} has a single row, so the first value (n/a) of "
                    f"{list(confounds.columns[first_nan])[:3]} cannot be taken from the second row as "
                    "nilearn does; a run needs at least 2 volumes for derivative confounds. Choose "
                    "models without derivatives (motion='basic', wm_csf='basic', ...)."
                )
            confounds.iloc[0, first_nan] = confounds.iloc[1, first_nan]
        if demean:
            rows = confounds if sample_mask is None else confounds.iloc[sample_mask]
            confounds = confounds - rows.mean(axis=0)
    return confounds, sample_mask


def _confounds_path(img_file, storage_options=None) -> str:
    """The confounds TSV fMRIPrep writes beside a preprocessed run (a path, or a URL for a URL)."""
    from lazymask.interfaces.bids import parse_bids_filename

    files, img_file = files_at(img_file, storage_options)
    name = img_file.rsplit("/", 1)[-1]
    parsed = parse_bids_filename(name)
    if parsed["suffix"] != "bold" or parsed["entities"].get("desc") != "preproc":
        raise ParameterError(
            f"{name!r} is not an fMRIPrep preprocessed run (*_desc-preproc_bold.nii[.gz])."
        )
    keep = {k: v for k, v in parsed["entities"].items() if k not in ("space", "cohort", "res", "den", "desc")}
    stem = "_".join(f"{k}-{v}" for k, v in keep.items())
    for suffix in ("_desc-confounds_timeseries.tsv", "_desc-confounds_regressors.tsv"):
        candidate = files.with_name(img_file, stem + suffix)
        if files.is_file(candidate):
            return candidate
    raise ImageFileNotFoundError(
        f"no confounds file beside {str(img_file)!r}: expected {stem}_desc-confounds_timeseries.tsv "
        "in the same directory (as fMRIPrep writes it)."
    )


def load_confounds(img_files, strategy=("motion", "high_pass", "wm_csf"), motion="full", scrub=5,
                   fd_threshold=0.5, std_dvars_threshold=1.5, wm_csf="basic", global_signal="basic",
                   demean=True, *, storage_options=None, **unsupported):
    """The confounds of fMRIPrep runs, selected as :func:`nilearn.interfaces.fmriprep.load_confounds` does.

    Parameters
    ----------
    img_files : str, pathlib.Path or list of them
        Preprocessed runs (``*_desc-preproc_bold.nii[.gz]``); each one's confounds TSV is found
        beside it.
    strategy : tuple of str
        Noise components among ``motion``, ``wm_csf``, ``global_signal``, ``high_pass``, ``scrub``.
    motion, wm_csf, global_signal : {"basic", "derivatives", "power2", "full"}
        Which expansions of those regressors to take.
    scrub : int, default 5
        With ``"scrub"``: kept segments shorter than this are censored too.
    fd_threshold : float, default 0.5
        With ``"scrub"``: framewise displacement (mm) above which a volume is censored.
    std_dvars_threshold : float, default 1.5
        With ``"scrub"``: standardised DVARS above which a volume is censored.
    demean : bool, default True
        Demean the confounds (over the kept volumes).
    storage_options : dict, optional
        fsspec options when the runs are URLs (``{"anon": True}`` for a public bucket).

    Returns
    -------
    confounds : pandas.DataFrame, list of them, or None
    sample_mask : numpy.ndarray, list of them, or None

    Examples
    --------
    >>> confounds, sample_mask = load_confounds("sub-01_task-rest_desc-preproc_bold.nii.gz",
    ...                                         strategy=("motion", "scrub"))   # doctest: +SKIP
    """
    for name in unsupported:
        if name in ("compcor", "n_compcor", "ica_aroma", "tedana"):
            continue  # only read by the unsupported components, which _check_strategy refuses
        raise ParameterError(f"load_confounds got an unexpected parameter {name!r}.")
    params = dict(strategy=strategy, motion=motion, scrub=scrub, fd_threshold=fd_threshold,
                  std_dvars_threshold=std_dvars_threshold, wm_csf=wm_csf, global_signal=global_signal,
                  demean=demean)
    single = isinstance(img_files, str | Path)
    files = [img_files] if single else list(img_files)
    results = [confounds_from_table(_confounds_path(f, storage_options), storage_options=storage_options, **params)
               for f in files]
    if not strategy:
        warnings.warn("strategy is empty, confounds will return None.", stacklevel=2)
    if single:
        return results[0]
    confounds = None if not strategy else [r[0] for r in results]
    return confounds, [r[1] for r in results]


def strategy_parameters(denoise_strategy: str = "simple", **kwargs) -> dict:
    """The :func:`load_confounds` parameters of a preset, updated by ``kwargs`` as nilearn does.

    Examples
    --------
    >>> strategy_parameters("simple", global_signal="basic")["strategy"]
    ('high_pass', 'motion', 'wm_csf', 'global_signal')
    """
    if denoise_strategy not in PRESETS:
        raise ParameterError(
            f"denoise_strategy={denoise_strategy!r}: lazymask supports {', '.join(map(repr, PRESETS))} "
            "(compcor and ica_aroma: use nilearn.interfaces.fmriprep)."
        )
    parameters = dict(PRESETS[denoise_strategy])
    for key in [k for k in parameters if k != "strategy"]:
        value = kwargs.pop(key, None)
        if value is not None:
            parameters[key] = value
        if key == "global_signal":
            if isinstance(value, str):
                parameters["strategy"] = tuple(parameters["strategy"]) + ("global_signal",)
            else:
                parameters.pop("global_signal", None)
    if kwargs:
        warnings.warn(
            f"The following parameters are not needed for the selected strategy '{denoise_strategy}': "
            f"{list(kwargs)}; parameters accepted: {[k for k in PRESETS[denoise_strategy] if k != 'strategy']}",
            stacklevel=3,
        )
    return parameters


def load_confounds_strategy(img_files, denoise_strategy="simple", *, storage_options=None, **kwargs):
    """Preset confounds strategies, as :func:`nilearn.interfaces.fmriprep.load_confounds_strategy`.

    Parameters
    ----------
    img_files : str, pathlib.Path or list of them
        Preprocessed runs (``*_desc-preproc_bold.nii[.gz]``).
    denoise_strategy : {"simple", "scrubbing"}, default "simple"
        ``"simple"``: cosines, full motion, basic WM/CSF; ``"scrubbing"``: the same with full WM/CSF
        and scrubbing (``scrub=5``, ``fd_threshold=0.5``, ``std_dvars_threshold=1.5``).
    **kwargs
        Overrides of the preset's parameters (``motion=``, ``wm_csf=``, ``scrub=``, ...);
        ``global_signal="basic"`` (or another model) adds the global signal.
    storage_options : dict, optional
        fsspec options when the runs are URLs.

    Returns
    -------
    confounds, sample_mask
        As :func:`load_confounds`.

    Examples
    --------
    >>> confounds, sample_mask = load_confounds_strategy(
    ...     "sub-01_task-rest_desc-preproc_bold.nii.gz", "scrubbing")   # doctest: +SKIP
    """
    return load_confounds(img_files, storage_options=storage_options, **strategy_parameters(denoise_strategy, **kwargs))
