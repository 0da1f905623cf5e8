"""fMRIPrep (and tedana) confounds selected as nilearn's ``nilearn.interfaces.fmriprep`` selects them.

Contract
--------
* :func:`load_confounds` and :func:`load_confounds_strategy` take nilearn 0.14's parameters and
  return what nilearn returns on the same files: the selected confounds as a DataFrame (columns
  sorted by name, first-row NaNs of derivatives replaced by the second row, demeaned over the
  kept volumes) and the sample mask (indices of the kept volumes, or ``None`` when no volume is
  censored). Censoring comes from the ``non_steady_state_outlier*`` columns and, with ``"scrub"``,
  from framewise displacement and standardised DVARS (segments shorter than ``scrub`` volumes are
  censored too).
* Noise components: ``motion``, ``wm_csf``, ``global_signal`` (each with the models ``basic``,
  ``derivatives``, ``power2``, ``full``), ``high_pass`` (the ``cosine*`` columns), ``scrub``,
  ``compcor``, ``ica_aroma``, ``tedana`` and the implicit ``non_steady_state``; the presets
  ``"simple"``, ``"scrubbing"``, ``"compcor"`` and ``"ica_aroma"`` (:data:`PRESETS`).
* ``compcor`` needs ``high_pass`` in the strategy (fMRIPrep's CompCor is computed on high-pass
  filtered data). Its components are named from the confounds JSON sidecar
  (``*_desc-confounds_timeseries.json``): ``compcor="anat_combined"`` takes the ``a_comp_cor_*``
  entries whose ``Mask`` is ``combined``; ``"anat_separated"`` the ``a_comp_cor_*`` entries whose
  ``Mask`` is ``WM`` or ``CSF`` (fMRIPrep 1.4-20) and the ``w_comp_cor_*`` and ``c_comp_cor_*``
  ones (fMRIPrep >= 21); ``"temporal"`` the ``t_comp_cor_*`` ones; ``"temporal_anat_*"`` both.
  Component numbers run from ``00`` over as many entries of that prefix as the sidecar has (the
  ``Retained`` and ``CumulativeVarianceExplained`` fields are not read, as in nilearn);
  ``n_compcor`` keeps the first ``n`` of each mask. Anatomical CompCor without a sidecar is an
  error.
* ``ica_aroma="full"``: the input must be fMRIPrep's ICA-AROMA denoised run
  (``*_desc-smoothAROMAnonaggr_bold.nii.gz``); no ICA-AROMA regressor is added (the noise is
  already out of that run), its confounds table is the one beside it. ``"basic"``: the
  ``aroma_motion_*`` columns (every column whose name holds ``aroma``).
* ``tedana``: the input must be tedana's optimally combined run (``*_desc-optcom_bold.nii.gz``);
  its ``*_desc-ICA_mixing.tsv`` (component time courses, ``ICA_xx`` columns) and
  ``*_desc-tedana_metrics.tsv`` (``Component``, ``classification``) beside it give the columns of
  the components classified ``rejected`` (``"aggressive"``) or ``accepted`` and ``rejected``
  (``"non-aggressive"``), named ``<classification>_<mixing column>``; zero-padded and unpadded
  component numbers (``ICA_04`` / ``ICA_4``) are matched. A ``tedana`` strategy ignores the other
  components (with a warning).
* A run's confounds files are found as nilearn finds them: in the run's directory, named with
  any subset of the run's entities plus ``desc-confounds`` (``_timeseries.tsv`` or fMRIPrep <
  20.2's ``_regressors.tsv``); exactly one must exist. Runs are ``*_desc-preproc_bold.nii.gz``,
  ``*_bold.dtseries.nii`` or pairs of ``*_hemi-L/R_*_bold.func.gii`` (the directory is listed once;
  no image is opened: only names are checked). URLs work with ``storage_options``.
* Errors are :class:`~lazymask.exceptions.ParameterError` (a ``ValueError``); a missing confounds
  file is also an :class:`~lazymask.exceptions.ImageFileNotFoundError`. Where nilearn fails with
  a ``KeyError``/``TypeError`` (a partial set of CompCor or WM/CSF columns, an invalid
  ``n_compcor``), lazymask raises a ``ParameterError`` naming the problem (docs/differences_from_nilearn.md).
* :func:`confounds_from_table` is the same selection given the confounds TSV itself (what
  :func:`lazymask.archive.build_archive` uses, with the path :func:`lazymask.interfaces.find_runs`
  found).
"""

from __future__ import annotations

import io
import itertools
import json
import os
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from lazymask.exceptions import ImageFileNotFoundError, ParameterError
from lazymask.storage import files_at

__all__ = ["load_confounds", "load_confounds_strategy", "confounds_from_table", "PRESETS"]

