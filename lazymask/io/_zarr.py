"""Zarr stores: lossless, chunked, compressed, verified round trips of images and signals.

Contract
--------
* ``to_zarr(obj, store, group=...)`` then ``open_zarr(store, group=...)`` gives back the same
  DataArray: values, dtype, dims, coords (with their dtypes and attrs), name and every attr
  (``affine``, ``t_r``, units, any JSON-able attr). Zarr format 3.
* **Images** (dims ``i, j, k[, time]``) follow the NIfTI-Zarr convention (neuroscales
  ``nifti-zarr`` 1.0), so other tools read them: the group is an OME-Zarr 0.5 multiscale image
  with one scale, ``"0"``; its axes are ``t`` (second, 4D only), ``z``, ``y``, ``x``
  (millimetre), with the voxel sizes and the repetition time as scale transforms; a ``nifti``
  array holds the binary NIfTI-1 header (348 ``uint8``), the reference for the affine. NIfTI's
  Fortran-ordered ``(i, j, k, t)`` data is the C-ordered array ``(t, k, j, i)``: that is how
  ``"0"`` is stored, and ``open_zarr`` returns the ``(i, j, k, time)`` transpose view of it.
  ``open_zarr`` also reads NIfTI-Zarr stores written by other tools (``niizarr.nii2zarr``): level
  ``"0"``, with the affine and the scaling (``scl_slope``/``scl_inter``) from their header; such a
  store is opened read-only and never written to.
* **Other DataArrays** (voxel signals ``(time, voxel)`` with coords ``i, j, k``; region signals
  ``(time, region)`` with ``region_name``; anything labelled) are written the xarray way: the
  array ``data`` beside one array per coordinate.
* Chunks. Images: whole volumes per chunk, as many as make about ``config.get("zarr_chunk_bytes")``
  (32 MiB), because maskers always read whole volumes and a chunk read is the unit of
  decompression. Other arrays: the input's time chunking is kept (so writing extraction output
  needs no all-to-all rechunk) and the other dim is cut to the same budget. Codecs: blosc zstd
  level 1 with byte shuffle, then ``crc32c`` (a checksum per chunk); every chunk is written.
* Writes go through the one staged-write protocol (:mod:`lazymask.io._staging`): the group is
  written under a temporary name beside its target, marked complete last (``lazymask_complete:
  true`` with its manifest: shapes, chunk grids, a crc32c per chunk) and published by a rename.
  :func:`check_group_target` applies the data-safety rule (:func:`lazymask.io._staging.check_target`)
  to zarr targets; a group is written only under a root that lazymask created.
* ``open_zarr`` reads metadata only (plus the small index coordinates xarray keeps in memory),
  parsed as data with bounds on size and nesting; voxels are read when computed, and every chunk
  read is checked against the manifest (a missing or altered chunk raises
  :class:`CorruptStoreError` naming the store, the array and the chunk). ``verify=True`` (or
  :func:`verify`) reads every chunk once, one at a time, before returning.
"""

from __future__ import annotations

import contextlib
import io as _io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dask.array as da
import nibabel as nib
import numpy as np
import xarray as xr
import zarr
from zarr.codecs import BloscCodec
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from lazymask import config
from lazymask.exceptions import (
    CorruptImageError,
    CorruptStoreError,
    ImageFileNotFoundError,
    LazymaskError,
    NotNiftiError,
    ParameterError,
    UnsafeTargetError,
)
from lazymask.io._arrays import as_dask
from lazymask.io._integrity import (
    MANIFEST_ATTR,
    CheckedStore,
    check_array_against_manifest,
    checksum_codec,
    expected_chunks,
    read_metadata_document,
    record_manifest,
    verify_group_chunks,
)
from lazymask.io._meta import IMAGE_DIMS_3D, IMAGE_DIMS_4D, affine_attr, get_t_r
from lazymask.io._staging import STAGING_TAG, Found, State, check_target, found_unless, staged_path, staging_name
from lazymask.io._write import nifti_dtype, nifti_header

__all__ = ["to_zarr", "open_zarr", "verify", "staged_group", "StagedGroup", "is_complete", "write_member",
           "read_group_metadata", "normalise_group", "require_root", "CHUNK_BYTES"]

CHUNK_BYTES = config.get("zarr_chunk_bytes")
"""Default target size of one stored chunk (uncompressed); set it with ``config.set(zarr_chunk_bytes=...)``."""

COMPLETE_ATTR = "lazymask_complete"
META_ATTR = "lazymask"
ROOT_ATTR = "lazymask_root"
FORMAT_VERSION = 2
IMAGE_ARRAY = "0"
HEADER_ARRAY = "nifti"
DATA_ARRAY = "data"
#: what each lazymask writer's groups are called, by the ``kind`` recorded in their metadata
KIND_NAMES = {"image": "lazymask zarr DataArray store (to_zarr)", "array": "lazymask zarr DataArray store (to_zarr)",
              "signals": "lazymask signals group (save_signals)"}
_FAMILY = {"image": "dataarray", "array": "dataarray", "signals": "signals"}


def default_compressor() -> BloscCodec:
    """Blosc zstd level 1 with byte shuffle: the codec lazymask stores chunks with."""
    return BloscCodec(cname="zstd", clevel=1, shuffle="shuffle")


def _codecs(compressor) -> list:
    return [compressor, checksum_codec()] if compressor is not None else [checksum_codec()]


# -- where things are -------------------------------------------------------------------------------
def _is_path(store) -> bool:
    return isinstance(store, str | os.PathLike)


def _join(*parts: str) -> str:
    return "/".join(p for p in parts if p)


def normalise_group(group) -> str:
    """``group`` as a clean relative path ("" for the root); rejects ``.``/``..`` escapes."""
    if group is None:
        return ""
    if not isinstance(group, str):
        raise ParameterError(f"group={group!r}: expected a str such as 'sub-01/run-1', or None.")
    parts = [p for p in group.strip("/").split("/") if p]
    if any(p in (".", "..") or p.startswith(".") for p in parts):
        raise ParameterError(f"group={group!r}: group names may not be '.', '..' or start with '.'.")
    return "/".join(parts)


def _describe(store, group: str) -> str:
    where = str(store) if _is_path(store) else type(store).__name__
    return f"zarr store {where!r}" + (f", group {group!r}" if group else "")


def _attributes(document: dict | None, where: str) -> dict:
    if document is None:
        return {}
    attrs = document.get("attributes", {})
    if not isinstance(attrs, dict):
        raise CorruptStoreError(f"{where}: 'attributes' in zarr.json is a {type(attrs).__name__}, not an object.")
    return attrs


def _node_document(store, group: str, where: str) -> dict | None:
    """The node's zarr.json, parsed as data (None when there is none)."""
    return read_metadata_document(str(store) if _is_path(store) else store, group, where)


