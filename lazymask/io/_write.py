"""Writing image DataArrays to NIfTI-1 files, chunk by chunk, and to in-memory nibabel images.

Contract
--------
* ``to_nifti(img, path)`` writes a 3D ``(i, j, k)`` or 4D ``(i, j, k, time)`` image DataArray to a
  ``.nii`` or ``.nii.gz`` file that ``nibabel.load`` reads back with the same voxels, dtype,
  affine (as sform and qform), zooms and repetition time (``attrs["t_r"]``, in seconds).
* The graph is computed **once**, with whatever dask scheduler is active (threads, processes,
  ``distributed``), and each task handles one time-chunk of whole volumes: memory per task is
  about one chunk, whatever the length of the run. Nothing is gathered in the calling process.
* ``.nii``: each task writes its volumes' Fortran-ordered bytes at their place in the file (one
  positioned write); the order in which chunks finish does not matter.
* ``.nii.gz``: each task compresses its volumes (ISA-L, in the worker, so compression runs in
  parallel) into a raw deflate part ending on a sync flush, and notes its CRC-32; the parts are
  then joined in time order into **one** gzip member (as pigz does), with the CRC-32 combined,
  so any gzip reader (nibabel, zlib's ``gzread`` in FSL/AFNI/ITK, :mod:`lazymask.io`) reads it.
* Everything goes through the one staged-write protocol (:mod:`lazymask.io._staging`): written
  under a temporary name beside the target and renamed at the end, so a failure never leaves a
  file that looks complete under the target's name. An existing NIfTI file is replaced only with
  ``overwrite=True`` (atomically, no copy kept); anything else at the target is refused. Tasks address files by
  path, so on a multi-machine cluster the target directory must be on a shared filesystem (as the
  inputs already are).
* ``to_nibabel(img)`` computes a (small) image into an in-memory ``nibabel.Nifti1Image`` with the
  same header fields.
"""

from __future__ import annotations

import os
import shutil
import struct
import threading
import zlib
from pathlib import Path

import dask.array as da
import nibabel as nib
import numpy as np
import xarray as xr
from isal import isal_zlib

from lazymask.exceptions import DimensionError, ParameterError
from lazymask.io._arrays import as_dask
from lazymask.io._meta import IMAGE_DIMS_3D, IMAGE_DIMS_4D, get_affine, get_t_r
from lazymask.storage import Found, is_url, resolve, staged_file

__all__ = ["to_nifti", "to_nibabel", "nifti_header"]

_GZIP_HEAD_BYTES = 64 * 1024  # enough gzip to hold a NIfTI-2 header, even at level 0
_NIFTI1_DATA_OFFSET = 352  # 348-byte header + 4-byte extension flag (no extensions)
_GZIP_MAGIC = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # deflate, no name, mtime 0, OS unknown
_WIDENED_DTYPES = {np.dtype(bool): np.dtype(np.uint8), np.dtype(np.float16): np.dtype(np.float32)}


# -- header -----------------------------------------------------------------------------------------
def nifti_dtype(dtype) -> np.dtype:
    """The native-order dtype an image of ``dtype`` is stored with in NIfTI (bool -> uint8, ...)."""
    dtype = np.dtype(dtype).newbyteorder("=")
    return _WIDENED_DTYPES.get(dtype, dtype)


def nifti_header(img: xr.DataArray) -> nib.Nifti1Header:
    """Build the NIfTI-1 header of an image DataArray, without touching its voxels.

    Shape and dtype come from the DataArray; the affine (``attrs["affine"]``) is stored as both
    sform and qform (code "aligned"); zooms are the affine's voxel sizes, plus the repetition time
    ``attrs["t_r"]`` (seconds) for a 4D image (0 when unknown); units are mm and s.

    Parameters
    ----------
    img : xarray.DataArray
        An image with dims ``("i", "j", "k")`` or ``("i", "j", "k", "time")``.

    Returns
    -------
    nibabel.Nifti1Header

    Examples
    --------
    >>> img = lazymask.open_nifti("bold.nii.gz")      # doctest: +SKIP
    >>> nifti_header(img).get_zooms()                  # doctest: +SKIP
    (3.0, 3.0, 3.0, 2.0)
    """
    _check_image_dims(img)
    affine = get_affine(img)
    header = nib.Nifti1Header()
    try:
        header.set_data_dtype(nifti_dtype(img.dtype))
    except nib.spatialimages.HeaderDataError as exc:
        raise ParameterError(
            f"cannot write an image of dtype {img.dtype} to NIfTI ({exc}); cast it to a numeric "
            "type first, for example img.astype('float32')."
        ) from None
    header.set_data_shape(img.shape)
    header.set_sform(affine, code="aligned")
    header.set_qform(affine, code="aligned")
    zooms = tuple(np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))
    if img.ndim == 4:
        zooms = zooms + (get_t_r(img) or 0.0,)
    header.set_zooms(zooms)
    header.set_xyzt_units("mm", "sec")
    header.set_data_offset(_NIFTI1_DATA_OFFSET)
    header.set_slope_inter(None, None)
    return header


