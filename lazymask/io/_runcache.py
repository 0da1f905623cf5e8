"""The run cache: a verified local copy of a decompressed ``.nii.gz``, so a file is decompressed once.

A pass over a ``.nii.gz`` costs one decompression (ISA-L, ~0.7-1.4 s per 0.36 GB here); the same
volumes stored as zarr chunks with blosc lz4 and byte shuffle (55 % of the raw size) decode at
about 1.5 GB/s and encode at 1.2 GB/s on this 2-core machine under load, against 0.4-0.45 GB/s
for blosc zstd level 1 (43 %): the cache is a local scratch copy, so speed wins over size. When the cache is on (``lazymask.config.set(cache_dir=...)`` or the
``LAZYMASK_CACHE_DIR`` environment variable; off by default), every read of a gzip-compressed
NIfTI file -- or of any NIfTI object (``s3://`` ..., where a second download is what a pass
saves) -- *tees*: the volumes a read task decompressed are also written, as they go, into a
staging entry of the cache; when every volume of the file has been written (and the last read
checked the gzip trailer), the entry is marked complete and published. Later passes -- the
extraction after the mask's mean, another masker, another job -- read their volumes from the entry.

Contract
--------
* **Keyed on the source's identity.** An entry's name is a hash of the file's
  :func:`~lazymask.io.file_identity` (path, size, mtime, inode, ctime) -- or, for an object
  (``s3://`` ...), its URL, size and ETag/version -- and of the header's layout
  (data offset, dtype, shape, scaling); the entry records them and is used only when they are
  equal. A rewritten or replaced file has another identity: its old entry is never used (and ages
  out). Every read through the cache still checks the source file first (one ``os.stat``), so a
  file changed since it was opened raises :class:`~lazymask.exceptions.SourceChangedError` exactly
  as an uncached read does -- never old data.
* **Same values.** An entry stores what :meth:`VolumeReader.read` returned (scaled, native byte
  order), losslessly, one volume per chunk: a read from it is bit-identical to a read from the file,
  for any chunking.
* **Written with the staged-write protocol.** An entry is a zarr group written under a staging name
  beside its target (:func:`lazymask.io._staging.staging_name`) with the ``crc32c`` codec on every
  chunk; it is marked complete last (manifest of chunk checksums, ``lazymask_complete``) and
  published by a rename. A job killed mid-pass leaves only staging, deleted by the next writer of
  that entry (or at the exit of the process that wrote it).
* **Verified on read.** Chunks are read through :class:`~lazymask.io._integrity.CheckedStore`: a
  missing or altered chunk raises :class:`~lazymask.exceptions.CorruptStoreError` inside; the
  cache then drops the entry, warns, and reads the volumes from the source file instead.
* **Bounded.** Entries live in ``<cache_dir>/lazymask_runs/``; before one is published, the least
  recently used complete entries are deleted until all fit in ``config.get("cache_max_bytes")``
  (an entry larger than that is not kept). Nothing else in ``cache_dir`` is ever touched.
* **Lazy, on the user's scheduler.** Settings are read when the graph is built
  (:func:`current_settings`, carried by the read tasks); the cache does its work inside the read
  tasks the scheduler runs (no thread, process or pool of its own).
* The tee works per process: a file whose read chain is spread over several worker processes
  completes no entry (nothing is wrong, the cache is just not filled).
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import dask
import numcodecs.blosc
import numpy as np
import xarray as xr
import zarr
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec

from lazymask import config
from lazymask._pages import empty
from lazymask.exceptions import CorruptStoreError, LazymaskError
from lazymask.storage import ObjectIdentity, check_unchanged
from lazymask.io._integrity import (
    MANIFEST_ATTR,
    CheckedStore,
    check_array_against_manifest,
    check_chunk,
    checksum_codec,
    expected_chunks,
    read_metadata_document,
)
from lazymask.io._reader import LazyVolumes, VolumeReader
from lazymask.io._staging import STAGING_TAG, clean_stale_staging, staging_name
from lazymask.io._zarr import COMPLETE_ATTR, StagedGroup, _mark_complete

#: The codec of cache entries: blosc lz4 with byte shuffle (see the module docstring for why not zstd).
CACHE_COMPRESSOR = BloscCodec(cname="lz4", clevel=1, shuffle="shuffle")

__all__ = ["CacheSettings", "current_settings", "read_volumes", "persist_within_budget", "run_cache_entries",
           "clear_run_cache"]

ENTRIES_DIR = "lazymask_runs"
"""The subdirectory of ``cache_dir`` that holds the entries (the only one the cache writes to)."""
ENTRY_ATTR = "lazymask_runcache"
_FORMAT = 1
_ENTRY_NAME = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class CacheSettings:
    """Where the run cache lives and how large it may grow (read from ``lazymask.config`` at graph build)."""

    directory: str
    max_bytes: int

    @property
    def entries(self) -> Path:
        return Path(self.directory) / ENTRIES_DIR


def current_settings() -> CacheSettings | None:
    """The run cache's settings now, or None when it is off (``config.get("cache_dir")`` is None).

    Examples
    --------
    >>> from lazymask import config
    >>> with config.set(cache_dir="/tmp/cache", cache_max_bytes=2**30):
    ...     current_settings()
    CacheSettings(directory='/tmp/cache', max_bytes=1073741824)
    """
    directory = config.get("cache_dir")
    return None if directory is None else CacheSettings(directory, config.get("cache_max_bytes"))


# -- reading volumes through the cache ----------------------------------------------------------------
def read_volumes(volumes: LazyVolumes, start: int, stop: int, settings: CacheSettings | None) -> np.ndarray:
    """``volumes.read(start, stop)``, with the gzip-compressed (and remote) files read through the run cache."""
    if settings is None or not any(reader.cacheable for reader in volumes.readers):
        return volumes.read(start, stop)
    readers = [_CachedReader(reader, settings) if reader.cacheable else reader for reader in volumes.readers]
    return LazyVolumes(readers, squeeze_time=volumes.squeeze_time).read(start, stop)


def read_volumes_deferring_tee(volumes: LazyVolumes, start: int, stop: int,
                               settings: CacheSettings) -> tuple[np.ndarray, list]:
    """As :func:`read_volumes`, but the volumes read from files are returned for :func:`write_tee`
    instead of written here: the graph runs the next chunk's decompression while this one is
    compressed into the cache (the gzip order chain waits for the read, not for the cache write)."""
    pending: list = []
    readers = [_CachedReader(reader, settings, pending) if reader.cacheable else reader
               for reader in volumes.readers]
    return LazyVolumes(readers, squeeze_time=volumes.squeeze_time).read(start, stop), pending


def write_tee(settings: CacheSettings, pending: list) -> None:
    """Write what :func:`read_volumes_deferring_tee` read from files into their staging entries."""
    for key, reader, start, stop, block in pending:
        _tee(settings, key, reader, start, stop, block)


class _CachedReader:
    """A :class:`VolumeReader` whose reads come from the cache entry when there is one, else tee into it
    (now, or later through ``pending``)."""

    def __init__(self, reader: VolumeReader, settings: CacheSettings, pending: list | None = None):
        self._reader, self._settings, self._pending = reader, settings, pending

    def __getattr__(self, name):
        return getattr(self._reader, name)

    def read(self, start: int, stop: int) -> np.ndarray:
        reader = self._reader
        check_unchanged(reader.identity)  # the source is checked whatever the cache holds
        key = entry_key(reader)
        entry = _open_entry(self._settings, key, reader)
        if entry is not None:
            try:
                return entry.read(start, stop, reader)
            except CorruptStoreError as error:
                _drop_entry(self._settings, key, entry)
                warnings.warn(f"lazymask run cache: {error} The entry was deleted; reading {reader.path} "
                              "itself instead.", RuntimeWarning, stacklevel=2)
        block = reader.read(start, stop)
        if self._pending is None:
            _tee(self._settings, key, reader, start, stop, block)
        else:
            self._pending.append((key, reader, start, stop, block))
        return block


def all_cached(volumes: LazyVolumes, settings: CacheSettings | None) -> bool:
    """Whether every gzip file of ``volumes`` has a complete entry now (metadata only: no voxel read).

    Then reads need not go front to back (:func:`lazymask.io._nifti.lazy_volumes_array` drops their
    chain and the scheduler reads chunks in parallel); an entry deleted meanwhile only costs speed.
    """
    cacheable = [reader for reader in volumes.readers if reader.cacheable]
    return settings is not None and bool(cacheable) and all(
        _open_entry(settings, entry_key(reader), reader) is not None for reader in cacheable)


def entry_key(reader: VolumeReader) -> str:
    """The name of the cache entry of ``reader``'s file: a hash of its identity and header layout."""
    return hashlib.sha1(json.dumps(_description(reader), sort_keys=True).encode()).hexdigest()


