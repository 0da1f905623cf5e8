"""The one all-to-all step of cleaning: time chunks -> whole-time feature blocks, within a memory budget.

Contract: :func:`whole_time_blocks` returns ``signals`` with one time chunk and the given feature
chunks, the same values whatever the path taken, and computes nothing when called. Which path is
planned from shapes, chunks and settings only (:func:`regroup_method`, a pure function):

* ``"none"``: the input already has one time chunk; only features are re-cut (no all-to-all).
* ``"memory"``: the signals (in the cleaning dtype) take at most :data:`REGROUP_FRACTION` (a
  sixteenth) of the memory budget: dask's task rechunk, which holds them in memory while it
  regroups them. The budget is ``lazymask.config.get("memory_budget")`` (default 2 GiB, so up to
  128 MiB of signals are regrouped in memory), and on distributed at most the smallest worker's
  memory limit. Measured (NiftiMasker, detrend + zscore_sample + 6 confounds, 2 mm whole brain,
  219k voxels, threads): at 1200 volumes (1.05 GB of signals) 1.88 GB peak and 40 s in memory
  against 1.03 GB and 26 s through disk; at 200 volumes (175 MB of signals) 0.70 GB and 8.0 s in
  memory against 0.52 GB and 5.1 s through disk: the in-memory regroup only pays for small signals.
* ``"p2p"``: over budget, and the graph will run on a ``distributed`` client (the scheduler dask
  would use is a client's when the graph is built) whose workers are not all on this machine (or
  dask's ``array.rechunk.method`` is ``"p2p"``): dask's peer-to-peer rechunk, which spills to the
  workers' disks.
* ``"disk"``: over budget, on a local scheduler (sync, threads, processes) or on a cluster whose
  workers all run on this machine (a ``LocalCluster``: they see the same disk): an on-disk
  intermediate of one file per group of adjacent time chunks (:func:`time_groups`; a chunk is
  never cut). A group grows until the piece of it that one feature block reads holds
  :data:`PIECE_BYTES` (1 MiB), or until its next chunk would take it over
  :data:`REGROUP_FRACTION` of the budget (128 MiB by default). One task per group writes its file
  whole under a temporary name, then renames it (tasks never share a file): the group's pieces,
  one per feature block, one after another in block order, each C-ordered (rows x columns), so
  block ``b``'s piece starts at byte ``rows * edges[b] * itemsize``. Once every file is written
  (one barrier task), each whole-time block allocates its output once and reads each group's
  piece straight into its rows (no ``np.load``, no concatenation); a file that is missing, or not
  of the size its layout gives, is a :class:`~lazymask.exceptions.LazymaskError` naming it. Files
  are kept until the graph is dropped, so a read task retried after a lost worker finds them
  again. Memory: a writing task holds its group's chunks (at most a sixteenth of the budget, or
  one chunk) and one piece; a reading task one block; whatever the run length.
  Why groups: the blocks' columns shrink as the run grows (a block holds about
  ``clean_target_block_bytes``, 32 MiB, of whole time series), so one file per time chunk would
  make each read a block does shrink too. The previous layout (one ``.npy`` file per time chunk
  and block) wrote 214 000 files of 32 kB at 8309 volumes of 207k voxels (8-volume chunks), and
  cost 2.6-4.2 ms/volume at 1200 volumes against 7.3 at 8309 (the regroup alone, 2 threads, page
  cache warm, one session); now 30 files of 1.1 MB pieces at 1200 volumes and 52 files of 0.65 MB
  pieces at 8309: 0.9-1.4 and 1.5 ms/volume (peak 0.58 GB against 0.33: two writing tasks of 127
  MiB groups). With every file dropped from the page cache once written (as when the
  intermediate does not fit in memory), the read tasks at 8309 volumes took 14.6 ms/volume
  before against 1.4-2.9 now.
  Measured on ``LocalCluster(2 workers x 1 GiB)`` (1 GiB budget: groups up to 64 MiB), 1200
  volumes x 207k voxels band-passed to zarr (groups of 5 chunks, 33 MB): 16-37 ms/volume (a noisy
  shared machine), no pause in 9 runs, workers peaking at 0.29-0.35 GB (once 0.69 GB), against
  18-35 ms/volume and 0.28-0.29 GB with the previous layout in the same session; P2P, measured
  before: 83 ms/volume and 0.85-0.89 GB, both workers paused at 80 % memory.
  The directory lives under dask's ``temporary-directory`` setting (else the system's temporary
  directory), is named ``lazymask-regroup-*``, holds one copy of the signals on disk, and is removed
  when the returned array is garbage collected or the process exits. Computing the result again
  writes the files again.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import uuid
import weakref
from pathlib import Path

import dask
import dask.array as da
import numpy as np

from lazymask import config
from lazymask._pages import empty
from lazymask.exceptions import LazymaskError

__all__ = [
    "PIECE_BYTES",
    "REGROUP_FRACTION",
    "distributed_client",
    "memory_budget",
    "regroup_method",
    "time_groups",
    "whole_time_blocks",
    "workers_share_this_disk",
]

#: The in-memory regroup is used when the signals take at most this fraction of the memory budget
#: (it holds the signals and its pieces of them at once: ~1.5x the signals' bytes above the rest).
REGROUP_FRACTION = 1 / 16

#: The disk path groups adjacent time chunks into one file until a block's piece of it holds this
#: many bytes (as long as the group takes at most ``REGROUP_FRACTION`` of the budget).
PIECE_BYTES = 2**20


def distributed_client():
    """The ``distributed.Client`` that would run a graph computed now, or None (local scheduler)."""
    try:
        from distributed import Client
    except ImportError:  # pragma: no cover - distributed is a dependency
        return None
    scheduler = dask.base.get_scheduler()
    owner = getattr(scheduler, "__self__", None)
    return owner if isinstance(owner, Client) else None


def workers_share_this_disk(client) -> bool:
    """Whether every worker of ``client`` runs on this machine (so they all see its temporary directory)."""
    import socket
    from urllib.parse import urlsplit

    local = {"127.0.0.1", "localhost", "::1", socket.gethostname()}
    try:
        local.add(socket.gethostbyname(socket.gethostname()))
    except OSError:  # pragma: no cover - no resolvable hostname
        pass
    for address in client.scheduler_info(n_workers=-1)["workers"]:
        parts = urlsplit(address)
        if parts.scheme != "inproc" and parts.hostname not in local:
            return False
    return True


def memory_budget(client=None) -> int:
    """The memory budget: the setting, capped by the smallest worker's memory limit on distributed."""
    budget = config.get("memory_budget")
    if client is not None:
        limits = [w.get("memory_limit") or 0 for w in client.scheduler_info(n_workers=-1)["workers"].values()]
        limits = [limit for limit in limits if limit > 0]
        if limits:
            budget = min(budget, int(min(limits)))
    return budget