def header_bytes(header: nib.Nifti1Header) -> bytes:
    """The bytes of a single-file NIfTI-1 header, padded with zeros up to its data offset."""
    raw = header.binaryblock + b"\x00" * 4  # extension flag: no extensions
    return raw + b"\x00" * (int(header.get_data_offset()) - len(raw))


def _check_image_dims(img) -> None:
    if not isinstance(img, xr.DataArray):
        raise ParameterError(
            f"expected an image xarray.DataArray, found {type(img).__name__}; open files with "
            "lazymask.open_nifti first."
        )
    if img.dims not in (IMAGE_DIMS_3D, IMAGE_DIMS_4D):
        raise DimensionError(
            f"an image to write must have dims {IMAGE_DIMS_3D} or {IMAGE_DIMS_4D}, found {img.dims}; "
            "transpose it (img.transpose('i', 'j', 'k', 'time')) or build it with "
            "lazymask.io.image_dataarray."
        )


# -- in memory --------------------------------------------------------------------------------------
def to_nibabel(img: xr.DataArray) -> nib.Nifti1Image:
    """Compute an image DataArray into an in-memory ``nibabel.Nifti1Image``.

    Meant for small images (a mask, a mean volume); use :func:`to_nifti` for long runs.

    Parameters
    ----------
    img : xarray.DataArray
        A 3D or 4D image (numpy- or dask-backed) with ``attrs["affine"]``.

    Returns
    -------
    nibabel.Nifti1Image
        Same voxels and dtype (bool is stored as uint8), affine, zooms and repetition time.

    Examples
    --------
    >>> mean = lazymask.open_nifti("bold.nii.gz").mean("time")   # doctest: +SKIP
    >>> to_nibabel(mean).to_filename("mean.nii.gz")               # doctest: +SKIP
    """
    header = nifti_header(img)
    data = np.asarray(img.data, dtype=header.get_data_dtype())
    image = nib.Nifti1Image(data, get_affine(img), header=header)
    image.header.set_xyzt_units("mm", "sec")
    return image


# -- to a file --------------------------------------------------------------------------------------
def to_nifti(img: xr.DataArray, path, *, compresslevel: int = 1, overwrite: bool = False,
             storage_options=None):
    """Write an image DataArray to a ``.nii`` or ``.nii.gz`` file, one time-chunk per task.

    The voxels are never gathered: each task computes one chunk of whole volumes and writes (or,
    for ``.nii.gz``, compresses) it, so memory stays about one chunk per worker even for runs
    larger than RAM. The file is written under a temporary name beside ``path`` and appears under
    its name only once complete.

    Parameters
    ----------
    img : xarray.DataArray
        A 3D ``(i, j, k)`` or 4D ``(i, j, k, time)`` image with ``attrs["affine"]`` (and
        ``attrs["t_r"]`` for the repetition time), numpy- or dask-backed.
    path : str, pathlib.Path or URL
        Target file, ending in ``.nii`` or ``.nii.gz`` (any case): a local path, or an object store
        URL (``s3://bucket/sub-01/bold.nii.gz``), where the finished file is uploaded in one
        request (create-only unless it replaces a NIfTI image with ``overwrite=True``): no partial
        object is ever visible under its name.
    compresslevel : int, default 1
        ISA-L gzip level (0-3) for ``.nii.gz``; 1 is fast and compresses scanner data well.
    overwrite : bool, default False
        Replace an existing NIfTI image file at ``path`` (by an atomic rename once the new file is
        complete: readers see the old file or the new one, and no copy of the old one is kept).
        Anything else at ``path`` -- a directory, a symbolic link, a file that is not a NIfTI
        image -- is refused whatever ``overwrite`` says.
    storage_options : dict, optional
        fsspec options for a URL.

    Returns
    -------
    pathlib.Path or str
        The path written (the URL, for an object store).

    Raises
    ------
    UnsafeTargetError
        ``path`` exists and is not a NIfTI image, or is one and ``overwrite`` is False.

    Examples
    --------
    >>> img = lazymask.open_nifti("bold.nii.gz")               # doctest: +SKIP
    >>> lazymask.to_nifti(img.astype("float32"), "bold_f32.nii.gz")  # doctest: +SKIP
    """
    location = resolve(path, storage_options)
    compressed = _nifti_suffix(Path(str(location)))
    if compresslevel not in range(4):
        raise ParameterError(f"compresslevel={compresslevel!r}: ISA-L gzip levels are 0, 1, 2 and 3.")
    header = nifti_header(img)
    volumes = _volume_chunks(img, header.get_data_dtype())
    with staged_file(location, kind="NIfTI image file", overwrite=overwrite,
                     inspect=inspect_nifti_target) as staging:
        if compressed:
            parts = staging.with_name(staging.name + ".parts")
            try:
                _write_gzip(volumes, header, staging, parts, compresslevel)
            finally:
                shutil.rmtree(parts, ignore_errors=True)
        else:
            _write_raw(volumes, header, staging)
    return path if is_url(path) else Path(path)