# -- inspecting a target: what is there? ------------------------------------------------------------
def _inspect_local(path: Path, family: str, label: str) -> Found:
    settled = found_unless(path, directory=True)
    if settled is not None:
        return settled
    try:
        document = read_metadata_document(str(path), "", str(path))
    except CorruptStoreError as exc:
        return Found.other(f"a damaged zarr node ({exc})")
    if document is None:
        entries = sorted(p.name for p in path.iterdir())
        if not entries:
            return Found.other("an empty directory lazymask did not create")
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        return Found.other(f"a directory lazymask did not write ({len(entries)} entries: {shown})")
    found = _classify(_attributes(document, str(path)), family, label)
    if found.state in (State.COMPLETE, State.STALE):
        foreign = _foreign_entries(path)
        if foreign:
            return Found.other(f"{found.description} with files lazymask did not write inside ({', '.join(foreign)})")
    return found


def _classify(attrs: dict, family: str, label: str) -> Found:
    meta = attrs.get(META_ATTR)
    kind = meta.get("kind") if isinstance(meta, dict) else None
    if kind in _FAMILY:
        name = KIND_NAMES[kind]
        if _FAMILY[kind] != family:
            return Found.other(f"a {name}, another kind of lazymask result")
        if attrs.get(COMPLETE_ATTR) is True:
            return Found.complete(f"a complete {name}")
        return Found.stale(f"an unfinished {name}")
    if attrs.get(COMPLETE_ATTR) is False and set(attrs) <= {COMPLETE_ATTR, META_ATTR}:
        return Found.stale(f"an unfinished {label}")
    if ROOT_ATTR in attrs or META_ATTR in attrs:
        return Found.other("a lazymask store root holding groups (an archive or store of several groups)")
    return Found.other("a zarr store lazymask did not write")


def _foreign_entries(root: Path, limit: int = 5) -> list[str]:
    """Files and directories inside a zarr tree that are not zarr metadata, chunks or lazymask staging."""
    found, stack = [], [root]
    while stack and len(found) < limit:
        node = stack.pop()
        try:
            document = read_metadata_document(str(node), "", str(node)) or {}
        except CorruptStoreError:
            document = {}
        is_array = document.get("node_type") == "array"
        for entry in sorted(os.scandir(node), key=lambda e: e.name):
            child = Path(entry.path)
            if entry.name == "zarr.json" and entry.is_file(follow_symlinks=False):
                continue
            if is_array and entry.name == "c" and entry.is_dir(follow_symlinks=False):
                continue
            if not is_array and entry.is_dir(follow_symlinks=False):
                if (child / "zarr.json").is_file() or STAGING_TAG in entry.name:
                    if STAGING_TAG not in entry.name:
                        stack.append(child)
                    continue
            found.append(str(child.relative_to(root)))
    return found[:limit]


def _inspect_kv(store, group: str, family: str, label: str) -> Found:
    where = _describe(store, group)
    try:
        document = _node_document(store, group, where)
    except CorruptStoreError as exc:
        return Found.other(f"a damaged zarr node ({exc})")
    depth = len(group.split("/")) if group else 0
    keys = [k for k in sync(_list_prefix(store, group))
            if not k.split("/")[depth].startswith(".") and k != _join(group, "zarr.json")]
    attrs = _attributes(document, where)
    if document is None or (not attrs and not keys and document.get("node_type") == "group"):
        # nothing, or only the empty group zarr creates above a staging prefix
        return Found.other(f"keys lazymask did not write ({keys[0]!r}, ...)") if keys else Found.absent()
    return _classify(attrs, family, label)


async def _list_prefix(store, prefix: str) -> list[str]:
    prefix = f"{prefix}/" if prefix and not prefix.endswith("/") else prefix
    return [key async for key in store.list_prefix(prefix)]


# -- the root a group goes under ------------------------------------------------------------------------
def _is_lazymask_root(attrs: dict) -> bool:
    return ROOT_ATTR in attrs or isinstance(attrs.get(META_ATTR), dict) or COMPLETE_ATTR in attrs


def require_root(store, group: str = "") -> None:
    """Make sure the groups above ``group`` exist in a store lazymask created (creating them if absent).

    A new store is created with a root marked ``lazymask_root`` (an archive may add its own
    attributes to that root; it stays lazymask's while it keeps ``lazymask_root`` or ``lazymask``).
    An existing store must be one that lazymask created (a lazymask store, archive or staging);
    groups above ``group`` must be zarr groups. Anything else raises :class:`UnsafeTargetError`
    and nothing is written.

    Examples
    --------
    >>> memory = zarr.storage.MemoryStore()
    >>> require_root(memory, "sub-01/run-1")           # creates the root and sub-01
    >>> sorted(zarr.open_group(memory, mode="r").attrs)
    ['lazymask_root']
    """
    where = _describe(store, "")
    if _is_path(store):
        root = Path(store)
        if not os.path.lexists(root):
            if not root.parent.is_dir():
                raise ParameterError(f"store={str(root)!r}: the directory {str(root.parent)!r} does not exist.")
            zarr.open_group(str(root), mode="w-", zarr_format=3, attributes={ROOT_ATTR: {"format_version": FORMAT_VERSION}})
        else:
            found = _inspect_local(root, "root", "lazymask store")
            attrs = _attributes(read_metadata_document(str(root), "", where), where) if root.is_dir() and (
                root / "zarr.json").is_file() else None
            if attrs is None or not _is_lazymask_root(attrs) or (root / "zarr.json").is_symlink():
                raise UnsafeTargetError(
                    f"{where} holds {found.description}: lazymask writes a group only into a store it created "
                    "(a lazymask store or archive), never into another directory or zarr store, whatever "
                    "overwrite says. Choose another store."
                )
    else:
        attrs = _attributes(_node_document(store, "", where), where)
        if not attrs and not sync(_list_prefix(store, "")):
            zarr.open_group(store, mode="a", zarr_format=3, attributes={ROOT_ATTR: {"format_version": FORMAT_VERSION}})
        elif not _is_lazymask_root(attrs):
            raise UnsafeTargetError(
                f"{where} is a zarr store lazymask did not create: lazymask writes a group only into a "
                "store it created (a lazymask store or archive). Choose another store."
            )
    parts = group.split("/")[:-1]
    for depth in range(1, len(parts) + 1):
        _require_intermediate(store, "/".join(parts[:depth]))


def _create_intermediate(store, path: str) -> None:
    """Create the group ``path``; one a concurrent writer created meanwhile (runs of an archive) is fine."""
    try:
        zarr.open_group(store, path=path, mode="a", zarr_format=3)
    except zarr.errors.ContainsGroupError:
        pass


def _require_intermediate(store, path: str) -> None:
    where = _describe(store, path)
    if _is_path(store):
        local = Path(store) / path
        if not os.path.lexists(local):
            _create_intermediate(str(store), path)
            return
        if local.is_symlink() or not local.is_dir() or not (local / "zarr.json").is_file():
            raise UnsafeTargetError(
                f"{where}: {str(local)!r} exists and is not a zarr group lazymask created "
                f"({_inspect_local(local, 'root', 'group').description}); lazymask will not write a group "
                "inside it. Choose another group name."
            )
        document = read_metadata_document(str(local), "", where)
    else:
        document = _node_document(store, path, where)
        if document is None:
            _create_intermediate(store, path)
            return
    if document.get("node_type") != "group":
        raise UnsafeTargetError(f"{where} is a zarr {document.get('node_type')!r}, not a group; "
                                "lazymask will not write a group inside it.")