def _description(reader: VolumeReader) -> dict:
    return {"format": _FORMAT, "identity": _identity_record(reader.identity), "offset": reader.offset,
            "spatial_shape": list(reader.spatial_shape), "n_volumes": reader.n_volumes,
            "disk_dtype": reader.disk_dtype, "slope": float(reader.slope), "inter": float(reader.inter),
            "dtype": reader.dtype.str}


def _identity_record(identity) -> list:
    """The identity as JSON: a file's every field; an object's URL, size and version (never its options)."""
    if isinstance(identity, ObjectIdentity):
        return [identity.path, identity.size, identity.version]
    return list(identity)


def _as_rows(block: np.ndarray) -> np.ndarray:
    """A Fortran-ordered ``(i, j, k, n)`` block as ``(n, voxel)`` rows (a view, no copy)."""
    return block.reshape(-1, block.shape[-1], order="F").T


class _Entry:
    """A complete cache entry, opened with its chunks checked against its manifest.

    An entry in the layout this module writes (one little-endian volume per chunk, blosc, crc32c)
    is read without zarr's array machinery: each chunk file is read, checked against the
    manifest (:func:`~lazymask.io._integrity.check_chunk`: present, crc32c as recorded) and
    blosc-decoded straight into its volume of the block returned (no intermediate buffer, no
    copy). Any other layout reads through zarr, checked by the same manifest.
    """

    def __init__(self, path: Path, array: zarr.Array, expected: dict[str, tuple[str, int]]):
        self.path, self.array, self.expected = path, array, expected
        self.direct = _direct_layout(array)

    def read(self, start: int, stop: int, reader: VolumeReader) -> np.ndarray:
        try:
            if self.direct:
                return self._read_direct(start, stop, reader)
            rows = self.array[start:stop]
        except LazymaskError:
            raise
        except Exception as exc:  # blosc/zarr decoding errors of damaged chunks
            raise CorruptStoreError(f"run cache entry {self.path}: volumes {start}..{stop} cannot be decoded "
                                    f"({type(exc).__name__}: {exc}).") from None
        return np.ascontiguousarray(rows).T.reshape((*reader.spatial_shape, stop - start), order="F")

    def _read_direct(self, start: int, stop: int, reader: VolumeReader) -> np.ndarray:
        block = empty((*reader.spatial_shape, stop - start), self.array.dtype, order="F")
        volumes = block.reshape(-1, stop - start, order="F")  # a view: one contiguous column per volume
        where = f"run cache entry {self.path}"
        for offset, volume in enumerate(range(start, stop)):
            key = "volumes/" + self.array.metadata.encode_chunk_key((volume, 0))
            try:
                data = (self.path / key).read_bytes()
            except FileNotFoundError:
                data = None
            check_chunk(key, data, self.expected[key], where)
            column = volumes[:, offset]
            if _decoded_size(data) != column.nbytes:
                raise CorruptStoreError(f"{where}: chunk {key!r} does not hold one volume of {column.nbytes} bytes.")
            numcodecs.blosc.decompress(memoryview(data)[:-4], column)
        return block