def regroup_method(shape: tuple[int, int], time_chunks: tuple[int, ...], itemsize: int, budget: int,
                   remote_workers: bool) -> str:
    """Which path :func:`whole_time_blocks` takes: ``"none"``, ``"memory"``, ``"p2p"`` or ``"disk"``.

    Examples
    --------
    >>> regroup_method((100, 219_000), (20,) * 5, 4, budget=2 * 2**30, remote_workers=False)
    'memory'
    >>> regroup_method((1200, 219_000), (20,) * 60, 4, budget=2 * 2**30, remote_workers=False)
    'disk'
    >>> regroup_method((1200, 219_000), (20,) * 60, 4, budget=2 * 2**30, remote_workers=True)
    'p2p'
    """
    if len(time_chunks) <= 1:
        return "none"
    if shape[0] * shape[1] * itemsize <= budget * REGROUP_FRACTION:
        return "memory"
    return "p2p" if remote_workers else "disk"


def whole_time_blocks(signals: da.Array, columns: tuple[int, ...], itemsize: int) -> da.Array:
    """``signals`` rechunked to ``{0: -1, 1: columns}`` within the memory budget (see the module)."""
    target = {0: -1, 1: columns}
    client = distributed_client() if signals.numblocks[0] > 1 else None
    remote = client is not None and (
        dask.config.get("array.rechunk.method", None) == "p2p" or not workers_share_this_disk(client)
    )
    budget = memory_budget(client)
    method = regroup_method(signals.shape, signals.chunks[0], itemsize, budget, remote)
    if method in ("none", "memory"):
        return signals.rechunk(target)
    if method == "p2p":
        return signals.rechunk(target, method="p2p")
    return _through_disk(signals, columns, budget)