# -- staging: write beside the target, mark complete, publish -----------------------------------------
@dataclass
class StagedGroup:
    """Where a writer puts a group's arrays: a zarr store and the group's path inside it."""

    store: object
    path: str

    def open(self, mode: str = "r+") -> zarr.Group:
        return zarr.open_group(self.store, path=self.path, mode=mode, zarr_format=3)


def check_group_target(store, group: str, *, kind: str, overwrite: bool) -> bool:
    """Apply the data-safety rule to a zarr target; return whether a complete group is replaced.

    See :func:`lazymask.io._staging.check_target` for the rule; this says what counts as "a
    complete lazymask store of the same kind" for a zarr group: its ``zarr.json`` carries
    lazymask's metadata of the same kind (``to_zarr`` images and arrays are one kind,
    ``save_signals`` groups another) and ``lazymask_complete: true``, and its directory holds only
    zarr metadata, chunks and lazymask staging.
    """
    family, label = _FAMILY[kind], KIND_NAMES[kind]
    if _is_path(store):
        found = _inspect_local(Path(store) / group if group else Path(store), family, label)
    else:
        found = _inspect_kv(store, group, family, label)
    return check_target(_describe(store, group).rstrip(","), found, kind=label, overwrite=overwrite)


@contextlib.contextmanager
def staged_group(store, group: str | None = None, *, overwrite: bool = False,
                 kind: str = "array") -> Iterator[StagedGroup]:
    """Stage the writing of one zarr group: written beside its target, published when complete.

    The target is checked first (:func:`check_group_target`: only a complete lazymask group of
    the same kind may be replaced, and only with ``overwrite=True``; anything else is refused). The
    block writes the group's arrays into the yielded staging group; when it ends without error,
    the group's manifest is recorded, ``lazymask_complete: true`` is written last, and the staging
    is published: renamed onto the target for a local directory, or, for another zarr store,
    copied key by key under the target's name with the group's metadata last.

    Parameters
    ----------
    store : str, pathlib.Path or zarr store
        The zarr store (a directory path, or any ``zarr.abc.store.Store``).
    group : str, optional
        Path of the group inside the store (``"sub-01/run-1"``); the root when omitted.
    overwrite : bool, default False
        Replace a complete lazymask group of the same kind already there (once the new one is
        complete).
    kind : {"array", "image", "signals"}
        What the group holds (decides what may be replaced).

    Yields
    ------
    StagedGroup
        Open it (``staged.open()``) to add arrays and attributes.

    Examples
    --------
    >>> with staged_group("out.zarr", "sub-01/run-1") as staged:   # doctest: +SKIP
    ...     staged.open().create_array("x", shape=(3,), dtype="f4")
    """
    group = normalise_group(group)
    if group:
        check_group_target(store, group, kind=kind, overwrite=overwrite)  # refuse before creating a root
        require_root(store, group)
    if _is_path(store):
        target = Path(store) / group if group else Path(store)
        family, label = _FAMILY[kind], KIND_NAMES[kind]
        with staged_path(target, kind=label, overwrite=overwrite, directory=True,
                         inspect=lambda path: _inspect_local(path, family, label),
                         mark_complete=lambda path: _mark_complete(StagedGroup(str(path), "")),
                         describe=_describe(store, group).rstrip(",")) as staging:
            zarr.open_group(str(staging), mode="w", zarr_format=3, attributes={COMPLETE_ATTR: False})
            yield StagedGroup(str(staging), "")
    else:
        with _staged_kv_group(store, group, kind=kind, overwrite=overwrite) as staged:
            yield staged


@contextlib.contextmanager
def _staged_kv_group(store, group: str, *, kind: str, overwrite: bool) -> Iterator[StagedGroup]:
    """:func:`staged_group` for a zarr store that is not a directory: a staging prefix, then copies."""
    parent, _, name = group.rpartition("/")
    _clean_kv_staging(store, parent, name or "root")
    replace = check_group_target(store, group, kind=kind, overwrite=overwrite)
    staging = _join(parent, staging_name(name or "root"))
    try:
        zarr.open_group(store, path=staging, mode="w", zarr_format=3, attributes={COMPLETE_ATTR: False})
        staged = StagedGroup(store, staging)
        yield staged
        _mark_complete(staged)
        replace = check_group_target(store, group, kind=kind, overwrite=overwrite or replace)
        sync(_publish_kv(store, staging, group, replace))
    finally:
        sync(_delete_prefix(store, staging))


def _clean_kv_staging(store, parent: str, name: str) -> None:
    async def stale() -> list[str]:
        return [child async for child in store.list_dir(parent) if child.startswith(f".{name}{STAGING_TAG}")]

    with contextlib.suppress(FileNotFoundError):
        for child in sync(stale()):
            sync(_delete_prefix(store, _join(parent, child)))


async def _delete_prefix(store, prefix: str) -> None:
    for key in await _list_prefix(store, prefix):
        await store.delete(key)


async def _publish_kv(store, staging: str, group: str, replace: bool) -> None:
    """Copy the complete staging under ``group``; the group's own zarr.json (complete) goes last."""
    if replace:
        target_meta = _join(group, "zarr.json")
        await store.delete(target_meta)  # from now on the old group no longer looks complete
        for key in await _list_prefix(store, group):
            if not key.split("/")[len(group.split("/")) if group else 0].startswith("."):
                await store.delete(key)
    keys = await _list_prefix(store, staging)
    head = _join(staging, "zarr.json")
    prototype = default_buffer_prototype()
    for key in sorted(keys, key=lambda k: k == head):
        value = await store.get(key, prototype)
        await store.set(_join(group, key[len(staging):].lstrip("/")), value)


def _mark_complete(staged: StagedGroup) -> None:
    """Record the group's manifest, then ``lazymask_complete: true`` (the last write of a group)."""
    zgroup = staged.open()
    zgroup.attrs.update({MANIFEST_ATTR: record_manifest(zgroup)})
    zgroup.attrs.update({COMPLETE_ATTR: True})


def is_complete(store, group: str | None = None) -> bool:
    """Whether ``store`` holds a complete lazymask group at ``group`` (reads its metadata only).

    Parameters
    ----------
    store : str, pathlib.Path or zarr store
        The zarr store (it need not exist).
    group : str, optional
        The group inside the store; the root when omitted.

    Returns
    -------
    bool
        True when a write by lazymask finished there; False when there is nothing, an
        interrupted write, damaged metadata, or a group lazymask did not write.

    Examples
    --------
    >>> if not is_complete("archive.zarr", "sub-01/run-1"):      # doctest: +SKIP
    ...     to_zarr(img, "archive.zarr", group="sub-01/run-1")
    """
    group = normalise_group(group)
    if _is_path(store) and not (Path(store) / group).is_dir():
        return False
    try:
        attrs = _attributes(_node_document(store, group, _describe(store, group)), "")
    except (LazymaskError, OSError):
        return False
    return attrs.get(COMPLETE_ATTR) is True and isinstance(attrs.get(MANIFEST_ATTR), dict)