def _direct_layout(array: zarr.Array) -> bool:
    """Whether ``array`` is in the layout :class:`_Entry` decodes itself (the one written here)."""
    codecs = array.metadata.codecs
    return (
        sys.byteorder == "little" and array.ndim == 2 and array.chunks == (1, array.shape[1])
        and len(codecs) == 3 and isinstance(codecs[0], BytesCodec)
        and (codecs[0].endian is None or codecs[0].endian.value == "little")
        and isinstance(codecs[1], BloscCodec) and isinstance(codecs[2], Crc32cCodec)
    )


def _decoded_size(data: bytes) -> int:
    """The decoded size a blosc frame declares (its header's bytes 4-7; -1 if there is no header)."""
    return int.from_bytes(data[4:8], "little") if len(data) >= 20 else -1


_opened: dict[str, _Entry] = {}
_opened_lock = threading.Lock()


def _open_entry(settings: CacheSettings, key: str, reader: VolumeReader) -> _Entry | None:
    """The complete entry ``key`` of this cache for ``reader``, or None (absent, unfinished, another file)."""
    path = settings.entries / key
    with _opened_lock:
        entry = _opened.get(str(path))
    if entry is not None:
        if path.is_dir():
            return entry
        _forget(path)  # evicted by another process meanwhile
    if not path.is_dir():
        return None
    where = f"run cache entry {path}"
    try:
        attrs = (read_metadata_document(str(path), "", where) or {}).get("attributes", {})
        if attrs.get(COMPLETE_ATTR) is not True or attrs.get(ENTRY_ATTR) != _description(reader):
            return None
        expected = expected_chunks(attrs[MANIFEST_ATTR], "", where)
        store = CheckedStore(zarr.storage.LocalStore(str(path), read_only=True), expected, where)
        array = zarr.open_array(store, path="volumes", mode="r", zarr_format=3)
        check_array_against_manifest(array, "volumes", attrs[MANIFEST_ATTR], where)
    except (LazymaskError, OSError, KeyError, ValueError, TypeError):
        return None  # damaged metadata: not an entry to use (it ages out)
    with contextlib.suppress(OSError):
        os.utime(path)  # last used: what eviction goes by
    entry = _Entry(path, array, expected)
    with _opened_lock:
        _opened[str(path)] = entry
    return entry


