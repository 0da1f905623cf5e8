"""The rename protocol: stage beside the target, mark complete, publish by an atomic rename.

How a write is published on a location that can rename atomically (a local or shared POSIX
directory: :class:`~lazymask.storage.LocalLocation`).

Contract
--------
* **Stage.** A result is written under a temporary name beside its target
  (``.<name>.lazymask-tmp-<host>-<pid>-<hex>``), in the same directory, so the final rename is
  atomic.
* **Mark complete last.** The writer's last step inside the staging is its completeness marker
  (a zarr group's ``lazymask_complete: true`` with its manifest, a cache's manifest); a NIfTI file
  is complete by being renamed under its name.
* **Publish by rename.** Only then is the staging renamed onto the target. When an old result is
  replaced it is kept intact until the new one is complete, then moved aside and deleted.
* **Never destroy what lazymask did not write.** :func:`~lazymask.storage.check_target` decides
  what a write may do to an existing path; it is applied before anything is written and again,
  on what is there then, just before the rename.
* **Interrupted jobs.** A job killed while writing leaves only its staging (never a target that
  looks complete); the next write of the same target deletes it (staging of a process still alive
  on this host is left alone), and restores an old result whose replacement was cut between its
  two renames.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from lazymask.exceptions import ParameterError, UnsafeTargetError
from lazymask.storage._target import Found, State, check_target

__all__ = ["staged_path", "staging_name", "clean_stale_staging", "STAGING_TAG"]

STAGING_TAG = ".lazymask-tmp-"
_OLD_TAG = "old-"
_IN_USE: set[str] = set()  # staging names this process is writing now (other threads leave them alone)


# -- staging names --------------------------------------------------------------------------------
def staging_name(name: str) -> str:
    """A fresh staging name for a target called ``name`` (hidden, tagged with host and process).

    Examples
    --------
    >>> staging_name("out.zarr").startswith(".out.zarr.lazymask-tmp-")
    True
    """
    host = socket.gethostname().replace("-", "_").replace(".", "_")[:32] or "host"
    return f".{name}{STAGING_TAG}{host}-{os.getpid()}-{uuid.uuid4().hex[:12]}"


def _is_live_local(entry_name: str, name: str) -> bool:
    """Whether a staging entry belongs to a process still running on this host (not to be removed)."""
    rest = entry_name[len(f".{name}{STAGING_TAG}"):]
    if rest.startswith(_OLD_TAG):
        return False
    parts = rest.split("-")
    host = socket.gethostname().replace("-", "_").replace(".", "_")[:32] or "host"
    if len(parts) != 3 or parts[0] != host or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    if pid == os.getpid():
        return entry_name in _IN_USE  # another thread of this process is writing it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_staging(target: Path) -> None:
    """Delete what interrupted writes of ``target`` left beside it (only lazymask's staging names).

    An old result moved aside by a replacement that was cut between its two renames
    (``.<name>.lazymask-tmp-old-<hex>``) is renamed back to ``target`` when ``target`` is missing,
    whatever the writer that finds it: only a result the rule let a writer replace is ever moved
    aside, and it is deleted only once the new result took its place. A writer of another kind
    then finds it back and applies the rule to it (a refusal), never deletes it.

    Examples
    --------
    >>> clean_stale_staging(Path("/no/such/dir/out.zarr"))  # nothing there: nothing to do
    """
    parent = target.parent
    if not parent.is_dir():
        return
    prefix = f".{target.name}{STAGING_TAG}"
    for entry in sorted(parent.iterdir()):
        if not entry.name.startswith(prefix) or _is_live_local(entry.name, target.name):
            continue
        if entry.name[len(prefix):].startswith(_OLD_TAG) and not os.path.lexists(target):
            os.rename(entry, target)
            continue
        _remove(entry)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


# -- the staged write of a local path --------------------------------------------------------------
@contextlib.contextmanager
def staged_path(target: Path, *, kind: str, overwrite: bool, inspect: Callable[[Path], Found],
                mark_complete: Callable[[Path], None] | None = None, directory: bool,
                describe: str | None = None, create: bool | None = None) -> Iterator[Path]:
    """Stage the write of a file or directory ``target``: yield the staging path, publish at the end.

    The target is inspected and the rule applied (:func:`check_target`) before anything is
    written. The block writes the result at the yielded path (a directory is created for it when
    ``directory``); then ``mark_complete(staging)`` runs and the staging is renamed onto the
    target (replacing an old result only now). On any error the staging is deleted and the target
    is left as it was.

    Parameters
    ----------
    target : pathlib.Path
        Where the result goes.
    kind : str
        What is written (for messages).
    overwrite : bool
        The user's ``overwrite``.
    inspect : callable
        ``inspect(path) -> Found``: what is at a path (the target, or an old result to restore).
    mark_complete : callable, optional
        Writes the completeness marker into the staging (last step before publishing).
    directory : bool
        Whether the result is a directory (else a regular file).
    describe : str, optional
        How to name the target in messages (default: its path).
    create : bool, optional
        Create the staging directory before the block (default: ``directory``); pass False when
        the block's writer creates it itself.

    Yields
    ------
    pathlib.Path
        The staging path to write.

    Examples
    --------
    >>> with staged_path(Path("out.txt"), kind="text file", overwrite=False,     # doctest: +SKIP
    ...                  inspect=lambda p: Found.absent(), directory=False) as staging:
    ...     staging.write_text("hello")
    """
    target = Path(target)
    shown = describe or str(target)
    if not target.parent.is_dir():
        raise ParameterError(f"{shown}: the directory {str(target.parent)!r} does not exist; create it first.")
    clean_stale_staging(target)
    replace = check_target(shown, inspect(target), kind=kind, overwrite=overwrite)
    staging = target.with_name(staging_name(target.name))
    _IN_USE.add(staging.name)
    try:
        if directory if create is None else create:
            staging.mkdir()
        yield staging
        if mark_complete is not None:
            mark_complete(staging)
        _publish(staging, target, replace=replace, directory=directory, shown=shown, kind=kind,
                 inspect=inspect, overwrite=overwrite)
    finally:
        _IN_USE.discard(staging.name)
        if os.path.lexists(staging):
            _remove(staging)


def _publish(staging: Path, target: Path, *, replace: bool, directory: bool, shown: str, kind: str,
             inspect, overwrite: bool) -> None:
    """Rename the complete staging onto the target (the old result, if any, goes only now)."""
    # the target may have changed while the job ran: apply the rule again on what is there now
    replace = check_target(shown, inspect(target), kind=kind, overwrite=overwrite or replace)
    if not directory:
        if replace:
            os.replace(staging, target)  # atomic: readers see the old file or the new one
        else:
            _rename_no_clobber(staging, target, shown)
        return
    if not replace:
        _rename_no_clobber(staging, target, shown)
        return
    old = target.with_name(f".{target.name}{STAGING_TAG}{_OLD_TAG}{uuid.uuid4().hex[:12]}")
    os.rename(target, old)  # from here until the next rename, clean_stale_staging can restore it
    os.rename(staging, target)
    _remove(old)


def _rename_no_clobber(staging: Path, target: Path, shown: str) -> None:
    if os.path.lexists(target):
        raise UnsafeTargetError(f"{shown} appeared while lazymask was writing it; nothing was replaced.")
    if staging.is_dir():
        try:
            os.rename(staging, target)  # fails if a non-empty directory appeared meanwhile
        except OSError:
            if os.path.lexists(target):
                raise UnsafeTargetError(f"{shown} appeared while lazymask was writing it; nothing was replaced.") from None
            raise
        return
    try:
        os.link(staging, target)  # fails if anything appeared meanwhile
    except FileExistsError:
        raise UnsafeTargetError(f"{shown} appeared while lazymask was writing it; nothing was replaced.") from None
    except OSError:  # no hard links on this filesystem
        os.rename(staging, target)
    else:
        os.unlink(staging)