def open_existing_group(store, group: str) -> zarr.Group:
    """Open an existing zarr group read-only (metadata checked as data first), or raise naming it."""
    where = _describe(store, group)
    if _is_path(store):
        path = Path(store) / group if group else Path(store)
        if not path.exists():
            raise ImageFileNotFoundError(f"{where}: no such store or group.")
    document = _node_document(store, group, where)
    if document is None or document.get("node_type") != "group":
        raise NotNiftiError(
            f"{where} is not a zarr group (" + ("no zarr.json" if document is None else
                                                f"a zarr {document.get('node_type')!r}")
            + "); open NIfTI files with lazymask.open_nifti."
        )
    return _open_group(_read_only(store), group, where)


def _read_only(store):
    if _is_path(store):
        return zarr.storage.LocalStore(str(store), read_only=True)
    return store.with_read_only(True) if hasattr(store, "with_read_only") and not store.read_only else store


def _open_group(store, group: str, where: str) -> zarr.Group:
    try:
        return zarr.open_group(store, path=group, mode="r", zarr_format=3)
    except (LazymaskError, FileNotFoundError):
        raise
    except Exception as exc:  # zarr's own parse errors: ValueError, TypeError, KeyError, ...
        raise CorruptStoreError(f"{where}: zarr cannot open its metadata ({type(exc).__name__}: {exc}).") from None


# -- public API -------------------------------------------------------------------------------------
def to_zarr(obj: xr.DataArray, store, *, group: str | None = None, overwrite: bool = False,
            compressor=None):
    """Write a DataArray to a zarr (format 3) store, chunk by chunk, published when complete.

    Parameters
    ----------
    obj : xarray.DataArray
        An image (dims ``("i", "j", "k")`` or ``("i", "j", "k", "time")``, written as NIfTI-Zarr)
        or any other labelled array, such as voxel signals ``("time", "voxel")`` or region signals
        ``("time", "region")``. Attributes must be JSON-able (numbers, strings, lists, dicts).
    store : str, pathlib.Path or zarr store
        A directory (created) or a zarr store object.
    group : str, optional
        The group inside the store (``"sub-01/run-1"``); the store's root when omitted. A group
        is written only into a store lazymask created (or a new one).
    overwrite : bool, default False
        Replace a complete lazymask DataArray store already there, once the new one is complete
        (until then the old one is intact). Nothing else is ever replaced: a directory, file or
        store lazymask did not write is refused whatever ``overwrite`` says.
    compressor : zarr codec, optional
        Defaults to blosc zstd level 1 with shuffle (a crc32c checksum is always added).

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
    >>> img = lazymask.open_nifti("bold.nii.gz")                  # doctest: +SKIP
    >>> lazymask.to_zarr(img, "bold.nii.zarr")                     # doctest: +SKIP
    >>> lazymask.open_zarr("bold.nii.zarr").equals(img)            # doctest: +SKIP
    True
    """
    if not isinstance(obj, xr.DataArray):
        raise ParameterError(f"to_zarr writes an xarray.DataArray, found {type(obj).__name__}.")
    compressor = default_compressor() if compressor is None else compressor
    is_image = obj.dims in (IMAGE_DIMS_3D, IMAGE_DIMS_4D)
    kind = "image" if is_image else "array"
    meta = _metadata(obj, kind=kind)
    with staged_group(store, group, overwrite=overwrite, kind=kind) as staged:
        staged.open().attrs.update({META_ATTR: meta})
        if is_image:
            _write_image(obj, staged, compressor)
        else:
            _write_array(obj, staged, compressor)
    return store


def open_zarr(store, *, group: str | None = None, verify: bool = False) -> xr.DataArray:
    """Open a DataArray written by :func:`to_zarr` (or a NIfTI-Zarr image), lazily.

    Reads metadata only; every chunk read later is checked against what the store recorded when
    it was written.

    Parameters
    ----------
    store : str, pathlib.Path or zarr store
        The zarr store.
    group : str, optional
        The group inside the store; the root when omitted.
    verify : bool, default False
        Read every chunk once now (one at a time, in bounded memory) and check it before returning.

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
    >>> img = lazymask.open_zarr("bold.nii.zarr")                  # doctest: +SKIP
    >>> img.mean("time").compute()                                  # doctest: +SKIP
    """
    group = normalise_group(group)
    where = _describe(store, group)
    opened = _open_checked(store, group, where)
    if opened.foreign:
        return _read_nifti_zarr(opened.zgroup, where)
    if verify:
        verify_group_chunks(opened.zgroup, opened.manifest, where)
    if opened.meta["kind"] == "image":
        data = _read_image(opened, where)
    else:
        data = _read_array(opened, where)
    return _restore_labels(data, opened.meta, where)


def verify(store, group: str | None = None) -> dict:
    """Check a whole store without loading it: every chunk read once, one at a time.

    Checks, for every lazymask group at or under ``group`` (a ``to_zarr`` store, a
    ``save_signals`` group, an archive of many groups): the metadata parses as data; the group is
    complete; every array's shape, chunk grid and dtype are those recorded when it was written;
    every chunk exists and has the crc32c checksum recorded. A NIfTI-Zarr store written by another
    tool has no record: its header and level-0 shape are checked.

    Parameters
    ----------
    store : str, pathlib.Path or zarr store
    group : str, optional
        Where to start; the root when omitted.

    Returns
    -------
    dict
        Counts: ``{"groups": ..., "arrays": ..., "chunks": ..., "bytes": ...}``.

    Raises
    ------
    CorruptStoreError
        The first problem found, naming the store, the group, the array and the chunk.
    ImageFileNotFoundError, NotNiftiError, CorruptImageError
        No store there; not a lazymask or NIfTI-Zarr store; a group whose write did not finish.

    Examples
    --------
    >>> lazymask.io.verify("out.zarr")                              # doctest: +SKIP
    {'groups': 1, 'arrays': 4, 'chunks': 7, 'bytes': 81234}
    """
    group = normalise_group(group)
    totals = {"groups": 0, "arrays": 0, "chunks": 0, "bytes": 0}
    pending = [group]
    while pending:
        path = pending.pop()
        where = _describe(store, path)
        document = _node_document(store, path, where)
        if document is None and not path and _is_path(store) and not Path(store).exists():
            raise ImageFileNotFoundError(f"{where}: no such store or group.")
        attrs = _attributes(document, where)
        if isinstance(attrs.get(META_ATTR), dict) or COMPLETE_ATTR in attrs or _is_nifti_zarr(attrs):
            opened = _open_checked(store, path, where, verify_kind=False)
            if opened.foreign:
                _read_nifti_zarr(opened.zgroup, where)
                counts = {"arrays": 2, "chunks": 0, "bytes": 0}
            else:
                counts = verify_group_chunks(opened.zgroup, opened.manifest, where)
            totals["groups"] += 1
            for name in ("arrays", "chunks", "bytes"):
                totals[name] += counts[name]
        elif document is None or document.get("node_type") != "group":
            raise NotNiftiError(f"{where} is not a zarr group lazymask wrote.")
        elif not (ROOT_ATTR in attrs or path):
            raise NotNiftiError(f"{where}: not written by lazymask (no {META_ATTR!r} attribute).")
        pending.extend(_join(path, child) for child in sorted(_child_groups(store, path, where), reverse=True))
    if totals["groups"] == 0:
        raise NotNiftiError(f"{_describe(store, group)} holds no lazymask group to verify.")
    return totals


