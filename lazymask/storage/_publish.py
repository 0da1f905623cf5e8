"""How a result becomes visible at its target: one publisher per storage capability.

Contract
--------
* :func:`publisher_for` chooses the publisher from a location's :class:`Capabilities` (never from
  the type of what the user gave):

  ==================  ===========================  ==============================================
  capability          publisher                    how a zarr group is published
  ==================  ===========================  ==============================================
  ``transactional``   :class:`TransactionPublisher`  written in place inside a writable icechunk
                                                   session; an old group is deleted in the same
                                                   session; visible at the commit (lazymask's,
                                                   for a repository; the owner's, for a session)
  ``atomic_rename``   :class:`RenamePublisher`     staged beside the target, renamed onto it
                                                   (:func:`~lazymask.storage.staged_path`)
  ``conditional_put`` :class:`InPlacePublisher`    the target claimed by a create-only write of
                                                   its ``zarr.json``, chunks written in place,
                                                   manifest and ``lazymask_complete`` last
  ==================  ===========================  ==============================================

  No publisher ever copies data: what is written is where it stays.
* Every publisher inspects the target once before writing (the caller's ``inspect``) and applies
  the one rule, :func:`~lazymask.storage.check_target`; and inspects it once more before
  publishing. A publisher that cannot replace a complete result safely (in place) tells the
  rule so (``replaceable=False``): replacing then is refused, never done with a window where
  neither the old nor the new result exists.
* What a group holds and what "complete" means are the caller's (``claim`` attributes, ``finish``
  writing the manifest and ``lazymask_complete: true``); publishers know only keys and nodes.
"""

from __future__ import annotations

import contextlib
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from lazymask.exceptions import ParameterError, UnsafeTargetError
from lazymask.storage._location import Location, LocalLocation
from lazymask.storage._rename import STAGING_TAG, staged_path
from lazymask.storage._target import Found, State, check_target

__all__ = ["StagedGroup", "Publisher", "RenamePublisher", "InPlacePublisher", "TransactionPublisher",
           "publisher_for", "CLAIM_ATTR", "delete_prefix", "list_keys", "read_bounded"]

CLAIM_ATTR = "lazymask_claim"
"""Attribute of a group's first ``zarr.json``: a token naming the write that claimed it."""

#: ``inspect(location, store, path) -> Found``: what is at ``path`` of ``store``
Inspect = Callable[[Location, object, str], Found]


@dataclass
class StagedGroup:
    """Where a writer puts a group's arrays: a zarr store and the group's path inside it.

    Examples
    --------
    >>> import zarr
    >>> staged = StagedGroup(zarr.storage.MemoryStore(), "run-1")
    >>> staged.open("w").attrs.asdict()
    {}
    """

    store: object
    path: str

    def open(self, mode: str = "r+"):
        """The group, opened with zarr (format 3)."""
        import zarr

        return zarr.open_group(self.store, path=self.path, mode=mode, zarr_format=3)


def _join(*parts: str) -> str:
    return "/".join(p for p in parts if p)


def list_keys(store, prefix: str) -> list[str]:
    """Every key under ``prefix`` of a zarr store (relative to the store).

    Examples
    --------
    >>> import zarr
    >>> store = zarr.storage.MemoryStore()
    >>> _ = zarr.open_group(store, path="a", mode="w")
    >>> list_keys(store, "a")
    ['a/zarr.json']
    """
    from zarr.core.sync import sync

    prefix = f"{prefix}/" if prefix and not prefix.endswith("/") else prefix

    async def keys() -> list[str]:
        try:
            return [key async for key in store.list_prefix(prefix)]
        except FileNotFoundError:
            return []
        except Exception as exc:  # icechunk: a prefix that names no node holds no key
            if "bad key prefix" in str(exc):
                return []
            raise

    return sorted(sync(keys()))


