"""Verifying a whole store: every lazymask group at or under a group, every chunk read once.

Contract
--------
* :func:`verify` checks, for every lazymask group at or under ``group`` (a ``to_zarr`` store, a
  ``save_signals`` group, an archive), what reads check (metadata as data, completeness, shapes,
  chunk grids, dtypes) and then every chunk's checksum, one chunk at a time (memory: one chunk),
  on any storage kind.
"""

from __future__ import annotations

from zarr.core.sync import sync

from lazymask.exceptions import ImageFileNotFoundError, NotNiftiError
from lazymask.io._integrity import verify_group_chunks
from lazymask.io._zarr_nifti import _read_nifti_zarr
from lazymask.io._zarr_read import _open_checked
from lazymask.io._zarr_schema import (
    COMPLETE_ATTR,
    META_ATTR,
    ROOT_ATTR,
    _attributes,
    _is_nifti_zarr,
    _join,
    _node_document,
    describe,
    normalise_group,
)
from lazymask.storage import State, list_keys, resolve

__all__ = ["verify"]


def verify(store, group: str | None = None, *, storage_options=None) -> dict:
    """Check a whole store without loading it: every chunk read once, one at a time.

    Checks, for every lazymask group at or under ``group`` (a ``to_zarr`` store, a
    ``save_signals`` group, an archive of many groups): the metadata parses as data; the group is
    complete; every array's shape, chunk grid and dtype are those recorded when it was written;
    every chunk exists and has the crc32c checksum recorded. A NIfTI-Zarr store written by another
    tool has no record: its header and level-0 shape are checked.

    Parameters
    ----------
    store : str, pathlib.Path, URL, zarr store or icechunk Repository/Session/IcechunkStore
    group : str, optional
        Where to start; the root when omitted.
    storage_options : dict, optional
        fsspec options for a URL (``{"anon": True}``, ``{"endpoint_url": ...}``).

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
    >>> import zarr, xarray as xr, lazymask
    >>> memory = zarr.storage.MemoryStore()
    >>> _ = lazymask.to_zarr(xr.DataArray([1.0, 2.0], dims="time"), memory)
    >>> verify(memory)["groups"]
    1
    """
    location = resolve(store, storage_options)
    group = normalise_group(group)
    base = location.zarr_store(read_only=True)
    totals = {"groups": 0, "arrays": 0, "chunks": 0, "bytes": 0}
    pending = [group]
    while pending:
        path = pending.pop()
        where = describe(location, path)
        settled = location.found_at(path) if path == group else None
        if settled is not None and settled.state is State.ABSENT:
            raise ImageFileNotFoundError(f"{where}: no such store or group.")
        document = _node_document(base, path, where)
        if document is None and path == group and settled is None and not list_keys(base, path):
            raise ImageFileNotFoundError(f"{where}: no such store or group.")
        attrs = _attributes(document, where)
        if isinstance(attrs.get(META_ATTR), dict) or COMPLETE_ATTR in attrs or _is_nifti_zarr(attrs):
            opened = _open_checked(location, path, where, base=base)
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
        pending.extend(_join(path, child) for child in sorted(child_groups(base, path, where), reverse=True))
    if totals["groups"] == 0:
        raise NotNiftiError(f"{describe(location, group)} holds no lazymask group to verify.")
    return totals


def child_groups(store, path: str, where: str) -> list[str]:
    """The names of the zarr groups directly below ``path`` (hidden and staging names skipped)."""
    async def children() -> list[str]:
        try:
            return [c async for c in store.list_dir(path)]
        except FileNotFoundError:
            return []

    names = [c for c in sync(children()) if not c.startswith(".") and c != "zarr.json"]
    groups = []
    for name in names:
        document = _node_document(store, _join(path, name), where)
        if document is not None and document.get("node_type") == "group":
            groups.append(name)
    return groups