def _child_groups(store, path: str, where: str) -> list[str]:
    async def children() -> list[str]:
        return [c async for c in store_.list_dir(path)]

    store_ = _read_only(store)
    names = [c for c in sync(children()) if not c.startswith(".") and c != "zarr.json"]
    groups = []
    for name in names:
        document = _node_document(store, _join(path, name), where)
        if document is not None and document.get("node_type") == "group":
            groups.append(name)
    return groups


@dataclass
class _Opened:
    zgroup: zarr.Group
    meta: dict
    manifest: dict
    foreign: bool = False


def _open_checked(store, group: str, where: str, verify_kind: bool = True) -> _Opened:
    """Open a group for reading: metadata parsed as data and validated, chunk reads held to the manifest."""
    if _is_path(store):
        path = Path(store) / group if group else Path(store)
        if not path.exists():
            raise ImageFileNotFoundError(f"{where}: no such store or group.")
    document = _node_document(store, group, where)
    if document is None and not _is_path(store):
        raise ImageFileNotFoundError(f"{where}: no such store or group.")
    if document is None or document.get("node_type") != "group":
        raise NotNiftiError(
            f"{where} is not a zarr group (" + ("no zarr.json" if document is None else
                                                f"a zarr {document.get('node_type')!r}")
            + "); open NIfTI files with lazymask.open_nifti."
        )
    attrs = _attributes(document, where)
    base = _read_only(store)
    if not isinstance(attrs.get(META_ATTR), dict) and _is_nifti_zarr(attrs):
        return _Opened(_open_group(base, group, where), {}, {}, foreign=True)
    meta = _validated_meta(attrs, where)
    manifest = attrs.get(MANIFEST_ATTR)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("arrays"), dict):
        raise CorruptStoreError(f"{where}: its {MANIFEST_ATTR!r} attribute is missing or malformed.")
    checked = CheckedStore(base, expected_chunks(manifest, group, where), where)
    zgroup = _open_group(checked, group, where)
    if meta["kind"] in ("image", "array"):
        arrays = dict(_arrays(zgroup, where))
        for name in manifest["arrays"]:
            if name not in arrays:
                raise CorruptStoreError(f"{where}: array {name!r} recorded when the store was written is missing.")
        for name, array in arrays.items():
            check_array_against_manifest(array, name, manifest, where)
    return _Opened(zgroup, meta, manifest)


def _arrays(zgroup: zarr.Group, where: str):
    try:
        return list(zgroup.arrays())
    except LazymaskError:
        raise
    except Exception as exc:
        raise CorruptStoreError(f"{where}: zarr cannot read its arrays' metadata ({type(exc).__name__}: {exc}).") from None


# -- metadata (JSON, parsed as data) ----------------------------------------------------------------
def _validated_meta(attrs: dict, where: str) -> dict:
    """The group's lazymask metadata, after checking it is complete and well-formed (as data)."""
    meta = attrs.get(META_ATTR)
    if not isinstance(meta, dict):
        if COMPLETE_ATTR in attrs:
            raise CorruptImageError(f"{where}: a lazymask write that did not finish; write it again.")
        if META_ATTR in attrs:
            raise CorruptStoreError(
                f"{where}: attribute {META_ATTR!r} is a {type(meta).__name__}, not an object; the store's "
                "metadata was altered."
            )
        raise NotNiftiError(
            f"{where}: not written by lazymask.to_zarr (no {META_ATTR!r} attribute). lazymask opens "
            "the zarr stores it wrote and NIfTI-Zarr images; open NIfTI files with lazymask.open_nifti."
        )
    kind = meta.get("kind")
    if kind not in _FAMILY:
        raise NotNiftiError(f"{where}: attribute '{META_ATTR}.kind' is {kind!r}; not a store this lazymask reads.")
    if attrs.get(COMPLETE_ATTR) is not True:
        raise CorruptImageError(
            f"{where}: this group is not complete: its write did not finish (no '{COMPLETE_ATTR}: true'), "
            "so its data may be partial. Write it again (to_zarr replaces an unfinished group)."
        )
    if meta.get("format_version", FORMAT_VERSION if kind == "signals" else None) != FORMAT_VERSION:
        raise NotNiftiError(
            f"{where}: lazymask store format {meta.get('format_version')!r}, but this lazymask reads "
            f"format {FORMAT_VERSION}. Write the store again with this lazymask."
        )
    if kind in ("image", "array"):
        _check_dataarray_meta(meta, where)
    return meta


def _expect(value, types, where: str, key: str, expected: str):
    if not isinstance(value, types) or isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise CorruptStoreError(
            f"{where}: attribute {key!r} is {_shown_type(value)}, expected {expected}; the store's metadata "
            "was altered or was not written by lazymask."
        )
    return value


def _shown_type(value) -> str:
    return "null" if value is None else f"a {type(value).__name__}"


def _stored_dtype(text, where: str, key: str) -> np.dtype:
    _expect(text, str, where, key, "a dtype string such as '<f4'")
    try:
        dtype = np.dtype(text)
    except (TypeError, ValueError):
        raise CorruptStoreError(f"{where}: attribute {key!r} = {text[:40]!r} is not a dtype.") from None
    if dtype.kind not in "biufcUSMm":
        raise CorruptStoreError(f"{where}: attribute {key!r} = {text[:40]!r} is not a dtype lazymask stores.")
    return dtype


def _check_dataarray_meta(meta: dict, where: str) -> None:
    key = META_ATTR
    dims = _expect(meta.get("dims"), list, where, f"{key}.dims", "a list of dimension names")
    if not all(isinstance(d, str) for d in dims) or len(set(dims)) != len(dims) or len(dims) > 32:
        raise CorruptStoreError(f"{where}: attribute '{key}.dims' must be distinct strings, found {dims[:8]!r}.")
    _stored_dtype(meta.get("dtype"), where, f"{key}.dtype")
    _expect(meta.get("name"), (str, type(None)), where, f"{key}.name", "a string or null")
    _expect(meta.get("attrs"), dict, where, f"{key}.attrs", "an object")
    coords = _expect(meta.get("coords"), dict, where, f"{key}.coords", "an object of coordinates")
    for name, info in coords.items():
        ckey = f"{key}.coords.{name}"
        _expect(info, dict, where, ckey, "an object")
        cdims = _expect(info.get("dims"), list, where, f"{ckey}.dims", "a list of dimension names")
        if not all(isinstance(d, str) and d in dims for d in cdims):
            raise CorruptStoreError(f"{where}: attribute '{ckey}.dims' = {cdims!r} names dims the array has not ({dims}).")
        _stored_dtype(info.get("dtype"), where, f"{ckey}.dtype")
        _expect(info.get("attrs", {}), dict, where, f"{ckey}.attrs", "an object")
        if "values" in info:
            _expect(info["values"], list, where, f"{ckey}.values", "a list")
    if meta["kind"] == "image" and tuple(dims) not in (IMAGE_DIMS_3D, IMAGE_DIMS_4D):
        raise CorruptStoreError(f"{where}: attribute '{key}.dims' = {dims!r} is not an image's dims.")


