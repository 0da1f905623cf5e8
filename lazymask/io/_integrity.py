"""What a complete store records about itself, and the checks that hold reads to it.

Contract
--------
* Every array lazymask writes has the ``crc32c`` codec last in its codec chain (after the
  compressor), and every chunk of its grid is written (``write_empty_chunks``), so a chunk that
  is missing was deleted.
* When a group is marked complete, :func:`record_manifest` stores in its attributes
  (``lazymask_manifest``) each array's shape, chunk grid, dtype, its decoding description
  (:func:`decoding_description`: the array's zarr metadata minus its attributes -- codec pipeline,
  fill value, data type, chunk key encoding, dimension names) and the crc32c checksum of every
  chunk (read from the chunk's last four bytes: no voxel data is read again).
* :func:`check_array_against_manifest` (called at every open and by ``verify``) refuses an array
  whose shape, chunk grid, dtype or decoding description is not the one recorded: chunks with the
  checksums recorded but decoded with another codec pipeline (an endianness flipped, a
  ``transpose`` added) would be scrambled values.
* :class:`CheckedStore` wraps the store a reader opens: every chunk read checks that the chunk
  exists and that its bytes have the checksum recorded, and raises :class:`CorruptStoreError`
  naming the store, the array and the chunk otherwise -- in the read task, lazily.
* :func:`read_metadata_document` reads a node's ``zarr.json`` as data before zarr parses it:
  bounded size, bounded nesting, a JSON object -- else a :class:`CorruptStoreError` naming the key.
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import google_crc32c
import zarr
from zarr.abc.store import SuffixByteRequest
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import WrapperStore

from lazymask.exceptions import CorruptStoreError
from lazymask.storage import read_bounded

__all__ = ["MANIFEST_ATTR", "record_manifest", "CheckedStore", "read_metadata_document", "checksum_codec",
           "decoding_description", "MAX_METADATA_BYTES", "MAX_NESTING"]

MANIFEST_ATTR = "lazymask_manifest"
MAX_METADATA_BYTES = 16 * 2**20
"""Largest ``zarr.json`` lazymask parses (its own are a few kB; a manifest of 10 000 chunks ~0.3 MB)."""
MAX_NESTING = 64
"""Deepest nesting of lists/dicts accepted in a store's metadata."""


def checksum_codec() -> zarr.codecs.Crc32cCodec:
    """The crc32c codec put last in every chunk's codec chain (4 bytes per chunk)."""
    return zarr.codecs.Crc32cCodec()


def _join(*parts: str) -> str:
    return "/".join(p for p in parts if p)


def chunk_keys(array: zarr.Array) -> list[tuple[tuple[int, ...], str]]:
    """Every chunk of ``array``'s grid: (chunk index, key relative to the array)."""
    grid = array.cdata_shape
    return [(index, array.metadata.encode_chunk_key(index)) for index in itertools.product(*map(range, grid))]


def _suffix(store, key: str, n: int) -> bytes | None:
    buffer = sync(store.get(key, default_buffer_prototype(), SuffixByteRequest(n)))
    return None if buffer is None else buffer.to_bytes()


def record_manifest(zgroup: zarr.Group) -> dict:
    """What ``zgroup``'s arrays hold, with a crc32c per chunk (reads 4 bytes per chunk).

    Raises :class:`CorruptStoreError` if a chunk of the grid was not written.

    Examples
    --------
    >>> group = zarr.open_group(zarr.storage.MemoryStore(), mode="w")
    >>> group.create_array("x", shape=(4,), chunks=(2,), dtype="u1", compressors=[checksum_codec()],
    ...                    config={"write_empty_chunks": True})[:] = 1
    >>> sorted(record_manifest(group)["arrays"]["x"]["crc32c"])
    ['c/0', 'c/1']
    """
    arrays = {}
    for name, array in sorted(zgroup.arrays()):
        checksums = {}
        for _, key in chunk_keys(array):
            tail = _suffix(zgroup.store, _join(zgroup.path, name, key), 4)
            if tail is None or len(tail) != 4:
                raise CorruptStoreError(
                    f"array {name!r}: chunk {key!r} was not written; the write is not complete."
                )
            checksums[key] = int.from_bytes(tail, "little")
        arrays[name] = {"shape": list(array.shape), "chunks": list(array.chunks), "dtype": str(array.dtype),
                        "decoding": decoding_description(array), "crc32c": checksums}
    return {"arrays": arrays, "groups": sorted(name for name, _ in zgroup.groups())}