def _nifti_suffix(path: Path) -> bool:
    """Return whether ``path`` asks for gzip (suffix in any case); raise for another extension."""
    name = path.name.lower()
    if not (name.endswith(".nii") or name.endswith(".nii.gz")):
        raise ParameterError(
            f"path={str(path)!r}: to_nifti writes .nii or .nii.gz files; use lazymask.to_zarr for "
            "zarr stores."
        )
    return name.endswith(".gz")


def inspect_nifti_target(location) -> Found:
    """What is at a to_nifti target: nothing, a NIfTI image file (replaceable with overwrite), or else.

    "A lazymask result of the same kind" for a NIfTI file is a regular file whose first bytes are a
    NIfTI-1 or NIfTI-2 header (read through gzip when the file starts with gzip's magic bytes):
    NIfTI has no place to mark a file as lazymask's, so any NIfTI image counts, and it is replaced
    only with ``overwrite=True``.
    """
    location = resolve(location)
    settled = location.found_at(directory=False)
    if settled is not None:
        return settled
    try:
        raw = location.read_head(_GZIP_HEAD_BYTES)
        if raw[:2] == b"\x1f\x8b":
            raw = zlib.decompressobj(31).decompress(raw, 540)
        head = raw[:540]
    except (OSError, EOFError, zlib.error):
        head = b""
    if _is_nifti_header(head):
        return Found.complete("a NIfTI image file")
    return Found.other("a file that is not a NIfTI image")


def _is_nifti_header(head: bytes) -> bool:
    for order in ("<", ">"):
        size = struct.unpack(order + "i", head[:4])[0] if len(head) >= 4 else 0
        if size == 348 and len(head) >= 348 and head[344:347] in (b"n+1", b"ni1"):
            return True
        if size == 540 and len(head) >= 12 and head[4:7] in (b"n+2", b"ni2"):
            return True
    return False


def _volume_chunks(img: xr.DataArray, dtype: np.dtype) -> da.Array:
    """The voxels as a 4D dask array of the on-disk dtype, chunked along time only."""
    data = as_dask(img)
    if data.ndim == 3:
        data = data[..., np.newaxis]
    data = data.rechunk({0: -1, 1: -1, 2: -1})
    return data.astype(dtype, copy=False)


def _write_raw(volumes: da.Array, header, staging: Path) -> None:
    with open(staging, "wb") as f:
        f.write(header_bytes(header))
    da.store(volumes, _PositionedWriter(str(staging), _NIFTI1_DATA_OFFSET, volumes.shape), lock=False)


def _write_gzip(volumes: da.Array, header, staging: Path, parts: Path, compresslevel: int) -> None:
    parts.mkdir()
    writer = _DeflatePartWriter(str(parts), compresslevel)
    try:
        da.store(volumes, writer, lock=False)
    finally:  # tasks still running after a failed one write nothing more: the parts can go for good
        writer.close_gate()
    with open(staging, "wb") as out:
        _concatenate_deflate(out, header_bytes(header), sorted(parts.iterdir()), compresslevel)


