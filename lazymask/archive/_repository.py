"""Where an archive lives: an icechunk repository, opened or created from what the user gave.

Contract
--------
* :func:`open_repository` is the one place that turns ``store`` (a local path, an ``s3://bucket/
  prefix`` URL with fsspec-style ``storage_options``, or an ``icechunk.Repository``) into a
  repository. A local path or prefix holding nothing becomes a new repository (``create=True``); an
  icechunk repository is opened; anything else -- a directory or zarr store lazymask did not write,
  an archive of the former plain-zarr format -- is refused with :class:`UnsafeTargetError`, and
  nothing is written. A reader (``create=False``) of a repository another builder is creating
  (only icechunk's entries there, or no commit yet) is told so at once (:func:`being_built_error`:
  "being created by a builder: no commit yet"), never "not a lazymask archive".
* Every change goes through :func:`transact`: a fresh writable session at the branch's tip, the
  caller's change applied to it (forks holding run groups merged in, then the root record read,
  merged and written), one commit. When another builder committed meanwhile icechunk raises
  ``ConflictError`` and the whole step is redone on the new tip, so no builder's runs or index rows
  are lost. On a local disk, where icechunk cannot make a commit atomic between processes, commits
  are serialised by an ``fcntl`` lock on ``<repository>/.lazymask-lock`` (icechunk ignores files at
  the repository's top level).
* Storage options are never shown in messages (they may hold secrets).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import random
import re
import time
from pathlib import Path

from lazymask.exceptions import ImageFileNotFoundError, ParameterError, UnsafeTargetError
from lazymask.storage import (
    LOCK_NAME,
    IcechunkLocation,
    LocalLocation,
    ObjectLocation,
    commit_lock,
    resolve,
    storage_error,
)

BUILD_TAG = re.compile(r"^build-(\d+)$")
_S3_NAMES = {"endpoint_url", "key", "secret", "token", "anon", "region", "region_name", "client_kwargs",
             "use_ssl", "requester_pays"}


class Target:
    """An archive's repository, how to name it in messages, and its commit lock (local disks)."""

    def __init__(self, repository, description: str, lock_path: Path | None = None):
        self.repository, self.description, self.lock_path = repository, description, lock_path

    @property
    def forkable(self) -> bool:
        """Whether sessions can be forked (not in memory: a fork's copy of memory storage is empty)."""
        return "memory" not in str(getattr(self.repository, "storage", "")).lower()

    def lock(self):
        """Hold the repository's commit lock (local repositories only; object stores need none)."""
        return commit_lock(self.lock_path.parent) if self.lock_path is not None else contextlib.nullcontext()


def _quiet_icechunk() -> None:
    """icechunk's warning on local storage is answered by our lock; keep its log to errors."""
    import icechunk

    if not os.environ.get("ICECHUNK_LOG"):
        with contextlib.suppress(Exception):
            icechunk.set_logs_filter("error")


def s3_storage(url: str, options) -> object:
    """icechunk's S3 storage for ``s3://bucket/prefix``, from fsspec/s3fs-style ``storage_options``.

    ``endpoint_url`` (or ``client_kwargs.endpoint_url``), ``key``/``secret``/``token``, ``anon``,
    ``region``/``region_name``/``client_kwargs.region_name``; without credentials, icechunk reads
    the usual ``AWS_*`` environment variables and ``~/.aws``.
    """
    import icechunk

    options = dict(options or {})
    unknown = sorted(set(options) - _S3_NAMES)
    if unknown:
        raise ParameterError(f"storage_options {unknown} are not understood for an icechunk archive on S3; "
                             f"use some of {sorted(_S3_NAMES)}.")
    client = dict(options.get("client_kwargs") or {})
    endpoint = options.get("endpoint_url") or client.get("endpoint_url")
    region = options.get("region") or options.get("region_name") or client.get("region_name")
    bucket, _, prefix = url.split("://", 1)[1].partition("/")
    if not bucket:
        raise ParameterError(f"store={url!r}: expected s3://bucket/prefix.")
    credentials = {}
    if options.get("anon"):
        credentials["anonymous"] = True
    elif options.get("key") or options.get("secret"):
        credentials.update(access_key_id=options.get("key"), secret_access_key=options.get("secret"),
                           session_token=options.get("token"))
    else:
        credentials["from_env"] = True
    return icechunk.s3_storage(
        bucket=bucket, prefix=prefix.strip("/") or None, region=region, endpoint_url=endpoint,
        allow_http=bool(endpoint and str(endpoint).startswith("http://")), force_path_style=bool(endpoint),
        requester_pays=bool(options.get("requester_pays")), **credentials)