MODELS = ("basic", "power2", "derivatives", "full")
_SUFFIXES = {
    "basic": (),
    "derivatives": ("derivative1",),
    "power2": ("power2",),
    "full": ("derivative1", "power2", "derivative1_power2"),
}
_MOTION = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")
STRATEGIES = ("motion", "high_pass", "wm_csf", "global_signal", "compcor", "ica_aroma", "tedana", "scrub",
              "non_steady_state")
COMPCOR_TYPES = ("anat_combined", "anat_separated", "temporal", "temporal_anat_combined", "temporal_anat_separated")
ICA_AROMA_TYPES = ("full", "basic")
TEDANA_TYPES = ("aggressive", "non-aggressive")

# CompCor: the component prefixes each choice reads, and the a_comp_cor masks it keeps
_COMPCOR_PREFIXES = {
    "anat_combined": ("a",), "anat_separated": ("a", "w", "c"), "temporal": ("t",),
    "temporal_anat_combined": ("t", "a"), "temporal_anat_separated": ("t", "a", "w", "c"),
}
_ANAT_MASKS = {"combined": ("combined",), "separated": ("WM", "CSF")}
# tedana: the classifications each choice keeps
_TEDANA_CLASSES = {"aggressive": ("rejected",), "non-aggressive": ("accepted", "rejected")}

PRESETS = {
    "simple": {"strategy": ("high_pass", "motion", "wm_csf"), "motion": "full", "wm_csf": "basic",
               "global_signal": None, "demean": True},
    "scrubbing": {"strategy": ("high_pass", "motion", "wm_csf", "scrub"), "motion": "full", "wm_csf": "full",
                  "scrub": 5, "fd_threshold": 0.5, "std_dvars_threshold": 1.5, "global_signal": None,
                  "demean": True},
    "compcor": {"strategy": ("high_pass", "motion", "compcor"), "motion": "full", "n_compcor": "all",
                "compcor": "anat_combined", "global_signal": None, "demean": True},
    "ica_aroma": {"strategy": ("high_pass", "wm_csf", "ica_aroma"), "wm_csf": "basic", "ica_aroma": "full",
                  "global_signal": None, "demean": True},
}
# preset parameters a user may not change (nilearn's ica_aroma preset is always the non-aggressive one)
_FIXED = {"strategy", "ica_aroma"}

# image names each kind of input must match (searched in the file name)
_IMAGE_PATTERNS = {
    "aroma": r"_desc-smoothAROMAnonaggr_bold",
    "tedana": r"_desc-optcom_bold\.nii\.gz",
    "nii.gz": r"(_space-.*)?_desc-preproc_bold\.nii\.gz",
    "dtseries.nii": r"(_space-.*)?_bold\.dtseries\.nii",
    "func.gii": r"_hemi-[LR](_space-.*)?_bold\.func\.gii",
}


class ConfoundsFileNotFoundError(ImageFileNotFoundError, ParameterError):
    """No confounds file beside a run (a ``FileNotFoundError`` and, as in nilearn, a ``ValueError``)."""


def _with_suffixes(names, model: str) -> list[str]:
    return list(names) + [f"{name}_{suffix}" for name in names for suffix in _SUFFIXES[model]]


def _check_choice(value, allowed, name: str) -> None:
    if value not in allowed:
        raise ParameterError(f"'{name}' must be one of {list(allowed)}; got {value!r}.")


def _check_strategy(strategy) -> tuple[str, ...]:
    if not isinstance(strategy, tuple | list):
        raise ParameterError(
            f"strategy needs to be a tuple or list of strings (noise components); got {type(strategy).__name__}.")
    if not strategy:
        warnings.warn("strategy is empty, confounds will return None.", UserWarning, stacklevel=3)
    for item in strategy:
        if item == "non_steady_state":
            warnings.warn("Non-steady state volumes are always censored (from the non_steady_state_outlier* "
                          "columns): 'non_steady_state' in strategy adds nothing.", UserWarning, stacklevel=3)
        _check_choice(item, STRATEGIES, "strategy")
    if "compcor" in strategy and "high_pass" not in strategy:
        raise ParameterError(
            f"strategy {tuple(strategy)}: 'compcor' needs 'high_pass' in the strategy too (fMRIPrep computes "
            "CompCor on high-pass filtered data, so the cosine regressors must be removed with it).")
    return tuple(strategy)


def _check_n_compcor(n_compcor) -> None:
    if n_compcor == "all":
        return
    if isinstance(n_compcor, bool) or not isinstance(n_compcor, int | np.integer) or n_compcor < 1:
        raise ParameterError(f"n_compcor={n_compcor!r}: expected 'all' or a positive number of components.")


