"""What the command line finds at a whole-store target (``convert``/``extract --out``).

Contract
--------
* :func:`inspect_store` classifies a whole store for a writer that replaces it: complete when it is
  a complete lazymask group of the kind, or a lazymask root whose groups are all complete (an
  archive, a store of one group per run) holding nothing lazymask did not write; anything else
  is "other" (refused by :func:`~lazymask.storage.check_target`). Works on every storage kind.
"""

from __future__ import annotations

from lazymask.exceptions import CorruptStoreError
from lazymask.io._zarr_schema import ROOT_ATTR, _attributes, _join, _node_document
from lazymask.io._zarr_target import _foreign_keys, _relative_keys, inspect_group, is_complete
from lazymask.io._zarr_verify import child_groups
from lazymask.storage import Found, State, resolve

__all__ = ["inspect_store"]


def inspect_store(path, kind: str = "signals", *, storage_options=None) -> Found:
    """What is at ``path``, for a writer that replaces a whole lazymask store (the command line).

    Complete: a complete lazymask group of ``kind`` ("signals" or "array"), or a lazymask root
    whose groups are all complete lazymask groups (an archive, a store of one group per run),
    holding no file lazymask did not write. Anything else is "other" (refused by
    :func:`lazymask.io.check_target`).

    Parameters
    ----------
    path : str, pathlib.Path, URL, zarr store or icechunk Repository/Session
        The store.
    kind : {"signals", "array"}
        What the writer writes.
    storage_options : dict, optional
        fsspec options for a URL.

    Returns
    -------
    lazymask.storage.Found

    Examples
    --------
    >>> inspect_store("/no/such/out.zarr").state
    <State.ABSENT: 'absent'>
    """
    location = resolve(path, storage_options)
    if location.found_at("") is not None:
        return location.found_at("")
    store = location.zarr_store(read_only=True)
    found = inspect_group(location, store, "", kind)
    if found.state is not State.OTHER:
        return found
    try:
        document = _node_document(store, "", str(location))
        attrs = _attributes(document, str(location))
    except CorruptStoreError:
        return found
    if document is None or ROOT_ATTR not in attrs:
        return found
    foreign = _foreign_keys(store, "", [k for k in _relative_keys(store, "") if k != "zarr.json"], str(location))
    if foreign:
        return Found.other(f"a lazymask store with files lazymask did not write inside ({', '.join(foreign)})")
    incomplete = [name for name in child_groups(store, "", str(location))
                  if not is_complete(location, name) and not _only_groups_below(location, store, name)]
    if incomplete:
        return Found.other(f"a lazymask store whose groups {incomplete[:3]} are not complete")
    return Found.complete("a complete lazymask store")


def _only_groups_below(location, store, path: str) -> bool:
    """An intermediate group (``sub-01`` in ``sub-01/run-1``) whose groups are all complete."""
    children = child_groups(store, path, str(location))
    return bool(children) and all(is_complete(location, _join(path, c)) or _only_groups_below(location, store, _join(path, c))
                                  for c in children)
