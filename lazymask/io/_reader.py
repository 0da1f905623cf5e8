"""Picklable readers of NIfTI voxel data, and the lazy array that dask indexes.

Contract
--------
* A :class:`VolumeReader` holds what is needed to read volumes of one file or object — its identity
  taken at open (path, size, times, inode; or URL, size, ETag/version and storage options for an
  object: :mod:`lazymask.storage`), its codec's name (``"raw"``/``"gzip"``, found from the
  file's first bytes), data offset, on-disk dtype, spatial shape, scaling — and nothing else: no
  open file, no data. It pickles in a
  few hundred bytes, so tasks can carry it to other processes and machines.
* ``reader.read(start, stop)`` returns volumes ``start .. stop`` as a Fortran-ordered array of shape
  ``spatial_shape + (stop - start,)`` and dtype ``reader.dtype``: exactly the values and dtype of
  ``np.asanyarray(nibabel_image.dataobj)[..., start:stop]`` (scaled by ``scl_slope``/``scl_inter``,
  in native byte order), through the codec (:mod:`lazymask.io._codecs`): a plain file with one
  positioned read, a gzip file through the process's shared sequential stream; an object's bytes
  by ranged reads (:func:`lazymask.storage.read_into`): a ``.nii`` fetches only the volumes asked for.
* Every read first checks the source's identity (one ``os.stat``; one ``HEAD``, or on S3 an
  ``If-Match`` on the ranged ``GET`` itself): a source changed or replaced since it was opened
  raises :class:`~lazymask.exceptions.SourceChangedError` naming it; a truncated one raises
  :class:`~lazymask.exceptions.CorruptImageError` naming it.
* :class:`LazyVolumes` presents a sequence of readers (the files of a list) as one
  ``(i, j, k, time)`` array with ``shape``/``dtype``/``ndim`` and ``read(start, stop)``; the dask
  graph built on it is in :func:`lazymask.io._nifti.lazy_volumes_array`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from nibabel.volumeutils import apply_read_scaling

from lazymask._pages import empty
from lazymask.io._codecs import codec_named
from lazymask.storage import FileIdentity, ObjectIdentity


def scaled_dtype(disk_dtype: np.dtype, slope: float, inter: float) -> np.dtype:
    """The dtype nibabel gives to scaled data: the on-disk dtype unless scaling widens it."""
    scaled = apply_read_scaling(np.zeros(1, dtype=disk_dtype), *_cast_scaling(slope, inter))
    return scaled.dtype.newbyteorder("=")


def _cast_scaling(slope, inter):
    # nibabel casts the scale factors to their own dtype before applying them; so do we.
    slope, inter = np.asanyarray(slope), np.asanyarray(inter)
    return slope.astype(slope.dtype), inter.astype(slope.dtype) if np.can_cast(inter, slope.dtype) else inter


@dataclass(frozen=True)
class VolumeReader:
    """Reads whole volumes of one NIfTI file (plain or gzip-compressed)."""

    identity: FileIdentity | ObjectIdentity
    codec: str
    offset: int
    spatial_shape: tuple[int, int, int]
    n_volumes: int
    disk_dtype: str
    slope: float
    inter: float

    @property
    def dtype(self) -> np.dtype:
        return scaled_dtype(np.dtype(self.disk_dtype), self.slope, self.inter)

    @property
    def volume_nbytes(self) -> int:
        """Bytes of one volume on disk, as a Python int (exact for any header's dims: no int64 overflow)."""
        return math.prod(int(n) for n in self.spatial_shape) * np.dtype(self.disk_dtype).itemsize

    @property
    def data_nbytes(self) -> int:
        """Bytes of all the voxels the header declares, as a Python int (exact, never wrapped)."""
        return self.volume_nbytes * int(self.n_volumes)

    @property
    def path(self) -> str:
        return self.identity.path

    @property
    def compressed(self) -> bool:
        """Whether reads must go front to back to be cheap (a gzip file)."""
        return codec_named(self.codec).sequential

    @property
    def remote(self) -> bool:
        """Whether the source is an object (``s3://`` ...), read by ranged requests."""
        return isinstance(self.identity, ObjectIdentity)

    @property
    def cacheable(self) -> bool:
        """Whether a local copy in the run cache saves a later pass work (a gzip file, or any object)."""
        return self.compressed or self.remote

    def read(self, start: int, stop: int) -> np.ndarray:
        """Volumes ``start .. stop`` as a Fortran-ordered array, scaled, in native byte order."""
        n = stop - start
        raw = empty(math.prod(self.spatial_shape) * n, np.dtype(self.disk_dtype))
        byte_offset = self.offset + start * self.volume_nbytes
        codec_named(self.codec).read_into(self.identity, byte_offset, raw, to_end=stop == self.n_volumes)
        raw = raw.reshape((*self.spatial_shape, n), order="F")
        scaled = apply_read_scaling(raw, *_cast_scaling(self.slope, self.inter))
        return scaled.astype(self.dtype, copy=False)


class LazyVolumes:
    """Several readers seen as one lazy ``(i, j, k, time)`` (or 3D) array."""

    def __init__(self, readers: list[VolumeReader], squeeze_time: bool = False):
        self.readers = tuple(readers)
        self.squeeze_time = squeeze_time
        starts = np.cumsum([0] + [r.n_volumes for r in self.readers])
        self._starts = tuple(int(s) for s in starts)
        spatial = self.readers[0].spatial_shape
        n_time = self._starts[-1]
        self.shape = spatial if squeeze_time else (*spatial, n_time)
        self.dtype = np.result_type(*[r.dtype for r in self.readers])
        self.ndim = len(self.shape)

    def compressed_readers(self, start: int, stop: int) -> set[int]:
        """Indices of the gzip-compressed readers that volumes ``start .. stop`` come from."""
        return {index for index, reader in enumerate(self.readers)
                if reader.compressed and start < self._starts[index + 1] and stop > self._starts[index]}

    def first_buffer_nbytes(self, start: int, stop: int) -> int | None:
        """Bytes of the buffer :meth:`read` fills first for volumes ``start .. stop`` (one reader;
        None for several), so that a task can fault it in ahead (:func:`lazymask._pages.prefault`)."""
        if len(self.readers) != 1:
            return None
        return self.readers[0].volume_nbytes * (stop - start)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Volumes ``start .. stop`` across readers, as one Fortran-ordered array."""
        if len(self.readers) == 1:
            return self.readers[0].read(start, stop).astype(self.dtype, copy=False)
        out = empty((*self.shape[:3], max(stop - start, 0)), self.dtype, order="F")
        for index, reader in enumerate(self.readers):
            first, last = self._starts[index], self._starts[index + 1]
            lo, hi = max(start, first), min(stop, last)
            if lo < hi:
                out[..., lo - start : hi - start] = reader.read(lo - first, hi - first)
        return out