def read_bounded(store, key: str, limit: int) -> bytes | None:
    """The bytes at ``key`` of a zarr store, reading at most ``limit + 1`` of them; None when absent.

    One ranged request on object stores, whatever the object's size. icechunk keeps metadata in
    its snapshots (no byte ranges there): its ``zarr.json`` is read whole.
    """
    from zarr.abc.store import RangeByteRequest
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    from zarr.storage import WrapperStore

    inner = store
    while isinstance(inner, WrapperStore):
        inner = inner._store
    ranged = not (type(inner).__module__ or "").startswith("icechunk")
    request = RangeByteRequest(0, limit + 1) if ranged else None
    buffer = sync(store.get(key, default_buffer_prototype(), request))
    return None if buffer is None else buffer.to_bytes()


def delete_prefix(store, prefix: str, *, last: str | None = None) -> None:
    """Delete every key under ``prefix`` (``last``, if given, after all the others).

    Deleting a claimed group's ``zarr.json`` last means an interruption leaves an unfinished
    group (that the next write with ``overwrite=True`` replaces), never keys without a node.
    """
    from zarr.core.sync import sync

    keys = [key for key in list_keys(store, prefix) if key != last]

    async def delete() -> None:
        for key in keys + ([last] if last else []):
            with contextlib.suppress(FileNotFoundError):
                await store.delete(key)

    sync(delete())


class _GatedStore:
    """A store whose writes can be stopped: after :meth:`close`, a write raises; close waits for those in flight.

    A failed dask task does not stop the tasks already running: they would write their chunks
    after the publisher deleted what the write left. Closing the gate first, and waiting for the
    writes in flight, makes the deletion final. (Pickled -- on a process or distributed scheduler
    -- it is the store itself: each process has its own gate.)
    """

    def __new__(cls, store):
        from zarr.storage import WrapperStore

        class GatedStore(WrapperStore):
            def __init__(self, inner):
                super().__init__(inner)
                self._gate = threading.Condition()
                self._closed = False
                self._in_flight = 0

            def __reduce__(self):
                return (_identity, (self._store,))

            def close_gate(self, timeout: float = 120.0) -> None:
                with self._gate:
                    self._closed = True
                    self._gate.wait_for(lambda: self._in_flight == 0, timeout)

            async def _guarded(self, write):
                with self._gate:
                    if self._closed:
                        raise UnsafeTargetError("this write was abandoned (an earlier task failed); nothing more is written.")
                    self._in_flight += 1
                try:
                    return await write
                finally:
                    with self._gate:
                        self._in_flight -= 1
                        self._gate.notify_all()

            async def set(self, key, value):
                return await self._guarded(self._store.set(key, value))

            async def set_if_not_exists(self, key, value):
                return await self._guarded(self._store.set_if_not_exists(key, value))

        return GatedStore(store)


def _identity(store):
    return store


def _group_document(attributes: dict) -> bytes:
    return json.dumps({"zarr_format": 3, "node_type": "group", "attributes": attributes}).encode()


class Publisher:
    """How one storage capability publishes a zarr group (see the module's contract)."""

    #: whether a complete result can be replaced with no window where neither exists
    replaceable = True

    def staged_group(self, location: Location, store, group: str, *, inspect: Inspect, kind: str,
                     overwrite: bool, claim: dict, finish: Callable[[StagedGroup], None],
                     where: str) -> contextlib.AbstractContextManager[StagedGroup]:
        """Yield where to write the group; publish it when the block ends without error.

        Parameters
        ----------
        location : Location
            Where the store is.
        store : zarr store
            ``location.zarr_store()``, opened once for the whole job.
        group : str
            The group's path inside the store ("" for the root).
        inspect : callable
            ``inspect(location, store, path) -> Found`` (the writer's kind-specific inspection).
        kind : str
            What is written (for messages and the rule).
        overwrite : bool
            The user's ``overwrite``.
        claim : dict
            Attributes of the group's first ``zarr.json`` (it says "unfinished").
        finish : callable
            Writes the completeness marker (manifest, ``lazymask_complete``), last.
        where : str
            How to name the target in messages.
        """
        raise NotImplementedError


