"""What icechunk needs from lazymask: one commit at a time per repository on a local disk.

icechunk makes a commit atomic on object stores (a conditional write of the branch reference) but
not on a local file system, where it warns that concurrent commits are unsafe: two processes
committing at once can both "succeed" and one commit silently replace the other (seen with
icechunk 1.1). Every lazymask commit to a repository on a local disk therefore holds an ``fcntl``
lock on ``<repository>/.lazymask-lock`` (icechunk ignores files at the repository's top level),
whichever lazymask writer commits (``to_zarr``/``save_signals`` into a repository, ``build_archive``).
On other storage the lock is a no-op, and so it is on a read-only file system (where a commit
would fail anyway): a resume with nothing to commit reads a read-only archive.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path

__all__ = ["LOCK_NAME", "local_repository_path", "commit_lock", "storage_error"]

LOCK_NAME = ".lazymask-lock"
_OS_ERROR = re.compile(r"\(os error (\d+)\)")
_LOCAL_BACKEND = re.compile(r"LocalFileSystemObjectStoreBackend\(path=(.+?)\)\)?$")


def local_repository_path(repository) -> Path | None:
    """The directory of a repository on a local disk (None elsewhere), read from its storage's description.

    Examples
    --------
    >>> import icechunk
    >>> local_repository_path(icechunk.Repository.create(icechunk.in_memory_storage())) is None
    True
    """
    match = _LOCAL_BACKEND.search(str(getattr(repository, "storage", "")).strip())
    return Path(match.group(1)) if match else None


@contextlib.contextmanager
def commit_lock(repository_or_path) -> Iterator[None]:
    """Hold the commit lock of a local repository (a ``Repository`` or its directory) for the block.

    Examples
    --------
    >>> import icechunk, tempfile
    >>> repository = icechunk.Repository.create(icechunk.local_filesystem_storage(tempfile.mkdtemp()))
    >>> with commit_lock(repository):
    ...     (local_repository_path(repository) / LOCK_NAME).exists()
    True
    """
    path = repository_or_path if isinstance(repository_or_path, str | Path) else local_repository_path(repository_or_path)
    if path is None:
        yield
        return
    import errno
    import fcntl

    try:
        handle = open(Path(path) / LOCK_NAME, "a+b")
    except OSError as exc:  # a read-only repository: nothing can be committed there, nothing to order
        if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def storage_error(exc: Exception, where: str):
    """An icechunk error of the storage as a :class:`~lazymask.exceptions.StorageError`: one line
    naming the repository, the operating system's reason when icechunk gives one, and the fix.

    Examples
    --------
    >>> error = storage_error(RuntimeError("x object store error: Unable to copy data to file: No space "
    ...                                    "left on device (os error 28)"), "archive")
    >>> error.errno, str(error)
    (28, 'archive: the storage refused a write: No space left on device (ENOSPC); free space (or write elsewhere) and run it again: nothing of this write was committed, the repository is as its last commit.')
    """
    import errno as errno_codes
    import os

    from lazymask.exceptions import StorageError

    text = str(exc)
    match = _OS_ERROR.search(text)
    code = int(match.group(1)) if match else None
    if code is not None:
        reason = f"{os.strerror(code)} ({errno_codes.errorcode.get(code, code)})"
    else:
        reason = " ".join(text.strip().splitlines()[0].split())[:200] if text.strip() else type(exc).__name__
    fix = {errno_codes.ENOSPC: "free space (or write elsewhere)", errno_codes.EROFS: "write elsewhere (read-only)",
           errno_codes.EDQUOT: "free space (quota)"}.get(code, "check the storage")
    error = StorageError(f"{where}: the storage refused a write: {reason}; {fix} and run it again: nothing of "
                         "this write was committed, the repository is as its last commit.")
    error.errno = code
    return error
