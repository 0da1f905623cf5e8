"""build_archive: every run of a dataset through one masker, one resumable zarr group per run.

Contract
--------
* One group per run, named by its entities (``sub-01/ses-1/task-rest_run-1``), written by
  :func:`lazymask.maskers.save_signals` (staged: an interrupted write leaves nothing complete),
  with the run's own fitted masker (a clone of the unfitted one given, ``t_r`` taken from the
  sidecar when the masker has none), cleaned with the run's confounds and sample mask; the
  ``signals`` attrs record the entities, the sources (path, size, mtime), the confound columns
  used and the sample mask.
* The root records the masker's class and parameters, the confounds parameters, the lazymask
  version and the index of runs (merged over invocations); consolidated metadata is written when
  every indexed run is complete.
* Resumable: a run whose group is complete and verified (:func:`~lazymask.archive._layout._verify_run`)
  and whose sources did not change is skipped; the others are (re)done. A store built with another
  masker, other parameters or other confounds is refused with the differences listed.
* Other ``find_runs`` filters on an existing archive: the index is the union of the runs of every
  call, so ``subjects=``/``sessions=``/``task=`` subsets build an archive piece by piece (every run
  is processed by the same masker, parameters and confounds: the archive stays one consistent
  dataset). What would replace or duplicate data is refused with the runs listed: a group whose
  file differs from the archive's (another ``space``/``res``, another dataset) or a file the
  archive already holds under another group name (its name gains ``space-``/``res-`` when the
  filter lets several spaces of one run in).
* Scheduling: the library picks no scheduler. Each run's graph (its mask pass, extraction and
  write) is computed by the ACTIVE scheduler, its chunks in parallel; the reader chains a
  ``.nii.gz``'s chunks in file order, so a file is decompressed about once. With a
  ``distributed`` client (given, or the default one) each run is a task that submits its own
  graph from the worker (``worker_client``), at most as many runs in flight as the cluster has
  worker threads (back-pressure through ``as_completed``); with a local scheduler the runs go
  one after the other. Memory therefore depends on the number of workers, not on the number of
  runs. (Measured against the former one task per run with a nested synchronous compute in
  benchmarks/bench_archive_scheduling.py: the same time for many short runs, faster for a long
  run; see docs/archive.md.)
* A run that fails is recorded (``status == "failed"`` in :attr:`Archive.runs`, with its error),
  warned about, and retried by the next invocation; it does not stop the others.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from itertools import islice
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import clone

from lazymask.archive import _layout
from lazymask.archive._progress import ArchiveProgress
from lazymask.exceptions import ParameterError
from lazymask.interfaces import find_runs
from lazymask.io import is_complete, require_root
from lazymask.interfaces.fmriprep import PRESETS, confounds_from_table, strategy_parameters
from lazymask.maskers import BaseMasker, open_signals, save_signals

_LOAD_CONFOUNDS_DEFAULTS = {
    "strategy": ["motion", "high_pass", "wm_csf"], "motion": "full", "scrub": 5, "fd_threshold": 0.5,
    "std_dvars_threshold": 1.5, "wm_csf": "basic", "global_signal": "basic", "demean": True,
}


def _json(value):
    """``value`` as plain JSON data (tuples as lists, NaN as None)."""
    def default(item):
        if isinstance(item, np.generic):
            return item.item()
        raise TypeError(f"not JSON-able: {type(item).__name__}")
    text = json.dumps(value, default=default, allow_nan=True).replace("NaN", "null")
    return json.loads(text)


def confounds_parameters(confounds_strategy) -> dict | None:
    """The full :func:`~lazymask.interfaces.fmriprep.load_confounds` parameters a strategy means."""
    if confounds_strategy is None or confounds_strategy == "none":
        return None
    if isinstance(confounds_strategy, str):
        if confounds_strategy not in PRESETS:
            raise ParameterError(
                f"confounds_strategy={confounds_strategy!r}: expected None, 'none', "
                f"{', '.join(map(repr, PRESETS))} or a dict of load_confounds parameters."
            )
        return _json(strategy_parameters(confounds_strategy))
    if isinstance(confounds_strategy, dict):
        params = dict(confounds_strategy)
        preset = params.pop("denoise_strategy", None)
        if preset is not None:
            return _json(strategy_parameters(preset, **params))
        unknown = sorted(set(params) - set(_LOAD_CONFOUNDS_DEFAULTS))
        if unknown:
            raise ParameterError(f"confounds_strategy has unknown parameters {unknown}; "
                                 f"expected some of {sorted(_LOAD_CONFOUNDS_DEFAULTS)}.")
        return _json({**_LOAD_CONFOUNDS_DEFAULTS, **params})
    raise ParameterError(f"confounds_strategy={confounds_strategy!r}: expected None, a preset name or a dict.")


def _sources(row: dict) -> list[dict]:
    records = []
    for role in ("bold", "confounds", "sidecar", "mask"):
        path = row.get(role)
        if path:
            stat = os.stat(path)
            records.append({"role": role, "path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns})
    return records


def _run_masker(masker: BaseMasker, row: dict) -> BaseMasker:
    fitted = clone(masker)
    params = fitted.get_params(deep=False)
    if "t_r" in params and params["t_r"] is None and row.get("t_r") is not None:
        fitted.set_params(t_r=float(row["t_r"]))
    return fitted


def _build_run(row: dict, store: str, masker: BaseMasker, confounds: dict | None, overwrite: bool) -> dict:
    """Extract, clean and write one run; never raises (the error is returned for the report).

    Its graph (the mask pass of ``fit``, then the extraction and the write) goes to the active
    scheduler: called on a ``distributed`` worker (a run submitted as a task), the task secedes
    from the worker's thread pool (``worker_client``) and submits the run's chunks to the cluster.
    """
    on_worker = _on_distributed_worker()
    try:
        if on_worker:
            from distributed import worker_client

            with worker_client():
                _extract_and_write(row, store, masker, confounds, overwrite)
        else:
            _extract_and_write(row, store, masker, confounds, overwrite)
        return {"group": row["group"], "error": None}
    except Exception as exc:  # noqa: BLE001 - reported per run, the others go on
        return {"group": row["group"], "error": f"{type(exc).__name__}: {exc}"}


def _on_distributed_worker() -> bool:
    if "distributed" not in sys.modules:
        return False
    from distributed import get_worker

    try:
        get_worker()
    except ValueError:
        return False
    return True


def _extract_and_write(row: dict, store: str, masker: BaseMasker, confounds: dict | None, overwrite: bool) -> None:
    group = row["group"]
    sources = _sources(row)
    frame, sample_mask = None, None
    if confounds is not None:
        params = {**confounds, "strategy": tuple(confounds["strategy"])}
        frame, sample_mask = confounds_from_table(row["confounds"], **params)
    fitted = _run_masker(masker, row)
    signals = fitted.fit_transform(row["bold"], confounds=frame, sample_mask=sample_mask)
    signals.attrs["archive"] = _json({
        "group": group,
        "entities": {k: row.get(k) for k in _layout.ENTITY_COLUMNS if row.get(k) is not None},
        "sources": sources,
        "confounds_columns": [] if frame is None else list(frame.columns),
        "sample_mask": None if sample_mask is None else np.asarray(sample_mask).tolist(),
        "n_volumes": _n_volumes(row),
    })
    save_signals(signals, store, group, masker=fitted, overwrite=overwrite)


def _n_volumes(row: dict) -> int:
    from lazymask.io import open_nifti

    return int(open_nifti(row["bold"]).sizes["time"])


def _sources_unchanged(store, group: str, row: dict) -> bool:
    try:
        recorded = open_signals(store, group).attrs.get("archive", {}).get("sources")
        return recorded == _json(_sources(row))
    except (OSError, ValueError, KeyError):
        return False


def _runs_table(runs_or_bids_dir, find_runs_args) -> pd.DataFrame:
    if isinstance(runs_or_bids_dir, pd.DataFrame):
        if find_runs_args:
            raise ParameterError(f"find_runs arguments {sorted(find_runs_args)} are only used with a bids_dir.")
        missing = [c for c in ("group", "bold", "confounds") if c not in runs_or_bids_dir.columns]
        if missing:
            raise ParameterError(f"the runs table lacks columns {missing}; make it with lazymask.archive.find_runs.")
        if runs_or_bids_dir["group"].duplicated().any():
            raise ParameterError("the runs table names some groups twice: "
                                 f"{sorted(set(runs_or_bids_dir['group'][runs_or_bids_dir['group'].duplicated()]))}.")
        return runs_or_bids_dir
    return find_runs(runs_or_bids_dir, **find_runs_args)


def _index_rows(table: pd.DataFrame) -> list[dict]:
    columns = [c for c in _layout.INDEX_COLUMNS + _layout.ENTITY_COLUMNS if c in table.columns]
    rows = table[columns].astype(object).where(table[columns].notna(), None).to_dict("records")
    return _json(rows)


def _difference(old: dict, new: dict) -> list[str]:
    lines = []
    if old.get("masker") != new["masker"]:
        lines.append(f"masker: the archive has {old.get('masker')}, this call {new['masker']}")
    old_params, new_params = old.get("parameters") or {}, new["parameters"] or {}
    for key in sorted(set(old_params) | set(new_params)):
        if old_params.get(key) != new_params.get(key):
            lines.append(f"{key}: the archive has {old_params.get(key)!r}, this call {new_params.get(key)!r}")
    if old.get("confounds") != new["confounds"]:
        lines.append(f"confounds: the archive has {old.get('confounds')!r}, this call {new['confounds']!r}")
    return lines


def _run_conflicts(old_runs: list[dict], new_runs: list[dict]) -> list[str]:
    """Where this call's runs contradict the archive's index: a group from another file, or a file
    under another group name (another ``space``/``res`` filter, another dataset)."""
    by_group = {row["group"]: row.get("bold") for row in old_runs}
    by_bold = {row.get("bold"): row["group"] for row in old_runs}
    lines = []
    for row in new_runs:
        group, bold = row["group"], row.get("bold")
        if group in by_group and by_group[group] != bold:
            lines.append(f"group {group!r}: the archive has {by_group[group]!r}, this call {bold!r}")
        elif bold in by_bold and by_bold[bold] != group:
            lines.append(f"{bold!r}: the archive holds it as group {by_bold[bold]!r}, this call as {group!r}")
    return lines


def _check_same_arguments(store, old: dict, new: dict) -> None:
    lines = _difference(old, new)
    conflicts = _run_conflicts(old.get("runs", []), new["runs"])
    lines += conflicts[:10] + ([f"... and {len(conflicts) - 10} more run(s)"] if len(conflicts) > 10 else [])
    if lines:
        raise ParameterError(
            f"the archive {_layout.describe(store)!r} was built with other arguments:\n  " + "\n  ".join(lines)
            + "\nResume it with its own arguments, or build the new one into another store."
        )


def _active_client(client):
    if client is not None:
        return client
    try:
        from distributed import default_client
    except ImportError:
        return None
    try:
        return default_client()
    except ValueError:
        return None


def _run_local(jobs, report, bar) -> None:
    """One run after the other, each run's graph computed by the active local scheduler."""
    with bar:
        for job in jobs:
            bar.start_run(job[0]["group"])
            report(_build_run(*job))