def _refuse_local(path: Path) -> None:
    """Refuse a local path that holds something other than an icechunk repository (or nothing)."""
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise UnsafeTargetError(f"store={str(path)!r} exists and is not a directory; an archive is an icechunk "
                                "repository (a directory). Choose a new path.")
    if (path / "zarr.json").is_file():
        text = (path / "zarr.json").read_text(errors="replace")[:1_000_000]
        if '"lazymask_archive"' in text:
            raise UnsafeTargetError(
                f"store={str(path)!r} holds a lazymask archive of the former plain-zarr format; archives are "
                "icechunk repositories now. Build it again into a new path (build_archive(bids_dir, "
                "'new-archive', masker, ...) with the same arguments; the old one stays readable with zarr), "
                "then remove the old one yourself.")
    raise UnsafeTargetError(
        f"store={str(path)!r} exists and is not a lazymask archive (not an icechunk repository); lazymask "
        "never writes into what it did not create: choose a new path (or remove it yourself).")


def open_repository(store, storage_options=None, *, create: bool) -> Target:
    """The archive's repository (see the module's contract); None-free: raises when there is none.

    Examples
    --------
    >>> import icechunk
    >>> target = open_repository(icechunk.Repository.create(icechunk.in_memory_storage()), create=True)
    >>> target.description
    'icechunk repository (in memory)'
    """
    import icechunk

    _quiet_icechunk()
    if isinstance(store, icechunk.Repository):
        if storage_options:
            raise ParameterError("storage_options apply to URLs only; a Repository carries its own storage.")
        return Target(store, _describe_repository(store))
    if isinstance(store, icechunk.Session | icechunk.IcechunkStore):
        raise ParameterError("store: give the icechunk Repository (lazymask opens its own sessions and commits "
                             "them), a local path or an s3:// URL, not a session or its store.")
    if not isinstance(store, str | os.PathLike):
        raise ParameterError(f"store={store!r}: expected a local path, an s3://bucket/prefix URL or an "
                             "icechunk.Repository.")
    location = resolve(store, storage_options)
    if isinstance(location, LocalLocation):
        path = location.path
        if not path.parent.is_dir():
            raise ParameterError(f"store={str(path)!r}: the directory {str(path.parent)!r} does not exist.")
        storage = icechunk.local_filesystem_storage(str(path.absolute()))
        exists = path.is_dir() and icechunk.Repository.exists(storage)
        description, lock = str(store), path / LOCK_NAME
        if not exists and path.exists():
            if not _being_created(path):
                _refuse_local(path)
            if not create:  # a reader polling a repository being created: say so now, do not wait
                raise being_built_error(description)
            if any(path.iterdir()):
                exists = _wait_for_repository(storage)
    elif isinstance(location, ObjectLocation) and location.protocol == "s3":
        storage = s3_storage(location.url, location.options)
        exists = icechunk.Repository.exists(storage)
        description, lock = location.url, None
        entries = set() if exists else _object_entries(location)
        if entries and entries <= _ICECHUNK_ENTRIES:  # another builder is creating it
            if not create:
                raise being_built_error(description)
            exists = _wait_for_repository(storage)
        elif entries:
            raise UnsafeTargetError(
                f"store={location.url!r} holds objects that are not an icechunk repository; lazymask never "
                "writes into what it did not create: choose a new prefix.")
    elif isinstance(location, IcechunkLocation):  # pragma: no cover - handled above
        return Target(location.repository, location.describe())
    else:
        raise ParameterError(f"store={str(store)!r}: an archive is an icechunk repository on a local disk or on "
                             "S3 (s3://bucket/prefix); for another place, make the icechunk.Repository yourself "
                             "and pass it.")
    if not exists and not create:
        raise ImageFileNotFoundError(f"store={description!r}: no archive there (build it with build_archive).")
    if exists:
        repository = icechunk.Repository.open(storage)
    else:
        try:
            repository = icechunk.Repository.create(storage, config=_repository_config())
        except icechunk.IcechunkError:  # another builder created it at the same moment
            repository = icechunk.Repository.open(storage)
    if lock is not None and not lock.exists():
        with contextlib.suppress(OSError):  # read-only: a resume with nothing to do needs no lock
            lock.touch()
    return Target(repository, description, lock)


INLINE_CHUNK_BYTES = 60 * 2**10  # icechunk keeps the threshold in 16 bits
"""Chunks up to this size are kept inside icechunk's manifests instead of one object each. Region
signals are small (a 60-volume run of 15 regions: 3.6 kB) and an object store charges a request per
object: a 20-run archive on the loopback S3 server took 1.39x the local disk with icechunk's
default (512 bytes), measured by benchmarks/bench_archive_storage.py."""


