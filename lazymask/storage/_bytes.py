"""Reading the bytes of a source, local file or object, every read held to the source's identity.

Contract
--------
* ``read_into(identity, offset, out)`` fills the writable buffer ``out`` with the source's bytes
  ``offset .. offset + len(out)``:

  - a local file (:class:`FileIdentity`): :func:`check_unchanged` (one ``os.stat``), then
    positioned reads (``preadv``) straight into ``out``;
  - an S3 object whose identity holds its ``ETag``: one ranged ``GET`` with ``If-Match: <etag>``,
    so that the check and the read are one atomic request (a changed object answers 412 and
    raises :class:`~lazymask.exceptions.SourceChangedError` naming the URL); an S3 object of a
    versioned bucket: :func:`check_unchanged`, then a ``GET`` of that version;
  - any other object (``gs://``, ``https://``, ``memory://`` ...): :func:`check_unchanged` (one
    ``HEAD``), then one ranged read.

  A source that ends before ``offset + len(out)`` raises
  :class:`~lazymask.exceptions.CorruptImageError` naming it (the file is truncated); one that is
  gone, :class:`~lazymask.exceptions.ImageFileNotFoundError`.
* ``read_head(identity, n)`` returns the first ``n`` bytes (fewer only when the source is shorter),
  for sniffing formats and parsing headers: one read, no voxel beyond ``n``.
* ``open_sequential(identity)`` returns a binary file object (``read``, ``readinto``, ``seek``,
  ``tell``) for reading front to back, as decompressors do: a local file is the file itself; an
  object is fetched in ranged reads of at least :data:`BLOCK_BYTES` (16 MiB), each held to the
  identity as :func:`read_into` holds them, so that a pass downloads the object once, in file
  order, and never holds more than one block of it. The end of the object is an end of file.
* ``reads_check_identity(identity)`` says whether every read of the source carries the identity
  check itself (S3 with an ETag): callers then need no :func:`check_unchanged` of their own.
* :func:`bytes_fetched` counts the bytes this process fetched from object stores (for tests and
  benchmarks).
"""

from __future__ import annotations

import io
import os
import threading

from lazymask.exceptions import CorruptImageError, ImageFileNotFoundError, SourceChangedError
from lazymask.storage._identity import FileIdentity, ObjectIdentity, check_unchanged

__all__ = ["BLOCK_BYTES", "read_into", "read_head", "open_sequential", "reads_check_identity",
           "bytes_fetched"]

BLOCK_BYTES = 16 << 20
"""The smallest range a sequential read of an object asks for (16 MiB): large enough that request
latency is a few per cent of a pass on a fast network, small enough to hold one at a time."""
_PIECE = 1 << 20  # bytes of a response body copied into the caller's buffer at a time

_fetched = [0]
_fetched_lock = threading.Lock()


def bytes_fetched() -> int:
    """How many bytes this process has fetched from object stores so far.

    Examples
    --------
    >>> bytes_fetched() >= 0
    True
    """
    return _fetched[0]


def _count(n_bytes: int) -> None:
    with _fetched_lock:
        _fetched[0] += n_bytes


def read_into(identity: FileIdentity | ObjectIdentity, offset: int, out) -> None:
    """Fill ``out`` with bytes ``offset .. offset + len(out)`` of the source ``identity`` names.

    Parameters
    ----------
    identity : FileIdentity or ObjectIdentity
        The source as it was when opened (:func:`~lazymask.storage.source_identity`).
    offset : int
        The first byte.
    out : writable buffer
        Filled completely, or an error is raised.

    Raises
    ------
    SourceChangedError
        The source changed since ``identity`` was taken; nothing is returned from it.
    ImageFileNotFoundError
        The source is gone.
    CorruptImageError
        The source ends before ``offset + len(out)``.

    Examples
    --------
    >>> import fsspec
    >>> from lazymask.storage import source_identity
    >>> fsspec.filesystem("memory").pipe("/doc/bytes.bin", b"0123456789")
    >>> out = bytearray(4)
    >>> read_into(source_identity("memory://doc/bytes.bin"), 3, out)
    >>> bytes(out)
    b'3456'
    """
    view = memoryview(out).cast("B")
    if not len(view):
        return
    if isinstance(identity, ObjectIdentity):
        got = _object_read_into(identity, offset, view)
    else:
        check_unchanged(identity)
        got = _file_read_into(identity.path, offset, view)
    if got < len(view):
        raise _truncated(identity, offset + got, offset + len(view))


def _truncated(identity, end: int, wanted: int) -> CorruptImageError:
    return CorruptImageError(
        f"{identity.path}: the {_kind(identity)} ends at byte {end} but bytes up to {wanted} were "
        "needed (its header declares them); it is truncated. Re-create or re-upload it."
    )