def decoding_description(array: zarr.Array) -> dict:
    """Everything zarr decodes ``array``'s chunks with: its metadata document minus its attributes.

    The document is the one zarr writes from the metadata it parsed (so two documents that zarr
    reads alike compare equal): codec pipeline, fill value, data type, chunk grid, chunk key
    encoding, dimension names, storage transformers.

    Examples
    --------
    >>> group = zarr.open_group(zarr.storage.MemoryStore(), mode="w")
    >>> array = group.create_array("x", shape=(4,), chunks=(2,), dtype="<u2", fill_value=0)
    >>> description = decoding_description(array)
    >>> [codec["name"] for codec in description["codecs"]], description["fill_value"]
    (['bytes', 'zstd'], 0)
    >>> "attributes" in description
    False
    """
    document = json.loads(array.metadata.to_buffer_dict(default_buffer_prototype())["zarr.json"].to_bytes())
    document.pop("attributes", None)
    return document


_DECODING_NAMES = {"codecs": "codecs", "fill_value": "fill value", "data_type": "data type",
                   "chunk_key_encoding": "chunk key encoding", "chunk_grid": "chunk grid",
                   "dimension_names": "dimension names", "storage_transformers": "storage transformers"}


def _short(value) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def _codec_changes(recorded: list, found: list) -> list[str]:
    """What differs between two codec pipelines, codec by codec when the same codecs are there."""
    names = [[codec.get("name") if isinstance(codec, dict) else codec for codec in pipeline]
             for pipeline in (recorded, found)]
    if names[0] != names[1]:
        return [f"{', '.join(map(str, names[0]))} -> {', '.join(map(str, names[1]))}"]
    changes = []
    for old, new in zip(recorded, found, strict=True):
        old_config = old.get("configuration", {}) if isinstance(old, dict) else {}
        new_config = new.get("configuration", {}) if isinstance(new, dict) else {}
        for key in sorted(set(old_config) | set(new_config), key=str):
            if old_config.get(key) != new_config.get(key):
                changes.append(f"{old.get('name')} {key} {_short(old_config.get(key))} -> "
                               f"{_short(new_config.get(key))}".replace('"', ""))
    return changes or [f"{_short(recorded)} -> {_short(found)}"]


def describe_decoding_change(recorded: dict, found: dict) -> str | None:
    """What changed between two decoding descriptions, in words; None when they are equal.

    Examples
    --------
    >>> old = {"codecs": [{"name": "bytes", "configuration": {"endian": "little"}}], "fill_value": 0}
    >>> new = {"codecs": [{"name": "bytes", "configuration": {"endian": "big"}}], "fill_value": 0}
    >>> describe_decoding_change(old, new)
    'its codecs changed since it was written (bytes endian little -> big)'
    >>> describe_decoding_change(old, old) is None
    True
    """
    keys = [key for key in sorted(set(recorded) | set(found)) if recorded.get(key) != found.get(key)]
    if not keys:
        return None
    what, details = [], []
    for key in sorted(keys, key=lambda k: (k != "codecs", k)):
        what.append(_DECODING_NAMES.get(key, key))
        old, new = recorded.get(key), found.get(key)
        if key == "codecs" and isinstance(old, list) and isinstance(new, list):
            details.extend(_codec_changes(old, new))
        else:
            details.append(f"{_DECODING_NAMES.get(key, key)} {_short(old)} -> {_short(new)}")
    return f"its {' and '.join(what)} changed since it was written ({'; '.join(details)})"


# -- metadata read as data ----------------------------------------------------------------------------
def _raw_document(store, key: str) -> bytes | None:
    if isinstance(store, str | os.PathLike):
        path = Path(store) / key
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return None
        if size > MAX_METADATA_BYTES:
            return b"\0" * (MAX_METADATA_BYTES + 1)  # too large: refused below without reading it
        return path.read_bytes()
    return read_bounded(store, key, MAX_METADATA_BYTES)


