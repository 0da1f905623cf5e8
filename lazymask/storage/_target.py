"""The write-safety rule: what a write may do to what is already at its target.

Contract
--------
* A writer inspects its target (its own, kind-specific inspection) and describes what it found as
  a :class:`Found`: nothing, a complete result of the writer's kind, an unfinished one (stale), or
  anything else.
* :func:`check_target` is the **one** function deciding what may happen next; every writer of
  every storage kind calls it before writing anything and again before publishing. Publishers
  (:mod:`lazymask.storage._publish`) pass ``replaceable``: whether they can replace a complete
  result without a window in which neither the old nor the new one is there.
* :func:`found_unless` settles what a local path holds when no look inside is needed (nothing, a
  symbolic link, a file where a directory goes).
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from pathlib import Path

from lazymask.exceptions import UnsafeTargetError

__all__ = ["State", "Found", "check_target", "found_unless"]


class State(enum.Enum):
    """What a target holds, as a writer's inspection classifies it."""

    ABSENT = "absent"
    COMPLETE = "complete"  # a complete lazymask result of the writer's kind
    STALE = "stale"  # an unfinished or damaged lazymask result of the writer's kind, holding nothing else
    OTHER = "other"  # anything else: foreign files, another kind, a regular file where a store goes


@dataclass(frozen=True)
class Found:
    """What is at a target, as the writer's kind-specific inspection saw it.

    Examples
    --------
    >>> Found.stale("an unfinished lazymask store").state
    <State.STALE: 'stale'>
    """

    state: State
    description: str = ""

    @classmethod
    def absent(cls) -> Found:
        return cls(State.ABSENT, "nothing")

    @classmethod
    def complete(cls, description: str) -> Found:
        return cls(State.COMPLETE, description)

    @classmethod
    def stale(cls, description: str) -> Found:
        return cls(State.STALE, description)

    @classmethod
    def other(cls, description: str) -> Found:
        return cls(State.OTHER, description)


#: why a publisher without a rename or a transaction refuses to replace a complete result
NO_SAFE_REPLACE = (
    "this storage has neither an atomic rename nor transactions, so replacing it would leave a window "
    "with neither the old nor the new result, and lazymask never does that. Write to another group or "
    "URL; or delete the old result yourself first (accepting that window); or keep results that get "
    "replaced in an icechunk repository (pass icechunk.Repository.open(...) as the store: lazymask "
    "then replaces a group inside a transaction, and the old one stays until the commit)."
)


def check_target(target: str, found: Found, *, kind: str, overwrite: bool, replaceable: bool = True) -> bool:
    """Decide what a write may do to its target; return whether an old result will be replaced.

    This function is the data-safety contract of every lazymask write (``to_zarr``,
    ``save_signals``, ``to_nifti``, the demo and masking caches, the command line), on every
    storage kind:

    * nothing at ``target``: the write goes ahead (returns False);
    * a **complete lazymask result of the same kind** (``kind``): refused unless ``overwrite`` is
      True; with ``overwrite=True`` it is replaced, but only once the new result is complete --
      until then the old one stays intact (returns True). A publisher that cannot do that
      (``replaceable=False``: object storage without transactions) refuses, naming the ways out;
    * an **unfinished lazymask result of the same kind** (what an interrupted write left, holding
      nothing lazymask did not write): replaced, whatever ``overwrite`` says, because it holds no
      result (returns True) -- except where ``replaceable`` is False: there an unfinished group
      cannot be told from one another job is still writing, so it is replaced only with
      ``overwrite=True`` (the user saying no other job writes it);
    * **anything else** -- a directory lazymask did not write, a store of another kind, a regular
      file where a store goes, a file that is not an image, a symbolic link, foreign files inside a
      lazymask store -- is refused with :class:`UnsafeTargetError` naming the target and what is
      there, **whatever** ``overwrite`` says. lazymask never deletes or replaces it.

    Parameters
    ----------
    target : str
        The target, as shown to the user (a path, URL, or ``store, group``).
    found : Found
        What the writer's inspection found there.
    kind : str
        What the writer writes ("lazymask zarr DataArray store", "NIfTI image file", ...).
    overwrite : bool
        The user's ``overwrite`` argument.
    replaceable : bool, default True
        Whether the publisher can replace a complete result with no window where neither the old
        nor the new one is there (a rename, a transaction).

    Returns
    -------
    bool
        True when an existing result will be replaced (after the new one is complete).

    Raises
    ------
    UnsafeTargetError
        The target holds something the write may not replace.

    Examples
    --------
    >>> check_target("out.zarr", Found.absent(), kind="lazymask store", overwrite=False)
    False
    >>> check_target("notes", Found.other("a directory lazymask did not write"), kind="lazymask store",
    ...              overwrite=True)
    Traceback (most recent call last):
    ...
    lazymask.exceptions.UnsafeTargetError: notes holds a directory lazymask did not write, not a ...
    """
    if found.state is State.ABSENT:
        return False
    if found.state is State.STALE:
        if replaceable or overwrite:
            return True
        raise UnsafeTargetError(
            f"{target} holds {found.description}: an interrupted write, or one another job is still "
            "doing (on object storage lazymask cannot tell them apart). If no other job writes it, pass "
            "overwrite=True to replace it; otherwise choose another target."
        )
    if found.state is State.COMPLETE:
        if overwrite and replaceable:
            return True
        if overwrite:
            raise UnsafeTargetError(f"{target} already holds {found.description}, and {NO_SAFE_REPLACE}")
        raise UnsafeTargetError(
            f"{target} already holds {found.description}; pass overwrite=True (--overwrite on the "
            "command line) to replace it once the new result is complete, or choose another target."
        )
    raise UnsafeTargetError(
        f"{target} holds {found.description}, not a complete {kind} written by lazymask: lazymask "
        "never replaces or deletes what it did not write, whatever overwrite says. Choose another "
        "target, or move it away yourself."
    )


def found_unless(path: Path, *, directory: bool) -> Found | None:
    """What is at ``path`` when it settles the matter without looking inside; None when it does not.

    Nothing there: absent. A symbolic link, or a file where a directory goes (or the reverse):
    "other". A directory (``directory``) or a regular file (not ``directory``): None, the writer
    looks inside.

    Examples
    --------
    >>> found_unless(Path("/no/such/file.nii"), directory=False)
    Found(state=<State.ABSENT: 'absent'>, description='nothing')
    """
    path = Path(path)
    if not os.path.lexists(path):
        return Found.absent()
    if path.is_symlink():
        return Found.other(f"a symbolic link (to {os.readlink(path)!r})")
    if directory and not path.is_dir():
        return Found.other("a regular file" if path.is_file() else "something that is not a directory")
    if not directory and not path.is_file():
        return Found.other("a directory" if path.is_dir() else "something that is not a regular file")
    return None
