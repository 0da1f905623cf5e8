"""What icechunk needs from lazymask: one commit at a time per repository on a local disk.

icechunk makes a commit atomic on object stores (a conditional write of the branch reference) but
not on a local file system, where it warns that concurrent commits are unsafe: two processes
committing at once can both "succeed" and one commit silently replace the other (seen with
icechunk 1.1). Every lazymask commit to a repository on a local disk therefore holds an ``fcntl``
lock on ``<repository>/.lazymask-lock`` (icechunk ignores files at the repository's top level),
whichever lazymask writer commits (``to_zarr``/``save_signals`` into a repository, ``build_archive``).
On other storage the lock is a no-op.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path

__all__ = ["LOCK_NAME", "local_repository_path", "commit_lock"]

LOCK_NAME = ".lazymask-lock"
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
    import fcntl

    with open(Path(path) / LOCK_NAME, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