def _check_parameters(strategy, motion, wm_csf, global_signal, compcor, n_compcor, ica_aroma, tedana) -> None:
    """nilearn's checks of the models of the components in ``strategy`` (before any file is read)."""
    for name, value in (("motion", motion), ("wm_csf", wm_csf), ("global_signal", global_signal)):
        if name in strategy:
            _check_choice(value, MODELS, name)
    if "tedana" in strategy:
        _check_choice(tedana, TEDANA_TYPES, "tedana")
    if "compcor" in strategy:
        _check_choice(compcor, COMPCOR_TYPES, "compcor")
        _check_n_compcor(n_compcor)
    if "ica_aroma" in strategy:
        _check_choice(ica_aroma, ICA_AROMA_TYPES, "ica_aroma")


def _columns(table: pd.DataFrame, names: list[str], component: str, missing: dict) -> list[str]:
    """``names`` when all are columns; none of them: ``component`` is missing; some: those are."""
    absent = [n for n in names if n not in table.columns]
    if len(absent) == len(names):
        missing["components"].append(component)
        return []
    missing["columns"].extend(absent)
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


def compcor_columns(meta_json, compcor: str = "anat_combined", n_compcor="all") -> list[str]:
    """The CompCor columns that ``compcor`` and ``n_compcor`` select, named from the confounds JSON sidecar.

    Parameters
    ----------
    meta_json : dict or None
        The content of ``*_desc-confounds_timeseries.json`` (``None``: no sidecar, no component).
    compcor : str, default "anat_combined"
        One of ``anat_combined``, ``anat_separated``, ``temporal``, ``temporal_anat_combined``,
        ``temporal_anat_separated``.
    n_compcor : "all" or int, default "all"
        Components kept per mask (the first ones).

    Returns
    -------
    list of str

    Examples
    --------
    >>> meta = {"a_comp_cor_00": {"Mask": "combined"}, "a_comp_cor_01": {"Mask": "WM"},
    ...         "a_comp_cor_02": {"Mask": "combined"}, "t_comp_cor_00": {"Method": "tCompCor"}}
    >>> compcor_columns(meta, "temporal_anat_combined", n_compcor=1)
    ['t_comp_cor_00', 'a_comp_cor_00']
    """
    _check_choice(compcor, COMPCOR_TYPES, "compcor")
    _check_n_compcor(n_compcor)
    meta_json = meta_json if isinstance(meta_json, dict) else {}

    def first(names):
        return names if n_compcor == "all" else names[:n_compcor]

    selected = []
    for prefix in _COMPCOR_PREFIXES[compcor]:
        count = sum(f"{prefix}_comp_cor" in key for key in meta_json)
        names = [f"{prefix}_comp_cor_{number:02d}" for number in range(count)]
        if prefix != "a":
            selected += first(names)
            continue
        for mask in _ANAT_MASKS[compcor.rsplit("_", 1)[-1]]:
            in_mask = []
            for name in names:
                entry = meta_json.get(name)
                if not isinstance(entry, dict) or "Mask" not in entry:
                    raise ParameterError(
                        f"the confounds JSON sidecar has {count} entries named like a_comp_cor_*, but no 'Mask' "
                        f"for {name!r}: anatomical CompCor components are numbered from 00 with their mask "
                        "(fMRIPrep >= 1.4 writes them so).")
                if entry["Mask"] == mask:
                    in_mask.append(name)
            selected += first(in_mask)
    return selected


def _tedana_table(mixing: pd.DataFrame, metrics: pd.DataFrame, tedana: str, where: str) -> pd.DataFrame:
    """The mixing columns of the components tedana classified as ``tedana`` keeps, renamed."""
    for column in ("Component", "classification"):
        if column not in metrics.columns:
            raise ParameterError(f"{where}: the tedana metrics table has no {column!r} column.")

    def normal(name) -> str:
        return re.sub(r"ICA_0*(\d+)$", lambda m: f"ICA_{int(m.group(1))}", str(name))

    original = {normal(c): c for c in mixing.columns}
    kept = metrics[metrics["classification"].isin(_TEDANA_CLASSES[tedana])]
    classification = {normal(row.Component): row.classification
                      for row in kept[["Component", "classification"]].itertuples(index=False)}
    matched = sorted(c for c in classification if c in original)
    return pd.DataFrame({f"{classification[c]}_{original[c]}": mixing[original[c]].to_numpy() for c in matched},
                        index=mixing.index)


def _check_tedana_tables(mixing: pd.DataFrame, metrics: pd.DataFrame, where: str) -> None:
    tables = (mixing, metrics)
    if not (any(str(c).startswith("ICA_") for t in tables for c in t.columns)
            or any("Component" in t.columns for t in tables)):
        raise ParameterError(
            f"{where}: these are not tedana's tables: expected ICA_xx columns in the mixing table and a "
            "'Component' column in the metrics table.")


def _is_camel_case(name: str) -> bool:
    return name != name.lower() and name != name.upper() and "_" not in name


