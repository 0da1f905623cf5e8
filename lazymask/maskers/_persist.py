"""Signals in a self-describing zarr group, and a fitted masker rebuilt from it.

Layout of a group written by :func:`save_signals`::

    <group>/               attrs: lazymask {kind: "signals", format_version, version, masker,
                                  parameters, affine, t_r, source, spatial}, lazymask_manifest,
                                  lazymask_complete (written last)
    <group>/signals        the signals (lazymask.to_zarr layout: data + coords)
    <group>/mask           the masker's spatial definition (NIfTI-Zarr image); region maskers
                           store theirs (labels, maps, seeds) the same way, one group per name

The whole group goes through the one staged write (:func:`lazymask.io.staged_group`, kind
``"signals"``) on every storage kind -- a local directory (staged beside, renamed), an object store
(claimed create-only, written in place, completed last), an icechunk repository (one commit for the
call) or session (written in place, committed by its owner) -- marked complete last; a target
holding anything but a complete signals group is refused whatever ``overwrite`` says.

Reading trusts nothing in the store: its metadata is validated as data, every chunk read is
checked against the checksums recorded at write time, and :func:`load_masker` passes the stored
parameters to the masker as data only -- no path, name or code taken from the store is opened,
imported or evaluated (a string parameter is kept only when it is one of the masker's declared
options; what the masker needs is rebuilt from the arrays stored in the group).
"""

from __future__ import annotations

import contextlib
import numbers
import os
import warnings

import dask
import numpy as np
import xarray as xr

from lazymask import config

from lazymask.exceptions import CorruptStoreError, ImageFileNotFoundError, NotNiftiError, ParameterError
from lazymask.io import (
    check_group_target,
    normalise_group,
    open_zarr,
    read_group_metadata,
    staged_group,
    verify,
    write_member,
)
from lazymask.maskers import _base
from lazymask.maskers._base import MASKER_CLASSES, BaseMasker, jsonable
from lazymask.storage import resolve

SIGNALS = "signals"
META = "lazymask"
KIND = "signals"
FORMAT_VERSION = 2


def _join(group: str, name: str) -> str:
    return f"{group}/{name}" if group else name


def _where(location, group: str) -> str:
    return f"zarr store {str(location)!r}" + (f", group {group!r}," if group else "")