def _metadata(obj: xr.DataArray, kind: str) -> dict:
    coords = {
        name: {
            "dims": list(coord.dims),
            "dtype": coord.dtype.str,
            "attrs": _json_attrs(coord.attrs, f"coordinate {name!r}"),
            # image coords (time) are small: kept here; other arrays store coords as zarr arrays
            **({"values": _json_value(coord.values.tolist(), name)} if kind == "image" else {}),
        }
        for name, coord in obj.coords.items()
    }
    for name, coord in obj.coords.items():
        if coord.dtype.kind not in ("biufU" if kind == "image" else "biufcUSMm"):
            raise ParameterError(
                f"coordinate {name!r} has dtype {coord.dtype}; coordinates must be numbers "
                "or strings to be stored. Convert it (for time, seconds as float)."
            )
    return {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "name": obj.name if obj.name is None or isinstance(obj.name, str) else str(obj.name),
        "dims": list(obj.dims),
        "dtype": obj.dtype.str,
        "attrs": _json_attrs(obj.attrs, "attribute"),
        "coords": coords,
    }


def _json_attrs(attrs: dict, what: str) -> dict:
    return {str(key): _json_value(value, f"{what} {key!r}") for key, value in attrs.items()}


def _json_value(value, what: str):
    """``value`` with numpy scalars/arrays turned into Python ones; raise if it is not JSON data."""
    import json

    def convert(item):
        if isinstance(item, np.ndarray | np.generic):
            return item.tolist()
        raise TypeError(type(item).__name__)

    try:
        return json.loads(json.dumps(value, default=convert))
    except (TypeError, ValueError, RecursionError) as exc:
        raise ParameterError(
            f"{what} cannot be stored in zarr: {exc} is not JSON data (numbers, strings, lists, "
            "dicts). Convert it, or drop it before writing (obj.attrs.pop(...))."
        ) from None


def _restore_labels(data: xr.DataArray, meta: dict, where: str) -> xr.DataArray:
    if meta["kind"] == "image":
        coords = {}
        for name, info in meta["coords"].items():
            if "values" not in info:
                raise CorruptStoreError(f"{where}: attribute '{META_ATTR}.coords.{name}.values' is missing.")
            try:
                values = np.asarray(info["values"], dtype=np.dtype(info["dtype"]))
            except (TypeError, ValueError):
                raise CorruptStoreError(
                    f"{where}: attribute '{META_ATTR}.coords.{name}.values' does not hold {info['dtype']} values."
                ) from None
            expected = tuple(data.sizes[d] for d in info["dims"])
            if values.shape != expected:
                raise CorruptStoreError(
                    f"{where}: coordinate {name!r} has shape {values.shape} but the image's {tuple(info['dims'])} "
                    f"is {expected}; the metadata was altered."
                )
            coords[name] = xr.Variable(tuple(info["dims"]), values, attrs=dict(info.get("attrs", {})))
        data = data.assign_coords(coords)
    data.attrs = dict(meta["attrs"])
    data.name = meta["name"]
    return data


