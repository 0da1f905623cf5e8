"""The one identity of a source file, taken at open and checked by every read.

Contract
--------
* ``file_identity(path)`` is a :class:`FileIdentity`: the absolute path, size, modification time,
  inode and change time (ns) of the file — one ``os.stat``. Two identities are equal only when the
  same file was not rewritten, replaced, truncated or touched in between: a file rewritten in place
  changes its size or times, a file replaced by a rename changes its inode (and ctime).
* ``check_unchanged(identity)`` stats the file again and raises
  :class:`~lazymask.exceptions.SourceChangedError` naming it (and what changed) when the identity
  differs, :class:`~lazymask.exceptions.ImageFileNotFoundError` when it is gone. Read tasks call it
  before reading, so data is never read under a header taken from another file.
* Identities are hashable and pickle in a few dozen bytes: graph keys, cache keys and per-process
  stream caches are keyed on them.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from lazymask.exceptions import ImageFileNotFoundError, SourceChangedError


class FileIdentity(NamedTuple):
    """What identifies one version of one file: path, size, mtime, inode and ctime."""

    path: str
    size: int
    mtime_ns: int
    inode: int
    ctime_ns: int


def file_identity(path) -> FileIdentity:
    """The identity of the file at ``path`` now (one ``os.stat``).

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


def check_unchanged(identity: FileIdentity) -> None:
    """Raise :class:`SourceChangedError` if the file is no longer the one ``identity`` describes."""
    try:
        now = file_identity(identity.path)
    except ImageFileNotFoundError:
        raise ImageFileNotFoundError(
            f"{identity.path}: the file no longer exists (it was opened earlier); nothing was read "
            "from it. Restore it, or open the new file again."
        ) from None
    if now != identity:
        changed = [f"{name} {old} -> {new}" for name, old, new in zip(identity._fields, identity, now, strict=True)
                   if old != new]
        raise SourceChangedError(
            f"{identity.path}: the file changed after it was opened ({', '.join(changed)}); its data "
            "no longer matches the header read at open, so nothing was read from it. Open the file "
            "again (lazymask.open_nifti) to read its new content."
        )