def _read_tsv(path, storage_options=None) -> pd.DataFrame:
    files, path = files_at(path, storage_options)
    if not files.is_file(path):
        raise ImageFileNotFoundError(f"confounds file {str(path)!r} does not exist.")
    try:
        return pd.read_csv(io.BytesIO(files.read_bytes(path)), sep="\t", encoding="utf-8")
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ParameterError(f"confounds file {str(path)!r} is not a readable tab-separated table "
                             f"({type(exc).__name__}: {exc}).") from exc


def read_confounds_table(path, storage_options=None) -> pd.DataFrame:
    """An fMRIPrep confounds TSV (a path or URL) as a DataFrame (``n/a`` read as NaN); checks fMRIPrep >= 1.2's header."""
    table = _read_tsv(path, storage_options)
    if len(table.columns) and _looks_numeric(table.columns[0]):
        raise ParameterError(f"The confound file contains no header: {str(path)!r} has numbers where fMRIPrep "
                             ">= 1.2 writes column names.")
    camel = [c for c in table.columns if _is_camel_case(str(c))]
    if camel:
        raise ParameterError(
            f"The confound file contains header in camel case ({camel[:3]} in {str(path)!r}): the output of "
            "fMRIPrep 1.0/1.1, which is not supported (fMRIPrep >= 1.2 is)."
        )
    return table


def read_confounds_json(path, storage_options=None):
    """The confounds JSON sidecar beside an fMRIPrep confounds TSV (``path``: the TSV or the JSON), or ``None`` when absent."""
    files, path = files_at(path, storage_options)
    path = path[: -len(".tsv")] + ".json" if path.endswith(".tsv") else path
    if not files.is_file(path):
        return None
    try:
        return json.loads(files.read_text(path))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ParameterError(f"confounds JSON sidecar {path!r} is not valid JSON ({exc}).") from exc


def _looks_numeric(text) -> bool:
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return True


def _image_kind_error(name: str, kind: str) -> str:
    return {
        "aroma": f"ica_aroma='full' needs fMRIPrep's ICA-AROMA denoised run (*_desc-smoothAROMAnonaggr_bold"
                 f".nii.gz) as input; got {name!r}.",
        "tedana": f"Input must be the ~desc-optcom_bold.nii.gz run of tedana for strategy 'tedana' (its "
                  f"denoised outputs are not: they have already been denoised); got {name!r}.",
        "nii.gz": f"Invalid file type for the selected 'nii.gz' method: {name!r} is not an fMRIPrep "
                  "preprocessed run (*_desc-preproc_bold.nii.gz).",
        "dtseries.nii": f"Invalid file type for the selected 'dtseries.nii' method: {name!r} is not an fMRIPrep "
                        "CIFTI run (*_bold.dtseries.nii).",
        "func.gii": f"Invalid file type for the selected 'func.gii' method: {name!r} is not one of a pair of "
                    "fMRIPrep GIFTI runs (*_hemi-L/R_*_bold.func.gii).",
    }.get(kind, f"Unsupported input {name!r}: expected an fMRIPrep run (*_desc-preproc_bold.nii.gz, "
                f"*_bold.dtseries.nii or a pair of *_bold.func.gii).")


def _check_image(image, full_aroma: bool, tedana: bool) -> None:
    """nilearn's file-name checks of one input (a path, or a pair of GIFTI paths)."""
    if isinstance(image, list):
        kind, names = "func.gii", image
    elif full_aroma:
        kind, names = "aroma", [image]
    elif tedana:
        kind, names = "tedana", [image]
    else:
        kind, names = ".".join(image.split(".")[-2:]), [image]
    pattern = _IMAGE_PATTERNS.get(kind)
    for name in names:
        base = name.rstrip("/").rsplit("/", 1)[-1]
        if pattern is None or re.search(pattern, base) is None:
            raise ParameterError(_image_kind_error(base, kind if pattern else "unsupported"))


def _entities(name: str) -> dict:
    """The ``key-value`` entities of a file name, in order (the last part, the suffix, left out)."""
    entities = {}
    for part in name.split("_")[:-1]:
        key, dash, value = part.partition("-")
        if dash:
            entities[key] = value
    return entities


def _candidates(name: str, descs, suffixes) -> set[str]:
    """File names made of any subset of ``name``'s entities with ``desc-<one of descs>``, and one of ``suffixes``."""
    entities = _entities(name)
    keys = list(entities) if "desc" in entities else [*entities, "desc"]
    others = [k for k in keys if k != "desc"]
    names = set()
    for size in range(len(others) + 1):
        for subset in itertools.combinations(others, size):
            chosen = set(subset) | {"desc"}
            for desc in descs:
                values = {**entities, "desc": desc}
                stem = "_".join(f"{k}-{values[k]}" for k in keys if k in chosen)
                names.update(stem + suffix for suffix in suffixes)
    return names