# -- reading chunks: errors name the store, the array and the chunk -----------------------------------
class _SafeChunks:
    """A zarr array as dask reads it: any error while reading a chunk becomes a CorruptStoreError."""

    def __init__(self, array: zarr.Array, name: str, where: str, token):
        self.array, self.name, self.where, self.token = array, name, where, token
        self.shape, self.dtype, self.ndim = array.shape, array.dtype, array.ndim

    def __dask_tokenize__(self):
        return ("lazymask-zarr", self.where, self.name, self.token)

    def __getitem__(self, key):
        try:
            return self.array[key]
        except LazymaskError:
            raise
        except Exception as exc:  # blosc, zarr codec and store errors
            chunks = self.array.chunks
            index = tuple((k.start or 0) // c for k, c in zip(key, chunks, strict=False)) if isinstance(key, tuple) else key
            raise CorruptStoreError(
                f"{self.where}: chunk {index} of array {self.name!r} cannot be decoded "
                f"({type(exc).__name__}: {exc}); the store is damaged. Write it again from its sources."
            ) from None


def _token(opened: _Opened, name: str):
    entry = opened.manifest.get("arrays", {}).get(name, {})
    return tuple(sorted(entry.get("crc32c", {}).items())) if entry else None


def _lazy(array: zarr.Array, name: str, where: str, token, chunks=None) -> da.Array:
    safe = _SafeChunks(array, name, where, token)
    chunks = array.chunks if chunks is None else chunks
    return da.from_array(safe, chunks=chunks, lock=False, asarray=True, fancy=False,
                         meta=np.empty((0,) * array.ndim, dtype=array.dtype))


def _member(zgroup: zarr.Group, name: str, where: str) -> zarr.Array:
    arrays = dict(_arrays(zgroup, where))
    if name not in arrays:
        raise CorruptStoreError(f"{where}: the array {name!r} is missing.")
    return arrays[name]


# -- images: NIfTI-Zarr -----------------------------------------------------------------------------
def image_time_chunk(volume_nbytes: int, n_volumes: int) -> int:
    """Volumes per stored image chunk: whole volumes adding up to about ``zarr_chunk_bytes``."""
    budget = config.get("zarr_chunk_bytes")
    return int(max(1, min(n_volumes, budget // max(volume_nbytes, 1))))


def _write_image(img: xr.DataArray, staged: StagedGroup, compressor, compute: bool = True):
    header = nifti_header(img)
    dtype = nifti_dtype(img.dtype)
    data = as_dask(img).astype(dtype, copy=False).transpose()  # (i, j, k[, t]) -> (t, k, j, i)
    if img.ndim == 4:
        volume_nbytes = int(np.prod(data.shape[1:])) * dtype.itemsize
        chunks = (image_time_chunk(volume_nbytes, data.shape[0]), *data.shape[1:])
    else:
        chunks = data.shape
    zgroup = staged.open()
    array = zgroup.create_array(
        IMAGE_ARRAY, shape=data.shape, chunks=chunks, dtype=dtype, compressors=_codecs(compressor),
        fill_value=0, dimension_names=_ome_axis_names(img.ndim), config={"write_empty_chunks": True},
    )
    stored = da.store(data.rechunk(chunks), array, lock=False, compute=compute)
    header_array = zgroup.create_array(HEADER_ARRAY, shape=(348,), chunks=(348,), dtype="u1",
                                       compressors=_codecs(None), fill_value=0,
                                       dimension_names=("nifti_header_byte",),
                                       config={"write_empty_chunks": True})
    header_array[:] = np.frombuffer(header.binaryblock, dtype=np.uint8)
    zgroup.attrs.update({"ome": _ome_metadata(img, header)})
    return stored


def _ome_axis_names(ndim: int) -> list[str]:
    return (["t"] if ndim == 4 else []) + ["z", "y", "x"]


def _ome_metadata(img: xr.DataArray, header) -> dict:
    zooms = [float(z) for z in header.get_zooms()[:3]]
    space = [{"name": n, "type": "space", "unit": "millimeter"} for n in ("z", "y", "x")]
    axes, scale, global_scale = space, zooms[::-1], [1.0, 1.0, 1.0]
    if img.ndim == 4:
        axes = [{"name": "t", "type": "time", "unit": "second"}, *space]
        scale = [1.0, *scale]
        global_scale = [get_t_r(img) or 1.0, *global_scale]
    multiscale = {
        "name": str(img.name) if img.name is not None else "image",
        "axes": axes,
        "datasets": [{"path": IMAGE_ARRAY, "coordinateTransformations": [{"type": "scale", "scale": scale}]}],
        "coordinateTransformations": [{"type": "scale", "scale": global_scale}],
    }
    return {"version": "0.5", "multiscales": [multiscale]}


def _read_image(opened: _Opened, where: str) -> xr.DataArray:
    array = _member(opened.zgroup, IMAGE_ARRAY, where)
    dims = tuple(opened.meta["dims"])
    if array.ndim != len(dims):
        raise CorruptStoreError(f"{where}: array {IMAGE_ARRAY!r} has {array.ndim} dims, expected {len(dims)}.")
    data = _lazy(array, IMAGE_ARRAY, where, _token(opened, IMAGE_ARRAY)).transpose()  # (t,k,j,i) -> (i,j,k,t)
    data = data.astype(np.dtype(opened.meta["dtype"]), copy=False)
    return xr.DataArray(data, dims=dims)


# -- NIfTI-Zarr stores written by other tools ---------------------------------------------------------
def _is_nifti_zarr(attrs: dict) -> bool:
    ome = attrs.get("ome", attrs)
    return isinstance(ome, dict) and isinstance(ome.get("multiscales"), list) and bool(ome["multiscales"])


def _read_nifti_zarr(zgroup: zarr.Group, where: str) -> xr.DataArray:
    """A NIfTI-Zarr 1.0 image (level 0), lazily, with the affine and scaling of its binary header."""
    attrs = zgroup.attrs.asdict()
    ome = attrs.get("ome", attrs)
    multiscale = ome["multiscales"][0]
    datasets = multiscale.get("datasets") if isinstance(multiscale, dict) else None
    path = datasets[0].get("path") if isinstance(datasets, list) and datasets and isinstance(datasets[0], dict) else None
    if not isinstance(path, str):
        raise CorruptStoreError(f"{where}: its OME-Zarr 'multiscales[0].datasets[0].path' is missing or not a string.")
    arrays = dict(_arrays(zgroup, where))
    if HEADER_ARRAY not in arrays:
        raise NotNiftiError(
            f"{where}: an OME-Zarr image without the binary {HEADER_ARRAY!r} header array, so not NIfTI-Zarr; "
            "lazymask needs the NIfTI header for the affine."
        )
    header = _nifti_zarr_header(arrays[HEADER_ARRAY], where)
    if path not in arrays:
        raise CorruptStoreError(f"{where}: level {path!r} named by its multiscales metadata is missing.")
    level0 = arrays[path]
    shape = tuple(int(n) for n in header.get_data_shape())
    if level0.ndim not in (3, 4):
        raise NotNiftiError(
            f"{where}: level {path!r} has {level0.ndim} axes; lazymask reads 3D and 4D NIfTI-Zarr images "
            "(no channel axis)."
        )
    if tuple(level0.shape[::-1]) != shape[: level0.ndim] or int(np.prod(shape)) != int(np.prod(level0.shape)):
        raise CorruptStoreError(
            f"{where}: level {path!r} has shape {tuple(level0.shape)} (t, z, y, x), but its NIfTI header "
            f"says {shape} (i, j, k, t); the store is damaged."
        )
    affine = header.get_best_affine()
    if not np.all(np.isfinite(affine)):
        raise CorruptStoreError(f"{where}: its NIfTI header's affine is not finite.")
    volume_chunks = (max(1, level0.chunks[0]), *level0.shape[1:]) if level0.ndim == 4 else level0.shape
    data = _lazy(level0, path, where, _foreign_token(zgroup, path), chunks=volume_chunks).transpose()
    slope, inter = header.get_slope_inter()
    if slope is not None and np.isfinite(slope) and (slope != 1 or (inter or 0) != 0):
        inter = 0.0 if inter is None or not np.isfinite(inter) else inter
        dtype = nib.volumeutils.apply_read_scaling(np.zeros(1, level0.dtype), slope, inter).dtype
        data = data.map_blocks(nib.volumeutils.apply_read_scaling, slope, inter, dtype=dtype,
                               meta=np.empty((0,) * data.ndim, dtype))
    t_r = None
    if level0.ndim == 4:
        step = float(header.get_zooms()[3]) * {"msec": 1e-3, "usec": 1e-6}.get(header.get_xyzt_units()[1], 1.0)
        t_r = step if np.isfinite(step) and step > 0 else None
    from lazymask.io._meta import image_dataarray

    image = image_dataarray(data, affine, t_r=t_r, name=multiscale.get("name") or None)
    image.attrs["affine"] = affine_attr(affine)
    return image


def _foreign_token(zgroup: zarr.Group, path: str):
    """What identifies a foreign store's level 0 without a manifest: its metadata and files' identities."""
    token = [zgroup[path].metadata.to_dict().__repr__()]
    store = getattr(zgroup.store, "root", None)
    if store is not None:
        for key in ("zarr.json", f"{path}/zarr.json", f"{path}/c"):
            with contextlib.suppress(OSError):
                stat = os.stat(Path(store) / zgroup.path / key)
                token.append((key, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns))
    return tuple(token)


def _nifti_zarr_header(array: zarr.Array, where: str):
    if array.ndim != 1 or array.dtype != np.uint8 or not 348 <= array.shape[0] <= 2**20:
        raise CorruptStoreError(
            f"{where}: array {HEADER_ARRAY!r} has shape {array.shape} and dtype {array.dtype}; a NIfTI-Zarr "
            "header is a 1D uint8 array of at least 348 bytes."
        )
    try:
        raw = bytes(array[:])
    except LazymaskError:
        raise
    except Exception as exc:
        raise CorruptStoreError(f"{where}: its {HEADER_ARRAY!r} header cannot be read ({type(exc).__name__}).") from None
    size = int.from_bytes(raw[:4], "little")
    klass = nib.Nifti2Header if size == 540 else nib.Nifti1Header
    try:
        return klass.from_fileobj(_io.BytesIO(raw[: klass.sizeof_hdr]), check=True)
    except Exception as exc:
        raise CorruptStoreError(f"{where}: its {HEADER_ARRAY!r} array is not a valid NIfTI header ({exc}).") from None


# -- other labelled arrays: the xarray layout -------------------------------------------------------
def array_chunks(shape: tuple[int, ...], itemsize: int, first_chunks: tuple[int, ...]) -> tuple[int, ...]:
    """Stored chunks of a labelled array: the input's first-dim chunk, the rest cut to the chunk budget.

    The first dim (``time`` for signals) keeps the chunk the data comes in, so writing extraction
    output needs no all-to-all rechunk; the second dim is cut so a chunk holds about
    ``config.get("zarr_chunk_bytes")``; further dims are kept whole.
    """
    budget = config.get("zarr_chunk_bytes")
    if len(shape) == 0:
        return ()
    first = max(1, min(shape[0], first_chunks[0] if first_chunks else shape[0]))
    if len(shape) == 1:
        return (max(first, min(shape[0], budget // itemsize)),)
    rest = int(np.prod(shape[2:])) * itemsize
    second = max(1, min(shape[1], budget // max(first * rest, 1)))
    return (first, second, *shape[2:])


def _write_array(obj: xr.DataArray, staged: StagedGroup, compressor, compute: bool = True):
    data = obj.variable.data
    first = data.chunks[0] if isinstance(data, da.Array) and data.ndim else ()
    chunks = array_chunks(obj.shape, obj.dtype.itemsize, first[:1])
    if isinstance(data, da.Array):
        data = data.rechunk(chunks)
    coords = {name: _storable_coord(coord) for name, coord in obj.coords.items()}
    bare = xr.DataArray(data, dims=obj.dims, coords=coords, name=DATA_ARRAY)
    encoding = {DATA_ARRAY: {"chunks": chunks, "compressors": _codecs(compressor)}}
    encoding.update({name: {"compressors": _codecs(default_compressor())} for name in coords})
    dataset = bare.to_dataset()
    dataset.attrs = staged.open().attrs.asdict()  # xarray replaces the group's attributes
    return dataset.to_zarr(staged.store, group=staged.path or None, mode="a", zarr_format=3, compute=compute,
                           consolidated=False, encoding=encoding, write_empty_chunks=True)


def _storable_coord(coord: xr.DataArray) -> xr.Variable:
    values = coord.values
    if values.dtype.kind == "U":  # variable-length strings: a zarr v3 data type other tools read
        values = values.astype(object)
    return xr.Variable(coord.dims, values)


def _read_array(opened: _Opened, where: str) -> xr.DataArray:
    meta = opened.meta
    array = _member(opened.zgroup, DATA_ARRAY, where)
    dims = tuple(meta["dims"])
    if array.ndim != len(dims):
        raise CorruptStoreError(f"{where}: array {DATA_ARRAY!r} has {array.ndim} dims, but {dims} were written.")
    sizes = dict(zip(dims, array.shape, strict=True))
    coords = {}
    for name, info in meta["coords"].items():
        coord = _member(opened.zgroup, name, where)
        cdims = tuple(info["dims"])
        expected = tuple(sizes[d] for d in cdims)
        if tuple(coord.shape) != expected:
            raise CorruptStoreError(
                f"{where}: coordinate {name!r} has shape {tuple(coord.shape)} but the data's {cdims} is "
                f"{expected}; the metadata was altered."
            )
        if cdims == (name,):  # an index coordinate: read now (a few numbers), as xarray does
            values = np.asarray(_SafeChunks(coord, name, where, None)[(slice(None),) * coord.ndim])
        else:
            values = _lazy(coord, name, where, _token(opened, name))
        dtype = np.dtype(info["dtype"])
        values = values if values.dtype == dtype else values.astype(dtype)
        coords[name] = xr.Variable(cdims, values, attrs=dict(info.get("attrs", {})))
    data = _lazy(array, DATA_ARRAY, where, _token(opened, DATA_ARRAY))
    data = data if data.dtype == np.dtype(meta["dtype"]) else data.astype(np.dtype(meta["dtype"]))
    return xr.DataArray(data, dims=dims, coords=coords)


# -- for writers of groups of groups (save_signals, archives) ------------------------------------------
@dataclass
class PendingMember:
    """A member whose chunks are still to be written: compute ``delayed`` (with others, in one
    ``dask.compute``), then call :meth:`finish`, which marks the member complete."""

    delayed: object
    member: StagedGroup

    def finish(self) -> None:
        """Mark the member complete (its manifest, then ``lazymask_complete``): after ``delayed`` ran."""
        _mark_complete(self.member)


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
    >>> with staged_group("out.zarr", "run-1", kind="signals") as staged:   # doctest: +SKIP
    ...     write_member(signals, staged, "signals")
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
    _mark_complete(member)
    return None


def read_group_metadata(store, group: str | None = None, *, kind: str) -> dict:
    """The validated ``lazymask`` metadata of a complete group of ``kind`` (metadata read as data).

    Raises the errors :func:`open_zarr` raises for a missing, unfinished, foreign or malformed
    group, and :class:`NotNiftiError` when the group holds another kind.

    Examples
    --------
    >>> read_group_metadata("out.zarr", "run-1", kind="signals")["masker"]   # doctest: +SKIP
    'NiftiMasker'
    """
    group = normalise_group(group)
    where = _describe(store, group)
    opened = _open_checked(store, group, where)
    if opened.foreign or opened.meta.get("kind") != kind:
        found = "a NIfTI-Zarr image" if opened.foreign else f"a lazymask {opened.meta.get('kind')!r} group"
        raise NotNiftiError(f"{where} holds {found}, not a {KIND_NAMES.get(kind, kind)}.")
    for name in opened.manifest.get("groups", []):
        if _node_document(store, _join(group, name), where) is None:
            raise CorruptStoreError(
                f"{where}: its member group {name!r} was recorded when the group was written but is missing."
            )
    return opened.meta


def inspect_store(path, kind: str = "signals") -> Found:
    """What is at ``path``, for a writer that replaces a whole lazymask store (the command line).

    Complete: a complete lazymask group of ``kind`` ("signals" or "array"), or a lazymask root
    whose groups are all complete lazymask groups (an archive, a store of one group per run),
    holding no file lazymask did not write. Anything else is "other" (refused by
    :func:`lazymask.io.check_target`).

    Examples
    --------
    >>> inspect_store("out.zarr").state                             # doctest: +SKIP
    <State.COMPLETE: 'complete'>
    """
    path = Path(path)
    found = _inspect_local(path, _FAMILY[kind], KIND_NAMES[kind])
    if found.state is not State.OTHER or not path.is_dir() or not (path / "zarr.json").is_file():
        return found
    try:
        attrs = _attributes(read_metadata_document(str(path), "", str(path)), str(path))
    except CorruptStoreError:
        return found
    if ROOT_ATTR not in attrs:
        return found
    foreign = _foreign_entries(path)
    if foreign:
        return Found.other(f"a lazymask store with files lazymask did not write inside ({', '.join(foreign)})")
    incomplete = [name for name in _child_groups(str(path), "", str(path))
                  if not is_complete(str(path), name) and not _only_groups_below(path / name)]
    if incomplete:
        return Found.other(f"a lazymask store whose groups {incomplete[:3]} are not complete")
    return Found.complete("a complete lazymask store")


def _only_groups_below(path: Path) -> bool:
    """An intermediate group (``sub-01`` in ``sub-01/run-1``) whose groups are all complete."""
    children = _child_groups(str(path), "", str(path))
    return bool(children) and all(is_complete(str(path), c) or _only_groups_below(path / c) for c in children)