def save_signals(signals, store, group=None, *, masker: BaseMasker | None = None, overwrite: bool = False,
                 storage_options=None):
    """Write signals (computed chunk by chunk, streamed) and what made them to a zarr group.

    Parameters
    ----------
    signals : xarray.DataArray or list of xarray.DataArray
        Signals returned by a masker's ``transform`` (lazy or computed); a list (a
        :class:`MultiNiftiMasker`'s runs) is written to one group per run, the runs computed
        together (the scheduler reads and cleans several runs at once), in windows of runs whose
        signals add up to at most ``lazymask.config.get("memory_budget")``.
    store : str, pathlib.Path, URL, zarr store or icechunk Repository/Session/IcechunkStore
        The zarr store (a directory is created). A group is written only into a store lazymask
        created (a lazymask store or archive) or a new one. An icechunk repository gets one
        commit for the whole call; into a session (or its store) the groups are written in place,
        marked complete, and nothing is committed (the session's owner commits).
    group : str or list of str, optional
        The group inside the store (``"sub-01/run-1"``); the root when omitted. For a list of
        signals, a list of as many distinct groups.
    masker : fitted masker or list of fitted maskers, optional
        The masker that made ``signals``: its spatial definition (the mask for a
        :class:`NiftiMasker`) is stored so that :func:`load_masker` can rebuild it. Required
        unless the group is only meant to be read back with :func:`open_signals`. For a list
        of signals, one masker for all or a list of one per run (runs fitted each on its own).
    overwrite : bool, default False
        Replace a complete signals group already there, once the new one is complete. Anything
        else at the target (a directory or file lazymask did not write) is refused, whatever
        ``overwrite`` says. On an object store without icechunk a complete group is never
        replaced (see docs/guarantees.md).
    storage_options : dict, optional
        fsspec options for a URL.

    Returns
    -------
    The ``store`` argument.

    Raises
    ------
    UnsafeTargetError
        The target holds something else, or a complete group and ``overwrite`` is False. For a
        list, every target is checked before anything is written.

    Notes
    -----
    Each group is published only once all of its window's runs are written: an error leaves the
    groups of that window unwritten (and those of earlier windows complete).

    Examples
    --------
    >>> signals = masker.fit_transform("bold.nii.gz")              # doctest: +SKIP
    >>> save_signals(signals, "out.zarr", "sub-01/run-1", masker=masker)   # doctest: +SKIP
    >>> runs = multi_masker.fit_transform(["run-1.nii.gz", "run-2.nii.gz"])   # doctest: +SKIP
    >>> save_signals(runs, "out.zarr", ["sub-01/run-1", "sub-01/run-2"], masker=multi_masker)  # doctest: +SKIP
    """
    runs, groups = _runs_and_groups(signals, group)
    maskers = _maskers_of(masker, runs)
    spatials = [{} if m is None else m._spatial_arrays() for m in maskers]
    shown = ", ".join(repr(g or "/") for g in groups[:3]) + (", ..." if len(groups) > 3 else "")
    with resolve(store, storage_options).transaction(f"lazymask: save_signals {shown}") as location:
        for name in groups:  # every target refused or accepted before anything is written
            if name:  # (the root: checked by staged_group; a list never writes it)
                check_group_target(location, name, kind=KIND, overwrite=overwrite)
        for window in _windows(runs, config.get("memory_budget")):
            with contextlib.ExitStack() as stack:
                pending = []
                for index in window:
                    staged = stack.enter_context(staged_group(location, groups[index], overwrite=overwrite, kind=KIND))
                    spatial = spatials[index]
                    staged.open().attrs.update({META: jsonable(_meta(runs[index], maskers[index], spatial))})
                    pending.append(write_member(runs[index], staged, SIGNALS, compute=False))
                    pending.extend(write_member(array, staged, name, compute=False) for name, array in spatial.items())
                dask.compute(*[p.delayed for p in pending])
                for p in pending:
                    p.finish()
    return store


def _maskers_of(masker, runs: list) -> list:
    """One fitted masker (or None) per run: ``masker`` for all, or a list of one per run."""
    maskers = list(masker) if isinstance(masker, (list, tuple)) else [masker] * len(runs)
    if len(maskers) != len(runs):
        raise ParameterError(f"masker: a list of {len(maskers)} maskers for {len(runs)} runs of signals; "
                             "give one masker, or one per run.")
    for one in maskers:
        if one is not None:
            one._check_fitted()
    return maskers


def _runs_and_groups(signals, group) -> tuple[list[xr.DataArray], list[str]]:
    if isinstance(signals, xr.DataArray):
        if group is not None and not isinstance(group, str):
            raise ParameterError(f"group={group!r}: one group (a str) for one DataArray of signals.")
        return [signals], [normalise_group(group)]
    if not isinstance(signals, (list, tuple)) or not all(isinstance(s, xr.DataArray) for s in signals):
        raise ParameterError("signals must be the xarray.DataArray a masker returns, or a list of them; "
                             f"got {type(signals).__name__}.")
    if not isinstance(group, (list, tuple)) or len(group) != len(signals):
        raise ParameterError(f"group={group!r}: give a list of one group per run ({len(signals)} runs).")
    groups = [normalise_group(g) for g in group]
    if not all(groups):
        raise ParameterError(f"group={group!r}: each run needs its own group inside the store, not its root ('').")
    if len(set(groups)) != len(groups):
        raise ParameterError(f"group={group!r}: the runs' groups must differ.")
    return list(signals), groups


def _windows(runs: list[xr.DataArray], budget: int) -> list[list[int]]:
    """Consecutive runs whose signals add up to at most ``budget`` bytes (at least one run each)."""
    windows, total = [[]], 0
    for index, run in enumerate(runs):
        if windows[-1] and total + run.nbytes > budget:
            windows.append([])
            total = 0
        windows[-1].append(index)
        total += run.nbytes
    return [w for w in windows if w]