def _companions(image: str, storage_options, descs, suffixes) -> list[str]:
    """The files beside ``image`` whose names are :func:`_candidates` (one listing of the directory)."""
    files, image = files_at(image, storage_options)
    wanted = _candidates(image.rsplit("/", 1)[-1] if files.protocol else Path(image).name, descs, suffixes)
    listing = files.glob(files.with_name(image, "*"))
    found = [p for p in listing if (p.rsplit("/", 1)[-1] if files.protocol else Path(p).name) in wanted]
    return sorted(found, key=lambda p: (-len(p), p))


def _confounds_files(image, storage_options=None, tedana: bool = False):
    """The confounds TSV of a run (or, for tedana, its mixing and metrics tables), found as nilearn finds them."""
    anchor = image[0] if isinstance(image, list) else image
    if tedana:
        found = _companions(anchor, storage_options, ("confounds", "ICA", "tedana"), ("_mixing.tsv", "_metrics.tsv"))
    else:
        found = _companions(anchor, storage_options, ("confounds",), ("_timeseries.tsv", "_regressors.tsv"))
    if not found:
        raise ConfoundsFileNotFoundError(
            f"Could not find associated confound file beside {anchor!r}: expected "
            + ("tedana's *_desc-ICA_mixing.tsv and *_desc-tedana_metrics.tsv" if tedana else
               "*_desc-confounds_timeseries.tsv (named with the run's entities)")
            + " in the same directory.")
    if tedana:
        if len(found) != 2:
            raise ParameterError(f"Found {len(found)} tedana tables beside {anchor!r} (expected 2: the mixing "
                                 f"and the metrics table): {found}.")
        named = {kind: [p for p in found if p.endswith(f"_{kind}.tsv")] for kind in ("mixing", "metrics")}
        if not all(named.values()):
            raise ParameterError(f"tedana tables beside {anchor!r}: expected one *_mixing.tsv and one "
                                 f"*_metrics.tsv, found {found}.")
        return named["mixing"][0], named["metrics"][0]
    if len(found) > 1:
        raise ParameterError(f"Found more than one confound file beside {anchor!r}: {found}.")
    return found[0]


def _prepare(selected: pd.DataFrame, demean: bool, where: str = "the confounds table"):
    """Split off the censoring columns (the sample mask), fill the first row's NaNs, demean."""
    outlier_columns = sorted({c for c in selected.columns if "motion_outlier" in c or "non_steady_state" in c})
    kept_columns = sorted(set(selected.columns) - set(outlier_columns))
    sample_mask = None
    if outlier_columns and selected[outlier_columns].size:
        censored = selected[outlier_columns].to_numpy().sum(axis=1) != 0
        sample_mask = np.flatnonzero(~censored)
        if sample_mask.size == 0:
            warnings.warn("All volumes were marked as motion outliers: every volume would be scrubbed.",
                          RuntimeWarning, stacklevel=4)
    confounds = selected.loc[:, kept_columns]
    if confounds.size:
        first_nan = np.isnan(confounds.to_numpy(dtype=float)[0])
        if first_nan.any():  # derivatives start with n/a: take the second row's value
            if len(confounds) < 2:
                raise ParameterError(
                    f"{where} has a single row, so the first value (n/a) of "
                    f"{list(confounds.columns[first_nan])[:3]} cannot be taken from the second row as "
                    "nilearn does; a run needs at least 2 volumes for derivative confounds. Choose "
                    "models without derivatives (motion='basic', wm_csf='basic', ...)."
                )
            confounds = confounds.copy()
            confounds.iloc[0, first_nan] = confounds.iloc[1, first_nan]
        if demean:
            if sample_mask is None:
                values = confounds.to_numpy(dtype=np.float64)
                confounds = pd.DataFrame(values - np.nanmean(values, axis=0), columns=confounds.columns)
            else:
                confounds = confounds - confounds.iloc[sample_mask].mean(axis=0)
    return confounds, sample_mask


def _as_table(value, role: str, storage_options):
    return value if isinstance(value, pd.DataFrame) else _read_tsv(value, storage_options)


