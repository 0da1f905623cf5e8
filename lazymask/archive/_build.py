"""build_archive: every run of a dataset through one masker, into one icechunk repository.

Contract
--------
* The archive is an icechunk repository (a local directory, an ``s3://bucket/prefix``, or a
  ``Repository`` given); see ``_repository`` for what may be opened and what is refused.
* One group per run, named by its entities (``sub-01/ses-1/task-rest_run-1``), written by
  :func:`lazymask.maskers.save_signals` into a fork of a writable session (never into the branch
  directly), with the run's own fitted masker (a clone of the unfitted one given, ``t_r`` taken
  from the sidecar when the masker has none), cleaned with the run's confounds and sample mask;
  the ``signals`` attrs record the entities, the sources (path, size, mtime), the confound columns
  used and the sample mask.
* Commits: one first (the root record with this call's index, and the parent groups of the runs
  to write), then one per batch of runs (``commit_every`` runs; by default once a batch holds
  about 10 s of work and at least as many runs as are in flight) whose message names the runs
  written and failed; each also updates the root record (index union, failures).
  A build that made commits is tagged ``build-<n>``.
* Concurrency: a commit is made on a fresh session at the branch's tip, with the batch's forks
  merged in and the root record read, merged and written there; when another builder committed
  first icechunk raises ``ConflictError`` and that step is redone on the new tip
  (``_repository.transact``). Two builders of one archive (one per subject) thus lose no run and
  no index row. Local repositories serialise their commits with a lock file.
* Resume = what the branch's last commit holds: a run complete and verified there
  (:func:`~lazymask.archive._layout._verify_run`) whose sources did not change is skipped; the
  others are (re)done. A build killed between commits resumes from the last one. A repository
  built with another masker, other parameters or other confounds is refused with the differences
  listed; so are runs that would replace or duplicate runs of the index (another ``space``/``res``,
  another dataset), and a masker whose atlas, maps, mask or look-up table holds other content at
  the same path (the root record keeps each one's sha256: ``_inputs``).
* Scheduling: the library picks no scheduler. Under a threaded or synchronous scheduler the
  runs' graphs (mask pass, extraction) are computed by it a window at a time: as many runs as it
  has workers (``num_workers``, else the cores) whose voxel data add up to at most
  ``memory_budget`` in one compute, so that its threads decompress several runs at once (one
  run's reads are one chain, one core); then each run is written alone, synchronously (a failed
  write fails its run only and leaves no task running); a compute that fails is redone run by
  run, so that the failure is recorded on its own run. A session's writes must happen in the process holding it, so under the
  ``processes`` scheduler a run's signals are computed by the pool, then written in this process;
  with a ``distributed`` client (given, or the default one) each run is a task holding a fork of
  the session, which computes the run's graph on the cluster (``worker_client``), writes it into
  its fork and returns the fork, merged by the client at the next commit; at most as many runs in
  flight as the cluster has worker threads.
* A run that fails is recorded (``status == "failed"`` in :attr:`Archive.runs`, with its error),
  warned about, and retried by the next invocation; it does not stop the others.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import warnings

import dask
import numpy as np
import pandas as pd
from sklearn.base import clone

from lazymask import config
from lazymask.archive import _layout
from lazymask.archive._inputs import input_fingerprints
from lazymask.archive._progress import ArchiveProgress
from lazymask.archive._repository import open_repository, tag_build, transact
from lazymask.exceptions import ParameterError
from lazymask.interfaces import find_runs
from lazymask.interfaces.fmriprep import PRESETS, confounds_from_table, strategy_parameters
from lazymask.io import is_complete, open_nifti, require_root
from lazymask.storage import FileIdentity, default_storage_options, is_url, source_identity, storage_error
from lazymask.maskers import BaseMasker, open_signals, save_signals

BRANCH = "main"
COMMIT_SECONDS = 10.0  # without commit_every: a batch is committed once it holds this much work


class _Batching:
    """When a batch is committed: every ``every`` runs, or (``every`` None) once it holds at least
    ``minimum`` runs and ``COMMIT_SECONDS`` of work -- or when nothing is left to run."""

    def __init__(self, every: int | None, minimum: int):
        import time

        self.every, self.minimum, self._clock = every, minimum, time.monotonic
        self.started = self._clock()

    def due(self, n_pending: int) -> bool:
        if self.every is not None:
            return n_pending >= self.every
        return n_pending >= self.minimum and self._clock() - self.started >= COMMIT_SECONDS

    def committed(self) -> None:
        self.started = self._clock()

_LOAD_CONFOUNDS_DEFAULTS = {
    "strategy": ["motion", "high_pass", "wm_csf"], "motion": "full", "scrub": 5, "fd_threshold": 0.5,
    "std_dvars_threshold": 1.5, "wm_csf": "basic", "global_signal": "basic", "demean": True,
}
# Accepted in a dict strategy and recorded only when given (they matter only with their strategy).
_LOAD_CONFOUNDS_OPTIONAL = ("compcor", "n_compcor", "ica_aroma", "tedana")


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
        accepted = {*_LOAD_CONFOUNDS_DEFAULTS, *_LOAD_CONFOUNDS_OPTIONAL}
        unknown = sorted(set(params) - accepted)
        if unknown:
            raise ParameterError(f"confounds_strategy has unknown parameters {unknown}; "
                                 f"expected some of {sorted(accepted)}.")
        return _json({**_LOAD_CONFOUNDS_DEFAULTS, **params})
    raise ParameterError(f"confounds_strategy={confounds_strategy!r}: expected None, a preset name or a dict.")


def _sources(row: dict) -> list[dict]:
    """The identity of each of the run's files (local: size and mtime; an object: size and ETag/version)."""
    records = []
    for role in ("bold", "confounds", "sidecar", "mask"):
        path = row.get(role)
        if path:
            identity = source_identity(path, row.get("storage_options"))
            version = (f"mtime_ns={identity.mtime_ns}" if isinstance(identity, FileIdentity) else identity.version)
            records.append({"role": role, "path": str(path), "size": identity.size, "version": version})
    return records


