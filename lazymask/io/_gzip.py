"""Reading ranges of a ``.nii.gz`` at the cost of about one decompression per pass.

gzip has no random access: reaching byte ``n`` of the decompressed stream costs decompressing bytes
``0 .. n``. A graph that reads a ``.nii.gz`` chunk by chunk would, done naively, decompress the file
once per chunk — and dask does not read chunks in order (a reduction's tasks typically run from the
last chunk to the first). So every process keeps, per file, one :class:`GzipStream`: a decompressor
that remembers where it is, plus *checkpoints* — copies of the decompressor's state (about 40 kB
each: the 32 kB window and the inflate state) taken every few megabytes of output as it goes. A
request at or after the current position decompresses forward; a request behind it resumes from the
nearest checkpoint before it. A full pass in any order therefore costs one decompression plus at
most one checkpoint interval per chunk, and memory stays at the checkpoints (a few MB per GB of
data) plus the chunk being read. This is the idea of zran / ``indexed_gzip``, built on the standard
library's ``zlib.Decompress.copy``.

Two decompressors: ISA-L's (``isal.igzip``, about 1.7x zlib's speed) streams forward, straight into
the caller's buffer (no intermediate bytes, no copy), but its state cannot be copied, so it takes no
checkpoints; zlib's can. A stream starts with ISA-L and keeps
it while reads go forward (a graph's read chain reads a file front to back) or restart near the
start (a second pass). The first read that jumps back further, with no checkpoint before it,
restarts with zlib, which takes checkpoints from then on: random access pays one zlib
decompression once, passes in order cost one ISA-L decompression each. Both check every member's
CRC-32 and length.

Contract
--------
* ``read_gzip_range(identity, offset, out)`` fills ``out`` (a writable buffer) with the decompressed
  bytes ``offset .. offset + len(out)`` of the gzip file or object ``identity.path``, or raises
  :class:`~lazymask.exceptions.CorruptImageError` naming it when the data ends early or is
  not valid gzip.
* The compressed bytes come from :func:`lazymask.storage.open_sequential`: a local file, or an
  object fetched front to back in 16 MiB ranged reads (ISA-L's input buffer is filled by one
  ``GET`` at a time), so a pass over a remote ``.nii.gz`` is one download and one decompression,
  in file order, never whole in memory.
* Streams are cached per process, keyed on the source's identity
  (:class:`~lazymask.storage.FileIdentity` or :class:`~lazymask.storage.ObjectIdentity`) taken at
  open, which every read checks first (one ``os.stat``; on S3 each ranged ``GET`` carries
  ``If-Match: <etag>`` instead): a source rewritten or replaced raises
  :class:`~lazymask.exceptions.SourceChangedError` and is never read through stale state. Tasks waiting on one stream are served lowest offset first.
* Nothing here is pickled: tasks carry a path; each process builds its own streams and checkpoints.
"""

from __future__ import annotations

import atexit
import bisect
import os
import threading
import zlib
from collections import OrderedDict
from dataclasses import dataclass

from isal import igzip, isal_zlib

try:  # the C reader behind igzip.IGzipFile, which takes the size of its input buffer
    from isal.isal_zlib import _GzipReader
except ImportError:  # pragma: no cover - an isal without it: its file class (512 kB input reads)
    _GzipReader = None

from lazymask.exceptions import CorruptImageError, LazymaskError
from lazymask.storage import (
    FileIdentity,
    ObjectIdentity,
    check_unchanged,
    file_identity,
    open_sequential,
    reads_check_identity,
)

Identity = FileIdentity | ObjectIdentity


def as_identity(source: Identity | str | os.PathLike) -> Identity:
    """``source`` itself when it is an identity, else the identity of the local file it names."""
    return source if isinstance(source, FileIdentity | ObjectIdentity) else file_identity(source)

_INPUT_BLOCK = 1 << 20  # compressed bytes read from disk at a time (zlib)
_ISAL_INPUT_BUFFER = 16 << 20
"""Compressed bytes ISA-L's reader takes from the file at a time. The reader gives up the GIL while
it decompresses one buffer's worth and takes it back to refill the buffer; each take-back waits
for the other threads' Python (up to the 5 ms switch interval), so small buffers starve it beside a
busy thread. Measured on the 200-volume benchmark file with a pure-Python thread spinning beside it
(1 core's worth of GIL contention): 512 kB (igzip.IGzipFile's) 2.8-4.8 s, 4 MiB 1.19 s, 16 MiB 0.84 s,
alone 0.65 s. The buffer is allocated untouched (no memory until filled) and freed at the end of a
pass."""
_STEP = 4 << 20  # decompressed bytes produced per call, and the spacing of checkpoints
_MAX_OPEN_STREAMS = 16
_READER = os.environ.get("LAZYMASK_GZIP_READER", "isal")
"""Which decompressor reads forward: "isal" (the default), "zlib" (checkpoints always),
"rapidgzip" (its parallel, seekable reader, if installed) or "zran" (zlib through ctypes, with resume
points that other processes can use: :mod:`lazymask.io._zran`). For measuring only
(benchmarks/bench_io.py, benchmarks/bench_cluster.py): ISA-L won on 2 cores, see
:class:`RapidgzipStream`; "zran" decompresses at zlib's speed (about half ISA-L's)."""
_GZIP_WBITS = 16 + zlib.MAX_WBITS


