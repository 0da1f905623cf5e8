"""Opening a lazymask group for reading: metadata validated as data, chunk reads held to the manifest.

Contract
--------
* :func:`_open_checked` reads the group's ``zarr.json`` as data (bounded), checks the group is
  complete and its arrays' shapes, chunk grids and dtypes are those recorded, and opens it through
  a :class:`~lazymask.io._integrity.CheckedStore`: every chunk read is checked against the
  manifest, on every storage kind.
* Dask arrays read chunks through :class:`_SafeChunks`: any error while reading a chunk becomes a
  :class:`~lazymask.exceptions.CorruptStoreError` naming the store, the array and the chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

import dask.array as da
import numpy as np
import zarr

from lazymask.exceptions import CorruptStoreError, ImageFileNotFoundError, LazymaskError, NotNiftiError
from lazymask.io._integrity import CheckedStore, check_array_against_manifest, expected_chunks
from lazymask.io._integrity import MANIFEST_ATTR
from lazymask.io._zarr_schema import META_ATTR, _attributes, _is_nifti_zarr, _node_document, _validated_meta
from lazymask.storage import State, list_keys

__all__ = ["open_existing_group"]


def _read_store(location):
    """The read-only zarr store of a location (an icechunk repository: a read-only session on its branch)."""
    return location.zarr_store(read_only=True)


def _document_or_raise(location, store, group: str, where: str) -> dict:
    """The group's zarr.json; :class:`ImageFileNotFoundError` when nothing is there, NotNiftiError else."""
    settled = location.found_at(group)
    if settled is not None and settled.state is State.ABSENT:
        raise ImageFileNotFoundError(f"{where}: no such store or group.")
    document = _node_document(store, group, where)
    if document is None and settled is None and not list_keys(store, group):
        raise ImageFileNotFoundError(f"{where}: no such store or group.")
    if document is None or document.get("node_type") != "group":
        raise NotNiftiError(
            f"{where} is not a zarr group (" + ("no zarr.json" if document is None else
                                                f"a zarr {document.get('node_type')!r}")
            + "); open NIfTI files with lazymask.open_nifti."
        )
    return document


def open_existing_group(location, group: str, where: str) -> zarr.Group:
    """Open an existing zarr group read-only (metadata checked as data first), or raise naming it."""
    store = _read_store(location)
    _document_or_raise(location, store, group, where)
    return _open_group(store, group, where)


def _open_group(store, group: str, where: str) -> zarr.Group:
    try:
        return zarr.open_group(store, path=group, mode="r", zarr_format=3)
    except (LazymaskError, FileNotFoundError):
        raise
    except Exception as exc:  # zarr's own parse errors: ValueError, TypeError, KeyError, ...
        raise CorruptStoreError(f"{where}: zarr cannot open its metadata ({type(exc).__name__}: {exc}).") from None

@dataclass
class _Opened:
    zgroup: zarr.Group
    meta: dict
    manifest: dict
    foreign: bool = False


def _open_checked(location, group: str, where: str, *, base=None) -> _Opened:
    """Open a group for reading: metadata parsed as data and validated, chunk reads held to the manifest."""
    base = _read_store(location) if base is None else base
    document = _document_or_raise(location, base, group, where)
    attrs = _attributes(document, where)
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