def confounds_from_table(table, strategy=("motion", "high_pass", "wm_csf"), motion="full", scrub=5,
                         fd_threshold=0.5, std_dvars_threshold=1.5, wm_csf="basic", global_signal="basic",
                         compcor="anat_combined", n_compcor="all", ica_aroma="full", tedana="aggressive",
                         demean=True, *, meta_json=None, img_file=None, where: str = "the confounds table",
                         storage_options=None):
    """Select confounds from an fMRIPrep confounds table (a path, a URL or a DataFrame).

    Parameters
    ----------
    table : str, pathlib.Path, pandas.DataFrame or dict
        The confounds TSV (``*_desc-confounds_timeseries.tsv``) or its content. With a ``tedana``
        strategy: ``{"mixing": ..., "metrics": ...}``, tedana's two tables (paths or DataFrames).
    strategy, motion, scrub, fd_threshold, std_dvars_threshold, wm_csf, global_signal, compcor, \
n_compcor, ica_aroma, tedana, demean
        As :func:`load_confounds`.
    meta_json : dict, optional
        The confounds JSON sidecar's content, for ``compcor``; by default read beside ``table``
        when it is a path (anatomical CompCor without it is an error).
    img_file : str, optional
        The run the confounds are for: with ``ica_aroma="full"`` it must be the
        ``*_desc-smoothAROMAnonaggr_bold`` run (the selection adds no ICA-AROMA regressor then;
        masking the ``desc-preproc`` run with it would leave the ICA-AROMA noise in).
    where : str
        Names the table in errors.
    storage_options : dict, optional
        fsspec's options for URLs.

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
    >>> table["t_comp_cor_00"] = [0.5, -0.5, 0.0]
    >>> meta = {"t_comp_cor_00": {"Method": "tCompCor", "Retained": True}}
    >>> confounds_from_table(table, strategy=("high_pass", "compcor"), compcor="temporal",
    ...                      meta_json=meta)[0].columns.tolist()
    ['t_comp_cor_00']
    """
    strategy = _check_strategy(strategy)
    _check_parameters(strategy, motion, wm_csf, global_signal, compcor, n_compcor, ica_aroma, tedana)
    if "tedana" in strategy:
        if not isinstance(table, dict) or set(table) != {"mixing", "metrics"}:
            raise ParameterError("strategy 'tedana' reads tedana's two tables: pass table={'mixing': ..., "
                                 "'metrics': ...} (paths or DataFrames), or use load_confounds on the "
                                 "*_desc-optcom_bold.nii.gz run.")
        mixing = _as_table(table["mixing"], "mixing", storage_options)
        metrics = _as_table(table["metrics"], "metrics", storage_options)
        _check_tedana_tables(mixing, metrics, where)
        confounds, sample_mask = _prepare(_tedana_table(mixing, metrics, tedana, where), demean, where)
        return confounds, sample_mask
    if "ica_aroma" in strategy and ica_aroma == "full":
        name = None if img_file is None else str(img_file).rstrip("/").rsplit("/", 1)[-1]
        if name is None or re.search(_IMAGE_PATTERNS["aroma"], name) is None:
            raise ParameterError(
                "ica_aroma='full' adds no regressor: it means the data are fMRIPrep's ICA-AROMA denoised run "
                f"(*_desc-smoothAROMAnonaggr_bold.nii.gz); got img_file={name!r}. Mask that run (and pass it as "
                "img_file), or use ica_aroma='basic' (the aroma_motion_* regressors) with the desc-preproc run.")
    path = None
    if not isinstance(table, pd.DataFrame):
        path = table
        where = f"confounds file {str(table)!r}"
        table = read_confounds_table(table, storage_options=storage_options)
    if "compcor" in strategy and meta_json is None:
        meta_json = None if path is None else read_confounds_json(path, storage_options)
        if meta_json is None and "anat" in compcor:
            raise ParameterError(
                f"Could not find associated json file for {where} (*_desc-confounds_timeseries.json): "
                "anatomical CompCor components are named from it. fMRIPrep >= 1.4.0 writes it; with a "
                "DataFrame, pass its content as meta_json=.")
    missing: dict[str, list[str]] = {"columns": [], "components": []}
    selected = {column: table[column] for column in _containing(table, "non_steady_state")}
    for component in strategy:
        if component == "motion":
            names = _columns(table, _with_suffixes(_MOTION, motion), "motion", missing)
        elif component == "wm_csf":
            names = _columns(table, _with_suffixes(("csf", "white_matter"), wm_csf), "wm_csf", missing)
        elif component == "global_signal":
            names = _columns(table, _with_suffixes(("global_signal",), global_signal), "global_signal", missing)
        elif component == "high_pass":
            names = _containing(table, "cosine")
        elif component == "compcor":
            wanted = compcor_columns(meta_json, compcor, n_compcor)
            if wanted:
                names = _columns(table, wanted, "compcor", missing)
            else:  # no sidecar entry of the chosen kind
                names = []
                missing["components"].append("compcor")
        elif component == "ica_aroma":
            names = _containing(table, "aroma") if ica_aroma == "basic" else []
            if ica_aroma == "basic" and not names:
                missing["components"].append("ica_aroma")
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
    if missing["columns"] or missing["components"]:
        raise ParameterError(
            f"{where} lacks the columns {missing['columns']} and the noise components {missing['components']} "
            f"that strategy {list(strategy)} needs: the following keywords or parameters are missing. Choose "
            "another strategy (or other motion=/wm_csf=/global_signal=/compcor= models)."
        )
    frame = pd.DataFrame(selected, index=table.index) if selected else pd.DataFrame()
    confounds, sample_mask = _prepare(frame, demean, where)
    return (None if not strategy else confounds), sample_mask