class _Scratch:
    """The intermediate's directory, held by the tasks' arguments: removed when the graph is dropped.

    Only the instance made where the graph is built removes the directory (when it is garbage
    collected, or at exit); copies unpickled by worker processes only name it.
    """

    def __init__(self, path: str, owner: bool = True):
        self.path = path
        if owner:
            weakref.finalize(self, shutil.rmtree, path, ignore_errors=True)

    def __reduce__(self):
        return _Scratch, (self.path, False)


def _through_disk(signals: da.Array, columns: tuple[int, ...], budget: int) -> da.Array:
    root = Path(dask.config.get("temporary-directory", None) or tempfile.gettempdir())
    scratch = _Scratch(str(root / f"lazymask-regroup-{uuid.uuid4().hex}"))
    edges = tuple(int(e) for e in np.cumsum((0, *columns)))
    if signals.numblocks[1] > 1:
        signals = signals.rechunk({1: -1}, method="tasks")  # each time chunk whole (features concatenated)
    itemsize = signals.dtype.itemsize
    groups = time_groups(signals.chunks[0], min_rows=-(-PIECE_BYTES // (max(columns, default=1) * itemsize)),
                         max_bytes=int(budget * REGROUP_FRACTION), row_bytes=signals.shape[1] * itemsize)
    chunks, token = signals.to_delayed(optimize_graph=False)[:, 0], uuid.uuid4().hex
    written, rows, first = [], [], 0
    for group, count in enumerate(groups):  # each task holds its group's chunks as they came, no concatenation
        members = list(chunks[first : first + count])
        written.append(dask.delayed(_write_group)(
            members, scratch, edges, group, signals.dtype, dask_key_name=(f"_write_group-{token}", group)))
        rows.append(int(sum(signals.chunks[0][first : first + count])))
        first += count
    # one task after every write: no block is read before all are written
    barrier = da.from_delayed(dask.delayed(len)(written, dask_key_name=f"_written-{token}"), (), np.int64)
    template = da.empty((1, signals.shape[1]), chunks=((1,), columns), dtype=np.int8)
    return da.map_blocks(
        _read_block, template, barrier, scratch=scratch, rows=tuple(rows), edges=edges, dtype=signals.dtype,
        meta=np.empty((0, 0), signals.dtype), chunks=((signals.shape[0],), columns),
    )


def time_groups(chunks: tuple[int, ...], min_rows: int, max_bytes: int, row_bytes: int) -> tuple[int, ...]:
    """How many adjacent time chunks each file holds: at least ``min_rows`` rows, at most ``max_bytes``.

    A group always holds whole chunks, at least one; it stops growing as soon as it has ``min_rows``
    rows or when the next chunk would take it over ``max_bytes``.

    Examples
    --------
    >>> time_groups((8,) * 10, min_rows=20, max_bytes=10_000, row_bytes=100)
    (3, 3, 3, 1)
    >>> time_groups((8,) * 10, min_rows=100, max_bytes=2_000, row_bytes=100)
    (2, 2, 2, 2, 2)
    >>> time_groups((40, 40, 7), min_rows=20, max_bytes=1_000, row_bytes=100)
    (1, 1, 1)
    """
    groups, count, rows = [], 0, 0
    for size in chunks:
        if count and (rows >= min_rows or (rows + size) * row_bytes > max_bytes):
            groups.append(count)
            count, rows = 0, 0
        count, rows = count + 1, rows + size
    if count:
        groups.append(count)
    return tuple(groups)


def _group_path(directory: str, group: int) -> str:
    return os.path.join(directory, f"t{group:07d}.pieces")


def _write_group(chunks: list[np.ndarray], scratch: _Scratch, edges: tuple[int, ...], group: int, dtype) -> int:
    """Write adjacent time chunks as one file: the feature pieces one after another, in block order.

    Piece ``b`` holds columns ``edges[b]:edges[b + 1]`` of every row of the group, in C order, so it
    starts at byte ``rows * edges[b] * itemsize`` (of the array's ``dtype``, as the reads expect).
    Each piece is assembled in one buffer and written in one call; the file is written whole under a
    temporary name, then renamed.
    """
    directory = scratch.path
    os.makedirs(directory, exist_ok=True)
    path = _group_path(directory, group)
    partial = f"{path}.{uuid.uuid4().hex}.partial"
    rows = sum(len(chunk) for chunk in chunks)
    widths = np.diff(edges)
    buffer = empty(rows * int(widths.max(initial=0)), dtype)
    with open(partial, "wb") as stream:
        for start, stop in itertools.pairwise(edges):
            piece = buffer[: rows * (stop - start)].reshape(rows, stop - start)
            first = 0
            for chunk in chunks:
                piece[first : first + len(chunk)] = chunk[:, start:stop]
                first += len(chunk)
            stream.write(piece.data)
    os.replace(partial, path)
    return 1


def _read_block(template: np.ndarray, barrier, scratch: _Scratch, rows: tuple[int, ...], edges: tuple[int, ...],
                block_info=None) -> np.ndarray:
    """One whole-time feature block, each group's piece read straight into its rows (no copy, no concatenate).

    The files are kept until the graph is dropped: a retried task reads them again.
    """
    block = block_info[None]["chunk-location"][1]
    dtype = np.dtype(block_info[None]["dtype"])
    start, stop = edges[block], edges[block + 1]
    out = empty((sum(rows), stop - start), dtype)
    target = memoryview(out.reshape(-1).view(np.uint8))
    directory, position = scratch.path, 0
    for group, height in enumerate(rows):
        path = _group_path(directory, group)
        size, expected = height * (stop - start) * dtype.itemsize, height * edges[-1] * dtype.itemsize
        try:
            with open(path, "rb", buffering=0) as stream:
                length = os.fstat(stream.fileno()).st_size
                if length == expected:
                    stream.seek(height * start * dtype.itemsize)
                    length -= size - _read_into(stream, target[position : position + size])
        except FileNotFoundError as error:
            raise LazymaskError(
                f"the on-disk intermediate of signal.clean lost a piece ({error.filename}): its directory "
                f"{directory!r} was removed while the result was being computed; compute it "
                "again (or raise lazymask.config's memory_budget to regroup in memory)."
            ) from error
        if length != expected:
            raise LazymaskError(
                f"the on-disk intermediate of signal.clean has a damaged piece ({path}: {length} bytes, "
                f"{expected} expected): a file of its directory {directory!r} was changed while the "
                "result was being computed; compute it again (or raise lazymask.config's memory_budget "
                "to regroup in memory)."
            )
        position += size
    return out


def _read_into(stream, target: memoryview) -> int:
    """Fill ``target`` from ``stream``; the number of bytes read (fewer only at the end of the file)."""
    done = 0
    while done < len(target):
        count = stream.readinto(target[done:])
        if not count:
            break
        done += count
    return done
