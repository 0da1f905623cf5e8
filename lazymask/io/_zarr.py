"""Zarr stores: lossless, chunked, compressed, verified round trips of images and signals.

The public face of lazymask's zarr stores; each job lives in its own module:

=========================  ==========================================================================
``_zarr_schema``           metadata schema: names, kinds, metadata parsed and validated as data
``_zarr_target``           a group as a write target: inspection, root, staged write, completion
``_zarr_read``             opening a group for reading, chunk reads held to the manifest
``_zarr_nifti``            images as NIfTI-Zarr, both ways (and other tools' NIfTI-Zarr stores)
``_zarr_labelled``         labelled arrays (signals) the xarray way
``_zarr_verify``           checking a whole store, every chunk once
``_zarr_inspect``          what the command line finds at a whole-store target
``lazymask.storage``       where the store is (paths, URLs, zarr stores, icechunk) and how a write is
                           published (a rename, a create-only claim, a transaction)
=========================  ==========================================================================

Contract
--------
* ``to_zarr(obj, store, group=...)`` then ``open_zarr(store, group=...)`` gives back the same
  DataArray: values, dtype, dims, coords (with their dtypes and attrs), name and every attr
  (``affine``, ``t_r``, units, any JSON-able attr). Zarr format 3. ``store`` is a local path, an
  fsspec URL (``s3://``, ``gs://``, ``memory://``, with ``storage_options``), a zarr store, or an
  icechunk repository, session or store.
* **Images** (dims ``i, j, k[, time]``) follow the NIfTI-Zarr convention (see
  :mod:`lazymask.io._zarr_nifti`); **other DataArrays** the xarray layout
  (:mod:`lazymask.io._zarr_labelled`). Codecs: blosc zstd level 1 with byte shuffle, then
  ``crc32c`` (a checksum per chunk); every chunk is written.
* Writes go through one staged write (:func:`staged_group`), published by the location's publisher:
  marked complete last (``lazymask_complete: true`` with its manifest: shapes, chunk grids, a
  crc32c per chunk); the one rule :func:`lazymask.storage.check_target` decides what may be done
  to what is there.
* ``open_zarr`` reads metadata only (plus the small index coordinates xarray keeps in memory),
  parsed as data with bounds on size and nesting; voxels are read when computed, and every chunk
  read is checked against the manifest (a missing or altered chunk raises
  :class:`CorruptStoreError` naming the store, the array and the chunk). ``verify=True`` (or
  :func:`verify`) reads every chunk once, one at a time, before returning.
"""

from __future__ import annotations

from dataclasses import dataclass

import xarray as xr
import zarr

from lazymask.exceptions import CorruptStoreError, NotNiftiError, ParameterError
from lazymask.io._integrity import verify_group_chunks
from lazymask.io._meta import IMAGE_DIMS_3D, IMAGE_DIMS_4D
from lazymask.io._zarr_inspect import inspect_store
from lazymask.io._zarr_labelled import _read_array, _write_array, array_chunks
from lazymask.io._zarr_nifti import _read_image, _read_nifti_zarr, _write_image, image_time_chunk
from lazymask.io._zarr_read import _open_checked, open_existing_group
from lazymask.io._zarr_schema import (
    CHUNK_BYTES,
    COMPLETE_ATTR,
    FORMAT_VERSION,
    KIND_NAMES,
    META_ATTR,
    ROOT_ATTR,
    _join,
    _metadata,
    _node_document,
    _restore_labels,
    default_compressor,
    describe,
    normalise_group,
)
from lazymask.io._zarr_target import (
    StagedGroup,
    _mark_complete,
    check_group_target,
    is_complete,
    mark_complete,
    require_root,
    staged_group,
)
from lazymask.io._zarr_verify import verify
from lazymask.storage import resolve

__all__ = ["to_zarr", "open_zarr", "verify", "staged_group", "StagedGroup", "is_complete", "write_member",
           "read_group_metadata", "normalise_group", "require_root", "check_group_target", "inspect_store",
           "CHUNK_BYTES", "COMPLETE_ATTR", "META_ATTR", "ROOT_ATTR", "FORMAT_VERSION", "KIND_NAMES",
           "array_chunks", "image_time_chunk", "default_compressor", "mark_complete", "_mark_complete",
           "open_existing_group", "PendingMember"]


