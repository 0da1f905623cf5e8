"""How a file's bytes are stored (plain or gzip), decided from its first bytes, never its name.

Contract
--------
* A codec has a ``name``, ``claims(head)`` (``head``: the file's first bytes), ``sequential`` (reads
  of one file must go front to back to be cheap) and ``read_into(identity, offset, out, to_end)``, which
  fills the writable buffer ``out`` with the *decoded* bytes ``offset .. offset + len(out)`` after
  checking the file is still the one ``identity`` names (a changed file raises
  :class:`~lazymask.exceptions.SourceChangedError`; data ending early,
  :class:`~lazymask.exceptions.CorruptImageError` naming the file). ``to_end`` says the range ends
  the data: a codec with an end-of-stream check (gzip's CRC-32 and length) runs it then.
* ``codec_for(head)`` is the first codec of :data:`CODECS` that claims the bytes (raw claims any);
  ``codec_named(name)`` finds one by the name a reader carries (readers pickle names, not codecs).
* ``read_head(path, codec, n)`` decodes at most ``n`` bytes from the start, for header parsing.

Adding a storage format (bz2, zstd, ...) is one class here, appended to :data:`CODECS`.
"""

from __future__ import annotations

import os

from isal import isal_zlib

from lazymask.exceptions import CorruptImageError
from lazymask.io._gzip import read_gzip_range
from lazymask.storage import FileIdentity, check_unchanged

SNIFF_BYTES = 8
"""How many leading bytes of a file the codecs (and formats) look at to recognise it."""


class RawCodec:
    """Uncompressed bytes: one positioned read per request."""

    name = "raw"
    sequential = False

    def claims(self, head: bytes) -> bool:
        return True

    def read_into(self, identity: FileIdentity, offset: int, out, to_end: bool = False) -> None:
        check_unchanged(identity)
        view = memoryview(out).cast("B")
        with open(identity.path, "rb", buffering=0) as f:
            fd, done = f.fileno(), 0
            while done < len(view):
                got = os.preadv(fd, [view[done:]], offset + done)
                if got == 0:
                    raise CorruptImageError(
                        f"{identity.path}: the file ends at byte {offset + done} but its header "
                        f"declares voxel data up to byte {offset + len(view)}; the file is "
                        "truncated. Re-create or re-download it."
                    )
                done += got

    def read_head(self, path: str, n: int) -> bytes:
        with open(path, "rb") as f:
            return f.read(n)


class GzipCodec:
    """gzip (magic ``1f 8b``), through the process's shared checkpointed stream."""

    name = "gzip"
    sequential = True

    def claims(self, head: bytes) -> bool:
        return head[:2] == b"\x1f\x8b"

    def read_into(self, identity: FileIdentity, offset: int, out, to_end: bool = False) -> None:
        read_gzip_range(identity, offset, out, to_end)

    def read_head(self, path: str, n: int) -> bytes:
        decompressor, out = isal_zlib.decompressobj(wbits=31), b""
        try:
            with open(path, "rb") as f:
                while len(out) < n and not decompressor.eof:
                    block = decompressor.unconsumed_tail or f.read(1 << 16)
                    if not block:
                        break
                    out += decompressor.decompress(block, n - len(out))
        except isal_zlib.error as exc:
            raise CorruptImageError(
                f"{path}: starts like a gzip file but its stream is corrupt ({exc}); the file cannot "
                "be read. Re-create or re-download it."
            ) from exc
        return out


CODECS = (GzipCodec(), RawCodec())
"""The codecs, tried in order by :func:`codec_for` (the catch-all raw last)."""


def codec_for(head: bytes):
    """The codec of a file whose first bytes are ``head``."""
    return next(codec for codec in CODECS if codec.claims(head))


def codec_named(name: str):
    """The codec called ``name``."""
    return next(codec for codec in CODECS if codec.name == name)
