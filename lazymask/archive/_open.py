"""open_archive: the index, lazy signals per run, a stacked view and the fitted masker of an archive,
at any of its versions (a branch's tip, a tag, a snapshot)."""

from __future__ import annotations

import pandas as pd
import xarray as xr

from lazymask.archive import _layout
from lazymask.archive._repository import being_built_error, history, is_initial_snapshot, open_repository
from lazymask.exceptions import ImageFileNotFoundError, ParameterError
from lazymask.maskers import load_masker, open_signals

COMPLETE, FAILED, MISSING = "complete", "failed", "missing"


class Archive:
    """An archive written by :func:`~lazymask.archive.build_archive` (read-only view).

    Attributes
    ----------
    store : icechunk.IcechunkStore
        The read-only store of the version opened (``xarray.open_datatree(archive.store,
        engine="zarr", consolidated=False)`` and ``zarr.open_group(archive.store)`` read it too).
    snapshot_id : str
        The icechunk snapshot opened.
    repository : icechunk.Repository
        The repository (``archive.repository.list_tags()``, ...).
    masker_class : str
        The class of the masker that made it; ``parameters`` its parameters, ``confounds`` the
        confounds parameters, ``version`` the lazymask version.

    Examples
    --------
    >>> archive = open_archive("archive")                           # doctest: +SKIP
    >>> archive.runs[["subject", "session", "status"]]              # doctest: +SKIP
    >>> archive.signals(subject="01", session="1")                   # doctest: +SKIP
    >>> open_archive("archive", tag="build-1").runs                  # doctest: +SKIP
    """

    def __init__(self, target, session):
        record = _layout.read_root(session.store, target.description)
        if record is None:
            if is_initial_snapshot(target.repository, session.snapshot_id):  # created, not committed yet
                raise being_built_error(target.description)
            raise ImageFileNotFoundError(f"store={target.description!r}: no archive in this version (build it with "
                                         "build_archive).")
        self.description = target.description
        self.repository = target.repository
        self.store = session.store
        self.snapshot_id = session.snapshot_id
        self._record = record
        self.masker_class = record["masker"]
        self.parameters = record["parameters"]
        self.confounds = record["confounds"]
        self.version = record["version"]

    @property
    def history(self) -> list[dict]:
        """The commits leading to this version, newest first: ``id``, ``time`` (UTC), ``message``."""
        return history(self.repository, self.snapshot_id)

    @property
    def tags(self) -> list[str]:
        """The repository's tags on this version (``build-<n>``: a finished build)."""
        return sorted(tag for tag in self.repository.list_tags()
                      if self.repository.lookup_tag(tag) == self.snapshot_id)

    @property
    def runs(self) -> pd.DataFrame:
        """The index: one row per run (entities, paths, ``t_r``, ``group``), with ``status`` and ``error``."""
        table = pd.DataFrame(self._record["runs"])
        failures = self._record["failures"]
        status, errors = [], []
        for group in table["group"]:
            complete = _layout._verify_run(self.store, group)
            status.append(COMPLETE if complete else FAILED if group in failures else MISSING)
            errors.append(None if complete else failures.get(group))
        return table.assign(status=status, error=errors)

    def _group(self, group=None, **entities) -> str:
        table = pd.DataFrame(self._record["runs"])
        if group is not None:
            if group not in set(table["group"]):
                raise ParameterError(f"group={group!r} is not in the archive; its groups: {list(table['group'])[:5]} ...")
            return group
        unknown = sorted(set(entities) - set(table.columns))
        if unknown:
            raise ParameterError(f"unknown entities {unknown}; the index has {[c for c in table.columns if c in _layout.ENTITY_COLUMNS]}.")
        chosen = table
        for name, value in entities.items():
            wanted = str(value).removeprefix(f"{name[:3]}-")
            chosen = chosen[chosen[name].astype(str) == wanted]
        if len(chosen) != 1:
            found = "no run" if chosen.empty else f"{len(chosen)} runs ({', '.join(chosen['group'])})"
            raise ParameterError(f"{entities} selects {found}; name one run (more entities, or group=).")
        return chosen["group"].iloc[0]

    def _complete_group(self, group=None, **entities) -> str:
        group = self._group(group, **entities)
        if not _layout._verify_run(self.store, group):
            error = self._record["failures"].get(group)
            raise ImageFileNotFoundError(
                f"run {group!r} of {self.description!r} is not complete"
                + (f" (it failed: {error})" if error else "") + "; run build_archive again to finish it."
            )
        return group

    def signals(self, group=None, **entities) -> xr.DataArray:
        """One run's signals, lazily (``signals(subject="01", session="1", run="1")`` or ``group=``)."""
        return open_signals(self.store, self._complete_group(group, **entities))

    def load_masker(self, group=None, **entities):
        """The fitted masker of one run (rebuilt from the store)."""
        return load_masker(self.store, self._complete_group(group, **entities))

    @property
    def masker(self):
        """The fitted masker of the first complete run (for ``inverse_transform``)."""
        runs = self.runs
        complete = runs[runs["status"] == COMPLETE]
        if complete.empty:
            raise ImageFileNotFoundError(f"{self.description!r} has no complete run yet.")
        return self.load_masker(group=complete["group"].iloc[0])

    def stack(self, **entities) -> xr.DataArray:
        """The complete runs (those matching ``entities``) as one lazy ``(run, time, region)`` array.

        Runs must have the same number of volumes and the same regions (or voxels). The ``run``
        coordinate holds the groups' names, the entities (``subject``, ``session``, ...) are
        coordinates along ``run``.
        """
        runs = self.runs
        runs = runs[runs["status"] == COMPLETE]
        for name, value in entities.items():
            if name not in runs.columns:
                raise ParameterError(f"unknown entity {name!r}.")
            values = [value] if isinstance(value, str | int) else list(value)
            runs = runs[runs[name].astype(str).isin([str(v).removeprefix(f"{name[:3]}-") for v in values])]
        if runs.empty:
            raise ParameterError(f"no complete run matches {entities or 'the archive'}.")
        arrays = [open_signals(self.store, group) for group in runs["group"]]
        lengths = {a.sizes[a.dims[0]] for a in arrays}
        if len(lengths) > 1:
            raise ParameterError(
                f"the runs have different lengths {sorted(lengths)} (censored volumes differ); stack runs "
                "of one length (select them with entities) or read them one by one with signals()."
            )
        second = arrays[0].dims[1]
        for group, array in zip(runs["group"], arrays, strict=True):
            if array.sizes[second] != arrays[0].sizes[second] or (
                    second in array.indexes and not array.indexes[second].equals(arrays[0].indexes[second])):
                raise ParameterError(f"run {group!r} has other {second}s than {runs['group'].iloc[0]!r}; "
                                     "runs with different masks cannot be stacked.")
        plain = [a.drop_vars(a.dims[0]).assign_attrs({}) for a in arrays]
        stacked = xr.concat(plain, dim="run", coords="minimal", compat="override", join="override")
        coords = {"run": list(runs["group"])}
        for name in _layout.ENTITY_COLUMNS:  # the entity "run" is in the group name (the run coordinate)
            if name != "run" and name in runs.columns and runs[name].notna().any():
                coords[name] = ("run", runs[name].astype(object).where(runs[name].notna(), "").tolist())
        stacked = stacked.assign_coords(coords)
        return stacked.assign_attrs({k: v for k, v in arrays[0].attrs.items() if k != "archive"})

    def __repr__(self) -> str:
        runs = self.runs
        counts = runs["status"].value_counts().to_dict()
        return (f"<lazymask Archive {self.description!r} at {self.snapshot_id}: {len(runs)} runs "
                f"({', '.join(f'{n} {s}' for s, n in sorted(counts.items()))}), {self.masker_class}>")


