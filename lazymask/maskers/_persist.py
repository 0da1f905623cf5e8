"""Signals in a self-describing zarr group, and a fitted masker rebuilt from it.

Layout of a group written by :func:`save_signals`::

    <group>/               attrs: lazymask {kind: "signals", version, masker, parameters, affine,
                                  t_r, source}, lazymask_complete (written last)
    <group>/signals        the signals (lazymask.to_zarr layout: data + coords)
    <group>/mask           the masker's spatial definition (NIfTI-Zarr image); region maskers
                           store theirs (labels, maps, seeds) the same way, one group per name

The whole group is staged (:func:`lazymask.io._zarr.staged_group`): an interrupted write leaves
nothing that :func:`open_signals` or :func:`lazymask.io.is_complete` accepts as complete.
"""

from __future__ import annotations

import xarray as xr

from lazymask.exceptions import CorruptImageError, NotNiftiError, ParameterError
from lazymask.io import is_complete, open_zarr, to_zarr
from lazymask.io._zarr import normalise_group, open_existing_group, staged_group  # shared group helpers
from lazymask.maskers._base import MASKER_CLASSES, BaseMasker, jsonable

SIGNALS = "signals"
META = "lazymask"
KIND = "signals"


def _join(group: str, name: str) -> str:
    return f"{group}/{name}" if group else name


def save_signals(signals: xr.DataArray, store, group: str | None = None, *, masker: BaseMasker | None = None,
                 overwrite: bool = False):
    """Write signals (computed chunk by chunk, streamed) and what made them to a zarr group.

    Parameters
    ----------
    signals : xarray.DataArray
        Signals returned by a masker's ``transform`` (lazy or computed).
    store : str, pathlib.Path or zarr store
        The zarr store (a directory is created).
    group : str, optional
        The group inside the store (``"sub-01/run-1"``); the root when omitted.
    masker : fitted masker, optional
        The masker that made ``signals``: its spatial definition (the mask for a
        :class:`NiftiMasker`) is stored so that :func:`load_masker` can rebuild it. Required
        unless the group is only meant to be read back with :func:`open_signals`.
    overwrite : bool, default False
        Replace a complete group already there.

    Returns
    -------
    The ``store`` argument.

    Examples
    --------
    >>> signals = masker.fit_transform("bold.nii.gz")              # doctest: +SKIP
    >>> save_signals(signals, "out.zarr", "sub-01/run-1", masker=masker)   # doctest: +SKIP
    """
    if not isinstance(signals, xr.DataArray):
        raise ParameterError(f"signals must be the xarray.DataArray a masker returns; got {type(signals).__name__}.")
    if masker is not None:
        masker._check_fitted()
    meta = {
        "kind": KIND,
        "version": _version(),
        "masker": signals.attrs.get("masker", None if masker is None else type(masker).__name__),
        "parameters": signals.attrs.get("parameters", None if masker is None else masker.json_parameters()),
        "affine": signals.attrs.get("affine"),
        "t_r": signals.attrs.get("t_r"),
        "source": signals.attrs.get("source", []),
        "spatial": [] if masker is None else sorted(masker._spatial_arrays()),
    }
    group = normalise_group(group)
    with staged_group(store, group, overwrite=overwrite) as staged:
        staged.open().attrs.update({META: jsonable(meta)})
        to_zarr(signals, staged.store, group=_join(staged.path, SIGNALS), overwrite=True)
        if masker is not None:
            for name, array in masker._spatial_arrays().items():
                to_zarr(array, staged.store, group=_join(staged.path, name), overwrite=True)
    return store


def _read_meta(store, group: str) -> dict:
    zgroup = open_existing_group(store, group)
    where = f"zarr store {str(store)!r}" + (f", group {group!r}," if group else "")
    if not is_complete(store, group):
        raise CorruptImageError(
            f"{where} is not complete: its write was interrupted (or is still running); write it again."
        )
    meta = zgroup.attrs.get(META)
    if not isinstance(meta, dict) or meta.get("kind") != KIND:
        raise NotNiftiError(
            f"{where} was not written by lazymask.save_signals (open images with lazymask.open_zarr)."
        )
    return meta


def open_signals(store, group: str | None = None) -> xr.DataArray:
    """The signals stored by :func:`save_signals`, lazily (metadata read now, values on compute).

    Parameters
    ----------
    store : str, pathlib.Path or zarr store
        The zarr store.
    group : str, optional
        The run's group inside the store; the root when omitted.

    Returns
    -------
    xarray.DataArray
        The signals as saved: dims, coords (``i, j, k`` or ``region``, ``region_name``) and attrs.

    Raises
    ------
    ImageFileNotFoundError
        No store or group there.
    CorruptImageError
        The group's write did not finish.
    NotNiftiError
        The group was not written by :func:`save_signals`.

    Examples
    --------
    >>> signals = open_signals("out.zarr", "sub-01/run-1")         # doctest: +SKIP
    """
    group = normalise_group(group)
    _read_meta(store, group)
    return open_zarr(store, group=_join(group, SIGNALS))


def load_masker(store, group: str | None = None) -> BaseMasker:
    """The fitted masker that made the stored signals, rebuilt from the store alone.

    Parameters
    ----------
    store : str, pathlib.Path or zarr store
        A store written by :func:`save_signals` with ``masker=``.
    group : str, optional
        The run's group inside the store; the root when omitted.

    Returns
    -------
    BaseMasker
        A fitted masker of the class that made the signals, with its parameters.

    ``inverse_transform`` works on it without the original images (their parameters are kept,
    their data are not needed).

    Examples
    --------
    >>> masker = load_masker("out.zarr", "sub-01/run-1")           # doctest: +SKIP
    >>> img = masker.inverse_transform(open_signals("out.zarr", "sub-01/run-1"))   # doctest: +SKIP
    """
    group = normalise_group(group)
    meta = _read_meta(store, group)
    if not meta.get("spatial"):
        raise ParameterError(
            "this group holds signals only (save_signals was called without masker=); "
            "pass masker= when saving to be able to rebuild it."
        )
    cls = MASKER_CLASSES.get(meta.get("masker"))
    if cls is None:
        raise NotNiftiError(f"the group was written by an unknown masker {meta.get('masker')!r}.")
    arrays = {name: open_zarr(store, group=_join(group, name)) for name in meta["spatial"]}
    return cls._from_store(dict(meta.get("parameters") or {}), arrays)


def _version() -> str:
    from lazymask import __version__

    return __version__