def _run_masker(masker: BaseMasker, row: dict) -> BaseMasker:
    fitted = clone(masker)
    params = fitted.get_params(deep=False)
    if "t_r" in params and params["t_r"] is None and row.get("t_r") is not None:
        fitted.set_params(t_r=float(row["t_r"]))
    return fitted



def _build_run(row: dict, store, masker: BaseMasker, confounds: dict | None, overwrite: bool) -> dict:
    """Extract, clean and write one run into ``store`` (a fork's); never raises (the error is returned)."""
    on_worker = _on_distributed_worker()
    try:
        _extract_and_write(row, store, masker, confounds, overwrite, on_worker=on_worker)
        return {"group": row["group"], "error": None}
    except Exception as exc:  # noqa: BLE001 - reported per run, the others go on
        return _failure(row, exc)


def _failure(row: dict, exc: Exception) -> dict:
    """A run's outcome for an error (the storage's errors said in one line)."""
    if type(exc).__module__.startswith("icechunk"):
        exc = storage_error(exc, row["group"])
    return {"group": row["group"], "error": f"{type(exc).__name__}: {exc}"}


def _build_run_in_fork(row: dict, fork, masker: BaseMasker, confounds: dict | None, overwrite: bool):
    """A ``distributed`` task: one run written into ``fork``; returns the outcome and the fork."""
    return _build_run(row, fork.store, masker, confounds, overwrite), fork


def _on_distributed_worker() -> bool:
    if "distributed" not in sys.modules:
        return False
    from distributed import get_worker

    try:
        get_worker()
    except ValueError:
        return False
    return True



def _multiprocess_scheduler() -> bool:
    """Whether the active local scheduler runs tasks in other processes (their writes would be lost)."""
    import dask.multiprocessing

    return dask.base.get_scheduler() is dask.multiprocessing.get