def read_head(identity: FileIdentity | ObjectIdentity, n_bytes: int) -> bytes:
    """The first ``n_bytes`` bytes of the source (fewer when it is shorter).

    Examples
    --------
    >>> import fsspec
    >>> from lazymask.storage import source_identity
    >>> fsspec.filesystem("memory").pipe("/doc/head.bin", b"abc")
    >>> read_head(source_identity("memory://doc/head.bin"), 8)
    b'abc'
    """
    n_bytes = max(0, min(n_bytes, identity.size))
    if isinstance(identity, ObjectIdentity):
        out = bytearray(n_bytes)
        read_into(identity, 0, out)
        return bytes(out)
    try:
        with open(identity.path, "rb") as f:
            return f.read(n_bytes)
    except PermissionError:
        raise ImageFileNotFoundError(
            f"{identity.path}: permission denied, the file cannot be read. Check its permissions "
            "(chmod u+r) or run as a user who can read it."
        ) from None
    except FileNotFoundError:
        raise ImageFileNotFoundError(f"{identity.path}: no such file (it may have been moved or deleted).") from None
    except OSError as exc:
        raise CorruptImageError(f"{identity.path}: the file cannot be read ({exc}).") from exc


def open_sequential(identity: FileIdentity | ObjectIdentity, block_bytes: int = BLOCK_BYTES):
    """A binary file object over the source, for reading it front to back (see the module's contract).

    Examples
    --------
    >>> import fsspec
    >>> from lazymask.storage import source_identity
    >>> fsspec.filesystem("memory").pipe("/doc/seq.bin", b"abcdef")
    >>> with open_sequential(source_identity("memory://doc/seq.bin"), block_bytes=4) as f:
    ...     f.read(2), f.read(10), f.read(1)
    (b'ab', b'cdef', b'')
    """
    if isinstance(identity, ObjectIdentity):
        return _ObjectStream(identity, block_bytes)
    try:
        return open(identity.path, "rb")  # noqa: SIM115 - the caller closes it
    except FileNotFoundError:
        raise ImageFileNotFoundError(f"{identity.path}: no such file (it may have been moved or deleted).") from None


def reads_check_identity(identity: FileIdentity | ObjectIdentity) -> bool:
    """Whether every read of the source checks its identity itself (S3 ``GET`` with ``If-Match``).

    Examples
    --------
    >>> import fsspec
    >>> from lazymask.storage import source_identity
    >>> fsspec.filesystem("memory").pipe("/doc/check.bin", b"abc")
    >>> reads_check_identity(source_identity("memory://doc/check.bin"))
    False
    """
    return isinstance(identity, ObjectIdentity) and _is_s3(identity) and _etag(identity) is not None


# -- local files --------------------------------------------------------------------------------------
def _file_read_into(path: str, offset: int, view: memoryview) -> int:
    try:
        f = open(path, "rb", buffering=0)  # noqa: SIM115 - closed below
    except FileNotFoundError:
        raise ImageFileNotFoundError(f"{path}: no such file (it may have been moved or deleted).") from None
    with f:
        fd, done = f.fileno(), 0
        while done < len(view):
            got = os.preadv(fd, [view[done:]], offset + done)
            if got == 0:
                break
            done += got
    return done


# -- objects ------------------------------------------------------------------------------------------
def _kind(identity) -> str:
    return "object" if isinstance(identity, ObjectIdentity) else "file"


def _is_s3(identity: ObjectIdentity) -> bool:
    return identity.location.protocol in ("s3", "s3a")


def _etag(identity: ObjectIdentity) -> str | None:
    key, _, value = identity.version.partition("=")
    return value if key in ("ETag", "etag") and value else None


def _version_id(identity: ObjectIdentity) -> str | None:
    key, _, value = identity.version.partition("=")
    return value if key == "VersionId" and value else None


def _object_read_into(identity: ObjectIdentity, offset: int, view: memoryview) -> int:
    location = identity.location
    fs = location.filesystem
    if _is_s3(identity) and (_etag(identity) or _version_id(identity)):
        if _etag(identity) is None:
            check_unchanged(identity)  # a versioned bucket: the version read is the one opened
            condition = {"VersionId": _version_id(identity)}
        else:
            condition = {"IfMatch": _etag(identity)}
        from fsspec.asyn import sync

        bucket, key, _ = fs.split_path(location.fs_path)
        return sync(fs.loop, _s3_get_into, fs, identity, bucket, key, offset, view, condition)
    else:
        check_unchanged(identity)
        end = min(offset + len(view), identity.size)
        try:
            data = fs.cat_file(location.fs_path, start=offset, end=end) if end > offset else b""
        except FileNotFoundError:
            raise _gone(identity) from None
        got = min(len(data), len(view))
        view[:got] = data[:got]
        _count(got)
    return got