def to_zarr(obj: xr.DataArray, store, *, group: str | None = None, overwrite: bool = False,
            compressor=None, storage_options=None):
    """Write a DataArray to a zarr (format 3) store, chunk by chunk, published when complete.

    Parameters
    ----------
    obj : xarray.DataArray
        An image (dims ``("i", "j", "k")`` or ``("i", "j", "k", "time")``, written as NIfTI-Zarr)
        or any other labelled array, such as voxel signals ``("time", "voxel")`` or region signals
        ``("time", "region")``. Attributes must be JSON-able (numbers, strings, lists, dicts).
    store : str, pathlib.Path, URL, zarr store or icechunk Repository/Session/IcechunkStore
        A directory (created), an fsspec URL (``s3://bucket/out.zarr``, ``memory://out.zarr``), a
        zarr store object, or an icechunk repository (lazymask commits the write on its branch)
        or session (written in the session; its owner commits).
    group : str, optional
        The group inside the store (``"sub-01/run-1"``); the store's root when omitted. A group
        is written only into a store lazymask created (or a new one).
    overwrite : bool, default False
        Replace a complete lazymask DataArray store already there, once the new one is complete
        (until then the old one is intact). On an object store without icechunk, replacing a
        complete group is refused (see docs/guarantees.md); an unfinished one is replaced. Nothing
        else is ever replaced: a directory, file or store lazymask did not write is refused
        whatever ``overwrite`` says.
    compressor : zarr codec, optional
        Defaults to blosc zstd level 1 with shuffle (a crc32c checksum is always added).
    storage_options : dict, optional
        fsspec options for a URL (``{"endpoint_url": ...}``, credentials).

    Returns
    -------
    The ``store`` argument.

    Raises
    ------
    UnsafeTargetError
        The target holds something else than a complete lazymask store of this kind, or one
        exists and ``overwrite`` is False.
    ParameterError
        An attribute is not JSON-able.

    Examples
    --------
    >>> signals = xr.DataArray([[1.0, 2.0], [3.0, 4.0]], dims=("time", "region"), name="signals")
    >>> _ = to_zarr(signals, "memory://doc/signals.zarr")
    >>> open_zarr("memory://doc/signals.zarr").values.tolist()
    [[1.0, 2.0], [3.0, 4.0]]
    """
    if not isinstance(obj, xr.DataArray):
        raise ParameterError(f"to_zarr writes an xarray.DataArray, found {type(obj).__name__}.")
    compressor = default_compressor() if compressor is None else compressor
    is_image = obj.dims in (IMAGE_DIMS_3D, IMAGE_DIMS_4D)
    kind = "image" if is_image else "array"
    meta = _metadata(obj, kind=kind)
    with staged_group(store, group, overwrite=overwrite, kind=kind, storage_options=storage_options) as staged:
        staged.open().attrs.update({META_ATTR: meta})
        if is_image:
            _write_image(obj, staged, compressor)
        else:
            _write_array(obj, staged, compressor)
    return store


def open_zarr(store, *, group: str | None = None, verify: bool = False, storage_options=None) -> xr.DataArray:
    """Open a DataArray written by :func:`to_zarr` (or a NIfTI-Zarr image), lazily.

    Reads metadata only; every chunk read later is checked against what the store recorded when
    it was written.

    Parameters
    ----------
    store : str, pathlib.Path, URL, zarr store or icechunk Repository/Session/IcechunkStore
        The zarr store (an icechunk repository is read on its branch, read-only).
    group : str, optional
        The group inside the store; the root when omitted.
    verify : bool, default False
        Read every chunk once now (one at a time, in bounded memory) and check it before returning.
    storage_options : dict, optional
        fsspec options for a URL.

    Returns
    -------
    xarray.DataArray
        Backed by dask, chunked as stored; images come back with dims ``("i", "j", "k"[, "time"])``.

    Raises
    ------
    ImageFileNotFoundError
        No store or group there.
    NotNiftiError
        The group was not written by lazymask and is not a NIfTI-Zarr image.
    CorruptImageError
        The write of this group did not finish.
    CorruptStoreError
        Its metadata is malformed or disagrees with what was written (or, with ``verify``, a chunk
        is missing or corrupt).

    Examples
    --------
    >>> _ = to_zarr(xr.DataArray([1.0, 2.0, 3.0], dims="time"), "memory://doc/open.zarr")
    >>> float(open_zarr("memory://doc/open.zarr", verify=True).mean())
    2.0
    """
    location = resolve(store, storage_options)
    group = normalise_group(group)
    where = describe(location, group)
    opened = _open_checked(location, group, where)
    if opened.foreign:
        return _read_nifti_zarr(opened.zgroup, where)
    if verify:
        verify_group_chunks(opened.zgroup, opened.manifest, where)
    if opened.meta["kind"] == "image":
        data = _read_image(opened, where)
    else:
        data = _read_array(opened, where)
    return _restore_labels(data, opened.meta, where)



