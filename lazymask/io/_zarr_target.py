"""A zarr group as a write target: what is there, the root it goes under, and its publication.

Contract
--------
* :func:`inspect_group` says what a group target holds (:class:`~lazymask.storage.Found`) on any
  storage kind, from its keys: nothing; a complete lazymask group of the writer's kind (its
  ``zarr.json`` has lazymask's metadata and ``lazymask_complete: true``, and every key below it is
  zarr metadata or a chunk of one of its arrays); an unfinished one (``lazymask_complete: false``,
  nothing else inside); or anything else. What only a file system has (symbolic links, regular
  files, empty directories) the location settles (``Location.found_at``).
* :func:`staged_group` writes one group: the target is inspected and the rule applied
  (:func:`~lazymask.storage.check_target`) before anything is written, the root and intermediate
  groups are required, and the location's publisher (:func:`~lazymask.storage.publisher_for`)
  stages, completes (:func:`mark_complete`: manifest, then ``lazymask_complete: true``) and
  publishes it. A group is written only under a root lazymask created (:func:`require_root`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import zarr

from lazymask.exceptions import CorruptStoreError, LazymaskError, UnsafeTargetError
from lazymask.io._integrity import MANIFEST_ATTR, record_manifest
from lazymask.io._zarr_schema import (
    _FAMILY,
    CLAIM_ATTRS,
    COMPLETE_ATTR,
    FORMAT_VERSION,
    KIND_NAMES,
    META_ATTR,
    ROOT_ATTR,
    _attributes,
    _join,
    _node_document,
    describe,
    normalise_group,
)
from lazymask.storage import (
    STAGING_TAG,
    Found,
    StagedGroup,
    State,
    check_target,
    list_keys,
    publisher_for,
    resolve,
)

__all__ = ["inspect_group", "check_group_target", "require_root", "staged_group", "mark_complete",
           "is_complete", "StagedGroup"]


# -- what is there --------------------------------------------------------------------------------
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
    if attrs.get(COMPLETE_ATTR) is False and set(attrs) <= CLAIM_ATTRS:
        return Found.stale(f"an unfinished {label}")
    if ROOT_ATTR in attrs or META_ATTR in attrs:
        return Found.other("a lazymask store root holding groups (an archive or store of several groups)")
    return Found.other("a zarr store lazymask did not write")


def _relative_keys(store, group: str) -> list[str]:
    """The keys below ``group`` (relative to it), without lazymask's staging entries."""
    start = len(group) + 1 if group else 0
    return [key[start:] for key in list_keys(store, group) if STAGING_TAG not in key[start:]]


def _foreign_keys(store, group: str, keys: list[str], where: str, limit: int = 5) -> list[str]:
    """Keys below a group that are neither zarr metadata nor chunks of one of its arrays."""
    nodes = {key[: -len("zarr.json")].rstrip("/") for key in keys if key.rsplit("/", 1)[-1] == "zarr.json"}
    arrays = set()
    for node in nodes:
        try:
            document = _node_document(store, _join(group, node), where) or {}
        except CorruptStoreError:
            document = {}
        if document.get("node_type") == "array":
            arrays.add(node)
    foreign = []
    for key in keys:
        if key.rsplit("/", 1)[-1] == "zarr.json":
            continue
        if any(key.startswith(f"{array}/c/" if array else "c/") for array in arrays):
            continue
        foreign.append(key)
        if len(foreign) == limit:
            break
    return foreign


def inspect_group(location, store, group: str, kind: str) -> Found:
    """What is at ``group`` of ``store``, for a writer of ``kind`` ("image", "array", "signals", "root").

    Examples
    --------
    >>> from lazymask.storage import resolve
    >>> inspect_group(resolve(zarr.storage.MemoryStore()), zarr.storage.MemoryStore(), "", "array").state
    <State.ABSENT: 'absent'>
    """
    family, label = _FAMILY.get(kind, kind), KIND_NAMES.get(kind, "lazymask store")
    settled = location.found_at(group)
    if settled is not None:
        return settled
    where = describe(location, group)
    try:
        document = _node_document(store, group, where)
    except CorruptStoreError as exc:
        return Found.other(f"a damaged zarr node ({exc})")
    keys = [key for key in _relative_keys(store, group) if key != "zarr.json"]
    if document is None:
        return Found.other(f"keys lazymask did not write ({keys[0]!r}, ...)") if keys else Found.absent()
    found = _classify(_attributes(document, where), family, label)
    if found.state in (State.COMPLETE, State.STALE):
        foreign = _foreign_keys(store, group, keys, where)
        if foreign:
            return Found.other(f"{found.description} with files lazymask did not write inside ({', '.join(foreign)})")
    return found