def _open_target(target, *, snapshot=None, tag=None, branch=None) -> Archive:
    given = {name: value for name, value in (("snapshot", snapshot), ("tag", tag), ("branch", branch))
             if value is not None}
    if len(given) > 1:
        raise ParameterError(f"{', '.join(f'{k}=' for k in given)}: name one version (a snapshot, a tag or a branch).")
    import icechunk

    try:
        if snapshot is not None:
            session = target.repository.readonly_session(snapshot_id=snapshot)
        elif tag is not None:
            session = target.repository.readonly_session(tag=tag)
        else:
            session = target.repository.readonly_session(branch=branch or "main")
    except icechunk.IcechunkError as exc:
        first = str(exc).strip().splitlines()[0].strip(" x")
        tags = sorted(target.repository.list_tags())
        raise ParameterError(f"{target.description}: no version {given or {'branch': 'main'}} ({first}); its tags: "
                             f"{tags[:10]}, its branches: {sorted(target.repository.list_branches())}.") from None
    return Archive(target, session)


def open_archive(store, *, snapshot=None, tag=None, branch=None, storage_options=None) -> Archive:
    """Open an archive written by :func:`~lazymask.archive.build_archive`, read-only (reads metadata only).

    Parameters
    ----------
    store : str, pathlib.Path or icechunk.Repository
        The archive: a local directory, an ``s3://bucket/prefix`` URL or an icechunk repository.
    snapshot, tag, branch : str, optional
        The version to open (at most one): an icechunk snapshot id (see :attr:`Archive.history`),
        a tag (``build-1``: each build that committed is tagged) or a branch. Default: the tip
        of ``main``.
    storage_options : dict, optional
        For an ``s3://`` store: ``endpoint_url``, ``key``, ``secret``, ``anon``, ``region`` (as
        for :func:`~lazymask.archive.build_archive`).

    Returns
    -------
    Archive
        ``.runs`` (the index with ``status``), ``.signals(**entities)``, ``.stack(**entities)``,
        ``.masker``, ``.history``.

    Examples
    --------
    >>> archive = open_archive("archive")                           # doctest: +SKIP
    >>> connectivity = archive.stack(task="rest")                   # doctest: +SKIP
    >>> first = open_archive("archive", tag="build-1")              # doctest: +SKIP
    >>> archive = open_archive("s3://bucket/archive", storage_options={"anon": True})  # doctest: +SKIP
    """
    return _open_target(open_repository(store, storage_options, create=False), snapshot=snapshot, tag=tag,
                        branch=branch)
