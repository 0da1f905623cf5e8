"""Opening NIfTI images as lazy, chunked DataArrays (headers only; voxels when computed).

``open_nifti`` is the one door through which images enter lazymask: every public function that
takes an image converts it here, once. Headers are validated as they are read, so a bad input fails
before any graph is built, with the file's name and the fix.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path

import dask
import dask.array as da
from dask.highlevelgraph import HighLevelGraph
import nibabel as nib
import numpy as np
import xarray as xr

from lazymask import config
from lazymask._pages import prefault
from lazymask.exceptions import (
    CorruptImageError,
    DimensionError,
    EmptyImageError,
    ParameterTypeError,
    ImageFileNotFoundError,
    ImageMismatchError,
    ImageTooLargeError,
    NotNiftiError,
    ParameterError,
)
from lazymask.io._codecs import SNIFF_BYTES, codec_for
from lazymask.io._gzip import offer_resume_point, resumable_streams, resume_point
from lazymask.storage import ObjectLocation, file_identity, object_identity, read_head, resolve
from lazymask.io._meta import image_dataarray
from lazymask.io._reader import LazyVolumes, VolumeReader
from lazymask.io._runcache import all_cached, current_settings, read_volumes, read_volumes_deferring_tee, write_tee

# ``chunks="auto"``: whole volumes adding up to at most config.get("auto_chunk_bytes") (30 MiB).
# Measured on a 2 mm int16 run of 1200 volumes (mean over time, benchmarks/bench_io.py's
# lazymask_mean with chunks=): 29 MiB chunks read the .nii.gz in 7.6 s against 8.1 s for 64 MiB
# ones (blocks under glibc's 32 MiB mmap threshold are recycled instead of page-faulted anew); for a
# .nii 64 MiB chunks were faster (0.9 s vs 1.2 s); peak memory was the same. .nii.gz is the common
# input, and smaller chunks also keep every downstream block small.

MAX_IMAGE_BYTES = 2**42
"""Headers declaring more voxel data than this (4 TiB) are rejected as absurd."""

_MAX_DEFLATE_RATIO = 1032  # deflate never expands less than this: bounds a .gz file's content
_SUPPORTED_KINDS = "biuf"  # bool, signed/unsigned integers, floats


def open_nifti(src, chunks="auto", *, storage_options=None) -> xr.DataArray:
    """Open NIfTI image(s) as a lazy, chunked DataArray, reading headers only.

    Parameters
    ----------
    src : str, pathlib.Path, nibabel image, xarray.DataArray, or a list of these
        A NIfTI-1 or NIfTI-2 file, plain or gzip-compressed (told apart by the file's first
        bytes, never its suffix: ``x.NII.GZ`` or a gzip named ``.nii`` read correctly), an image store written by
        :func:`lazymask.to_zarr`, a glob pattern, a nibabel image, a DataArray (returned as is),
        or a list: of 3D images (stacked along time) or of 4D runs
        (concatenated along time). All images of a list must share shape and affine.
        A URL (``s3://``, ``gs://``, ``az://``, ``https://``, ``memory://`` -- any fsspec
        protocol) names a NIfTI object, read lazily by ranged reads: the header with one small
        read; a ``.nii`` reads only the volumes asked for; a pass over a ``.nii.gz`` downloads it
        once, front to back, in 16 MiB ranges (never whole in memory). Glob patterns work on
        object stores (``s3://bucket/sub-*/func/*_bold.nii.gz``).
    chunks : "auto", int, -1, None, dict or tuple, default "auto"
        Chunking along ``time`` (spatial dims are never split: a chunk is whole volumes).
        ``"auto"``: at most 30 MiB per chunk; an int: that many volumes per chunk; ``-1`` or
        ``None``: one chunk; ``{"time": n}``; or a tuple of chunk lengths summing to the number
        of volumes. A zarr store keeps its stored chunks under ``"auto"``.
    storage_options : dict, optional
        fsspec options for URLs (``{"anon": True}``, ``{"endpoint_url": ...}``, credentials).
        Without them, those of :func:`lazymask.storage.set_storage_options` apply (that is how a
        masker given a URL reaches its store), then fsspec's defaults.

    Returns
    -------
    xarray.DataArray
        Dims ``("i", "j", "k")`` or ``("i", "j", "k", "time")``, backed by dask; ``attrs`` hold
        ``affine`` (4x4, nested list), ``t_r`` in seconds when the header knows it (then ``time``
        is a coordinate in seconds) and ``source`` (the file paths).

    Raises
    ------
    ImageFileNotFoundError, NotNiftiError, DimensionError, ImageMismatchError,
    ImageTooLargeError, CorruptImageError, ParameterError
        When the input cannot be read as asked (a header with a non-finite or singular affine, a
        bad ``chunks``, a missing object, ...); raised here, before any voxel is read; the message
        names the file or URL and the fix.
    SourceChangedError
        At compute time, when a file was replaced or rewritten after it was opened, or an object
        overwritten (every read task compares the source's identity -- stat, or ETag/version --
        with the one taken here; on S3 each ranged ``GET`` carries ``If-Match``).

    Examples
    --------
    >>> img = open_nifti("run-1_bold.nii.gz")          # doctest: +SKIP
    >>> img.nifti.affine, img.chunks                     # doctest: +SKIP
    >>> img.mean("time").compute()                       # one pass over the file # doctest: +SKIP
    >>> open_nifti("s3://bucket/sub-01_bold.nii.gz", storage_options={"anon": True})  # doctest: +SKIP

    A URL of any fsspec file system opens the same way:

    >>> import fsspec, nibabel as nib, numpy as np
    >>> image = nib.Nifti1Image(np.arange(24, dtype=np.int16).reshape(2, 3, 2, 2), np.eye(4))
    >>> fsspec.filesystem("memory").pipe("/doc/bold.nii", image.to_bytes())
    >>> remote = open_nifti("memory://doc/bold.nii")
    >>> remote.shape, int(remote.sum())
    ((2, 3, 2, 2), 276)
    """
    from lazymask.io._formats import format_for

    if isinstance(src, xr.DataArray):
        return src
    check_chunks(chunks)
    images = _expand(src, storage_options)
    if not images:
        raise ParameterError(f"no image to open: {src!r} names no file.")
    formats = [format_for(image) for image in images]
    if len({f.name for f in formats}) > 1:
        found = ", ".join(f"{image} is {f.name}" for image, f in zip(images, formats, strict=True))
        raise ParameterError(f"cannot combine images of different formats in one list ({found}); "
                             "convert them to one format first.")
    return formats[0].open_many(images, chunks, stack_3d=_is_list(src) or len(images) > 1)


def open_nifti_files(images: list, chunks, stack_3d: bool) -> xr.DataArray:
    """NIfTI files and nibabel images (the NIfTI format's side of :func:`open_nifti`)."""
    parts = [_open_one(image) for image in images]
    return _assemble(parts, chunks, stack_3d=stack_3d)


# -- inputs -----------------------------------------------------------------------------------------
def open_zarr_images(stores: list, chunks) -> xr.DataArray:
    """Image stores written by :func:`lazymask.to_zarr` (one, or a list concatenated along time)."""
    from lazymask.io._zarr import open_zarr

    images = [open_zarr(store) for store in stores]
    for store, image in zip(stores, images, strict=True):
        if "i" not in image.dims:
            raise NotNiftiError(f"{store} holds {image.dims} data, not an image; open it with lazymask.open_zarr.")
    parts = [_Part(str(store), image.shape, np.asarray(image.attrs["affine"]), image.attrs.get("t_r"))
             for store, image in zip(stores, images, strict=True)]
    _check_same_grid(parts)
    image = images[0] if len(images) == 1 else xr.concat(images, dim="time", combine_attrs="override")
    if chunks != "auto" and "time" in image.dims:
        itemsize = image.dtype.itemsize
        image = image.chunk({"time": _time_chunks(chunks, image.sizes["time"], itemsize)})
    return image


def _is_list(src) -> bool:
    return isinstance(src, Sequence) and not isinstance(src, str | bytes)


def _expand(src, storage_options=None) -> list:
    """A flat list of paths, object locations and nibabel images, with glob patterns expanded (sorted)."""
    if _is_list(src):
        return [item for entry in src for item in _expand(entry, storage_options)]
    if isinstance(src, ObjectLocation):
        return [src]
    if isinstance(src, str | os.PathLike):
        location = resolve(src, storage_options)  # refuses storage_options with a local path
        if isinstance(location, ObjectLocation):
            return _expand_url(location)
        path = os.fspath(src)
        if not os.path.exists(path) and glob.has_magic(path):
            matches = sorted(glob.glob(os.path.expanduser(path)))
            if not matches:
                raise ImageFileNotFoundError(f"no file matches the pattern {path!r}.")
            return matches
        return [path]
    if isinstance(src, nib.spatialimages.SpatialImage):
        return [src]
    raise ParameterTypeError(
        f"cannot open {type(src).__name__!r} as an image: pass a path to a .nii/.nii.gz file, "
        "a nibabel image, an xarray.DataArray, or a list of these."
    )


def _expand_url(location: ObjectLocation) -> list[ObjectLocation]:
    """The objects a URL names: itself, or the matches of its glob pattern (sorted)."""
    if location.protocol in ("http", "https") or not glob.has_magic(location.url):
        return [location]
    fs = location.filesystem
    if fs.exists(location.fs_path):
        return [location]
    matches = sorted(path for path in fs.glob(location.fs_path) if fs.isfile(path))
    if not matches:
        raise ImageFileNotFoundError(f"no object matches the pattern {location.url!r}.")
    return [ObjectLocation(f"{location.protocol}://{path.lstrip('/')}", location.options) for path in matches]


class _Part:
    """One opened image: how to read it (reader or in-memory array), its grid and its origin."""

    def __init__(self, label, shape, affine, t_r, reader=None, array=None):
        self.label, self.shape, self.affine, self.t_r = label, shape, affine, t_r
        self.reader, self.array = reader, array

    @property
    def n_volumes(self) -> int:
        return self.shape[3] if len(self.shape) == 4 else 1

    @property
    def dtype(self) -> np.dtype:
        return self.reader.dtype if self.reader is not None else self.array.dtype


def _open_one(image) -> _Part:
    if isinstance(image, str):
        return _open_path(image)
    if isinstance(image, ObjectLocation):
        return _open_source(object_identity(image), image.url)
    else:
        label = image.get_filename() or f"<in-memory {type(image).__name__}>"
    shape = _validated_shape(label, image.shape)
    affine = _validated_affine(label, image.affine if image.affine is not None else np.eye(4))
    t_r = _repetition_time(image.header) if len(shape) == 4 else None
    proxy = image.dataobj
    if isinstance(proxy, nib.arrayproxy.ArrayProxy) and isinstance(proxy.file_like, str):
        reader = _reader_from_proxy(label, proxy, shape)
        return _Part(label, shape, affine, t_r, reader=reader)
    array = np.asanyarray(proxy).reshape(shape)  # already in memory (or an unknown proxy)
    _check_dtype(label, array.dtype)
    return _Part(label, shape, affine, t_r, array=array)


def _open_path(path: str) -> _Part:
    """Read and validate one NIfTI file's header; the codec is found from its first bytes."""
    return _open_source(file_identity(path), path)


_HEADER_BYTES = 544  # a NIfTI-2 header and its extension flag: what a header read fetches


def _open_source(identity, path: str) -> _Part:
    """Read and validate the header of one NIfTI file or object (``path``: its name in messages)."""
    head = read_head(identity, _HEADER_BYTES)
    if not head:
        raise NotNiftiError(f"{path}: the file is empty (0 bytes), not a readable NIfTI image. "
                            "Re-create or re-download it.")
    codec = codec_for(head[:SNIFF_BYTES])
    header, raw_pixdim = _parse_header(path, codec.read_head(identity, _HEADER_BYTES, head), codec.name)
    shape = _validated_shape(path, _header_call(path, header.get_data_shape))
    affine = _validated_affine(path, header.get_best_affine(), header, raw_pixdim)
    t_r = _repetition_time(header) if len(shape) == 4 else None
    disk_dtype = np.dtype(_header_call(path, header.get_data_dtype))
    _check_dtype(path, disk_dtype)
    slope, inter = _header_call(path, header.get_slope_inter)
    reader = VolumeReader(
        identity=identity,
        codec=codec.name,
        offset=int(header.get_data_offset()),
        spatial_shape=shape[:3],
        n_volumes=shape[3] if len(shape) == 4 else 1,
        disk_dtype=disk_dtype.str,
        slope=1.0 if slope is None else slope,
        inter=0.0 if inter is None else inter,
    )
    _check_size(path, reader)
    return _Part(path, shape, affine, t_r, reader=reader)


def _first_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(SNIFF_BYTES)
    except PermissionError:
        raise ImageFileNotFoundError(
            f"{path}: permission denied, the file cannot be read. Check its permissions "
            "(chmod u+r) or run as a user who can read it."
        ) from None
    except OSError as exc:
        raise CorruptImageError(f"{path}: the file cannot be read ({exc}).") from exc


_NOT_NIFTI_FIX = (
    "lazymask reads single-file NIfTI-1/NIfTI-2 images (.nii, .nii.gz, recognised by content) and "
    "image stores written by lazymask.to_zarr; convert other formats with nibabel: "
    "nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), img.affine), 'out.nii.gz')."
)


def _parse_header(path: str, block: bytes, codec: str):
    """The nibabel header in the first bytes ``block`` (decoded) and its pixdim as stored, or a clear error."""
    where = " (after gzip decompression)" if codec == "gzip" else ""
    if codec == "gzip" and len(block) < 348:
        raise CorruptImageError(f"{path}: the gzip stream ends after {len(block)} bytes, inside the NIfTI "
                                "header; the file is truncated. Re-create or re-download it.")
    for klass, size, magic_at in ((nib.Nifti1Header, 348, 344), (nib.Nifti2Header, 540, 4)):
        orders = [o for o, name in (("<", "little"), (">", "big")) if int.from_bytes(block[:4], name) == size]
        if not orders:
            continue
        magic = block[magic_at : magic_at + 4]
        if len(block) < size:
            raise CorruptImageError(f"{path}: the file ends{where} after {len(block)} bytes, inside "
                                    f"its {size}-byte NIfTI header; the file is truncated.")
        if magic[:2] == b"ni":
            raise NotNiftiError(
                f"{path}: the header of a NIfTI pair (magic {magic!r}: the voxels are in a separate "
                f".img file), not a readable single-file NIfTI image. {_NOT_NIFTI_FIX}"
            )
        if magic[:2] != b"n+":
            break
        n_dims = np.frombuffer(block[40:42] if size == 348 else block[16:24], dtype=orders[0] + ("i2" if size == 348 else "i8"))[0]
        if not 1 <= n_dims <= 7:
            raise CorruptImageError(
                f"{path}: the header's dim[0] (the number of dimensions) is {n_dims}, not 1 to 7; the "
                "header is corrupt. Re-create the file, or repair dim[0] with nibabel."
            )
        try:
            header = klass(binaryblock=block[:size], endianness=orders[0], check=False)
            raw_pixdim = np.array(header["pixdim"], dtype=np.float64)
            with nib.imageglobals.LoggingOutputSuppressor():
                header.check_fix()
        except Exception as exc:  # nibabel's HeaderDataError and friends
            raise CorruptImageError(
                f"{path}: the NIfTI header is invalid ({exc}); lazymask cannot read the file. "
                "Re-create it, or repair the header with nibabel."
            ) from exc
        return header, raw_pixdim
    raise NotNiftiError(
        f"{path}: not a readable NIfTI image (its first bytes{where}, {block[:8]!r}, are not a "
        f"NIfTI-1 or NIfTI-2 header). {_NOT_NIFTI_FIX}"
    )


def _header_call(path: str, method):
    try:
        return method()
    except Exception as exc:  # nibabel's HeaderDataError and friends
        raise CorruptImageError(
            f"{path}: the NIfTI header is invalid ({exc}); lazymask cannot read the file. "
            "Re-create it, or repair the header with nibabel."
        ) from exc


def _validated_affine(label: str, affine, header=None, raw_pixdim=None) -> np.ndarray:
    """The voxel-to-world affine, refused when it is not finite or not invertible."""
    affine = np.asarray(affine, dtype=np.float64)
    source, pixdim = "the image's affine", None
    if header is not None and "sform_code" in header:
        pixdim = np.asarray(header["pixdim"] if raw_pixdim is None else raw_pixdim)[1:4]
        if header["sform_code"] > 0:
            source = "the sform (srow_x, srow_y, srow_z)"
        else:
            source = ("the qform (quatern_b/c/d, qoffset_x/y/z and pixdim[1:4] = "
                      if header["qform_code"] > 0 else "the voxel sizes (pixdim[1:4] = ") + f"{pixdim.tolist()})"
            if not (np.all(np.isfinite(pixdim)) and np.all(pixdim != 0)):
                affine = np.full((4, 4), np.nan) if not np.all(np.isfinite(pixdim)) else affine
                problem = "not finite" if not np.all(np.isfinite(pixdim)) else "zero"
                raise CorruptImageError(
                    f"{label}: the header's voxel sizes pixdim[1:4] = {pixdim.tolist()} are {problem}, "
                    "so the voxels have no place in space. Repair the header with nibabel "
                    "(header['pixdim'][1:4] = the voxel sizes in mm, or img.set_sform(affine, code=1)) "
                    "and save it again."
                )
    if not np.all(np.isfinite(affine)) or affine.shape != (4, 4) or np.linalg.det(affine[:3, :3]) == 0:
        problem = "not finite" if not np.all(np.isfinite(affine)) else "singular (not invertible)"
        raise CorruptImageError(
            f"{label}: the voxel-to-world affine from {source} is {problem}: "
            f"{np.round(affine, 4).tolist()}; lazymask cannot place the voxels in space. Repair the "
            "header with nibabel (img.set_sform(affine, code=1), img.set_qform(affine, code=1)) and "
            "save it again."
        )
    return affine


def _validated_shape(label: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    shape = tuple(int(n) for n in shape)
    while len(shape) > 4 and shape[-1] == 1:  # trailing singleton dims (dim[0] > 4, size 1)
        shape = shape[:-1]
    if len(shape) not in (3, 4):
        raise DimensionError(
            len(shape), 4 if len(shape) > 4 else 3,
            f"{label}: a {len(shape)}D image of shape {shape}. Computation expects 3D or 4D images, but "
            f"{len(shape)} dimensions were given: lazymask works on 3D images and 4D (x, y, z, time) runs. "
            "Select the volumes you need with nibabel first."
        )
    if min(shape) == 0:
        raise EmptyImageError(
            f"{label}: the header declares an image of shape {shape} (The image is empty: an axis of "
            "length 0, no voxel to read)."
        )
    if min(shape) < 1:
        raise CorruptImageError(
            f"{label}: the header declares an image of shape {shape} (a dimension < 1: "
            f"{'negative' if min(shape) < 0 else 'empty'}); the header is corrupt. Re-create the file."
        )
    return shape


def _check_dtype(label: str, dtype: np.dtype) -> None:
    if dtype.kind not in _SUPPORTED_KINDS or dtype.fields is not None:
        raise NotNiftiError(
            f"{label}: voxels of dtype {dtype} are not supported; lazymask reads integer, boolean "
            "and floating-point images (convert RGB/complex data to one of these first)."
        )


def _reader_from_proxy(label: str, proxy, shape) -> VolumeReader:
    disk_dtype = np.dtype(proxy.dtype)
    _check_dtype(label, disk_dtype)
    if getattr(proxy, "order", "F") != "F":
        raise NotNiftiError(f"{label}: voxel data in C order is not a NIfTI layout lazymask reads.")
    n_volumes = shape[3] if len(shape) == 4 else 1
    head = _first_bytes(proxy.file_like)
    reader = VolumeReader(
        identity=file_identity(proxy.file_like),
        codec=codec_for(head).name,
        offset=int(proxy.offset),
        spatial_shape=shape[:3],
        n_volumes=n_volumes,
        disk_dtype=disk_dtype.str,
        slope=proxy.slope,
        inter=proxy.inter,
    )
    _check_size(label, reader)
    return reader


def _check_size(label: str, reader: VolumeReader) -> None:
    """Refuse a header whose dims declare more voxels than any real image, or than the file holds.

    Sizes are exact Python ints (``VolumeReader.data_nbytes``): NIfTI-2 dims are int64, and their
    product wraps around in numpy's int64 (2**21 x 2**21 x 2**21 voxels is 0 or negative there).
    """
    data_bytes = reader.data_nbytes
    if data_bytes > MAX_IMAGE_BYTES:
        dims = (*reader.spatial_shape, reader.n_volumes) if reader.n_volumes > 1 else tuple(reader.spatial_shape)
        raise ImageTooLargeError(
            f"{label}: the header declares dimensions {' x '.join(map(str, dims))} of "
            f"{np.dtype(reader.disk_dtype)}, i.e. {_tebibytes(data_bytes)} TiB of voxels (lazymask opens "
            f"images up to {MAX_IMAGE_BYTES // 2**40} TiB); no real image is that large, so the header's "
            "dim field is corrupt. Re-create the file, or repair its dims with nibabel "
            "(img.header.set_data_shape(true_shape)) and save it again."
        )
    file_bytes = reader.identity.size
    if not reader.compressed and reader.offset >= file_bytes:
        raise CorruptImageError(
            f"{label}: the header's vox_offset puts the voxel data at byte {reader.offset}, beyond "
            f"the end of the file ({file_bytes} bytes); the file is truncated or its header is wrong."
        )
    if reader.compressed:
        if data_bytes > _MAX_DEFLATE_RATIO * file_bytes:
            raise CorruptImageError(
                f"{label}: the header declares {data_bytes} bytes of voxels, more than a gzip file of "
                f"{file_bytes} bytes can hold; the file is truncated or its header is wrong."
            )
    elif reader.offset + data_bytes > file_bytes:
        raise CorruptImageError(
            f"{label}: the header declares voxel data up to byte {reader.offset + data_bytes} but "
            f"the file has {file_bytes} bytes; the file is truncated. Re-create or re-download it."
        )


def _tebibytes(n_bytes: int) -> str:
    """``n_bytes`` in TiB for a message, whatever its size (an exact int, possibly beyond int64)."""
    tib = n_bytes / 2**40
    return f"{tib:.1f}" if tib < 1e6 else f"{tib:.3g}"


def _repetition_time(header) -> float | None:
    zooms = header.get_zooms()
    if len(zooms) < 4 or not np.isfinite(zooms[3]) or zooms[3] <= 0:
        return None
    try:
        time_unit = header.get_xyzt_units()[1]
    except AttributeError:
        time_unit = "sec"
    to_seconds = {"msec": 1e-3, "usec": 1e-6}.get(time_unit, 1.0)
    return float(zooms[3]) * to_seconds


# -- assembling a DataArray -----------------------------------------------------------------------
def _assemble(parts: list[_Part], chunks, stack_3d: bool) -> xr.DataArray:
    first = parts[0]
    _check_same_grid(parts)
    ndims = {len(p.shape) for p in parts}
    if len(ndims) > 1:
        raise ImageMismatchError(
            "cannot combine 3D images and 4D runs in one list: "
            + ", ".join(f"{p.label} is {len(p.shape)}D" for p in parts[:4])
            + ". Pass only 3D volumes or only 4D runs."
        )
    is_4d = ndims == {4} or stack_3d
    n_time = sum(p.n_volumes for p in parts)
    dtype = np.result_type(*[p.dtype for p in parts])
    time_chunks = _time_chunks(chunks, n_time, int(np.prod(first.shape[:3])) * dtype.itemsize)
    if all(p.reader is not None for p in parts):
        volumes = LazyVolumes([p.reader for p in parts], squeeze_time=not is_4d)
        data = lazy_volumes_array(volumes, time_chunks)
    else:
        arrays = [_as_dask_4d(p) for p in parts]
        data = da.concatenate(arrays, axis=3).astype(dtype) if len(arrays) > 1 else arrays[0]
        data = data.rechunk({3: time_chunks}) if is_4d else data[..., 0]
    t_rs = {p.t_r for p in parts}
    t_r = t_rs.pop() if len(t_rs) == 1 and is_4d else None
    sources = [p.label for p in parts]
    return image_dataarray(data, first.affine, t_r=t_r, attrs={"source": sources})


def _as_dask_4d(part: _Part):
    if part.reader is not None:
        volumes = LazyVolumes([part.reader])
        return lazy_volumes_array(volumes, (volumes.shape[3],))
    array = part.array if part.array.ndim == 4 else part.array[..., np.newaxis]
    return da.from_array(array, chunks=array.shape)


def lazy_volumes_array(volumes: LazyVolumes, time_chunks: tuple[int, ...]) -> da.Array:
    """A dask array with one read task per chunk of whole volumes.

    Reads of chunks that share a gzip-compressed file are chained in file order: each waits for a
    token that the previous chunk's read leaves (the token holds no data). Whatever order dask picks
    for the rest of the graph, a ``.nii.gz`` is then decompressed once, front to back, one core
    decompressing while the others compute on the chunks already read (DESIGN.md, "Reading").

    On a multi-process ``distributed`` cluster every process has its own gzip streams: the scheduler
    places a read where the previous read's token is, so a file's reads stay in one process, unless
    work stealing moves one; then its new process decompresses from the file's start. With resumable
    streams (``LAZYMASK_GZIP_READER=zran``, :mod:`lazymask.io._zran`; read here, at graph build, and
    by every worker) a read leaves ``(block, cache writes, resume points)`` under its own key, the
    token carries the points (about 33 kB per file), and a read run in another process resumes from
    them: a moved read decompresses at most one deflate block again.
    With the run cache on (``config.get("cache_dir")``, read here, at graph build), gzip reads go
    through :mod:`lazymask.io._runcache`; files whose entry is complete at build time are not chained.
    """
    cache = current_settings() if any(reader.cacheable for reader in volumes.readers) else None
    chained = not all_cached(volumes, cache)  # a file in the run cache reads in any order, in parallel
    resumable = chained and resumable_streams()
    # the readers hold their files' identities: a replaced file never reuses a graph key
    name = "open-nifti-" + dask.base.tokenize(volumes.readers, time_chunks, volumes.squeeze_time)
    token_name = "gzip-order-" + name.removeprefix("open-nifti-")
    n_spatial = 3
    tee_name = "gzip-read-" + name.removeprefix("open-nifti-")
    prefault_name = "gzip-prefault-" + name.removeprefix("open-nifti-")
    graph, previous_compressed, start = {}, set(), 0
    starts = np.cumsum((0, *time_chunks))
    for index, length in enumerate(time_chunks):
        key = (name,) + (0,) * n_spatial + (() if volumes.squeeze_time else (index,))
        compressed = volumes.compressed_readers(start, start + length)
        after = (token_name, index - 1) if chained and compressed & previous_compressed else None
        following = index + 1 < len(time_chunks) and volumes.compressed_readers(starts[index + 1], starts[index + 2])
        # the next chunk's buffer is faulted in while this one decompresses (_pages.prefault), when
        # that chunk follows in the same chain; the token waits for it, so the next read gets it
        prefault = (prefault_name, index + 1) if chained and not resumable and compressed & set(following or ()) else None
        if prefault is not None:
            graph[prefault] = (_prefault, volumes.first_buffer_nbytes(starts[index + 1], starts[index + 2]), after)
        if resumable and compressed:
            graph[(tee_name, index)] = (_read_chunk_resumable, volumes, start, start + length, after, cache)
            graph[key] = (_block_of, (tee_name, index), volumes.squeeze_time, cache)
            graph[(token_name, index)] = (_points_of, (tee_name, index))
        elif cache is not None and chained and compressed:
            # filling the run cache: the chunk's key writes it, the next read waits only for this read
            graph[(tee_name, index)] = (_read_chunk_deferring_tee, volumes, start, start + length, after, cache)
            graph[key] = (_write_tee, (tee_name, index), volumes.squeeze_time, cache)
            graph[(token_name, index)] = (_order_token, (tee_name, index), prefault)
        else:
            graph[key] = (_read_chunk, volumes, start, start + length, after, cache)
            graph[(token_name, index)] = (_order_token, key, prefault)
        previous_compressed, start = compressed, start + length
    chunks = tuple((n,) for n in volumes.shape[:3]) + (() if volumes.squeeze_time else (time_chunks,))
    layer = HighLevelGraph.from_collections(name, graph, dependencies=[])
    return da.Array(layer, name, chunks=chunks, meta=np.empty((0,) * volumes.ndim, dtype=volumes.dtype))


def _read_chunk(volumes: LazyVolumes, start: int, stop: int, _after, cache=None) -> np.ndarray:
    block = read_volumes(volumes, start, stop, cache)
    return block[..., 0] if volumes.squeeze_time else block


def _read_chunk_deferring_tee(volumes: LazyVolumes, start: int, stop: int, _after, cache):
    return read_volumes_deferring_tee(volumes, start, stop, cache)


def _write_tee(read: tuple, squeeze_time: bool, cache) -> np.ndarray:
    block, pending = read
    write_tee(cache, pending)
    return block[..., 0] if squeeze_time else block


def _order_token(_block, _prefaulted=None) -> None:
    return None


def _prefault(nbytes: int | None, _after) -> None:
    """Fault in the buffer of a coming read on this thread (the reading thread is busy decompressing)."""
    if nbytes is not None:
        prefault(nbytes)


def _read_chunk_resumable(volumes: LazyVolumes, start: int, stop: int, points: tuple | None, cache) -> tuple:
    """Resume from the previous read's ``points``, read; ``(block, volumes for the run cache, points)``."""
    for identity, point in points or ():
        offer_resume_point(identity, point)
    if cache is None:
        block, pending = volumes.read(start, stop), []
    else:  # the chunk's key writes the run cache: the next read waits only for this read
        block, pending = read_volumes_deferring_tee(volumes, start, stop, cache)
    points, first = [], 0
    for reader in volumes.readers:
        if reader.compressed and start < first + reader.n_volumes and stop > first:
            end = reader.offset + (min(stop, first + reader.n_volumes) - first) * reader.volume_nbytes
            point = resume_point(reader.identity, end)
            if point is not None:
                points.append((reader.identity, point))
        first += reader.n_volumes
    return block, pending, tuple(points)


def _block_of(read: tuple, squeeze_time: bool, cache) -> np.ndarray:
    block, pending, _points = read
    if pending:
        write_tee(cache, pending)
    return block[..., 0] if squeeze_time else block


def _points_of(read: tuple) -> tuple:
    return read[2]


def _check_same_grid(parts: list[_Part]) -> None:
    first = parts[0]
    for part in parts[1:]:
        if part.shape[:3] != first.shape[:3]:
            raise ImageMismatchError(
                f"{part.label} has spatial shape {part.shape[:3]} but {first.label} has "
                f"{first.shape[:3]}; images combined along time must share a grid. Resample them "
                "to one grid first (lazymask.image.resample_to_img)."
            )
        if not np.allclose(part.affine, first.affine, rtol=0, atol=1e-5):
            raise ImageMismatchError(
                f"{part.label} and {first.label} have different affines "
                f"({np.round(part.affine, 4).tolist()} vs {np.round(first.affine, 4).tolist()}); "
                "images combined along time must share a grid. Resample them to one grid first "
                "(lazymask.image.resample_to_img)."
            )


_CHUNKS_FORMS = "'auto', a positive int (volumes per chunk), -1 or None (one chunk), {'time': n} or a tuple of chunk lengths"


def check_chunks(chunks) -> None:
    """Refuse a ``chunks`` argument of :func:`open_nifti` that has no meaning, before any file is read."""
    value = chunks
    if isinstance(chunks, dict):
        unknown = sorted(set(chunks) - {"time", "i", "j", "k"}, key=str)
        if unknown:
            raise ParameterError(f"chunks has unknown dims {unknown}; only 'time' can be chunked.")
        for dim in ("i", "j", "k"):
            if chunks.get(dim, -1) not in (-1, None):
                raise ParameterError(
                    f"chunks={chunks!r}: lazymask chunks images along 'time' only (whole volumes per "
                    "chunk); drop the spatial entries."
                )
        value = chunks.get("time", "auto")
    if value is None or value == "auto" or _is_count(value) and (value == -1 or value >= 1):
        return
    if isinstance(value, str):
        raise ParameterError(f"chunks={chunks!r}: unknown string; expected {_CHUNKS_FORMS}.")
    if _is_count(value):
        raise ParameterError(f"chunks={chunks!r}: the number of volumes per chunk must be >= 1 (or -1).")
    if isinstance(value, tuple | list) and value and all(_is_count(c) and c >= 1 for c in value):
        return
    if isinstance(value, tuple | list) and all(_is_count(c) for c in value):
        raise ParameterError(f"chunks={chunks!r}: chunk lengths must be positive and add up to the number of volumes.")
    raise ParameterError(
        f"chunks={chunks!r} ({type(value).__name__}): expected {_CHUNKS_FORMS}; a chunk is a whole "
        "number of volumes (round a float, e.g. chunks=2)."
    )


def _is_count(value) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def _time_chunks(chunks, n_time: int, volume_nbytes: int) -> tuple[int, ...]:
    """Chunk lengths along time for the ``chunks`` argument of :func:`open_nifti`."""
    check_chunks(chunks)
    if isinstance(chunks, dict):
        chunks = chunks.get("time", "auto")
    if chunks is None or chunks == -1:
        return (n_time,)
    if isinstance(chunks, str):
        size = max(1, min(n_time, config.get("auto_chunk_bytes") // max(volume_nbytes, 1)))
        return da.core.normalize_chunks((size,), (n_time,))[0]
    if _is_count(chunks):
        return da.core.normalize_chunks((int(chunks),), (n_time,))[0]
    chunks = tuple(int(c) for c in chunks)
    if sum(chunks) != n_time:
        raise ParameterError(
            f"chunks={chunks}: chunk lengths must be positive and add up to the {n_time} volumes."
        )
    return chunks


def nifti_path(path) -> str:
    """Normalise a path-like to ``str`` (helper for writers)."""
    return os.fspath(Path(path))
