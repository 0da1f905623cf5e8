"""Where data lives: one normaliser from what a user gave to a :class:`Location` with capabilities.

Contract
--------
* :func:`resolve` is the one place that looks at what a user passed as a path or a store:

  =====================================================  ==========================================
  given                                                  location
  =====================================================  ==========================================
  ``str``/``os.PathLike`` with no scheme, ``file://``    :class:`LocalLocation` (a POSIX path)
  ``"s3://…"``, ``gs://``, ``az://``, ``https://``,      :class:`ObjectLocation` (fsspec, with
  ``memory://`` … (any fsspec protocol)                  ``storage_options``)
  a ``zarr.abc.store.Store``                             :class:`StoreLocation`
  ``icechunk.Repository``/``Session``/``IcechunkStore``  :class:`IcechunkLocation`
  a :class:`Location`                                    itself
  =====================================================  ==========================================

* Each location declares its **capabilities** (:class:`Capabilities`): ``atomic_rename`` (a local
  directory: stage beside the target, publish by a rename), ``conditional_put`` (an object store:
  a key can be written create-only, so two writers never both claim one target) and
  ``transactional`` (icechunk: a commit publishes everything written in a session, or nothing).
  Writers choose how to publish from these, never from the type of what the user gave.
* ``storage_options`` (the fsspec convention pandas and xarray use: ``{"anon": True}``,
  ``{"endpoint_url": ...}``, credentials) go with URLs only; where none are given, those of
  ``lazymask.storage.set_storage_options`` apply (the CLI's ``--storage-option``), then fsspec's and
  the cloud SDKs' own defaults (``AWS_*`` environment variables, ``~/.aws``). They never appear in a
  message or a ``repr``: they may hold secrets.
* Locations are small and picklable (an icechunk location pickles only when its session allows
  it; see icechunk's ``Session.fork``), so graphs that carry them run on any scheduler.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from lazymask.exceptions import ParameterError

__all__ = [
    "Capabilities", "Location", "LocalLocation", "ObjectLocation", "StoreLocation", "IcechunkLocation",
    "StorageOptions", "resolve", "is_url", "set_storage_options", "default_storage_options",
    "parse_storage_option",
]

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.\-]*)://")


@dataclass(frozen=True)
class Capabilities:
    """What a location can do, which decides how a write is published.

    Examples
    --------
    >>> resolve("out.zarr").capabilities
    Capabilities(atomic_rename=True, conditional_put=False, transactional=False)
    """

    atomic_rename: bool = False
    conditional_put: bool = False
    transactional: bool = False


class StorageOptions(Mapping):
    """fsspec ``storage_options``: a read-only, hashable mapping whose values never show in a ``repr``.

    Examples
    --------
    >>> options = StorageOptions({"anon": True})
    >>> options["anon"], repr(options)
    (True, 'StorageOptions(anon=...)')
    """

    def __init__(self, options: Mapping | None = None):
        if options is not None and not isinstance(options, Mapping):
            raise ParameterError(
                f"storage_options={type(options).__name__}: expected a dict such as {{'anon': True}} "
                "(the fsspec convention), or None."
            )
        self._options = dict(options or {})
        self._key = _freeze(self._options)

    def __getitem__(self, key):
        return self._options[key]

    def __iter__(self):
        return iter(self._options)

    def __len__(self) -> int:
        return len(self._options)

    def __hash__(self) -> int:
        return hash(self._key)

    def __eq__(self, other) -> bool:
        return isinstance(other, StorageOptions) and self._key == other._key

    def __repr__(self) -> str:
        return f"StorageOptions({', '.join(f'{k}=...' for k in sorted(self._options))})"

    def __dask_tokenize__(self):
        return ("lazymask-storage-options", self._key)

    def __reduce__(self):
        return (StorageOptions, (self._options,))

    def as_dict(self) -> dict:
        """A plain ``dict`` copy (for fsspec)."""
        return dict(self._options)


def _freeze(value):
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _freeze(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value


_DEFAULTS = threading.local()
_GLOBAL_DEFAULTS: dict = {}


@contextlib.contextmanager
def set_storage_options(options: Mapping | None = None, **kwargs) -> Iterator[None]:
    """Storage options used where a URL is given without ``storage_options`` (in this block).

    For the code that takes no ``storage_options`` argument: a masker given an image URL, the
    command line's ``--storage-option``. Explicit ``storage_options=`` always win.

    Examples
    --------
    >>> with set_storage_options(anon=True):
    ...     default_storage_options()["anon"]
    True
    """
    merged = {**dict(options or {}), **kwargs}
    previous = getattr(_DEFAULTS, "options", None)
    _DEFAULTS.options = merged
    try:
        yield
    finally:
        _DEFAULTS.options = previous


def default_storage_options() -> dict:
    """The storage options of the innermost :func:`set_storage_options` block (``{}`` outside one).

    Examples
    --------
    >>> default_storage_options()
    {}
    """
    options = getattr(_DEFAULTS, "options", None)
    return dict(_GLOBAL_DEFAULTS if options is None else options)


def parse_storage_option(text: str) -> tuple[str, object]:
    """``"key=value"`` (the command line's ``--storage-option``) as a pair; the value is read as
    JSON when it is JSON (``true``, ``3``, ``{"region_name": "eu-west-1"}``), else kept as a string.

    Examples
    --------
    >>> parse_storage_option("anon=true"), parse_storage_option("endpoint_url=http://127.0.0.1:9000")
    (('anon', True), ('endpoint_url', 'http://127.0.0.1:9000'))
    """
    import json

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ParameterError(f"--storage-option {text!r}: expected KEY=VALUE, such as anon=true.")
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = value
    return key.strip(), parsed


def is_url(target) -> bool:
    """Whether ``target`` is a URL with a scheme other than ``file://`` (fsspec's form).

    Examples
    --------
    >>> is_url("s3://openneuro.org/ds000102/sub-01/func/x.nii.gz"), is_url("/data/x.nii.gz")
    (True, False)
    """
    if not isinstance(target, str):
        return False
    match = _SCHEME.match(target)
    return bool(match) and match.group(1).lower() != "file"


class Location:
    """A place data is read from or written to, with what it can do (:class:`Capabilities`)."""

    capabilities = Capabilities()

    def describe(self) -> str:
        """How to name the location in a message (never its storage options)."""
        raise NotImplementedError

    def zarr_store(self, *, read_only: bool = False):
        """A zarr (v3) store rooted at the location."""
        raise NotImplementedError

    def found_at(self, path: str = "", *, directory: bool = True):
        """What is at ``path`` (below the location) when the storage alone settles it, else None.

        Only a file system has symbolic links, regular files where a store goes and empty
        directories; an object store or a zarr store settles nothing here (None): the writer
        looks at the keys.
        """
        return None

    def check_parent(self) -> None:
        """Raise :class:`ParameterError` when a new store cannot be created here (a missing directory)."""

    def put_if_absent(self, store, key: str, data: bytes) -> bool:
        """Write ``data`` at ``key`` of ``store`` only if nothing is there; return whether it was written.

        Two writers racing for one key: exactly one gets True (a create-only write where the
        storage has one: S3's ``If-None-Match``, ``O_EXCL``, an icechunk session).
        """
        from zarr.core.buffer import default_buffer_prototype
        from zarr.core.sync import sync

        buffer = default_buffer_prototype().buffer.from_bytes(data)
        sync(store.set_if_not_exists(key, buffer))
        stored = sync(store.get(key, default_buffer_prototype()))
        return stored is not None and stored.to_bytes() == data

    @contextlib.contextmanager
    def transaction(self, message: str):
        """The location to write to for one job; on a transactional location, committed at the end.

        Everywhere but an icechunk repository this is the location itself (each write publishes
        on its own).
        """
        yield self

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"

    def __str__(self) -> str:
        return self.describe()


@dataclass(frozen=True, repr=False)
class LocalLocation(Location):
    """A path on a local (or shared POSIX) file system."""

    path: Path
    capabilities = Capabilities(atomic_rename=True)

    def describe(self) -> str:
        return str(self.path)

    def zarr_store(self, *, read_only: bool = False):
        import zarr

        return zarr.storage.LocalStore(str(self.path), read_only=read_only)

    def found_at(self, path: str = "", *, directory: bool = True):
        from lazymask.storage._target import Found, found_unless

        local = self.path / path if path else self.path
        settled = found_unless(local, directory=directory)
        if settled is not None or not directory:
            return settled
        metadata = local / "zarr.json"
        if metadata.is_symlink():
            return Found.other("a zarr node whose zarr.json is a symbolic link")
        if not metadata.exists():
            entries = sorted(p.name for p in local.iterdir())
            if not entries:
                return Found.other("an empty directory lazymask did not create")
            shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
            return Found.other(f"a directory lazymask did not write ({len(entries)} entries: {shown})")
        return None

    def check_parent(self) -> None:
        if not os.path.lexists(self.path) and not self.path.parent.is_dir():
            raise ParameterError(
                f"store={str(self.path)!r}: the directory {str(self.path.parent)!r} does not exist; create it first."
            )

    def put_if_absent(self, store, key: str, data: bytes) -> bool:
        target = self.path / key
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return True

    def read_head(self, n: int) -> bytes:
        """The first ``n`` bytes of the file at the location."""
        with open(self.path, "rb") as f:
            return f.read(n)


@dataclass(frozen=True, repr=False)
class ObjectLocation(Location):
    """A URL of an fsspec file system (object stores, HTTP, ``memory://``), with its options."""

    url: str
    options: StorageOptions = field(default_factory=StorageOptions)

    @property
    def protocol(self) -> str:
        return _SCHEME.match(self.url).group(1).lower()

    @property
    def capabilities(self) -> Capabilities:  # type: ignore[override]
        # s3 (If-None-Match), memory and gcs/azure (generation/etag preconditions) write create-only
        return Capabilities(conditional_put=self.protocol not in ("http", "https"))

    @property
    def filesystem(self):
        """The (synchronous) fsspec file system; fsspec caches one per protocol and options."""
        import fsspec

        try:
            return fsspec.filesystem(self.protocol, **self.options.as_dict())
        except (ImportError, ValueError) as exc:
            raise ParameterError(
                f"{self.describe()}: fsspec cannot open {self.protocol}:// ({exc}). Install its "
                "package (s3fs for s3://, gcsfs for gs://, adlfs for az://) or check storage_options."
            ) from None

    @property
    def fs_path(self) -> str:
        """The path as the file system names it (``bucket/key`` for s3)."""
        from fsspec.core import strip_protocol

        return strip_protocol(self.url) if self.protocol != "memory" else "/" + self.url.split("://", 1)[1].lstrip("/")

    def describe(self) -> str:
        return self.url

    def child(self, name: str) -> ObjectLocation:
        """The location ``name`` below this one."""
        return ObjectLocation(f"{self.url.rstrip('/')}/{name.lstrip('/')}", self.options)

    def zarr_store(self, *, read_only: bool = False):
        import zarr

        return zarr.storage.FsspecStore.from_url(self.url, storage_options=self.options.as_dict() or None,
                                                 read_only=read_only)

    def found_at(self, path: str = "", *, directory: bool = True):
        from lazymask.storage._target import Found

        where = f"{self.fs_path.rstrip('/')}/{path}" if path else self.fs_path
        fs = self.filesystem
        if directory:
            return Found.other("an object (a file) where a store goes") if fs.isfile(where) else None
        if fs.isfile(where):
            return None
        return Found.other("a prefix holding objects (a directory)") if fs.isdir(where) else Found.absent()

    def put_if_absent(self, store, key: str, data: bytes) -> bool:
        return fs_put_if_absent(self.filesystem, f"{self.fs_path.rstrip('/')}/{key}", data)

    def read_head(self, n: int) -> bytes:
        """The first ``n`` bytes of the object at the location."""
        return self.filesystem.cat_file(self.fs_path, start=0, end=n)

    def put_file(self, local_path, *, replace: bool) -> None:
        """Upload a finished local file in one request (no partial object is ever visible).

        ``replace`` False: create-only (``UnsafeTargetError`` if an object appeared meanwhile);
        True: an object store replaces an object atomically (readers see the old or the new one).
        """
        from lazymask.exceptions import UnsafeTargetError

        try:
            self.filesystem.put_file(str(local_path), self.fs_path, mode="overwrite" if replace else "create")
        except FileExistsError:
            raise UnsafeTargetError(f"{self.url} appeared while lazymask was writing it; nothing was replaced.") from None


@dataclass(frozen=True, repr=False)
class StoreLocation(Location):
    """A zarr store object the user gave (``zarr.storage.MemoryStore``, ``FsspecStore``, ...)."""

    store: object
    capabilities = Capabilities(conditional_put=True)

    def describe(self) -> str:
        return type(self.store).__name__

    def zarr_store(self, *, read_only: bool = False):
        store = self.store
        if read_only and not store.read_only and hasattr(store, "with_read_only"):
            return store.with_read_only(True)
        return store

    def put_if_absent(self, store, key: str, data: bytes) -> bool:
        import zarr

        if isinstance(store, zarr.storage.FsspecStore):  # S3 & co: the file system's create-only write
            return fs_put_if_absent(store.fs, f"{store.path.rstrip('/')}/{key}", data)
        return super().put_if_absent(store, key, data)


@dataclass(frozen=True, repr=False)
class IcechunkLocation(Location):
    """An icechunk repository (a branch of it), or a session the user opened on one.

    With a repository, lazymask opens its own sessions and commits what it writes; with a
    session, it writes into the session and leaves the commit to its owner.
    """

    repository: object = None
    session: object = None
    branch: str = "main"
    commits: bool = False  # a session lazymask opened on the repository: it commits it
    capabilities = Capabilities(conditional_put=True, transactional=True)

    @contextlib.contextmanager
    def transaction(self, message: str):
        """A writable session on the branch, committed with ``message`` when the block succeeds.

        With a session the user gave: that session, never committed (its owner commits). An
        error in the block leaves the repository as it was (the session is not committed).
        """
        if self.session is not None:
            if getattr(self.session, "read_only", False):
                raise ParameterError(
                    f"{self.describe()} is read-only; open a writable session "
                    "(repo.writable_session(branch)) or pass the repository."
                )
            yield self
            return
        import icechunk

        from lazymask.storage._icechunk import commit_lock

        session = self.repository.writable_session(self.branch)
        yield IcechunkLocation(self.repository, session, self.branch, commits=True)
        if session.has_uncommitted_changes:
            try:  # another writer's commit to other nodes is rebased on; one to the same nodes is refused
                with commit_lock(self.repository):
                    session.commit(message, rebase_with=icechunk.ConflictDetector(), rebase_tries=20)
            except icechunk.IcechunkError as exc:  # the storage (full, read-only, unreachable)
                from lazymask.storage._icechunk import storage_error

                raise storage_error(exc, self.describe()) from None
            except (icechunk.ConflictError, icechunk.RebaseFailedError) as exc:
                from lazymask.exceptions import UnsafeTargetError

                raise UnsafeTargetError(
                    f"{self.describe()}: another writer committed to branch {self.branch!r} while lazymask "
                    f"wrote ({exc}); nothing of this write was committed. Run it again."
                ) from None

    def describe(self) -> str:
        if self.session is not None:
            return f"icechunk session on branch {getattr(self.session, 'branch', None) or 'detached'!r}"
        return f"icechunk repository {_repository_name(self.repository)} (branch {self.branch!r})"

    def zarr_store(self, *, read_only: bool = False):
        if self.session is not None:
            return self.session.store
        session = (self.repository.readonly_session(branch=self.branch) if read_only
                   else self.repository.writable_session(self.branch))
        return session.store


def fs_put_if_absent(fs, path: str, data: bytes) -> bool:
    """A create-only write with an fsspec file system (sync or async); False when the key exists."""
    try:
        if hasattr(fs, "sync_fs"):  # fsspec's async wrapper of a sync file system (memory://, file://)
            fs.sync_fs.pipe_file(path, data, mode="create")
        elif getattr(fs, "asynchronous", False):  # an async instance (a zarr FsspecStore's): zarr's loop
            from zarr.core.sync import sync

            sync(fs._pipe_file(path, data, mode="create"))
        else:
            fs.pipe_file(path, data, mode="create")
    except FileExistsError:
        return False
    return True


def _repository_name(repository) -> str:
    storage = getattr(repository, "storage", None)
    text = str(storage) if storage is not None else ""
    return text[:120] if text else "(in memory)"


def resolve(target, storage_options: Mapping | None = None) -> Location:
    """The :class:`Location` of what a user gave as a path, URL or store.

    Parameters
    ----------
    target : str, os.PathLike, zarr store, icechunk Repository/Session, or Location
        A local path; an fsspec URL (``s3://bucket/key``, ``gs://``, ``az://``, ``https://``,
        ``memory://``); a zarr store; an icechunk repository or session.
    storage_options : dict, optional
        fsspec options for a URL (``{"anon": True}``, ``{"endpoint_url": ...}``, credentials).
        Without them, those of :func:`set_storage_options` apply.

    Returns
    -------
    Location

    Raises
    ------
    ParameterError
        ``storage_options`` with something that is not a URL, or a target of another type.

    Examples
    --------
    >>> resolve("s3://openneuro.org/ds000102", {"anon": True})
    <ObjectLocation s3://openneuro.org/ds000102>
    >>> resolve("results/out.zarr")
    <LocalLocation results/out.zarr>
    """
    if isinstance(target, Location):
        if storage_options:
            raise ParameterError("storage_options: pass them when the location is made, not with a Location.")
        return target
    if isinstance(target, str | os.PathLike):
        text = os.fspath(target)
        if isinstance(text, bytes):
            raise ParameterError(f"{target!r}: expected a str path or URL, found bytes.")
        if is_url(text):
            options = default_storage_options() if storage_options is None else storage_options
            return ObjectLocation(text, StorageOptions(options))
        if storage_options:
            raise ParameterError(
                f"storage_options were given with the local path {text!r}; they apply to URLs "
                "(s3://, gs://, https://, ...) only. Drop them, or give the URL."
            )
        return LocalLocation(Path(text[len("file://"):] if text.startswith("file://") else text))
    if storage_options:
        raise ParameterError(
            f"storage_options were given with a {type(target).__name__}; they apply to URLs only "
            "(a store object carries its own)."
        )
    icechunk = _icechunk_location(target)
    if icechunk is not None:
        return icechunk
    try:
        from zarr.abc.store import Store
    except ImportError:  # pragma: no cover - zarr is a dependency
        Store = ()
    if isinstance(target, Store):
        return StoreLocation(target)
    raise ParameterError(
        f"expected a path, a URL (s3://, gs://, https://, memory://, ...), a zarr store or an icechunk "
        f"repository or session; found {type(target).__name__}."
    )


def _icechunk_location(target) -> IcechunkLocation | None:
    module = type(target).__module__ or ""
    if not module.startswith("icechunk"):
        return None
    import icechunk

    if isinstance(target, icechunk.Repository):
        return IcechunkLocation(repository=target)
    if isinstance(target, icechunk.Session):
        return IcechunkLocation(session=target)
    if isinstance(target, icechunk.IcechunkStore):
        return IcechunkLocation(session=target.session)
    return None