@dataclass(frozen=True)
class _Checkpoint:
    position: int  # decompressed offset
    compressed_offset: int  # offset in the file of the first compressed byte not yet consumed
    state: object  # a zlib decompressor, never used itself: copied on restore


_ERRORS = (zlib.error, isal_zlib.error, OSError, EOFError)
_decompressed = [0]  # bytes this process decompressed, all files (see bytes_decompressed)
_decompressed_lock = threading.Lock()


def bytes_decompressed() -> int:
    """How many bytes this process's gzip streams have decompressed so far (for tests and benchmarks)."""
    return _decompressed[0]


def count_decompressed(n_bytes: int) -> None:
    """Add ``n_bytes`` to :func:`bytes_decompressed` (the streams of :mod:`lazymask.io._zran` count here too)."""
    with _decompressed_lock:
        _decompressed[0] += n_bytes


def corrupt_stream(path: str, exc: BaseException) -> CorruptImageError:
    """The error for a gzip stream that cannot be decompressed (``exc``: what the decompressor said)."""
    return CorruptImageError(
        f"{path}: the gzip stream is corrupt ({exc}); the file cannot be read. Re-create or re-download it."
    )


class LowestOffsetFirst:
    """Turns on one stream for the threads that share it: one at a time, the lowest offset first."""

    def __init__(self):
        self._cond = threading.Condition()
        self._busy = False
        self._waiting: list[int] = []

    def acquire(self, offset: int) -> None:
        with self._cond:
            self._waiting.append(offset)
            try:
                self._cond.wait_for(lambda: not self._busy and offset == min(self._waiting))
            finally:
                self._waiting.remove(offset)
            self._busy = True

    def release(self) -> None:
        with self._cond:
            self._busy = False
            self._cond.notify_all()