def _extract_and_write(row: dict, store, masker: BaseMasker, confounds: dict | None, overwrite: bool, *,
                       on_worker: bool) -> None:
    remote = on_worker or _multiprocess_scheduler()
    if on_worker:
        from distributed import worker_client

        context = worker_client()
    else:
        context = contextlib.nullcontext()
    with context:  # the run's graph on the active scheduler (the cluster, from a worker)
        signals, fitted = _run_signals(row, masker, confounds)
        if remote:  # computed where the scheduler runs tasks; written below, in this process
            signals = signals.compute()
    with dask.config.set(scheduler="sync") if remote else contextlib.nullcontext():
        save_signals(signals, store, row["group"], masker=fitted, overwrite=overwrite)


def _run_signals(row: dict, masker: BaseMasker, confounds: dict | None):
    """One run's signals (lazy once fitted; attrs saying where they come from) and its fitted masker."""
    frame, sample_mask = None, None
    if confounds is not None:
        params = {**confounds, "strategy": tuple(confounds["strategy"])}
        frame, sample_mask = confounds_from_table(row["confounds"], storage_options=row.get("storage_options"),
                                                  img_file=row["bold"], **params)
    fitted = _run_masker(masker, row)
    image = open_nifti(row["bold"], storage_options=row.get("storage_options"))
    signals = fitted.fit_transform(image, confounds=frame, sample_mask=sample_mask)
    signals.attrs["archive"] = _json({
        "group": row["group"],
        "entities": {k: row.get(k) for k in _layout.ENTITY_COLUMNS if row.get(k) is not None},
        "sources": _sources(row),
        "confounds_columns": [] if frame is None else list(frame.columns),
        "sample_mask": None if sample_mask is None else np.asarray(sample_mask).tolist(),
        "n_volumes": int(image.sizes["time"]),
    })
    return signals, fitted


def _build_window(window: list, store, masker: BaseMasker, confounds: dict | None) -> list[dict]:
    """Several runs (``(row, overwrite)``) computed together on the local scheduler, then written into ``store``.

    Their signals are computed in one ``dask.compute``, so the scheduler's threads decompress and
    reduce several runs at once (a run's own reads are one chain: one core each); each run is then
    written on its own (``scheduler="sync"``), so a write that fails (a full disk) fails for its
    run alone and leaves no task of it running. If the compute fails, each run is done alone, so
    that the failure is recorded on its own run.
    """
    if len(window) == 1:
        return [_build_run(row, store, masker, confounds, overwrite) for row, overwrite in window]
    results, made = {}, {}
    for row, _ in window:
        try:
            made[row["group"]] = _run_signals(row, masker, confounds)
        except Exception as exc:  # noqa: BLE001 - reported per run, the others go on
            results[row["group"]] = _failure(row, exc)
    try:
        computed = dask.compute(*[signals for signals, _ in made.values()])
    except Exception:  # noqa: BLE001 - which run failed is found by doing each alone
        return [results.get(row["group"]) or _build_run(row, store, masker, confounds, overwrite)
                for row, overwrite in window]
    for (group, (_, fitted)), signals in zip(made.items(), computed, strict=True):
        overwrite = next(flag for row, flag in window if row["group"] == group)
        try:
            with dask.config.set(scheduler="sync"):
                save_signals(signals, store, group, masker=fitted, overwrite=overwrite)
            results[group] = {"group": group, "error": None}
        except Exception as exc:  # noqa: BLE001 - reported per run, the others go on
            results[group] = _failure({"group": group}, exc)
    return [results[row["group"]] for row, _ in window]


def _local_windows(jobs: list, width: int, budget: int) -> list[list]:
    """Consecutive jobs computed together: at most ``width`` runs whose voxel data add up to at most
    ``budget`` bytes (a masker may keep a run's decoded data while it computes it), and one alone
    under a scheduler whose workers are other processes (a session is written where it is held)."""
    if width <= 1 or _multiprocess_scheduler():
        return [[job] for job in jobs]
    windows, total = [], 0
    for job in jobs:
        row = job[0]
        try:
            size = open_nifti(row["bold"], storage_options=row.get("storage_options")).nbytes
        except Exception:  # noqa: BLE001 - an unreadable run goes alone (its error is recorded there)
            windows.append([job])
            windows.append([])
            total = 0
            continue
        if not windows or not windows[-1] or len(windows[-1]) >= width or total + size > budget:
            windows.append([])
            total = 0
        windows[-1].append(job)
        total += size
    return [window for window in windows if window]



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