class RenamePublisher(Publisher):
    """A local directory: staged beside the target, renamed onto it (the rename protocol)."""

    @contextlib.contextmanager
    def staged_group(self, location, store, group, *, inspect, kind, overwrite, claim, finish, where):
        import zarr

        target = location.path / group if group else location.path
        with staged_path(target, kind=kind, overwrite=overwrite, directory=True, describe=where,
                         inspect=lambda path: inspect(LocalLocation(Path(path)), zarr.storage.LocalStore(str(path)), ""),
                         mark_complete=lambda path: finish(StagedGroup(str(path), ""))) as staging:
            zarr.open_group(str(staging), mode="w", zarr_format=3, attributes=claim)
            yield StagedGroup(str(staging), "")


class InPlacePublisher(Publisher):
    """An object store without transactions: claimed create-only, written in place, completed last.

    A complete group is never replaced here (``replaceable`` is False): there is no operation that
    swaps a whole group at once. An unfinished group is replaced only with ``overwrite=True``.
    """

    replaceable = False

    @contextlib.contextmanager
    def staged_group(self, location, store, group, *, inspect, kind, overwrite, claim, finish, where):
        key = _join(group, "zarr.json")
        replace = check_target(where, inspect(location, store, group), kind=kind, overwrite=overwrite,
                               replaceable=self.replaceable)
        if replace:  # an unfinished group (never a complete one here): its claim goes last
            delete_prefix(store, group, last=key)
        token = uuid.uuid4().hex
        if not location.put_if_absent(store, key, _group_document({**claim, CLAIM_ATTR: token})):
            raise UnsafeTargetError(
                f"{where} was claimed by another writer while lazymask was about to write it (its "
                "zarr.json appeared); nothing was written. Two jobs write the same target: choose one."
            )
        gated = _GatedStore(store)
        staged = StagedGroup(gated, group)
        try:
            yield staged
            if _claim_token(store, key) != token:  # the target, once more, before completing it
                raise UnsafeTargetError(
                    f"{where} was taken over by another writer (overwrite=True) while lazymask wrote it; "
                    "this write is abandoned and not marked complete."
                )
            finish(staged)
        except BaseException:
            gated.close_gate()  # tasks still running write nothing more
            if _claim_token(store, key) == token:
                with contextlib.suppress(Exception):
                    delete_prefix(store, group, last=key)
            raise


def _claim_token(store, key: str) -> str | None:
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    try:
        buffer = sync(store.get(key, default_buffer_prototype()))
        document = json.loads(buffer.to_bytes()) if buffer is not None else {}
        return document.get("attributes", {}).get(CLAIM_ATTR)
    except (ValueError, AttributeError, OSError):
        return None


class TransactionPublisher(Publisher):
    """An icechunk session: the group written in place inside it; visible at the commit.

    The location must be a session (``location.transaction(message)`` opens one on a
    repository and commits it). Replacing a complete group deletes the old one inside the same
    session: until the commit, the repository still holds the old one, and a session that is
    not committed (an error, an interrupted job) leaves it there.
    """

    @contextlib.contextmanager
    def staged_group(self, location, store, group, *, inspect, kind, overwrite, claim, finish, where):
        from zarr.core.buffer import default_buffer_prototype
        from zarr.core.sync import sync

        if getattr(location, "session", None) is None:
            raise ParameterError(f"{where}: open the transaction first (location.transaction(message)).")
        replace = check_target(where, inspect(location, store, group), kind=kind, overwrite=overwrite,
                               replaceable=self.replaceable)
        if replace:
            delete_prefix(store, group)
        buffer = default_buffer_prototype().buffer.from_bytes(_group_document(claim))
        sync(store.set(_join(group, "zarr.json"), buffer))
        gated = _GatedStore(store)
        staged = StagedGroup(gated, group)
        try:
            yield staged
            found = inspect(location, store, group)  # once more before completing it
            if found.state not in (State.STALE, State.COMPLETE):
                raise UnsafeTargetError(f"{where} changed while lazymask wrote it ({found.description}).")
            finish(staged)
        except BaseException as exc:
            gated.close_gate()
            if not getattr(location, "commits", False):
                exc.add_note(
                    f"lazymask: the icechunk session now holds an unfinished group at {where}"
                    + (" (the old one deleted)" if replace else "")
                    + "; do not commit it: call session.discard_changes() or drop the session."
                )
            raise


