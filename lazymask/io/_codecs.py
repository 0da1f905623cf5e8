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
* ``codec.read_head(identity, n, prefix)`` decodes at most ``n`` bytes from the start, for header
  parsing, starting from ``prefix`` (the source's first bytes, already read) and reading more
  only when they do not suffice (a remote ``.nii.gz``'s header costs one or two small ranged reads).
* Bytes come from the storage layer (:func:`lazymask.storage.read_into`,
  :func:`lazymask.storage.open_sequential`): local files and objects alike, every read held to the
  source's identity.

Adding a storage format (bz2, zstd, ...) is one class here, appended to :data:`CODECS`.
"""

from __future__ import annotations

from isal import isal_zlib

from lazymask.exceptions import CorruptImageError
from lazymask.io._gzip import read_gzip_range
from lazymask.storage import FileIdentity, ObjectIdentity, read_head, read_into

Identity = FileIdentity | ObjectIdentity

SNIFF_BYTES = 8
"""How many leading bytes of a file the codecs (and formats) look at to recognise it."""
_HEAD_STEP = 1 << 14  # compressed bytes fetched at a time while decoding a header (doubling)


class RawCodec:
    """Uncompressed bytes: one positioned (ranged) read per request."""

    name = "raw"
    sequential = False

    def claims(self, head: bytes) -> bool:
        return True

    def read_into(self, identity: Identity, offset: int, out, to_end: bool = False) -> None:
        read_into(identity, offset, out)

    def read_head(self, identity: Identity, n: int, prefix: bytes = b"") -> bytes:
        return prefix[:n] if len(prefix) >= min(n, identity.size) else read_head(identity, n)


class GzipCodec:
    """gzip (magic ``1f 8b``), through the process's shared checkpointed stream."""

    name = "gzip"
    sequential = True

    def claims(self, head: bytes) -> bool:
        return head[:2] == b"\x1f\x8b"

    def read_into(self, identity: Identity, offset: int, out, to_end: bool = False) -> None:
        read_gzip_range(identity, offset, out, to_end)

    def read_head(self, identity: Identity, n: int, prefix: bytes = b"") -> bytes:
        decompressor, out, position, step = isal_zlib.decompressobj(wbits=31), b"", 0, _HEAD_STEP
        try:
            while len(out) < n and not decompressor.eof:
                if decompressor.unconsumed_tail:
                    block = decompressor.unconsumed_tail
                else:
                    block = prefix[position:] or _read_range(identity, position, step)
                    position, step = position + len(block), step * 2
                if not block:
                    break
                out += decompressor.decompress(block, n - len(out))
        except isal_zlib.error as exc:
            raise CorruptImageError(
                f"{identity.path}: starts like a gzip file but its stream is corrupt ({exc}); the file "
                "cannot be read. Re-create or re-download it."
            ) from exc
        return out


def _read_range(identity: Identity, offset: int, n: int) -> bytes:
    """At most ``n`` bytes from ``offset`` (fewer at the end of the source)."""
    out = bytearray(max(0, min(n, identity.size - offset)))
    read_into(identity, offset, out)
    return bytes(out)


CODECS = (GzipCodec(), RawCodec())
"""The codecs, tried in order by :func:`codec_for` (the catch-all raw last)."""


def codec_for(head: bytes):
    """The codec of a file whose first bytes are ``head``."""
    return next(codec for codec in CODECS if codec.claims(head))


def codec_named(name: str):
    """The codec called ``name``."""
    return next(codec for codec in CODECS if codec.name == name)
