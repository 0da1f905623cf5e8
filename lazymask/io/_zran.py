"""A gzip stream whose positions other processes can resume from (zran's method, via ctypes).

A deflate stream can be resumed at the boundary between two of its blocks from three things: the
compressed offset, the bits of the byte before it that the next block starts with, and the 32 KiB
of output before the boundary (the window that the next blocks' back-references reach into).
Python's ``zlib`` can neither stop at block boundaries nor be given those bits, but the zlib C
library can (``inflate(Z_BLOCK)``, ``inflatePrime``, ``inflateSetDictionary``); this module calls
the system's zlib (the one Python's ``zlib`` is built on) through ctypes.

Contract
--------
* :class:`ZranStream` serves the same ``read_into(offset, out, to_end)`` as
  :class:`lazymask.io._gzip.GzipStream`, with the same errors, and in addition:
  ``point_at(end)`` is a :class:`ResumePoint` at or before decompressed offset ``end`` (the last
  block boundary before the end of the read that ended there), and ``offer(point)`` adds a point
  taken by another process: a later read at or after it starts from it instead of decompressing
  from the file's start. A point is plain data (about 33 kB, picklable).
* Every member's CRC-32 and length are checked, also after a resume (a point carries the member's
  running CRC-32 and length).
* Memory: one window per point kept (a point every 4 MiB of output, for reads that jump back) plus
  the input block.
* ``available()`` says whether the system zlib could be loaded; without it callers keep
  :class:`~lazymask.io._gzip.GzipStream`.
"""

from __future__ import annotations

import bisect
import ctypes
import ctypes.util
import threading
import zlib
from collections import OrderedDict
from dataclasses import dataclass

from lazymask.io._gzip import LowestOffsetFirst, as_identity, corrupt_stream
from lazymask.storage import open_sequential

_WINDOW = 32768
_INPUT_BLOCK = 1 << 20
_STEP = 4 << 20
_RECENT = 8  # points kept by the end of the read that took them (for the reads' order tokens)
Z_OK, Z_STREAM_END, Z_BUF_ERROR, Z_BLOCK = 0, 1, -5, 5


class _ZStream(ctypes.Structure):
    _fields_ = [("next_in", ctypes.c_void_p), ("avail_in", ctypes.c_uint), ("total_in", ctypes.c_ulong),
                ("next_out", ctypes.c_void_p), ("avail_out", ctypes.c_uint), ("total_out", ctypes.c_ulong),
                ("msg", ctypes.c_char_p), ("state", ctypes.c_void_p), ("zalloc", ctypes.c_void_p),
                ("zfree", ctypes.c_void_p), ("opaque", ctypes.c_void_p), ("data_type", ctypes.c_int),
                ("adler", ctypes.c_ulong), ("reserved", ctypes.c_ulong)]


_lib = []
_lib_lock = threading.Lock()


def _library():
    """The system zlib through ctypes, or None when it cannot be loaded."""
    with _lib_lock:
        if not _lib:
            _lib.append(_load())
        return _lib[0]