def _inputs(img_files) -> tuple[list, bool]:
    """The runs (a path, or a list of two GIFTI paths) and whether a single one was given (nilearn's rules)."""
    def one(item):
        if isinstance(item, str | os.PathLike):
            return str(item)
        if isinstance(item, list | tuple):
            return [str(i) for i in item]
        raise ParameterError(f"img_files: expected paths (str) or lists of them; got {type(item).__name__}.")

    if isinstance(img_files, str | os.PathLike):
        return [str(img_files)], True
    if not isinstance(img_files, list | tuple):
        raise ParameterError(f"img_files: expected a path or a list of paths; got {type(img_files).__name__}.")
    img_files = list(img_files)
    if len(img_files) == 1:
        return [one(img_files[0])], True
    if (len(img_files) == 2 and not isinstance(img_files[0], list | tuple)
            and all(str(f).endswith(".func.gii") for f in img_files)):
        return [one(img_files)], True  # one pair of GIFTI hemispheres
    return [one(f) for f in img_files], False


def load_confounds(img_files, strategy=("motion", "high_pass", "wm_csf"), motion="full", scrub=5,
                   fd_threshold=0.5, std_dvars_threshold=1.5, wm_csf="basic", global_signal="basic",
                   compcor="anat_combined", n_compcor="all", ica_aroma="full", tedana="aggressive",
                   demean=True, *, storage_options=None):
    """The confounds of fMRIPrep runs, selected as :func:`nilearn.interfaces.fmriprep.load_confounds` does.

    Parameters
    ----------
    img_files : str, pathlib.Path or list of them
        Runs: ``*_desc-preproc_bold.nii.gz`` (``*_desc-smoothAROMAnonaggr_bold.nii.gz`` with
        ``ica_aroma="full"``, tedana's ``*_desc-optcom_bold.nii.gz`` with ``"tedana"``),
        ``*_bold.dtseries.nii`` or a pair of ``*_hemi-L/R_*_bold.func.gii``; each one's confounds
        TSV (and JSON) is found beside it. A list of one run is a single run.
    strategy : tuple or list of str, default ("motion", "high_pass", "wm_csf")
        Noise components among ``motion``, ``wm_csf``, ``global_signal``, ``high_pass``,
        ``compcor`` (needs ``high_pass``), ``ica_aroma``, ``tedana`` (alone), ``scrub``.
        Non-steady-state volumes are always censored.
    motion, wm_csf, global_signal : {"basic", "power2", "derivatives", "full"}
        Which expansions of those regressors to take (``full``: derivatives, squares and squared
        derivatives).
    scrub : int, default 5
        With ``"scrub"``: kept segments shorter than this are censored too.
    fd_threshold : float, default 0.5
        With ``"scrub"``: framewise displacement (mm) above which a volume is censored.
    std_dvars_threshold : float, default 1.5
        With ``"scrub"``: standardised DVARS above which a volume is censored.
    compcor : str, default "anat_combined"
        With ``"compcor"``: ``anat_combined``, ``anat_separated`` (WM and CSF masks),
        ``temporal``, ``temporal_anat_combined`` or ``temporal_anat_separated``.
    n_compcor : "all" or int, default "all"
        With ``"compcor"``: the number of components per mask.
    ica_aroma : {"full", "basic"}, default "full"
        With ``"ica_aroma"``: ``full``, the input is the ICA-AROMA denoised run (no regressor
        added); ``basic``, the ``aroma_motion_*`` noise components of the TSV.
    tedana : {"aggressive", "non-aggressive"}, default "aggressive"
        With ``"tedana"``: the time courses of the rejected components (``aggressive``) or of the
        rejected and accepted ones (``non-aggressive``).
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
    >>> import tempfile
    >>> from lazymask.datasets import make_fmriprep_dataset
    >>> from lazymask.interfaces import find_runs
    >>> root = make_fmriprep_dataset(tempfile.mkdtemp(), n_subjects=1, n_volumes=20)
    >>> bold = find_runs(root)["bold"].iloc[0]
    >>> confounds, sample_mask = load_confounds(bold, strategy=("high_pass", "motion", "compcor"),
    ...                                         motion="basic", n_compcor=2)
    >>> [c for c in confounds.columns if "comp_cor" in c], sample_mask[:3]
    (['a_comp_cor_00', 'a_comp_cor_01'], array([1, 2, 3]))
    """
    strategy = _check_strategy(strategy)
    _check_parameters(strategy, motion, wm_csf, global_signal, compcor, n_compcor, ica_aroma, tedana)
    if "tedana" in strategy and len(strategy) > 1:
        warnings.warn(
            "TEDANA strategy: only tedana's *_desc-ICA_mixing.tsv and *_desc-tedana_metrics.tsv beside the "
            f"*_desc-optcom_bold.nii.gz run are read; the other components {[s for s in strategy if s != 'tedana']} "
            "are NOT applied.", UserWarning, stacklevel=2)
    use_tedana = "tedana" in strategy
    full_aroma = "ica_aroma" in strategy and ica_aroma == "full" and not use_tedana
    params = dict(strategy=strategy, motion=motion, scrub=scrub, fd_threshold=fd_threshold,
                  std_dvars_threshold=std_dvars_threshold, wm_csf=wm_csf, global_signal=global_signal,
                  compcor=compcor, n_compcor=n_compcor, ica_aroma=ica_aroma, tedana=tedana, demean=demean)
    images, single = _inputs(img_files)
    results = []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="strategy is empty")  # warned above, once
        warnings.filterwarnings("ignore", message="Non-steady state volumes are always")
        for image in images:
            _check_image(image, full_aroma, use_tedana)
            found = _confounds_files(image, storage_options, tedana=use_tedana)
            if use_tedana:
                table = {"mixing": found[0], "metrics": found[1]}
            else:
                table = found
            anchor = image[0] if isinstance(image, list) else image
            results.append(confounds_from_table(table, img_file=anchor, storage_options=storage_options,
                                                **{**params, "strategy": strategy if not use_tedana else ("tedana",)}))
    confounds = [r[0] for r in results]
    sample_masks = [r[1] for r in results]
    if single:
        confounds, sample_masks = confounds[0], sample_masks[0]
    return (None if not strategy else confounds), sample_masks