def _concatenate_deflate(out, head: bytes, part_files: list[Path], compresslevel: int) -> None:
    """Write one gzip member: ``head`` then the parts' deflate data, with their combined CRC-32.

    Each part is a raw deflate stream ending on a sync flush (byte-aligned, not final), so the
    parts can follow one another in one stream (as pigz does); an empty final block closes it.
    """
    out.write(_GZIP_MAGIC)
    deflate = isal_zlib.compressobj(compresslevel, isal_zlib.DEFLATED, -isal_zlib.MAX_WBITS)
    out.write(deflate.compress(head) + deflate.flush(isal_zlib.Z_SYNC_FLUSH))
    crc, size = isal_zlib.crc32(head), len(head)
    for part in part_files:
        part_crc, part_size = _DeflatePartWriter.parse_name(part.name)
        with open(part, "rb") as f:
            shutil.copyfileobj(f, out, 16 * 2**20)
        crc, size = isal_zlib.crc32_combine(crc, part_crc, part_size), size + part_size
    out.write(isal_zlib.compressobj(compresslevel, isal_zlib.DEFLATED, -isal_zlib.MAX_WBITS).flush())
    out.write(struct.pack("<II", crc & 0xFFFFFFFF, size & 0xFFFFFFFF))


class _PositionedWriter:
    """A ``da.store`` target writing each block of volumes at its byte offset in a raw NIfTI file.

    Holds a path only (picklable); a block of ``(i, j, k, t)`` whole volumes is contiguous in
    Fortran order, so it is one positioned write.
    """

    def __init__(self, path: str, offset: int, shape: tuple[int, ...]):
        self.path, self.offset, self.shape = path, offset, shape

    def __setitem__(self, key, block: np.ndarray) -> None:
        start = key[3].indices(self.shape[3])[0]
        view = _fortran_bytes(block)
        position = self.offset + start * int(np.prod(self.shape[:3])) * block.dtype.itemsize
        fd = os.open(self.path, os.O_WRONLY)
        try:
            done = 0
            while done < len(view):
                done += os.pwrite(fd, view[done:], position + done)
        finally:
            os.close(fd)


class _DeflatePartWriter:
    """A ``da.store`` target compressing each block of volumes into a raw deflate part file.

    The file name carries the block's first volume (for ordering), the CRC-32 and the length of
    its uncompressed bytes (for the gzip trailer), so no state comes back to the caller.
    """

    def __init__(self, directory: str, compresslevel: int):
        self.directory, self.compresslevel = directory, compresslevel
        self._gate, self._closed, self._in_flight = threading.Condition(), False, 0

    def __getstate__(self):  # another process has its own gate
        return {"directory": self.directory, "compresslevel": self.compresslevel}

    def __setstate__(self, state):
        self.__init__(state["directory"], state["compresslevel"])

    def close_gate(self, timeout: float = 120.0) -> None:
        """Refuse any further part and wait for those being written (a failed job's other tasks)."""
        with self._gate:
            self._closed = True
            self._gate.wait_for(lambda: self._in_flight == 0, timeout)

    @staticmethod
    def parse_name(name: str) -> tuple[int, int]:
        _, crc, size = name.split(".")[0].split("-")
        return int(crc, 16), int(size)

    def __setitem__(self, key, block: np.ndarray) -> None:
        start = key[3].start or 0
        raw = _fortran_bytes(block)
        deflate = isal_zlib.compressobj(self.compresslevel, isal_zlib.DEFLATED, -isal_zlib.MAX_WBITS)
        compressed = deflate.compress(raw) + deflate.flush(isal_zlib.Z_SYNC_FLUSH)
        name = f"{start:012d}-{isal_zlib.crc32(raw):08x}-{len(raw)}.deflate"
        with self._gate:
            if self._closed:
                return  # the write was abandoned (another task failed): nothing more lands on disk
            self._in_flight += 1
        try:
            with open(os.path.join(self.directory, name), "wb") as f:
                f.write(compressed)
        finally:
            with self._gate:
                self._in_flight -= 1
                self._gate.notify_all()


def _fortran_bytes(block: np.ndarray) -> memoryview:
    """The bytes of a block in Fortran order, without a copy when it already is Fortran-ordered."""
    return memoryview(block.ravel(order="F").view(np.uint8))
