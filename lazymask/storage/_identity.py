"""The one identity of a source, taken at open and checked by every read.

Contract
--------
* ``source_identity(location)`` is what identifies one version of one source:

  - a local file: :class:`FileIdentity` -- the absolute path, size, modification time, inode and
    change time (ns), one ``os.stat``. A file rewritten in place changes its size or times, a file
    replaced by a rename changes its inode (and ctime).
  - an object (``s3://``, ``gs://``, ``https://``, ``memory://`` ...): :class:`ObjectIdentity` --
    the URL, size, and the store's version tag (S3's ``VersionId`` when versioning is on, else its
    ``ETag``; GCS's generation; HTTP's ``ETag`` or ``Last-Modified``; the creation time in
    ``memory://``), one ``HEAD``. An object overwritten gets a new tag.

* ``check_unchanged(identity)`` takes the identity again and raises
  :class:`~lazymask.exceptions.SourceChangedError` naming the source (and what changed) when it
  differs, :class:`~lazymask.exceptions.ImageFileNotFoundError` when it is gone. Read tasks call it
  before reading, so data is never read under a header taken from another version.
* Identities are hashable, tokenize deterministically and pickle in a few hundred bytes (an
  object's identity carries its storage options so a worker can reach it; they never show in a
  message or ``repr``): graph keys, cache keys and per-process stream caches are keyed on them.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from lazymask.exceptions import ImageFileNotFoundError, SourceChangedError
from lazymask.storage._location import LocalLocation, ObjectLocation, StorageOptions, resolve

__all__ = ["FileIdentity", "ObjectIdentity", "file_identity", "object_identity", "source_identity",
           "check_unchanged"]


class FileIdentity(NamedTuple):
    """What identifies one version of one local file: path, size, mtime, inode and ctime."""

    path: str
    size: int
    mtime_ns: int
    inode: int
    ctime_ns: int


class ObjectIdentity(NamedTuple):
    """What identifies one version of one object: URL, size and the store's version tag."""

    path: str  # the URL (named ``path`` like FileIdentity's, for messages and cache keys)
    size: int
    version: str
    options: StorageOptions

    @property
    def location(self) -> ObjectLocation:
        return ObjectLocation(self.path, self.options)

    def __repr__(self) -> str:
        return f"ObjectIdentity(path={self.path!r}, size={self.size}, version={self.version!r})"


def file_identity(path) -> FileIdentity:
    """The identity of the local file at ``path`` now (one ``os.stat``).

    Parameters
    ----------
    path : str or os.PathLike
        A file.

    Returns
    -------
    FileIdentity
        ``(path, size, mtime_ns, inode, ctime_ns)``, path made absolute.

    Raises
    ------
    ImageFileNotFoundError
        When there is no such file.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile() as f:
    ...     _ = f.write(b"abc"); f.flush()
    ...     file_identity(f.name).size
    3
    """
    path = os.path.abspath(os.fspath(path))
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        raise ImageFileNotFoundError(f"{path}: no such file (it may have been moved or deleted).") from None
    return FileIdentity(path, stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_ctime_ns)


_VERSION_KEYS = ("VersionId", "generation", "version_id", "ETag", "etag", "ETAG", "LastModified",
                 "last_modified", "Last-Modified", "mtime", "created")


def _version_tag(info: dict) -> str:
    """The store's tag for this version of an object (see the module's contract)."""
    for key in _VERSION_KEYS:
        value = info.get(key)
        if value not in (None, "", "null"):
            return f"{key}={value}"
    return ""


def object_identity(location: ObjectLocation) -> ObjectIdentity:
    """The identity of the object at ``location`` now (one ``HEAD`` request).

    Examples
    --------
    >>> import fsspec
    >>> fsspec.filesystem("memory").pipe("/doc/one.bin", b"abc")
    >>> object_identity(resolve("memory://doc/one.bin")).size
    3
    """
    fs = location.filesystem
    try:
        info = fs.info(location.fs_path, refresh=True) if _takes_refresh(fs) else fs.info(location.fs_path)
    except FileNotFoundError:
        raise ImageFileNotFoundError(f"{location.describe()}: no such object.") from None
    except PermissionError as exc:
        raise ImageFileNotFoundError(
            f"{location.describe()}: access denied ({exc}). Check the credentials, or pass "
            "storage_options={'anon': True} for a public bucket."
        ) from None
    if info.get("type") == "directory":
        raise ImageFileNotFoundError(f"{location.describe()}: a directory (prefix), not an object.")
    size = info.get("size")
    if size is None:
        raise ImageFileNotFoundError(f"{location.describe()}: the server does not say the object's size.")
    return ObjectIdentity(location.url, int(size), _version_tag(info), location.options)


def _takes_refresh(fs) -> bool:
    return type(fs).__module__.startswith("s3fs")


def source_identity(source, storage_options=None) -> FileIdentity | ObjectIdentity:
    """The identity of a local file or an object, whichever ``source`` names.

    Examples
    --------
    >>> import fsspec
    >>> fsspec.filesystem("memory").pipe("/doc/two.bin", b"abcd")
    >>> source_identity("memory://doc/two.bin").size
    4
    """
    location = resolve(source, storage_options)
    if isinstance(location, LocalLocation):
        return file_identity(location.path)
    if isinstance(location, ObjectLocation):
        return object_identity(location)
    raise ImageFileNotFoundError(f"{location.describe()}: not a file or an object.")


def check_unchanged(identity: FileIdentity | ObjectIdentity) -> None:
    """Raise :class:`SourceChangedError` if the source is no longer the one ``identity`` describes."""
    what = "object" if isinstance(identity, ObjectIdentity) else "file"
    try:
        now = object_identity(identity.location) if what == "object" else file_identity(identity.path)
    except ImageFileNotFoundError:
        raise ImageFileNotFoundError(
            f"{identity.path}: the {what} no longer exists (it was opened earlier); nothing was read "
            "from it. Restore it, or open the new one again."
        ) from None
    if now != identity:
        changed = [f"{name} {old} -> {new}" for name, old, new in zip(identity._fields, identity, now, strict=True)
                   if old != new and name != "options"]
        raise SourceChangedError(
            f"{identity.path}: the {what} changed after it was opened ({', '.join(changed)}); its data "
            "no longer matches the header read at open, so nothing was read from it. Open it "
            "again (lazymask.open_nifti) to read its new content."
        )