def _batches(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _commit_message(results: list[dict]) -> str:
    written = [r["group"] for r in results if r["error"] is None]
    failed = [r["group"] for r in results if r["error"] is not None]
    parts = []
    if written:
        parts.append(f"{len(written)} run(s) written: {', '.join(written)}")
    if failed:
        parts.append(f"{len(failed)} run(s) failed: {', '.join(failed)}")
    return "lazymask build_archive: " + "; ".join(parts)


class _Builder:
    """One call's state: the repository, this call's record, and the commits it made."""

    def __init__(self, target, record: dict):
        self.target, self.record = target, record
        self.commits: list[str] = []

    def commit(self, message: str, forks: list, outcomes: dict, session=None) -> None:
        """Merge ``forks`` into the tip, merge the root record with ``outcomes``, commit (redo on conflict).

        ``session``: the session the runs were written into (a repository in memory, unforkable).
        """
        description = self.target.description

        def apply(session):
            for fork in forks:
                session.merge(fork)
            tip = _layout.read_root(session.store, description)
            merged = _layout.merge_record(tip, self.record, outcomes, description)
            if tip != merged:
                _layout.write_root(session.store, merged)
            return session.has_uncommitted_changes

        metadata = {"lazymask_outcomes": {g: e is None for g, e in outcomes.items()}}
        snapshot = transact(self.target, BRANCH, message, apply, metadata=metadata, session=session)
        if snapshot is not None:
            self.commits.append(snapshot)

    def prepare(self, todo: list[dict], skipped: list[str]) -> None:
        """The first commit: the root record with this call's index, the runs' parent groups."""
        description = self.target.description

        def apply(session):
            tip = _layout.read_root(session.store, description)
            merged = _layout.merge_record(tip, self.record, dict.fromkeys(skipped), description)
            if tip != merged:
                _layout.write_root(session.store, merged)
            for row in todo:  # sub-01/ses-1 made here, not by runs written at once
                require_root(session.store, row["group"])
            return session.has_uncommitted_changes

        snapshot = transact(self.target, BRANCH,
                            f"lazymask build_archive: index of {len(self.record['runs'])} run(s), "
                            f"{len(todo)} to write", apply)
        if snapshot is not None:
            self.commits.append(snapshot)

    def run_local(self, jobs: list, masker, confounds, batching: _Batching, bar) -> None:
        """Runs on the active local scheduler, a window of them per compute, committed in batches."""
        repository = self.target.repository
        base = repository.writable_session(BRANCH) if self.target.forkable else None
        per_commit = batching.every or len(jobs) or 1  # a window never spans two commits of commit_every runs
        windows = [window for first in range(0, len(jobs), per_commit)
                   for window in _local_windows(jobs[first : first + per_commit], _local_batch(),
                                                config.get("memory_budget"))]
        with bar:
            fork, results = None, []
            for index, window in enumerate(windows):
                if fork is None:
                    fork = base.fork() if base is not None else repository.writable_session(BRANCH)
                bar.start_run(", ".join(row["group"] for row, _ in window))
                for result in _build_window(window, fork.store, masker, confounds):
                    bar.run_done(result)
                    results.append(result)
                if batching.due(len(results)) or index == len(windows) - 1:
                    outcomes = {r["group"]: r["error"] for r in results}
                    if base is not None:
                        self.commit(_commit_message(results), [fork], outcomes)
                    else:
                        self.commit(_commit_message(results), [], outcomes, session=fork)
                    batching.committed()
                    fork, results = None, []

    def run_distributed(self, client, jobs: list, masker, confounds, every: int | None, bar) -> None:
        """Runs as tasks holding forks, at most as many in flight as the cluster has threads."""
        from distributed import as_completed

        if not self.target.forkable:
            raise ParameterError(f"{self.target.description}: a repository in memory cannot be written from a "
                                 "distributed cluster (its sessions do not travel); use a local path or s3://.")
        slots = max(1, sum(client.nthreads().values()))
        batching = _Batching(every, max(2, slots))
        base = self.target.repository.writable_session(BRANCH)
        jobs = iter(jobs)
        groups = {}

        def submit(job):
            row, overwrite = job
            key = f"archive-run-{row['group']}-{os.urandom(4).hex()}"
            groups[key] = row["group"]
            return client.submit(_build_run_in_fork, row, base.fork(), masker, confounds, overwrite, key=key,
                                 pure=False)

        started = [submit(job) for job in [next(jobs, None) for _ in range(slots)] if job is not None]
        running = as_completed(started)
        pending = []
        for future in running:
            try:
                result, fork = future.result()
            except Exception as exc:  # noqa: BLE001 - a lost worker: reported, retried next time
                result, fork = {"group": groups[future.key], "error": f"{type(exc).__name__}: {exc}"}, None
            future.release()
            bar.run_done(result)
            pending.append((result, fork))
            job = next(jobs, None)
            if job is not None:
                running.add(submit(job))
            if batching.due(len(pending)) or running.is_empty():
                results = [r for r, _ in pending]
                self.commit(_commit_message(results), [f for _, f in pending if f is not None],
                            {r["group"]: r["error"] for r in results})
                batching.committed()
                pending = []


def _local_batch() -> int:
    workers = dask.config.get("num_workers", None) or os.cpu_count() or 1
    return max(2, int(workers))


def build_archive(runs_or_bids_dir, store, masker, *, confounds_strategy=None, client=None, progress=True,
                  storage_options=None, source_storage_options=None, commit_every=None, **find_runs_args):
    """Extract every run of a dataset into one resumable archive: an icechunk repository, a group per run.

    Parameters
    ----------
    runs_or_bids_dir : str, pathlib.Path or pandas.DataFrame
        An fMRIPrep derivatives directory, or the table :func:`find_runs` returned (possibly filtered).
    store : str, pathlib.Path or icechunk.Repository
        The archive: a local directory (an icechunk repository, created when absent or empty), an
        ``s3://bucket/prefix`` URL, or an icechunk ``Repository`` (any storage icechunk has).
        Resumed when it is an archive already; anything else there is refused.
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
    storage_options : dict, optional
        For an ``s3://`` store, the fsspec/s3fs options: ``endpoint_url``, ``key``, ``secret``,
        ``token``, ``anon``, ``region`` (or ``client_kwargs={"region_name": ...}``). Without them,
        those of :func:`lazymask.storage.set_storage_options`, then the ``AWS_*`` environment
        variables and ``~/.aws``.
    source_storage_options : dict, optional
        The fsspec options of the dataset when ``runs_or_bids_dir`` (or the table's paths) are URLs
        (``{"anon": True}`` for OpenNeuro's public buckets); by default those of
        :func:`lazymask.storage.set_storage_options`. They travel with each run to the workers.
    commit_every : int, optional
        Runs per commit. Default: a commit once a batch holds about 10 s of work and at least as
        many runs as run at once (the cluster's worker threads, or the local scheduler's workers;
        at least 2), and one at the end. A build killed between commits loses only the runs of its
        current batch.
    **find_runs_args
        ``space=``, ``task=``, ``subjects=``, ``sessions=``, ``on_missing=`` of :func:`find_runs`.

    Returns
    -------
    Archive
        The archive at the branch's tip (:func:`open_archive`); ``.runs["status"]`` says which runs
        failed, ``.history`` lists the commits.

    Raises
    ------
    ParameterError
        The store is an archive built with another masker, other parameters or other confounds,
        or from an atlas, maps, mask or look-up table whose content changed at the same path, or
        this call's runs would replace or duplicate some of its runs.
    UnsafeTargetError
        ``store`` holds something that is not a lazymask icechunk archive (an archive of the former
        plain-zarr format included: build it again into a new path).

    Examples
    --------
    >>> import icechunk, tempfile
    >>> from lazymask.datasets import make_fmriprep_dataset
    >>> from lazymask.maskers import NiftiSpheresMasker
    >>> dataset = make_fmriprep_dataset(tempfile.mkdtemp(), n_subjects=1, n_volumes=12)
    >>> repository = icechunk.Repository.create(icechunk.in_memory_storage())
    >>> archive = build_archive(dataset, repository, NiftiSpheresMasker([(0.0, -20.0, 10.0)], radius=10.0),
    ...                         progress=False)
    >>> archive.runs[["group", "status"]]
                              group    status
    0  sub-01/ses-1/task-rest_run-1  complete
    1  sub-01/ses-2/task-rest_run-1  complete
    >>> [commit["message"][:40] for commit in archive.history][:2]
    ['lazymask build_archive: 2 run(s) written', 'lazymask build_archive: index of 2 run(s']
    """
    from lazymask.archive._open import _open_target

    if not isinstance(masker, BaseMasker):
        raise ParameterError(f"masker must be a lazymask masker (lazymask.maskers); got {type(masker).__name__}.")
    if commit_every is not None and (not isinstance(commit_every, int) or commit_every < 1):
        raise ParameterError(f"commit_every={commit_every!r}: expected a positive int, or None.")
    given_options = source_storage_options is not None
    if not given_options:
        source_storage_options = default_storage_options() or None
    remote_tree = isinstance(runs_or_bids_dir, str) and is_url(runs_or_bids_dir)
    table = _runs_table(runs_or_bids_dir, {**find_runs_args, "storage_options": source_storage_options}
                        if remote_tree or (given_options and not isinstance(runs_or_bids_dir, pd.DataFrame))
                        else find_runs_args)
    from lazymask import __version__

    record = {"format_version": _layout.FORMAT_VERSION, "version": __version__, "masker": type(masker).__name__,
              "parameters": _json(masker.json_parameters()), _layout.INPUTS_KEY: input_fingerprints(masker),
              "confounds": confounds_parameters(confounds_strategy),
              "runs": _index_rows(table), "failures": {}}
    target = open_repository(store, storage_options, create=True)
    tip = target.repository.readonly_session(branch=BRANCH)
    old = _layout.read_root(tip.store, target.description)
    _layout.check_compatible(old, record, target.description)  # refused before anything is written

    rows = table.astype(object).where(table.notna(), None).to_dict("records")
    for row in rows:  # read where the run is built (a worker too) with the dataset's options
        row["storage_options"] = source_storage_options if given_options or is_url(row["bold"]) else None
    todo, skipped = [], []
    for row in rows:
        group = row["group"]
        if old is not None and _layout._verify_run(tip.store, group) and _sources_unchanged(tip.store, group, row):
            skipped.append(group)
        else:
            todo.append((row, old is not None and is_complete(tip.store, group)))
    builder = _Builder(target, record)
    builder.prepare([row for row, _ in todo], skipped)
    bar = ArchiveProgress(len(todo), progress)
    active = _active_client(client)
    if todo and active is not None:
        builder.run_distributed(active, todo, masker, record["confounds"], commit_every, bar)
    elif todo:
        builder.run_local(todo, masker, record["confounds"], _Batching(commit_every, _local_batch()), bar)
    if builder.commits:
        tag_build(target, builder.commits[-1])
    archive = _open_target(target, branch=BRANCH)
    groups = {row["group"] for row in rows}
    failures = {g: e for g, e in archive._record["failures"].items() if g in groups}
    if failures:
        warnings.warn(f"{len(failures)} run(s) failed (run build_archive again to retry them):\n  "
                      + "\n  ".join(f"{g}: {e}" for g, e in sorted(failures.items())), stacklevel=2)
    return archive