def read_metadata_document(store, path: str, where: str) -> dict | None:
    """The parsed ``zarr.json`` of the node at ``path``, checked as data; None when absent.

    Examples
    --------
    >>> read_metadata_document("/no/such/store.zarr", "", "store") is None
    True
    """
    key = _join(path, "zarr.json")
    raw = _raw_document(store, key)
    if raw is None:
        return None
    if len(raw) > MAX_METADATA_BYTES:
        raise CorruptStoreError(
            f"{where}: {key!r} is larger than {MAX_METADATA_BYTES // 2**20} MiB; lazymask does not parse "
            "metadata that large (its own stores' are a few kB). The store is damaged or not lazymask's."
        )
    try:
        document = json.loads(raw)
    except RecursionError:
        raise CorruptStoreError(f"{where}: {key!r} is nested too deeply to be metadata.") from None
    except ValueError as exc:
        raise CorruptStoreError(f"{where}: {key!r} is not valid JSON ({exc}).") from None
    if not isinstance(document, dict):
        raise CorruptStoreError(f"{where}: {key!r} holds a {type(document).__name__}, not a JSON object.")
    depth_path = _too_deep(document)
    if depth_path is not None:
        raise CorruptStoreError(
            f"{where}: {key!r} is nested more than {MAX_NESTING} levels deep (at {depth_path}); "
            "lazymask's metadata is a few levels deep. The store is damaged or not lazymask's."
        )
    return document


def _too_deep(document) -> str | None:
    """The path of the first value nested deeper than ``MAX_NESTING`` (iteratively), or None."""
    stack = [(document, 0, "")]
    while stack:
        value, depth, where = stack.pop()
        if depth > MAX_NESTING:
            return where[:120] + ("..." if len(where) > 120 else "")
        if isinstance(value, dict):
            stack.extend((v, depth + 1, f"{where}.{k}") for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, depth + 1, f"{where}[{i}]") for i, v in enumerate(value))
    return None


# -- reads held to the manifest ---------------------------------------------------------------------
class CheckedStore(WrapperStore):
    """A read-only view of a store whose chunk reads are checked against a manifest.

    ``expected`` maps a chunk's full key to ``(array name, crc32c)``. A read of such a key that
    finds nothing, or bytes whose checksum is not the one recorded, raises
    :class:`CorruptStoreError` naming ``where``, the array and the chunk. Other keys pass through.
    """

    def __init__(self, store, expected: dict[str, tuple[str, int]], where: str):
        super().__init__(store)
        self.expected = expected
        self.where = where

    def __getstate__(self):
        return {"_store": self._store, "expected": self.expected, "where": self.where}

    def __setstate__(self, state):
        self.__init__(state["_store"], state["expected"], state["where"])

    def _wrap(self, store):  # zarr re-wraps the inner store for read-only/with_read_only
        return type(self)(store, self.expected, self.where)

    def with_read_only(self, read_only: bool = False):
        return self._wrap(self._store.with_read_only(read_only))

    async def get(self, key, prototype, byte_range=None):
        buffer = await self._store.get(key, prototype, byte_range)
        if key in self.expected:
            check_chunk(key, None if buffer is None else buffer.to_bytes(), self.expected[key], self.where,
                        partial=byte_range is not None)
        return buffer


def check_chunk(key: str, data: bytes | None, expected: tuple[str, int], where: str, *, partial: bool = False) -> None:
    """Raise :class:`CorruptStoreError` unless ``data`` is the chunk that was written at ``key``.

    Examples
    --------
    >>> body = b"chunk bytes"
    >>> chunk = body + google_crc32c.value(body).to_bytes(4, "little")
    >>> check_chunk("x/c/0", chunk, ("x", google_crc32c.value(body)), "store 's'")
    >>> check_chunk("x/c/0", None, ("x", 0), "store 's'")
    Traceback (most recent call last):
    ...
    lazymask.exceptions.CorruptStoreError: store 's': chunk '0' of array 'x' is missing ...
    """
    array, crc = expected
    chunk = key.rsplit("/c/", 1)[-1] if "/c/" in key else key
    if data is None:
        raise CorruptStoreError(
            f"{where}: chunk {chunk!r} of array {array!r} is missing (key {key!r}), but the store recorded it "
            "as written when it was marked complete: it was deleted. lazymask does not return fill values "
            "for it; write the store again from its sources."
        )
    if partial:
        return
    if len(data) < 4:
        raise CorruptStoreError(f"{where}: chunk {chunk!r} of array {array!r} is truncated ({len(data)} bytes).")
    stored = int.from_bytes(data[-4:], "little")
    computed = google_crc32c.value(data[:-4])
    if computed != stored or stored != crc:
        raise CorruptStoreError(
            f"{where}: chunk {chunk!r} of array {array!r} is corrupt (its bytes have crc32c {computed:08x}; "
            f"{crc:08x} was recorded when it was written): it was truncated or altered. Write the store "
            "again from its sources."
        )