def _run_distributed(client, jobs, report) -> None:
    """Runs as tasks, at most as many in flight as the cluster has threads (each submits its chunks)."""
    from distributed import as_completed

    slots = max(1, sum(client.nthreads().values()))
    jobs = iter(jobs)

    def submit(job):
        return client.submit(_build_run, *job, key=f"archive-run-{job[0]['group']}-{os.urandom(4).hex()}",
                             pure=False)

    running = as_completed([submit(job) for job in islice(jobs, slots)])
    for future in running:
        group = future.key.split("archive-run-", 1)[1].rsplit("-", 1)[0]
        try:
            result = future.result()
        except Exception as exc:  # noqa: BLE001 - a lost worker: reported, retried next time
            result = {"group": group, "error": f"{type(exc).__name__}: {exc}"}
        future.release()
        report(result)
        job = next(jobs, None)
        if job is not None:
            running.add(submit(job))


def build_archive(runs_or_bids_dir, store, masker, *, confounds_strategy=None, client=None, progress=True,
                  **find_runs_args):
    """Extract every run of a dataset into one resumable zarr archive (one group per run).

    Parameters
    ----------
    runs_or_bids_dir : str, pathlib.Path or pandas.DataFrame
        An fMRIPrep derivatives directory, or the table :func:`find_runs` returned (possibly filtered).
    store : str or pathlib.Path
        The archive (a directory; created, or resumed when it is an archive already).
    masker : lazymask masker
        An unfitted masker (any of the five); each run is extracted by its own clone, fitted on it.
    confounds_strategy : None, "none", "simple", "scrubbing" or dict, optional
        How to select each run's confounds from its fMRIPrep table: a preset of
        :func:`~lazymask.interfaces.fmriprep.load_confounds_strategy`, or a dict of
        :func:`~lazymask.interfaces.fmriprep.load_confounds` parameters (with
        ``"denoise_strategy"`` for a preset with overrides). None: no confounds.
    client : distributed.Client, optional
        The cluster to submit runs to; by default the active client if any, else the active local
        scheduler.
    progress : bool, default True
        Show a bar over runs on stderr.
    **find_runs_args
        ``space=``, ``task=``, ``subjects=``, ``sessions=``, ``on_missing=`` of :func:`find_runs`.

    Returns
    -------
    Archive
        The archive opened (:func:`open_archive`); ``.runs["status"]`` says which runs failed.

    Raises
    ------
    ParameterError
        The store is an archive built with another masker, other parameters or other confounds.
    UnsafeTargetError
        ``store`` exists and is not a lazymask archive.

    Examples
    --------
    >>> from lazymask.maskers import NiftiLabelsMasker
    >>> masker = NiftiLabelsMasker("atlas.nii.gz", detrend=True, standardize="zscore_sample")  # doctest: +SKIP
    >>> archive = build_archive("derivatives/fmriprep", "archive.zarr", masker,
    ...                         confounds_strategy="simple", space="MNI152NLin2009cAsym")  # doctest: +SKIP
    >>> archive.runs[["group", "status"]]                                   # doctest: +SKIP
    """
    from lazymask.archive._open import open_archive

    if not isinstance(store, str | os.PathLike):
        raise ParameterError(f"store={store!r}: build_archive writes to a local directory (str or pathlib.Path).")
    if not isinstance(masker, BaseMasker):
        raise ParameterError(f"masker must be a lazymask masker (lazymask.maskers); got {type(masker).__name__}.")
    store = str(store)
    if not Path(store).parent.is_dir():
        raise ParameterError(f"store={store!r}: the directory {str(Path(store).parent)!r} does not exist.")
    table = _runs_table(runs_or_bids_dir, find_runs_args)
    from lazymask import __version__

    record = {"format_version": _layout.FORMAT_VERSION, "version": __version__, "masker": type(masker).__name__,
              "parameters": _json(masker.json_parameters()), "confounds": confounds_parameters(confounds_strategy)}
    old = _layout.read_root(store)
    failures = {}
    index = _index_rows(table)
    if old is not None:
        _check_same_arguments(store, old, {**record, "runs": index})
        failures = old["failures"]
        known = {row["group"]: row for row in old.get("runs", [])}
        known.update({row["group"]: row for row in index})
        index = [known[g] for g in sorted(known)]
        _layout.drop_consolidated(store)
    record["runs"] = index
    _layout.write_root(store, record, failures)

    rows = table.astype(object).where(table.notna(), None).to_dict("records")
    todo = []
    for row in rows:
        group = row["group"]
        if _layout._verify_run(store, group) and _sources_unchanged(store, group, row):
            failures.pop(group, None)
            continue
        todo.append((row, store, masker, record["confounds"], is_complete(store, group)))
    for job in todo:  # parent groups (sub-01/ses-1) made here, before runs of one subject write at once
        require_root(store, job[0]["group"])
    bar = ArchiveProgress(len(todo), progress)

    def report(result):
        bar.run_done(result)
        if result["error"] is None:
            failures.pop(result["group"], None)
        else:
            failures[result["group"]] = result["error"]
        _layout.write_root(store, record, failures)

    active = _active_client(client)
    if active is not None:
        _run_distributed(active, todo, report)
    else:
        _run_local(todo, report, bar)
    if failures:
        warnings.warn(f"{len(failures)} run(s) failed (run build_archive again to retry them):\n  "
                      + "\n  ".join(f"{g}: {e}" for g, e in sorted(failures.items())), stacklevel=2)
    elif all(_layout._verify_run(store, row["group"]) for row in index):
        _layout.consolidate(store)
    return open_archive(store)