def _forget(path: Path) -> None:
    with _opened_lock:
        _opened.pop(str(path), None)


def _drop_entry(settings: CacheSettings, key: str, entry: _Entry) -> None:
    _forget(entry.path)
    _remove_entry(entry.path)


def _remove_entry(path: Path) -> None:
    """Delete a complete entry: renamed aside first (never a half-deleted entry under its name)."""
    aside = path.with_name(staging_name(path.name))
    try:
        os.rename(path, aside)
    except OSError:
        return  # gone already (another process evicted it)
    shutil.rmtree(aside, ignore_errors=True)


# -- writing an entry as the first pass goes ------------------------------------------------------------
class _Tee:
    """The staging entry of one file being filled by this process's reads."""

    def __init__(self, settings: CacheSettings, key: str, reader: VolumeReader):
        self.settings, self.key, self.reader = settings, key, reader
        self.target = settings.entries / key
        settings.entries.mkdir(parents=True, exist_ok=True)
        clean_stale_staging(self.target)  # what killed jobs left for this entry
        self.staging = self.target.with_name(staging_name(key))
        group = zarr.open_group(str(self.staging), mode="w", zarr_format=3,
                                attributes={COMPLETE_ATTR: False, ENTRY_ATTR: _description(reader)})
        n_voxels = int(np.prod(reader.spatial_shape))
        self.array = group.create_array(
            "volumes", shape=(reader.n_volumes, n_voxels), chunks=(1, n_voxels), dtype=reader.dtype,
            compressors=[CACHE_COMPRESSOR, checksum_codec()], config={"write_empty_chunks": True},
        )
        self.claimed: set[int] = set()
        self.written = 0
        self.finished = False

    def claim(self, start: int, stop: int) -> list[int]:
        fresh = [v for v in range(start, stop) if v not in self.claimed]
        self.claimed.update(fresh)
        return fresh

    def write(self, volumes: list[int], start: int, block: np.ndarray) -> None:
        rows = _as_rows(block)
        for run_start, run_stop in _runs(volumes):
            self.array[run_start:run_stop] = rows[run_start - start : run_stop - start]

    def publish(self) -> None:
        """Mark complete, make room, rename onto the target; or discard when the source changed."""
        try:
            check_unchanged(self.reader.identity)
        except LazymaskError:
            self.discard()
            return
        _mark_complete(StagedGroup(str(self.staging), ""))
        size = _tree_bytes(self.staging)
        if size > self.settings.max_bytes or not _make_room(self.settings, size, keep=self.target):
            self.discard()
            return
        try:
            os.rename(self.staging, self.target)
        except OSError:  # another process published the same entry first: keep theirs
            self.discard()

    def discard(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)