def expected_chunks(manifest: dict, prefix: str, where: str) -> dict[str, tuple[str, int]]:
    """The manifest's chunks as ``{full key: (array, crc32c)}`` under ``prefix``."""
    try:
        return {
            _join(prefix, name, key): (name, int(crc))
            for name, entry in manifest["arrays"].items()
            for key, crc in entry["crc32c"].items()
        }
    except (KeyError, TypeError, AttributeError, ValueError):
        raise CorruptStoreError(f"{where}: its {MANIFEST_ATTR!r} attribute is malformed.") from None


def check_array_against_manifest(array: zarr.Array, name: str, manifest: dict, where: str) -> None:
    """Raise unless ``array``'s metadata is what the manifest recorded.

    Checks its shape, chunk grid and dtype, then its decoding description
    (:func:`decoding_description`): codecs, fill value, data type, chunk key encoding, dimension
    names. Chunks are checked by their stored bytes; this is what makes those bytes decode to the
    values that were written.
    """
    try:
        entry = manifest["arrays"][name]
        recorded = (tuple(entry["shape"]), tuple(entry["chunks"]), str(entry["dtype"]))
    except (KeyError, TypeError):
        raise CorruptStoreError(
            f"{where}: array {name!r} is not in the store's manifest ({MANIFEST_ATTR!r}); it was not "
            "written with the store."
        ) from None
    found = (tuple(array.shape), tuple(array.chunks), str(array.dtype))
    for what, a, b in zip(("shape", "chunks", "dtype"), found, recorded, strict=True):
        if a != b:
            raise CorruptStoreError(
                f"{where}: array {name!r} has {what} {a} in its zarr.json, but {b} was written; the "
                "metadata was altered. Write the store again from its sources."
            )
    # A store written before the decoding description was recorded (same format version, no
    # "decoding" entry) stays readable, held to its shape, grid, dtype and chunk checksums only: a
    # codec change in it is not detected. Not worth a format bump: refusing every older store would
    # make users rewrite data that is intact; writing it again adds the description.
    if "decoding" not in entry:
        return
    recorded_decoding = entry["decoding"]
    if not isinstance(recorded_decoding, dict):
        raise CorruptStoreError(f"{where}: its {MANIFEST_ATTR!r} attribute is malformed (array {name!r}).")
    change = describe_decoding_change(recorded_decoding, decoding_description(array))
    if change is not None:
        raise CorruptStoreError(
            f"{where}: array {name!r}: {change}; its chunks would decode to other values than were "
            "written. The array's zarr.json was altered: restore it, or write the store again from its "
            "sources."
        )


def verify_group_chunks(zgroup: zarr.Group, manifest: dict, where: str) -> dict:
    """Read every chunk the manifest lists, one at a time, and check it; return counts."""
    expected = expected_chunks(manifest, "", where)
    n_bytes = 0
    present = dict(zgroup.arrays())  # listed once (each listing reads every array's metadata)
    for name, array in sorted(present.items()):
        check_array_against_manifest(array, name, manifest, where)
    for name in manifest["arrays"]:
        if name not in present:
            raise CorruptStoreError(f"{where}: array {name!r} recorded in the manifest is missing.")
    members = {name for name, _ in zgroup.groups()}
    for name in manifest.get("groups", []):
        if name not in members:
            raise CorruptStoreError(f"{where}: its member group {name!r} recorded when it was written is missing.")
    for key, entry in expected.items():
        buffer = sync(zgroup.store.get(_join(zgroup.path, key), default_buffer_prototype()))
        data = None if buffer is None else buffer.to_bytes()
        check_chunk(_join(zgroup.path, key), data, entry, where)
        n_bytes += len(data)
    return {"arrays": len(manifest["arrays"]), "chunks": len(expected), "bytes": n_bytes}