_RENAME, _IN_PLACE, _TRANSACTION = RenamePublisher(), InPlacePublisher(), TransactionPublisher()


def publisher_for(location: Location) -> Publisher:
    """The publisher of a location, from its capabilities.

    Examples
    --------
    >>> from lazymask.storage import resolve
    >>> type(publisher_for(resolve("out.zarr"))).__name__
    'RenamePublisher'
    >>> type(publisher_for(resolve("memory://out.zarr"))).__name__
    'InPlacePublisher'
    """
    capabilities = location.capabilities
    if capabilities.transactional:
        return _TRANSACTION
    if capabilities.atomic_rename:
        return _RENAME
    if capabilities.conditional_put:
        return _IN_PLACE
    raise UnsafeTargetError(
        f"{location.describe()}: lazymask cannot write there safely (no atomic rename, no create-only "
        "write, no transaction; an https:// server, for example). Write to a local path, an object "
        "store (s3://, gs://, az://) or an icechunk repository."
    )


def is_staging_name(name: str) -> bool:
    """Whether a key's first part is a staging name (``.<name>.lazymask-tmp-...``) or hidden."""
    return name.startswith(".") or STAGING_TAG in name


@contextlib.contextmanager
def staged_file(location: Location, *, kind: str, overwrite: bool,
                inspect: Callable[[Location], Found]) -> Iterator[Path]:
    """Yield a local path to write one file to; publish it at ``location`` when the block succeeds.

    A local path: the rename protocol (staged beside the target, renamed onto it). An object
    store: staged in a local temporary directory, then uploaded in **one** request -- create-only
    when nothing may be replaced, else a plain PUT, which an object store applies atomically
    (readers see the old object or the new one, never a part). The rule
    (:func:`~lazymask.storage.check_target`) is applied before and again before publishing.

    Examples
    --------
    >>> from lazymask.storage import resolve
    >>> with staged_file(resolve("memory://doc/notes.txt"), kind="text file", overwrite=False,
    ...                  inspect=lambda location: location.found_at(directory=False) or Found.other("?")) as path:
    ...     _ = path.write_text("hello")
    >>> resolve("memory://doc/notes.txt").read_head(5)
    b'hello'
    """
    import tempfile

    capabilities = location.capabilities
    if capabilities.atomic_rename:
        with staged_path(location.path, kind=kind, overwrite=overwrite, directory=False,
                         inspect=lambda path: inspect(LocalLocation(Path(path)))) as staging:
            yield staging
        return
    if capabilities.transactional or not hasattr(location, "put_file"):
        raise ParameterError(
            f"{location.describe()}: a {kind} is written to a local path or an object store URL "
            "(s3://, gs://, memory://), not into a zarr store or an icechunk repository."
        )
    where = location.describe()
    replace = check_target(where, inspect(location), kind=kind, overwrite=overwrite)
    with tempfile.TemporaryDirectory(prefix="lazymask-upload-") as directory:
        staging = Path(directory) / where.rstrip("/").rsplit("/", 1)[-1]
        yield staging
        replace = check_target(where, inspect(location), kind=kind, overwrite=overwrite or replace)
        location.put_file(staging, replace=replace)