class GzipStream:
    """One decompressor over one gzip file, with checkpoints to resume from."""

    def __init__(self, identity: Identity | str):
        identity = as_identity(identity)
        self.path, self.size = identity.path, identity.size
        self._turns = LowestOffsetFirst()
        self._checkpoints: list[_Checkpoint] = []
        self._forward = zlib if _READER == "zlib" else isal_zlib  # until a read jumps back (then zlib)
        self._library = self._forward
        self._file = open_sequential(identity)  # kept open across reads of this process (ranged reads if remote)
        self._restart(idle=True)

    def close(self) -> None:
        """Close the file (the stream is not used again)."""
        self._file.close()

    def __del__(self):
        self._file.close()

    def read_into(self, offset: int, out: memoryview, to_end: bool = False) -> None:
        """Fill ``out`` with the decompressed bytes starting at ``offset``.

        With ``to_end``, also decompress what follows, to the end of the file, so that the last
        member's CRC-32 and length are checked (a file cut in its trailer is not taken as whole).
        """
        self._turns.acquire(offset)
        try:
            if self._idle:  # the last pass ended: a reader for this one (forward from the start)
                self._reader, self._idle = self._isal_reader(), False
            self._seek(offset)
            self._fill(out)
            if to_end:
                self._check_end()
        except LazymaskError:  # corrupt, changed or gone: said as it is
            self._restart(idle=True)
            raise
        except _ERRORS as exc:
            self._restart(idle=True)
            raise corrupt_stream(self.path, exc) from exc
        finally:
            self._turns.release()

    # -- positioning ----------------------------------------------------------------------------
    def _restart(self, library=None, idle: bool = False) -> None:
        """Back to the file's start. ``idle``: a pass is over; the reader is made at the next read
        (a fresh ISA-L reader's input buffer took memory that malloc had kept resident: a cached
        stream holding one kept ~10 MB, 16 of them 155 MB, growing an archive build's memory)."""
        library = library or self._forward
        self._file.seek(0)
        self._library = library
        # ISA-L reads through its gzip reader, which decompresses into the caller's buffer and checks
        # every member's CRC-32 and length; zlib through a decompressor object that can be copied.
        self._idle = idle and library is isal_zlib
        self._reader = self._isal_reader() if library is isal_zlib and not self._idle else None
        self._decompressor = zlib.decompressobj(wbits=_GZIP_WBITS)
        self._pending = b""  # compressed bytes read from the file, not yet consumed (zlib)
        self.position = 0

    def _isal_reader(self):
        if _GzipReader is None:  # pragma: no cover
            return igzip.IGzipFile(fileobj=self._file, mode="rb")
        return _GzipReader(self._file, max(1 << 16, min(_ISAL_INPUT_BUFFER, self.size)))

    def _seek(self, offset: int) -> None:
        index = bisect.bisect_right([c.position for c in self._checkpoints], offset) - 1
        best = self._checkpoints[index] if index >= 0 else None
        if offset < self.position or (best is not None and best.position > self.position):
            if best is None:  # near the start: a new pass, with ISA-L; further: take checkpoints
                self._restart(self._forward if offset < _STEP else zlib)
            else:
                self._file.seek(best.compressed_offset)
                self._decompressor = best.state.copy()
                self._library, self._reader = zlib, None
                self._pending = b""
                self.position = best.position
        self._skip(offset - self.position)

    def _checkpoint(self) -> None:
        last = self._checkpoints[-1].position if self._checkpoints else 0
        if self._library is zlib and self.position - last >= _STEP and not self._decompressor.eof:
            compressed_offset = self._file.tell() - len(self._pending)
            self._checkpoints.append(_Checkpoint(self.position, compressed_offset, self._decompressor.copy()))

    # -- decompression ----------------------------------------------------------------------------
    def _produce(self, max_length: int) -> bytes:
        """Decompress at most ``max_length`` bytes (at least one unless the data ends)."""
        while True:
            if self._decompressor.eof:  # a multi-member gzip file: start the next member
                # After the end of a member, zlib keeps the leftover input in unused_data (and,
                # when max_length stopped it, a duplicate in unconsumed_tail): take it once.
                rest = self._decompressor.unused_data + self._file.read(_INPUT_BLOCK)
                if not rest.strip(b"\x00"):
                    return b""  # end of data (or zero padding after the last member)
                self._decompressor = self._library.decompressobj(wbits=_GZIP_WBITS)
                self._pending = rest
            if not self._pending:
                self._pending = self._file.read(_INPUT_BLOCK)
                if not self._pending:
                    return b""
            chunk = self._decompressor.decompress(self._pending, max_length)
            self._pending = self._decompressor.unconsumed_tail
            if chunk:
                with _decompressed_lock:
                    _decompressed[0] += len(chunk)
                self.position += len(chunk)
                if self.position > (self._checkpoints[-1].position if self._checkpoints else 0):
                    self._checkpoint()
                return chunk

    def _read_direct(self, out: memoryview) -> None:
        """Fill ``out`` through ISA-L's gzip reader (forward only)."""
        filled = 0
        try:
            while filled < len(out):
                got = self._reader.readinto(out[filled:])
                if not got:
                    break
                filled += got
        except EOFError:  # the reader's word for data that stops inside a member
            pass
        finally:
            self.position += filled
            with _decompressed_lock:
                _decompressed[0] += filled
        if filled < len(out):
            raise self._truncated(self.position - filled + len(out))

    def _skip(self, n_bytes: int) -> None:
        if self._reader is not None:
            scratch = memoryview(bytearray(min(n_bytes, _STEP)))
            while n_bytes > 0:
                self._read_direct(scratch[: min(n_bytes, _STEP)])
                n_bytes -= min(n_bytes, _STEP)
            return
        while n_bytes > 0:
            chunk = self._produce(min(n_bytes, _STEP))
            if not chunk:
                raise self._truncated(self.position + n_bytes)
            n_bytes -= len(chunk)

    def _fill(self, out: memoryview) -> None:
        if self._reader is not None:
            self._read_direct(out)
            return
        start, filled = self.position, 0
        while filled < len(out):
            chunk = self._produce(min(len(out) - filled, _STEP))
            if not chunk:
                raise self._truncated(start + len(out))
            out[filled : filled + len(chunk)] = chunk
            filled += len(chunk)

    def _check_end(self) -> None:
        if self._reader is not None:
            scratch = bytearray(_STEP)
            try:
                while got := self._reader.readinto(scratch):
                    self.position += got
            except EOFError:
                raise self._missing_trailer() from None
            self._restart(idle=True)  # the pass is over: the reader and its input buffer freed
            return
        while self._produce(_STEP):
            pass
        if not self._decompressor.eof:
            raise self._missing_trailer()

    def _missing_trailer(self) -> CorruptImageError:
        return CorruptImageError(
            f"{self.path}: the gzip stream stops after {self.position} bytes of data without its "
            "end (the CRC-32 and length trailer are missing), so the data cannot be verified; the "
            "file is truncated. Re-create or re-download it."
        )

    def _truncated(self, wanted: int) -> CorruptImageError:
        return CorruptImageError(
            f"{self.path}: the gzip stream ends after {self.position} bytes of data but "
            f"{wanted} were needed; the file is truncated. Re-create or re-download it."
        )