def check_group_target(store, group: str, *, kind: str, overwrite: bool, storage_options=None) -> bool:
    """Apply the data-safety rule to a zarr target; return whether a complete group is replaced.

    See :func:`lazymask.storage.check_target` for the rule; this says what counts as "a complete
    lazymask store of the same kind" for a zarr group (:func:`inspect_group`), and whether the
    location can replace one (its publisher).

    Examples
    --------
    >>> check_group_target(zarr.storage.MemoryStore(), "run-1", kind="signals", overwrite=False)
    False
    """
    location = resolve(store, storage_options)
    group = normalise_group(group)
    with location.transaction(f"lazymask: check {group!r}") as location:
        zstore = location.zarr_store()
        found = inspect_group(location, zstore, group, kind)
    return check_target(describe(location, group), found, kind=KIND_NAMES[kind], overwrite=overwrite,
                        replaceable=publisher_for(location).replaceable)


# -- the root a group goes under ------------------------------------------------------------------------
def _is_lazymask_root(attrs: dict) -> bool:
    return ROOT_ATTR in attrs or isinstance(attrs.get(META_ATTR), dict) or COMPLETE_ATTR in attrs


def _create_group(location, store, path: str, attributes: dict) -> None:
    """Create the group ``path`` unless one is there (a concurrent writer's is fine); create-only."""
    import json

    document = json.dumps({"zarr_format": 3, "node_type": "group", "attributes": attributes}).encode()
    location.put_if_absent(store, _join(path, "zarr.json"), document)


def require_root(store, group: str = "", *, storage_options=None, _zstore=None) -> None:
    """Make sure the groups above ``group`` exist in a store lazymask created (creating them if absent).

    A new store is created with a root marked ``lazymask_root`` (an archive may add its own
    attributes to that root; it stays lazymask's while it keeps ``lazymask_root`` or ``lazymask``).
    An existing store must be one that lazymask created (a lazymask store, archive or staging);
    groups above ``group`` must be zarr groups. Anything else raises :class:`UnsafeTargetError`
    and nothing is written. On an icechunk repository, the groups are created in one commit; on
    a session, in the session (its owner commits).

    Examples
    --------
    >>> memory = zarr.storage.MemoryStore()
    >>> require_root(memory, "sub-01/run-1")           # creates the root and sub-01
    >>> sorted(zarr.open_group(memory, mode="r").attrs)
    ['lazymask_root']
    """
    location = resolve(store, storage_options)
    group = normalise_group(group)
    with location.transaction(f"lazymask: create the groups above {group!r}") as location:
        _require_root(location, location.zarr_store() if _zstore is None else _zstore, group)


def _require_root(location, store, group: str) -> None:
    where = describe(location, "")
    location.check_parent()
    settled = location.found_at("")
    document = None if settled is not None else _node_document(store, "", where)
    if (settled is not None and settled.state is State.ABSENT) or (
            settled is None and document is None and not _relative_keys(store, "")):
        _create_group(location, store, "", {ROOT_ATTR: {"format_version": FORMAT_VERSION}})
    elif settled is not None or document is None or not _is_lazymask_root(_attributes(document, where)):
        found = settled or inspect_group(location, store, "", "root")
        raise UnsafeTargetError(
            f"{where} holds {found.description}: lazymask writes a group only into a store it created "
            "(a lazymask store or archive), never into another directory or zarr store, whatever "
            "overwrite says. Choose another store."
        )
    parts = group.split("/")[:-1]
    for depth in range(1, len(parts) + 1):
        _require_intermediate(location, store, "/".join(parts[:depth]))


def _require_intermediate(location, store, path: str) -> None:
    where = describe(location, path)
    settled = location.found_at(path)
    if settled is not None and settled.state is not State.ABSENT:
        raise UnsafeTargetError(
            f"{where} exists and is not a zarr group lazymask created ({settled.description}); lazymask "
            "will not write a group inside it. Choose another group name."
        )
    document = _node_document(store, path, where)
    if document is None:
        if settled is None and _relative_keys(store, path):
            raise UnsafeTargetError(f"{where} holds keys lazymask did not write; lazymask will not write a "
                                    "group inside it. Choose another group name.")
        _create_group(location, store, path, {})
        document = _node_document(store, path, where) or {}
    if document.get("node_type") != "group":
        raise UnsafeTargetError(f"{where} is a zarr {document.get('node_type')!r}, not a group; "
                                "lazymask will not write a group inside it.")