def _load():
    for name in ("libz.so.1", ctypes.util.find_library("z")):
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        stream = ctypes.POINTER(_ZStream)
        lib.zlibVersion.restype = ctypes.c_char_p
        lib.inflateInit2_.argtypes = [stream, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.inflate.argtypes = [stream, ctypes.c_int]
        lib.inflateEnd.argtypes = [stream]
        lib.inflatePrime.argtypes = [stream, ctypes.c_int, ctypes.c_int]
        lib.inflateSetDictionary.argtypes = [stream, ctypes.c_char_p, ctypes.c_uint]
        return lib
    return None


def available() -> bool:
    """Whether resumable streams can be made here (the system zlib loads)."""
    return _library() is not None


@dataclass(frozen=True)
class ResumePoint:
    """Where a deflate block starts: enough to resume decompressing there, in any process."""

    position: int  # decompressed offset of the block's first byte
    compressed_offset: int  # offset in the file of the first byte the block does not share with the one before
    bits: int  # 0..7 bits of the byte before compressed_offset that belong to the block
    previous_byte: int  # that byte
    window: bytes  # the (up to) 32 KiB of output before position
    member_crc: int  # CRC-32 of the gzip member's output before position
    member_length: int  # bytes of the member's output before position


def _count(n_bytes: int) -> None:
    from lazymask.io._gzip import count_decompressed

    count_decompressed(n_bytes)


class ZranStream:
    """One raw-deflate decompressor over one gzip file, resumable at block boundaries."""

    def __init__(self, identity):
        identity = as_identity(identity)
        self.path = identity.path
        self._z = _library()
        self._turns = LowestOffsetFirst()
        self._file = open_sequential(identity)  # kept open across reads of this process
        self._strm = _ZStream()
        self._live = False
        self._input = bytearray(_INPUT_BLOCK)
        self._input_address = ctypes.addressof((ctypes.c_char * _INPUT_BLOCK).from_buffer(self._input))
        self._points: list[ResumePoint] = []  # sorted by position
        self._points_lock = threading.Lock()
        self._recent: OrderedDict[int, ResumePoint] = OrderedDict()
        self._forget()

    def close(self) -> None:
        """Free the decompressor and close the file."""
        self._end()
        self._file.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    # -- the service --------------------------------------------------------------------------------
    def read_into(self, offset: int, out: memoryview, to_end: bool = False) -> None:
        """Fill ``out`` with the decompressed bytes starting at ``offset`` (see the module's contract)."""
        from lazymask.exceptions import LazymaskError

        self._turns.acquire(offset)
        try:
            self._seek(offset)
            self._fill(out)
            with self._points_lock:
                self._recent[offset + len(out)] = self._last
                while len(self._recent) > _RECENT:
                    self._recent.popitem(last=False)
            if to_end:
                self._check_end()
        except LazymaskError:  # corrupt, changed or gone: said as it is
            self._forget()
            raise
        except (zlib.error, OSError, EOFError, ValueError) as exc:
            self._forget()
            raise corrupt_stream(self.path, exc) from exc
        finally:
            self._turns.release()

    def point_at(self, end: int) -> ResumePoint | None:
        """The point taken at the end of this process's read that ended at ``end`` (None if none)."""
        with self._points_lock:
            point = self._recent.get(end)
        return point if point is not None and point.position <= end else None

    def offer(self, point: ResumePoint) -> None:
        """Keep ``point`` (taken by another process) to resume from."""
        with self._points_lock:
            index = bisect.bisect_left([p.position for p in self._points], point.position)
            if index == len(self._points) or self._points[index].position != point.position:
                self._points.insert(index, point)

    # -- positioning ----------------------------------------------------------------------------------
    def _end(self) -> None:
        if self._live:
            self._z.inflateEnd(ctypes.byref(self._strm))
            self._live = False

    def _init_raw(self) -> None:
        self._end()
        ctypes.memset(ctypes.byref(self._strm), 0, ctypes.sizeof(_ZStream))
        ret = self._z.inflateInit2_(ctypes.byref(self._strm), -15, self._z.zlibVersion(), ctypes.sizeof(_ZStream))
        if ret != Z_OK:
            raise MemoryError(f"zlib inflateInit2 failed ({ret})")
        self._live = True

    def _forget(self) -> None:
        """Drop the position (after an error, or before the first read): the next read restarts."""
        self.position = 1 << 62
        self._last = None

    def _restart(self) -> None:
        self.position = 0
        self._history = b""
        self._last: ResumePoint | None = None
        self._ended = False  # the data ended (after the last member)
        self._begin_member(0)

    def _resume(self, point: ResumePoint) -> None:
        self._init_raw()
        if point.bits:
            self._z.inflatePrime(ctypes.byref(self._strm), point.bits, point.previous_byte >> (8 - point.bits))
        if point.window:
            self._z.inflateSetDictionary(ctypes.byref(self._strm), point.window, len(point.window))
        self._feed_from(point.compressed_offset, point.previous_byte)
        self.position, self._history, self._last, self._ended = point.position, point.window, point, False
        self._crc, self._length = point.member_crc, point.member_length

    def _seek(self, offset: int) -> None:
        with self._points_lock:
            index = bisect.bisect_right([p.position for p in self._points], offset) - 1
            best = self._points[index] if index >= 0 else None
        if offset < self.position or (best is not None and best.position > self.position):
            if best is None:
                self._restart()
            else:
                self._resume(best)
        self._skip(offset - self.position)

    # -- input ----------------------------------------------------------------------------------------
    def _feed_from(self, compressed_offset: int, previous_byte: int = 0) -> None:
        self._file.seek(compressed_offset)
        self._input_start = compressed_offset
        self._previous_byte = previous_byte
        self._input_length = 0
        self._strm.avail_in = 0
        self._refill()

    def _refill(self) -> bool:
        if self._input_length:
            self._previous_byte = self._input[self._input_length - 1]
        self._input_start += self._input_length
        n = self._file.readinto(self._input)
        self._input_length = n
        self._strm.next_in = self._input_address
        self._strm.avail_in = n
        return n > 0

    def _compressed_position(self) -> int:
        return self._input_start + self._input_length - self._strm.avail_in

    def _begin_member(self, compressed_offset: int) -> None:
        """Parse the gzip member header at ``compressed_offset`` and start inflating its data."""
        self._file.seek(compressed_offset)
        head = self._file.read(_INPUT_BLOCK)
        if not head.strip(b"\x00"):
            self._ended = True  # end of data (or zero padding after the last member)
            return
        if len(head) < 10 or head[:3] != b"\x1f\x8b\x08":
            raise zlib.error("invalid gzip member header")
        flags, at = head[3], 10
        try:
            if flags & 4:
                at += 2 + int.from_bytes(head[at : at + 2], "little")
            for flag in (8, 16):
                if flags & flag:
                    at = head.index(b"\x00", at) + 1
        except ValueError:
            raise zlib.error("gzip member header cut short") from None
        at += 2 if flags & 2 else 0
        if at > len(head):
            raise zlib.error("gzip member header cut short")
        self._init_raw()
        self._crc, self._length = 0, 0
        self._feed_from(compressed_offset + at)

    def _end_member(self) -> None:
        """The member's deflate data ended: check its trailer, start the next member (if any)."""
        end = self._compressed_position()
        self._file.seek(end)
        trailer = self._file.read(8)
        if len(trailer) < 8:
            from lazymask.exceptions import CorruptImageError

            raise CorruptImageError(
                f"{self.path}: the gzip stream stops after {self.position} bytes of data without its "
                "end (the CRC-32 and length trailer are missing), so the data cannot be verified; the "
                "file is truncated. Re-create or re-download it."
            )
        crc, length = int.from_bytes(trailer[:4], "little"), int.from_bytes(trailer[4:], "little")
        if crc != self._crc or length != self._length & 0xFFFFFFFF:
            raise zlib.error("CRC-32 or length check failed")
        self._begin_member(end + 8)

    # -- decompression --------------------------------------------------------------------------------
    def _produce(self, out: memoryview) -> int:
        """Decompress into ``out``; how many bytes (fewer only where the data ends)."""
        strm, n = self._strm, len(out)
        address = ctypes.addressof((ctypes.c_char * n).from_buffer(out))
        done, boundary = 0, None
        while done < n and not self._ended:
            if not strm.avail_in and not self._refill():
                break  # the data ends inside a member: the callers say "truncated"
            strm.next_out, strm.avail_out = address + done, n - done
            ret = self._z.inflate(ctypes.byref(strm), Z_BLOCK)
            produced = n - done - strm.avail_out
            if produced:
                self._crc = zlib.crc32(out[done : done + produced], self._crc)
                self._length += produced
                self.position += produced
                done += produced
            if ret == Z_STREAM_END:
                self._end_member()
            elif ret not in (Z_OK, Z_BUF_ERROR):
                raise zlib.error(f"inflate error {ret} ({(strm.msg or b'').decode(errors='replace')})")
            elif strm.data_type & 128 and not strm.data_type & 64 and (strm.data_type & 63) < 8:
                consumed = self._input_length - strm.avail_in
                previous = self._input[consumed - 1] if consumed else self._previous_byte
                boundary = (done, self._compressed_position(), strm.data_type & 7, previous, self._crc, self._length)
        if boundary is not None:
            at, compressed, bits, previous, crc, length = boundary
            window = bytes(out[max(0, at - _WINDOW) : at])
            if len(window) < _WINDOW:
                window = (self._history + window)[-_WINDOW:]
            self._last = ResumePoint(self.position - done + at, compressed, bits, previous, window, crc, length)
            with self._points_lock:
                if not self._points or self._last.position - self._points[-1].position >= _STEP:
                    self._points.append(self._last)
        if done:
            _count(done)
        tail = bytes(out[max(0, done - _WINDOW) : done])
        self._history = tail if len(tail) == _WINDOW else (self._history + tail)[-_WINDOW:]
        return done

    def _skip(self, n_bytes: int) -> None:
        scratch = memoryview(bytearray(min(n_bytes, _STEP))) if n_bytes > 0 else None
        while n_bytes > 0:
            got = self._produce(scratch[: min(n_bytes, _STEP)])
            if not got:
                raise self._truncated(self.position + n_bytes)
            n_bytes -= got

    def _fill(self, out: memoryview) -> None:
        start, filled = self.position, 0
        while filled < len(out):
            got = self._produce(out[filled : filled + _STEP])
            if not got:
                raise self._truncated(start + len(out))
            filled += got

    def _check_end(self) -> None:
        scratch = memoryview(bytearray(_STEP))
        while self._produce(scratch):
            pass
        if not self._ended:
            from lazymask.exceptions import CorruptImageError

            raise CorruptImageError(
                f"{self.path}: the gzip stream stops after {self.position} bytes of data without its "
                "end (the CRC-32 and length trailer are missing), so the data cannot be verified; the "
                "file is truncated. Re-create or re-download it."
            )

    def _truncated(self, wanted: int):
        from lazymask.exceptions import CorruptImageError

        return CorruptImageError(
            f"{self.path}: the gzip stream ends after {self.position} bytes of data but "
            f"{wanted} were needed; the file is truncated. Re-create or re-download it."
        )