def strategy_parameters(denoise_strategy: str = "simple", **kwargs) -> dict:
    """The :func:`load_confounds` parameters of a preset, updated by ``kwargs`` as nilearn does.

    Parameters
    ----------
    denoise_strategy : {"simple", "scrubbing", "compcor", "ica_aroma"}
        The preset (:data:`PRESETS`).
    **kwargs
        Overrides of the preset's parameters; ``None`` keeps the preset's value; a
        ``global_signal`` model adds the global signal; others are left out with a warning.

    Returns
    -------
    dict

    Examples
    --------
    >>> strategy_parameters("simple", global_signal="basic")["strategy"]
    ('high_pass', 'motion', 'wm_csf', 'global_signal')
    >>> strategy_parameters("compcor", n_compcor=3)["n_compcor"]
    3
    """
    if denoise_strategy not in PRESETS:
        _check_choice(denoise_strategy, PRESETS, "denoise_strategy")
    parameters = dict(PRESETS[denoise_strategy])
    accepted = [k for k in parameters if k not in _FIXED]
    for key in accepted:
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
            f"{list(kwargs)}; parameters accepted: {accepted}",
            UserWarning, stacklevel=3,
        )
    return parameters


def load_confounds_strategy(img_files, denoise_strategy="simple", *, storage_options=None, **kwargs):
    """Preset confounds strategies, as :func:`nilearn.interfaces.fmriprep.load_confounds_strategy`.

    Parameters
    ----------
    img_files : str, pathlib.Path or list of them
        Runs, as :func:`load_confounds` (``*_desc-smoothAROMAnonaggr_bold.nii.gz`` for
        ``"ica_aroma"``).
    denoise_strategy : {"simple", "scrubbing", "compcor", "ica_aroma"}, default "simple"
        ``"simple"``: cosines, full motion, basic WM/CSF. ``"scrubbing"``: the same with full
        WM/CSF and scrubbing (``scrub=5``, ``fd_threshold=0.5``, ``std_dvars_threshold=1.5``).
        ``"compcor"``: cosines, full motion and every combined-mask anatomical CompCor component
        (``compcor="anat_combined"``, ``n_compcor="all"``). ``"ica_aroma"``: cosines and basic
        WM/CSF for the ICA-AROMA denoised run (``ica_aroma="full"``, not changeable).
    **kwargs
        Overrides of the preset's parameters (``motion=``, ``wm_csf=``, ``scrub=``,
        ``compcor=``, ``n_compcor=``, ``demean=``, ...); ``global_signal="basic"`` (or another model)
        adds the global signal. Parameters the preset does not take are ignored with a warning.
    storage_options : dict, optional
        fsspec options when the runs are URLs.

    Returns
    -------
    confounds, sample_mask
        As :func:`load_confounds`.

    Examples
    --------
    >>> import tempfile
    >>> from lazymask.datasets import make_fmriprep_dataset
    >>> from lazymask.interfaces import find_runs
    >>> root = make_fmriprep_dataset(tempfile.mkdtemp(), n_subjects=1, n_volumes=20)
    >>> bold = find_runs(root)["bold"].iloc[0]
    >>> confounds, sample_mask = load_confounds_strategy(bold, "compcor", n_compcor=1)
    >>> confounds.shape   # 24 motion regressors and the first combined-mask aCompCor component
    (20, 25)
    """
    return load_confounds(img_files, storage_options=storage_options, **strategy_parameters(denoise_strategy, **kwargs))