def _meta(signals: xr.DataArray, masker, spatial: dict) -> dict:
    return {
        "kind": KIND,
        "format_version": FORMAT_VERSION,
        "version": _version(),
        "masker": signals.attrs.get("masker", None if masker is None else type(masker).__name__),
        "parameters": signals.attrs.get("parameters", None if masker is None else masker.json_parameters()),
        "affine": signals.attrs.get("affine"),
        "t_r": signals.attrs.get("t_r"),
        "source": signals.attrs.get("source", []),
        "spatial": sorted(spatial),
    }


def _read_meta(location, group: str) -> dict:
    meta = read_group_metadata(location, group, kind=KIND)
    where = _where(location, group)
    _check_type(meta.get("masker"), (str, type(None)), where, "masker", "a masker class name or null")
    _check_type(meta.get("parameters"), (dict, type(None)), where, "parameters", "an object of parameters or null")
    spatial = _check_type(meta.get("spatial", []), list, where, "spatial", "a list of group names")
    for name in spatial:
        _check_type(name, str, where, "spatial", "a list of group names")
        try:
            normalise_group(name)
        except ParameterError:
            raise CorruptStoreError(f"{where}: attribute '{META}.spatial' names {name!r}, not a group name.") from None
    return meta


def _check_type(value, types, where: str, key: str, expected: str):
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        shown = "null" if value is None else f"a {type(value).__name__}"
        raise CorruptStoreError(
            f"{where}: attribute '{META}.{key}' is {shown}, expected {expected}; the store's metadata was "
            "altered or was not written by lazymask.save_signals."
        )
    return value


def open_signals(store, group: str | None = None, *, verify: bool = False, storage_options=None) -> xr.DataArray:
    """The signals stored by :func:`save_signals`, lazily (metadata read now, values on compute).

    Parameters
    ----------
    store : str, pathlib.Path, URL, zarr store or icechunk Repository/Session/IcechunkStore
        The zarr store (an icechunk repository is read on its branch; a session as it is).
    group : str, optional
        The run's group inside the store; the root when omitted.
    verify : bool, default False
        Check the whole group now (every chunk read once, one at a time) before returning.
    storage_options : dict, optional
        fsspec options for a URL.

    Returns
    -------
    xarray.DataArray
        The signals as saved: dims, coords (``i, j, k`` or ``region``, ``region_name``) and attrs.
        Every chunk read is checked against the checksum recorded when it was written.

    Raises
    ------
    ImageFileNotFoundError
        No store or group there.
    CorruptImageError
        The group's write did not finish.
    NotNiftiError
        The group was not written by :func:`save_signals`.
    CorruptStoreError
        Its metadata is malformed, or (with ``verify``, or later when read) a chunk is missing or
        corrupt.

    Examples
    --------
    >>> signals = open_signals("out.zarr", "sub-01/run-1")         # doctest: +SKIP
    """
    location = resolve(store, storage_options)
    group = normalise_group(group)
    _read_meta(location, group)
    if verify:
        _verify(location, group)
    return _member(location, group, SIGNALS)


_verify = verify


def _member(location, group: str, name: str) -> xr.DataArray:
    try:
        return open_zarr(location, group=_join(group, name))
    except ImageFileNotFoundError:
        raise CorruptStoreError(
            f"{_where(location, group)}: its {name!r} group was recorded when it was written but is missing; "
            "the store was damaged. Write it again."
        ) from None