# -- writing a group: inspected, staged, completed last, published ----------------------------------------
def mark_complete(staged: StagedGroup) -> None:
    """Record the group's manifest, then ``lazymask_complete: true`` (the last write of a group)."""
    zgroup = staged.open()
    zgroup.attrs.update({MANIFEST_ATTR: record_manifest(zgroup)})
    zgroup.attrs.update({COMPLETE_ATTR: True})


_mark_complete = mark_complete


@contextlib.contextmanager
def staged_group(store, group: str | None = None, *, overwrite: bool = False, kind: str = "array",
                 storage_options=None) -> Iterator[StagedGroup]:
    """Write one zarr group so that it is visible only once complete, on any storage kind.

    The target is checked first (only a complete lazymask group of the same kind may be replaced,
    and only with ``overwrite=True`` where the storage can do it safely; anything else is
    refused). The block writes the group's arrays into the yielded group; when it ends without
    error, the group's manifest is recorded and ``lazymask_complete: true`` written last, and the
    location's publisher makes it visible: a rename (local directory), the completion of a group
    claimed create-only (object store), or a transaction (icechunk; committed here for a
    repository, by its owner for a session).

    Parameters
    ----------
    store : str, pathlib.Path, URL, zarr store, icechunk Repository/Session/IcechunkStore or Location
        Where the zarr store is.
    group : str, optional
        Path of the group inside the store (``"sub-01/run-1"``); the root when omitted.
    overwrite : bool, default False
        Replace a complete lazymask group of the same kind already there (once the new one is
        complete).
    kind : {"array", "image", "signals"}
        What the group holds (decides what may be replaced).
    storage_options : dict, optional
        fsspec options for a URL.

    Yields
    ------
    StagedGroup
        Open it (``staged.open()``) to add arrays and attributes.

    Examples
    --------
    >>> memory = zarr.storage.MemoryStore()
    >>> with staged_group(memory, "run-1") as staged:
    ...     staged.open().attrs["note"] = "hello"
    >>> is_complete(memory, "run-1")
    True
    """
    location = resolve(store, storage_options)
    group = normalise_group(group)
    with location.transaction(f"lazymask: write {KIND_NAMES[kind]} at {group or '/'!r}") as location:
        zstore = location.zarr_store()
        publisher = publisher_for(location)
        where = describe(location, group)
        if group:  # refuse before creating a root
            check_target(where, inspect_group(location, zstore, group, kind), kind=KIND_NAMES[kind],
                         overwrite=overwrite, replaceable=publisher.replaceable)
            _require_root(location, zstore, group)
        else:
            location.check_parent()
        with publisher.staged_group(location, zstore, group, kind=KIND_NAMES[kind], overwrite=overwrite,
                                    inspect=lambda loc, st, path: inspect_group(loc, st, path, kind),
                                    claim={COMPLETE_ATTR: False}, finish=mark_complete, where=where) as staged:
            yield staged


def is_complete(store, group: str | None = None, *, storage_options=None) -> bool:
    """Whether ``store`` holds a complete lazymask group at ``group`` (reads its metadata only).

    Parameters
    ----------
    store : str, pathlib.Path, URL, zarr store or icechunk Repository/Session/IcechunkStore
        The zarr store (it need not exist).
    group : str, optional
        The group inside the store; the root when omitted.
    storage_options : dict, optional
        fsspec options for a URL.

    Returns
    -------
    bool
        True when a write by lazymask finished there; False when there is nothing, an
        interrupted write, damaged metadata, or a group lazymask did not write.

    Examples
    --------
    >>> is_complete(zarr.storage.MemoryStore(), "sub-01/run-1")
    False
    """
    location = resolve(store, storage_options)
    group = normalise_group(group)
    try:
        if location.found_at(group) is not None:
            return False
        attrs = _attributes(_node_document(location.zarr_store(read_only=True), group, ""), "")
    except (LazymaskError, OSError):
        return False
    return attrs.get(COMPLETE_ATTR) is True and isinstance(attrs.get(MANIFEST_ATTR), dict)