# -- for writers of groups of groups (save_signals, archives) ------------------------------------------
@dataclass
class PendingMember:
    """A member whose chunks are still to be written: compute ``delayed`` (with others, in one
    ``dask.compute``), then call :meth:`finish`, which marks the member complete."""

    delayed: object
    member: StagedGroup

    def finish(self) -> None:
        """Mark the member complete (its manifest, then ``lazymask_complete``): after ``delayed`` ran."""
        mark_complete(self.member)


def write_member(obj: xr.DataArray, staged: StagedGroup, name: str, *, compressor=None,
                 compute: bool = True) -> PendingMember | None:
    """Write ``obj`` as the complete sub-group ``name`` of a staged group (it is published with it).

    Parameters
    ----------
    obj : xarray.DataArray
        An image or labelled array, as :func:`to_zarr` takes.
    staged : StagedGroup
        The group being staged (from :func:`staged_group`).
    name : str
        The sub-group's name (a plain name such as ``"signals"`` or ``"mask"``).
    compute : bool, default True
        False: write the member's metadata now and return a :class:`PendingMember` whose
        ``delayed`` writes the chunks, so that several members are computed together; the member
        is complete once its ``finish()`` has run.

    Returns
    -------
    None, or a :class:`PendingMember` when ``compute`` is False.

    Examples
    --------
    >>> memory = zarr.storage.MemoryStore()
    >>> with staged_group(memory, "run-1", kind="signals") as staged:
    ...     write_member(xr.DataArray([1.0], dims="time"), staged, "signals")
    >>> is_complete(memory, "run-1/signals")
    True
    """
    if not isinstance(obj, xr.DataArray):
        raise ParameterError(f"{name}: expected an xarray.DataArray, found {type(obj).__name__}.")
    name = normalise_group(name)
    compressor = default_compressor() if compressor is None else compressor
    is_image = obj.dims in (IMAGE_DIMS_3D, IMAGE_DIMS_4D)
    meta = _metadata(obj, kind="image" if is_image else "array")
    member = StagedGroup(staged.store, _join(staged.path, name))
    zarr.open_group(member.store, path=member.path, mode="w", zarr_format=3,
                    attributes={COMPLETE_ATTR: False, META_ATTR: meta})
    written = (_write_image if is_image else _write_array)(obj, member, compressor, compute=compute)
    if not compute:
        return PendingMember(written, member)
    mark_complete(member)
    return None


def read_group_metadata(store, group: str | None = None, *, kind: str, storage_options=None) -> dict:
    """The validated ``lazymask`` metadata of a complete group of ``kind`` (metadata read as data).

    Raises the errors :func:`open_zarr` raises for a missing, unfinished, foreign or malformed
    group, and :class:`NotNiftiError` when the group holds another kind.

    Examples
    --------
    >>> read_group_metadata("out.zarr", "run-1", kind="signals")["masker"]   # doctest: +SKIP
    'NiftiMasker'
    """
    location = resolve(store, storage_options)
    group = normalise_group(group)
    where = describe(location, group)
    opened = _open_checked(location, group, where)
    if opened.foreign or opened.meta.get("kind") != kind:
        found = "a NIfTI-Zarr image" if opened.foreign else f"a lazymask {opened.meta.get('kind')!r} group"
        raise NotNiftiError(f"{where} holds {found}, not a {KIND_NAMES.get(kind, kind)}.")
    for name in opened.manifest.get("groups", []):
        if _node_document(opened.zgroup.store, _join(group, name), where) is None:
            raise CorruptStoreError(
                f"{where}: its member group {name!r} was recorded when the group was written but is missing."
            )
    return opened.meta