def load_masker(store, group: str | None = None, *, storage_options=None) -> BaseMasker:
    """The fitted masker that made the stored signals, rebuilt from the store alone.

    Parameters
    ----------
    store : str, pathlib.Path, URL, zarr store or icechunk Repository/Session/IcechunkStore
        A store written by :func:`save_signals` with ``masker=``.
    group : str, optional
        The run's group inside the store; the root when omitted.
    storage_options : dict, optional
        fsspec options for a URL.

    Returns
    -------
    BaseMasker
        A fitted masker of the class that made the signals, with its parameters.

    ``inverse_transform`` works on it without the original images (their parameters are kept,
    their data are not needed). Nothing from the store is followed: the masker is rebuilt from
    the arrays stored in the group; a stored string parameter that is not one of the masker's
    declared options (a path, for example) is not used, with a warning.

    Examples
    --------
    >>> masker = load_masker("out.zarr", "sub-01/run-1")           # doctest: +SKIP
    >>> img = masker.inverse_transform(open_signals("out.zarr", "sub-01/run-1"))   # doctest: +SKIP
    """
    location = resolve(store, storage_options)
    group = normalise_group(group)
    meta = _read_meta(location, group)
    where = _where(location, group)
    if not meta.get("spatial"):
        raise ParameterError(
            f"{where} holds signals only (save_signals was called without masker=); "
            "pass masker= when saving to be able to rebuild it."
        )
    cls = MASKER_CLASSES.get(meta.get("masker"))
    if cls is None:
        raise NotNiftiError(
            f"{where}: written by an unknown masker {str(meta.get('masker'))[:60]!r}; this lazymask knows "
            f"{sorted(MASKER_CLASSES)}."
        )
    arrays = {name: _member(location, group, name) for name in meta["spatial"]}
    parameters = _data_parameters(cls, dict(meta.get("parameters") or {}), where, rebuilt=set(arrays))
    return cls._from_store(parameters, arrays)


def _data_parameters(cls, parameters: dict, where: str, rebuilt: set) -> dict:
    """The stored parameters a masker may be given: data only, never a path or a name to follow."""
    constraints = dict(getattr(_base, "COMMON_CONSTRAINTS", {}))
    for klass in reversed(cls.__mro__):
        constraints.update(getattr(klass, "_parameter_constraints", None) or {})
    kept, dropped = {}, []
    for name, value in parameters.items():
        if not isinstance(name, str) or name in rebuilt or name in _IMAGE_PARAMETERS:
            continue  # rebuilt from the arrays stored in the group, never from the stored value
        if isinstance(value, str) and not _declared_option(name, value, constraints.get(name)):
            dropped.append(name)
            continue
        if not _is_plain_data(value):
            dropped.append(name)
            continue
        kept[name] = value
    if dropped:
        warnings.warn(
            f"{where}: stored parameter(s) {', '.join(sorted(dropped))} not used: lazymask never opens a "
            "path or follows a name taken from a store (the masker is rebuilt from the arrays stored with "
            "it).", UserWarning, stacklevel=3,
        )
    return kept


#: parameters whose string values name files or directories (never taken from a store)
PATH_PARAMETERS = frozenset({"memory", "lut", "labels_img", "maps_img", "mask_img", "seeds", "imgs"})
_IMAGE_PARAMETERS = frozenset({"labels_img", "maps_img", "mask_img"})
_FILE_SUFFIXES = (".tsv", ".csv", ".txt", ".json", ".nii", ".gz", ".zarr", ".npy", ".npz", ".pkl", ".py")


def _declared_option(name: str, value: str, constraint) -> bool:
    """Whether a stored string may be passed on: a declared option, or a plain word naming no file."""
    if value in _literals(constraint):
        return True
    if name == "dtype":
        try:
            return value == "auto" or np.dtype(value).kind in "biuf"
        except TypeError:
            return False
    looks_like_path = (
        name in PATH_PARAMETERS or any(sep in value for sep in ("/", "\\", "..")) or value.startswith(("~", "."))
        or value.lower().endswith(_FILE_SUFFIXES) or len(value) > 200 or os.path.lexists(value)
    )
    return not looks_like_path


def _literals(constraint) -> set:
    if isinstance(constraint, str):
        return {constraint}
    if isinstance(constraint, tuple | list | set | frozenset):
        return set().union(*(_literals(c) for c in constraint)) if constraint else set()
    options = getattr(constraint, "options", None)  # scikit-learn's StrOptions
    return {o for o in options if isinstance(o, str)} if isinstance(options, set | frozenset) else set()


def _is_plain_data(value, depth: int = 0) -> bool:
    if depth > 16:
        return False
    if value is None or isinstance(value, bool | numbers.Real | str):
        return True
    if isinstance(value, list):
        return all(_is_plain_data(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain_data(v, depth + 1) for k, v in value.items())
    return False


def _version() -> str:
    from lazymask import __version__

    return __version__