class RapidgzipStream:
    """The same service through ``rapidgzip`` (parallel decompression, its own seek index).

    Measured against :class:`GzipStream` with ISA-L by ``benchmarks/bench_io.py`` (``LAZYMASK_GZIP_READER=
    rapidgzip``); not the default: on 2 cores it was slower (see the benchmark's docstring), it runs
    its own thread pool (the user's scheduler should decide the cores used) and reads by whole blocks.
    """

    def __init__(self, identity: Identity | str):
        import rapidgzip

        identity = as_identity(identity)
        self.path = identity.path
        self._lock = threading.Lock()
        source = identity.path if isinstance(identity, FileIdentity) else open_sequential(identity)
        self._file = rapidgzip.open(source, parallelization=os.cpu_count() or 1)

    def close(self) -> None:
        self._file.close()

    def read_into(self, offset: int, out: memoryview, to_end: bool = False) -> None:
        with self._lock:
            try:
                self._file.seek(offset)
                filled = 0
                while filled < len(out):
                    got = self._file.readinto(out[filled:])
                    if not got:
                        raise CorruptImageError(
                            f"{self.path}: the gzip stream ends after {offset + filled} bytes of data but "
                            f"{offset + len(out)} were needed; the file is truncated. Re-create or re-download it."
                        )
                    filled += got
                if to_end:
                    while self._file.read(_STEP):
                        pass
            except LazymaskError:
                raise
            except Exception as exc:  # rapidgzip raises ValueError/RuntimeError on corrupt data
                raise CorruptImageError(
                    f"{self.path}: the gzip stream is corrupt ({exc}); the file cannot be read. "
                    "Re-create or re-download it."
                ) from exc


_streams: OrderedDict[tuple, GzipStream] = OrderedDict()
_streams_lock = threading.Lock()


@atexit.register
def _close_streams() -> None:
    with _streams_lock:
        while _streams:
            _streams.popitem()[1].close()


def _stream_for(identity: Identity) -> GzipStream:
    if not reads_check_identity(identity):  # else every ranged GET of the stream carries the check
        check_unchanged(identity)
    with _streams_lock:
        stream = _streams.get(identity)
        if stream is None:
            if resumable_streams():
                from lazymask.io._zran import ZranStream as kind
            else:
                kind = RapidgzipStream if _READER == "rapidgzip" else GzipStream
            stream = _streams[identity] = kind(identity)
            while len(_streams) > _MAX_OPEN_STREAMS:
                _streams.popitem(last=False)  # closed when the last task using it lets go
        _streams.move_to_end(identity)
        return stream


def read_gzip_range(identity: Identity, offset: int, out, to_end: bool = False) -> None:
    """Fill the writable buffer ``out`` with decompressed bytes ``offset ..`` of a gzip file.

    ``identity`` is the source's :func:`~lazymask.storage.source_identity` taken at open; a source
    changed since raises :class:`~lazymask.exceptions.SourceChangedError`. ``to_end``: the range
    ends the data; check the gzip trailer after it (see :meth:`GzipStream.read_into`).
    """
    _stream_for(identity).read_into(offset, memoryview(out).cast("B"), to_end)


def resumable_streams() -> bool:
    """Whether this process's gzip streams are resumable ones (``LAZYMASK_GZIP_READER=zran`` and the
    system zlib loads)."""
    if _READER != "zran":
        return False
    from lazymask.io._zran import available

    return available()


def resume_point(identity: Identity, end: int):
    """A point, picklable, from which another process can resume reading ``identity`` at or before
    decompressed offset ``end``: the one this process's stream took when its read ending at ``end``
    finished; None when its stream takes none (ISA-L and zlib streams; see :mod:`lazymask.io._zran`)."""
    with _streams_lock:
        stream = _streams.get(identity)
    point_at = getattr(stream, "point_at", None)
    return point_at(end) if point_at is not None else None


def offer_resume_point(identity: Identity, point) -> None:
    """Let this process's stream of ``identity`` resume from ``point`` (taken by another process)."""
    stream = _stream_for(identity)
    if hasattr(stream, "offer"):
        stream.offer(point)