def _repository_config():
    import icechunk

    config = icechunk.RepositoryConfig.default()
    config.inline_chunk_threshold_bytes = INLINE_CHUNK_BYTES
    return config


_ICECHUNK_ENTRIES = {"refs", "snapshots", "chunks", "manifests", "transactions", "config.yaml", "repo", LOCK_NAME}


def _being_created(path: Path) -> bool:
    """Whether ``path`` holds only what icechunk writes (a repository another builder is creating)."""
    return path.is_dir() and not path.is_symlink() and {entry.name for entry in path.iterdir()} <= _ICECHUNK_ENTRIES


def being_built_error(description: str) -> ImageFileNotFoundError:
    """What a reader is told of a repository that holds no commit of an archive yet (being created).

    Examples
    --------
    >>> print(being_built_error("archive"))
    store='archive' is being created by a builder: no commit yet; try again when it has committed (...).
    """
    return ImageFileNotFoundError(
        f"store={description!r} is being created by a builder: no commit yet; try again when it has committed "
        "(if no build_archive is running, nothing was committed there: build the archive into it).")


def is_initial_snapshot(repository, snapshot_id: str) -> bool:
    """Whether ``snapshot_id`` is the repository's first snapshot (icechunk's, before any commit)."""
    return len(list(repository.ancestry(snapshot_id=snapshot_id))) == 1


def _wait_for_repository(storage, seconds: float = 10.0) -> bool:
    import icechunk

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if icechunk.Repository.exists(storage):
            return True
        time.sleep(0.05)
    return False


def _object_entries(location: ObjectLocation) -> set[str]:
    """The names directly under an object-store prefix (empty when there is nothing)."""
    try:
        fs = location.filesystem
        fs.invalidate_cache()
        return {name.rstrip("/").rsplit("/", 1)[-1] for name in fs.ls(location.fs_path, detail=False)}
    except (FileNotFoundError, ParameterError):
        return set()


def _describe_repository(repository) -> str:
    storage = str(getattr(repository, "storage", "") or "")
    if not storage or "memory" in storage.lower():
        return "icechunk repository (in memory)"
    return f"icechunk repository {storage[:100]}"


def transact(target: Target, branch: str, message: str, apply, *, metadata: dict | None = None,
             attempts: int = 200, session=None) -> str:
    """Apply ``apply(session)`` to a fresh writable session at the tip and commit it; redo on conflict.

    Returns the new snapshot's id, or None when ``apply`` returned False (nothing to commit). With
    ``session`` (an in-memory repository's, which cannot be forked), that session is committed
    once: a conflict there is an error.
    """
    import icechunk

    try:
        if session is not None:
            with target.lock():
                if apply(session) is False:
                    return None
                return session.commit(message, metadata=metadata)
        for attempt in range(attempts):
            with target.lock():
                session = target.repository.writable_session(branch)
                if apply(session) is False:
                    return None
                try:
                    return session.commit(message, metadata=metadata)
                except icechunk.ConflictError:
                    pass  # another builder committed since this session began: redo on the new tip
            time.sleep(random.uniform(0.01, 0.05) * min(attempt + 1, 10))
    except icechunk.IcechunkError as exc:  # the storage (full, read-only, unreachable): one clear error
        raise storage_error(exc, target.description) from None
    raise RuntimeError(f"{target.description}: could not commit after {attempts} attempts (other builders kept "
                       "committing first); run build_archive again.")


def tag_build(target: Target, snapshot_id: str) -> str:
    """Tag ``snapshot_id`` ``build-<n>`` (n one more than the highest build tag), retrying on a race."""
    import icechunk

    for _ in range(100):
        numbers = [int(m.group(1)) for m in map(BUILD_TAG.match, target.repository.list_tags()) if m]
        name = f"build-{max(numbers, default=0) + 1}"
        try:
            target.repository.create_tag(name, snapshot_id)
            return name
        except icechunk.IcechunkError as exc:
            if "already exists" not in str(exc):
                raise
    raise RuntimeError(f"{target.description}: could not create a build tag.")


def history(repository, snapshot_id: str) -> list[dict]:
    """The commits leading to ``snapshot_id``, newest first: id, time (UTC), message."""
    return [{"id": info.id, "time": info.written_at.astimezone(datetime.timezone.utc), "message": info.message}
            for info in repository.ancestry(snapshot_id=snapshot_id)]