def _runs(volumes: list[int]):
    """Consecutive stretches ``(start, stop)`` of a sorted list of volume indices."""
    first = previous = None
    for v in volumes:
        if first is None:
            first = previous = v
        elif v == previous + 1:
            previous = v
        else:
            yield first, previous + 1
            first = previous = v
    if first is not None:
        yield first, previous + 1


_tees: dict[str, _Tee] = {}
_tees_lock = threading.Lock()
_failed: set[str] = set()


def _tee(settings: CacheSettings, key: str, reader: VolumeReader, start: int, stop: int, block) -> None:
    """Write volumes ``start .. stop`` (just read from the file) into the staging entry; publish when full."""
    name = str(settings.entries / key)
    try:
        with _tees_lock:
            if name in _failed:
                return
            tee = _tees.get(name)
            if tee is None:
                tee = _tees[name] = _Tee(settings, key, reader)
            fresh = tee.claim(start, stop)
        if not fresh:
            return
        tee.write(fresh, start, block)
        with _tees_lock:
            tee.written += len(fresh)
            done = tee.written == reader.n_volumes and not tee.finished
            if done:
                tee.finished = True
                del _tees[name]
        if done:
            tee.publish()
    except (OSError, ValueError) as exc:  # a full disk, an unwritable cache_dir: read on without the cache
        with _tees_lock:
            _failed.add(name)
            failed = _tees.pop(name, None)
        if failed is not None:
            failed.discard()
        warnings.warn(f"lazymask run cache: cannot write {name} ({type(exc).__name__}: {exc}); {reader.path} "
                      "is read without the cache.", RuntimeWarning, stacklevel=3)


@atexit.register
def _discard_unfinished() -> None:
    with _tees_lock:
        while _tees:
            _tees.popitem()[1].discard()


# -- size, eviction, listing -------------------------------------------------------------------------
def _tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _complete_entries(settings: CacheSettings) -> list[Path]:
    """The complete entries of this cache (directories named by a key, marked complete by the cache)."""
    if not settings.entries.is_dir():
        return []
    entries = []
    for path in settings.entries.iterdir():
        if not (_ENTRY_NAME.match(path.name) and path.is_dir() and not path.is_symlink()):
            continue
        try:
            attrs = (read_metadata_document(str(path), "", str(path)) or {}).get("attributes", {})
        except (LazymaskError, OSError):
            continue
        if attrs.get(COMPLETE_ATTR) is True and isinstance(attrs.get(ENTRY_ATTR), dict):
            entries.append(path)
    return entries


def _make_room(settings: CacheSettings, size: int, keep: Path) -> bool:
    """Delete least recently used entries until ``size`` more bytes fit under the cap."""
    entries = []
    for path in _complete_entries(settings):
        if path == keep:
            return False  # published meanwhile by another process
        with contextlib.suppress(OSError):
            entries.append((path.stat().st_mtime_ns, _tree_bytes(path), path))
    total = sum(n for _, n, _ in entries)
    for _, n_bytes, path in sorted(entries):
        if total + size <= settings.max_bytes:
            break
        _forget(path)
        _remove_entry(path)
        total -= n_bytes
    return total + size <= settings.max_bytes