async def _s3_get_into(fs, identity: ObjectIdentity, bucket: str, key: str, offset: int, view: memoryview,
                       condition: dict) -> int:
    """One ranged ``GET`` (with ``condition``), its body copied into ``view``; the bytes copied."""
    if offset >= identity.size:
        return 0
    last = min(offset + len(view), identity.size) - 1
    try:
        response = await fs._call_s3("get_object", Bucket=bucket, Key=key, Range=f"bytes={offset}-{last}",
                                     **condition)
    except FileNotFoundError:
        raise _gone(identity) from None
    except OSError as exc:
        code = _error_code(exc)
        if code in ("PreconditionFailed", "412"):
            raise SourceChangedError(
                f"{identity.path}: the object changed after it was opened (its ETag is no longer "
                f"{_etag(identity)}); its data no longer matches the header read at open, so nothing "
                "was read from it. Open it again (lazymask.open_nifti) to read its new content."
            ) from None
        if code in ("InvalidRange", "416"):
            return 0
        if code in ("NoSuchKey", "404", "NoSuchVersion"):
            raise _gone(identity) from None
        raise
    body, got = response["Body"], 0
    try:
        while got < len(view):
            piece = await body.read(min(_PIECE, len(view) - got))
            if not piece:
                break
            view[got : got + len(piece)] = piece
            got += len(piece)
    finally:
        body.close()
        _count(got)
    return got


class _ReadAhead:
    """One ranged ``GET`` (with ``If-Match``) running on fsspec's event loop while the caller works."""

    def __init__(self, identity: ObjectIdentity, offset: int, n_bytes: int):
        import asyncio

        location = identity.location
        fs = location.filesystem
        bucket, key, _ = fs.split_path(location.fs_path)
        self.identity, self.offset, self.buffer = identity, offset, bytearray(n_bytes)
        coroutine = _s3_get_into(fs, identity, bucket, key, offset, memoryview(self.buffer),
                                 {"IfMatch": _etag(identity)})
        self._future = asyncio.run_coroutine_threadsafe(coroutine, fs.loop)

    def result(self) -> memoryview:
        got = self._future.result()
        if got < len(self.buffer):
            raise _truncated(self.identity, self.offset + got, self.offset + len(self.buffer))
        return memoryview(self.buffer)

    def cancel(self) -> None:
        self._future.cancel()


def _error_code(exc: BaseException) -> str | None:
    cause = exc.__cause__
    response = getattr(cause, "response", None) or {}
    code = response.get("Error", {}).get("Code")
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return str(code) if code else (str(status) if status else None)


def _gone(identity: ObjectIdentity) -> ImageFileNotFoundError:
    return ImageFileNotFoundError(
        f"{identity.path}: the object no longer exists (it was opened earlier); nothing was read "
        "from it. Restore it, or open the new one again."
    )


class _ObjectStream(io.RawIOBase):
    """An object read front to back in ranges of at least ``block_bytes`` (see the module's contract).

    On S3 (reads held by ``If-Match``) the next range is requested as soon as one is handed out,
    on fsspec's own event loop (no thread of lazymask's): the download of block ``n + 1`` overlaps
    the decompression of block ``n``, and at most two blocks are held.
    """

    def __init__(self, identity: ObjectIdentity, block_bytes: int):
        self.identity, self.size, self.block_bytes = identity, identity.size, block_bytes
        self._position = 0
        self._block, self._block_start = memoryview(b""), 0
        self._read_ahead = reads_check_identity(identity)
        self._ahead: _ReadAhead | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self.size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        wanted, filled = max(0, min(len(view), self.size - self._position)), 0
        while filled < wanted:
            position, rest = self._position + filled, view[filled:wanted]
            start = position - self._block_start
            if not 0 <= start < len(self._block):
                if not self._read_ahead and len(rest) >= min(self.block_bytes, self.size - position):
                    read_into(self.identity, position, rest)  # large: straight into the caller's buffer
                    filled += len(rest)
                    continue
                self._block, self._block_start, start = self._fetch(position), position, 0
            n = min(len(rest), len(self._block) - start)
            rest[:n] = self._block[start : start + n]
            filled += n
        self._position += filled
        return filled

    def _fetch(self, position: int) -> memoryview:
        """The block starting at ``position`` (the one read ahead, if it is that one); read the next ahead."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead.offset == position:
            block = ahead.result()
        else:
            if ahead is not None:
                ahead.cancel()
            block = memoryview(bytearray(min(self.block_bytes, self.size - position)))
            read_into(self.identity, position, block)
        following = position + len(block)
        if self._read_ahead and following < self.size:
            self._ahead = _ReadAhead(self.identity, following, min(self.block_bytes, self.size - following))
        return block

    def close(self) -> None:
        if self._ahead is not None:
            self._ahead.cancel()
            self._ahead = None
        self._block = memoryview(b"")
        super().close()