def run_cache_entries(directory=None) -> list[dict]:
    """The complete entries of the run cache: which file each holds, its size and when it was last used.

    Parameters
    ----------
    directory : str or path-like, optional
        The cache directory (default: ``config.get("cache_dir")``).

    Returns
    -------
    list of dict
        ``{"path": entry, "source": file path, "bytes": size on disk, "last_used": seconds since the
        epoch}``, least recently used first; empty when the cache is off or empty.

    Examples
    --------
    >>> run_cache_entries("/no/such/cache")
    []
    """
    settings = _settings_for(directory)
    if settings is None:
        return []
    rows = []
    for path in _complete_entries(settings):
        attrs = (read_metadata_document(str(path), "", str(path)) or {}).get("attributes", {})
        rows.append({"path": str(path), "source": attrs[ENTRY_ATTR]["identity"][0], "bytes": _tree_bytes(path),
                     "last_used": path.stat().st_mtime})
    return sorted(rows, key=lambda row: row["last_used"])


def clear_run_cache(directory=None) -> int:
    """Delete every entry of the run cache (and staging left by killed jobs); return how many entries.

    Only what the cache wrote is deleted: entries and staging under ``<directory>/lazymask_runs/``.

    Examples
    --------
    >>> clear_run_cache("/no/such/cache")
    0
    """
    settings = _settings_for(directory)
    if settings is None:
        return 0
    entries = _complete_entries(settings)
    for path in entries:
        _forget(path)
        _remove_entry(path)
    if settings.entries.is_dir():
        for path in settings.entries.iterdir():
            name = path.name.lstrip(".")
            if STAGING_TAG in path.name and _ENTRY_NAME.match(name.split(STAGING_TAG)[0]):
                clean_stale_staging(settings.entries / name.split(STAGING_TAG)[0])
    return len(entries)


def _settings_for(directory) -> CacheSettings | None:
    if directory is None:
        return current_settings()
    return CacheSettings(os.path.abspath(os.fspath(directory)), config.get("cache_max_bytes"))


# -- the in-memory side: a masker's fit_transform within the memory budget ---------------------------------
def persist_within_budget(images: list[xr.DataArray], derived=None) -> list:
    """Persist (on the active scheduler) the leading images whose voxels fit in ``memory_budget``.

    The images' read tasks run once; the returned images hold the decoded chunks (in this
    process's memory with a local scheduler, on the workers with ``distributed``), so that the
    passes that follow -- a mask's mean, then the extraction -- decompress nothing again. Images
    beyond the budget are returned as they are (with the run cache on, their second pass reads it).

    ``derived``, a function of an image returning a lazy (small) dask collection -- its mean over
    time, say -- is persisted for *every* image in the same pass (the kept images' read tasks
    serve both; the others are read once for it), so that it costs no pass of its own: then pairs
    ``(image, persisted derived(image))`` are returned.

    Examples
    --------
    >>> import numpy as np, dask.array as da
    >>> image = xr.DataArray(da.zeros((2, 2, 2, 3), chunks=(2, 2, 2, 1)), dims=("i", "j", "k", "time"))
    >>> kept = persist_within_budget([image])[0]
    >>> len(kept.data.dask)   # one in-memory chunk per time chunk, no read task left
    3
    >>> (kept, total), = persist_within_budget([image], derived=lambda im: im.data.sum())
    >>> float(total.compute())
    0.0
    """
    budget, total, chosen = config.get("memory_budget"), 0, []
    for index, image in enumerate(images):
        if not dask.is_dask_collection(image) or total + image.nbytes > budget:
            break
        total += image.nbytes
        chosen.append(index)
    extras = [derived(image) for image in images] if derived is not None else []
    if not chosen and not extras:
        return list(images)
    persisted = list(dask.persist(*[images[i] for i in chosen], *extras))
    kept = [*persisted[: len(chosen)], *images[len(chosen):]]
    if derived is None:
        return kept
    return list(zip(kept, persisted[len(chosen):], strict=True))
