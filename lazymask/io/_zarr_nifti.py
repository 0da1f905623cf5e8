"""Images as NIfTI-Zarr, both ways: lazymask's images written and read, other tools' stores read.

Contract
--------
* Images (dims ``i, j, k[, time]``) follow the NIfTI-Zarr convention (neuroscales ``nifti-zarr``
  1.0): the group is an OME-Zarr 0.5 multiscale image with one scale, ``"0"``; its axes are ``t``
  (second, 4D only), ``z``, ``y``, ``x`` (millimetre), with the voxel sizes and the repetition time
  as scale transforms; a ``nifti`` array holds the binary NIfTI-1 header (348 ``uint8``), the
  reference for the affine. NIfTI's Fortran-ordered ``(i, j, k, t)`` data is the C-ordered array
  ``(t, k, j, i)``: that is how ``"0"`` is stored, and reads return the ``(i, j, k, time)``
  transpose view of it.
* Chunks: whole volumes per chunk, as many as make about ``config.get("zarr_chunk_bytes")``.
* NIfTI-Zarr stores written by other tools (``niizarr.nii2zarr``) are read (level ``"0"``, with the
  affine and the scaling of their header), never written to.
"""

from __future__ import annotations

import contextlib
import io as _io
import os
from pathlib import Path

import dask.array as da
import nibabel as nib
import numpy as np
import xarray as xr
import zarr

from lazymask import config
from lazymask.exceptions import CorruptStoreError, LazymaskError, NotNiftiError
from lazymask.io._arrays import as_dask
from lazymask.io._meta import affine_attr, get_t_r, image_dataarray
from lazymask.io._write import nifti_dtype, nifti_header
from lazymask.io._zarr_read import _arrays, _lazy, _member, _Opened, _token
from lazymask.io._zarr_schema import HEADER_ARRAY, IMAGE_ARRAY, _codecs, _is_nifti_zarr
from lazymask.storage import StagedGroup

__all__ = ["image_time_chunk"]


def image_time_chunk(volume_nbytes: int, n_volumes: int) -> int:
    """Volumes per stored image chunk: whole volumes adding up to about ``zarr_chunk_bytes``."""
    budget = config.get("zarr_chunk_bytes")
    return int(max(1, min(n_volumes, budget // max(volume_nbytes, 1))))


def _write_image(img: xr.DataArray, staged: StagedGroup, compressor, compute: bool = True):
    header = nifti_header(img)
    dtype = nifti_dtype(img.dtype)
    data = as_dask(img).astype(dtype, copy=False).transpose()  # (i, j, k[, t]) -> (t, k, j, i)
    if img.ndim == 4:
        volume_nbytes = int(np.prod(data.shape[1:])) * dtype.itemsize
        chunks = (image_time_chunk(volume_nbytes, data.shape[0]), *data.shape[1:])
    else:
        chunks = data.shape
    zgroup = staged.open()
    array = zgroup.create_array(
        IMAGE_ARRAY, shape=data.shape, chunks=chunks, dtype=dtype, compressors=_codecs(compressor),
        fill_value=0, dimension_names=_ome_axis_names(img.ndim), config={"write_empty_chunks": True},
    )
    stored = da.store(data.rechunk(chunks), array, lock=False, compute=compute)
    header_array = zgroup.create_array(HEADER_ARRAY, shape=(348,), chunks=(348,), dtype="u1",
                                       compressors=_codecs(None), fill_value=0,
                                       dimension_names=("nifti_header_byte",),
                                       config={"write_empty_chunks": True})
    header_array[:] = np.frombuffer(header.binaryblock, dtype=np.uint8)
    zgroup.attrs.update({"ome": _ome_metadata(img, header)})
    return stored


def _ome_axis_names(ndim: int) -> list[str]:
    return (["t"] if ndim == 4 else []) + ["z", "y", "x"]


def _ome_metadata(img: xr.DataArray, header) -> dict:
    zooms = [float(z) for z in header.get_zooms()[:3]]
    space = [{"name": n, "type": "space", "unit": "millimeter"} for n in ("z", "y", "x")]
    axes, scale, global_scale = space, zooms[::-1], [1.0, 1.0, 1.0]
    if img.ndim == 4:
        axes = [{"name": "t", "type": "time", "unit": "second"}, *space]
        scale = [1.0, *scale]
        global_scale = [get_t_r(img) or 1.0, *global_scale]
    multiscale = {
        "name": str(img.name) if img.name is not None else "image",
        "axes": axes,
        "datasets": [{"path": IMAGE_ARRAY, "coordinateTransformations": [{"type": "scale", "scale": scale}]}],
        "coordinateTransformations": [{"type": "scale", "scale": global_scale}],
    }
    return {"version": "0.5", "multiscales": [multiscale]}


def _read_image(opened: _Opened, where: str) -> xr.DataArray:
    array = _member(opened.zgroup, IMAGE_ARRAY, where)
    dims = tuple(opened.meta["dims"])
    if array.ndim != len(dims):
        raise CorruptStoreError(f"{where}: array {IMAGE_ARRAY!r} has {array.ndim} dims, expected {len(dims)}.")
    data = _lazy(array, IMAGE_ARRAY, where, _token(opened, IMAGE_ARRAY)).transpose()  # (t,k,j,i) -> (i,j,k,t)
    data = data.astype(np.dtype(opened.meta["dtype"]), copy=False)
    return xr.DataArray(data, dims=dims)


# -- NIfTI-Zarr stores written by other tools ---------------------------------------------------------
def _read_nifti_zarr(zgroup: zarr.Group, where: str) -> xr.DataArray:
    """A NIfTI-Zarr 1.0 image (level 0), lazily, with the affine and scaling of its binary header."""
    attrs = zgroup.attrs.asdict()
    ome = attrs.get("ome", attrs)
    multiscale = ome["multiscales"][0]
    datasets = multiscale.get("datasets") if isinstance(multiscale, dict) else None
    path = datasets[0].get("path") if isinstance(datasets, list) and datasets and isinstance(datasets[0], dict) else None
    if not isinstance(path, str):
        raise CorruptStoreError(f"{where}: its OME-Zarr 'multiscales[0].datasets[0].path' is missing or not a string.")
    arrays = dict(_arrays(zgroup, where))
    if HEADER_ARRAY not in arrays:
        raise NotNiftiError(
            f"{where}: an OME-Zarr image without the binary {HEADER_ARRAY!r} header array, so not NIfTI-Zarr; "
            "lazymask needs the NIfTI header for the affine."
        )
    header = _nifti_zarr_header(arrays[HEADER_ARRAY], where)
    if path not in arrays:
        raise CorruptStoreError(f"{where}: level {path!r} named by its multiscales metadata is missing.")
    level0 = arrays[path]
    shape = tuple(int(n) for n in header.get_data_shape())
    if level0.ndim not in (3, 4):
        raise NotNiftiError(
            f"{where}: level {path!r} has {level0.ndim} axes; lazymask reads 3D and 4D NIfTI-Zarr images "
            "(no channel axis)."
        )
    if tuple(level0.shape[::-1]) != shape[: level0.ndim] or int(np.prod(shape)) != int(np.prod(level0.shape)):
        raise CorruptStoreError(
            f"{where}: level {path!r} has shape {tuple(level0.shape)} (t, z, y, x), but its NIfTI header "
            f"says {shape} (i, j, k, t); the store is damaged."
        )
    affine = header.get_best_affine()
    if not np.all(np.isfinite(affine)):
        raise CorruptStoreError(f"{where}: its NIfTI header's affine is not finite.")
    volume_chunks = (max(1, level0.chunks[0]), *level0.shape[1:]) if level0.ndim == 4 else level0.shape
    data = _lazy(level0, path, where, _foreign_token(zgroup, path), chunks=volume_chunks).transpose()
    slope, inter = header.get_slope_inter()
    if slope is not None and np.isfinite(slope) and (slope != 1 or (inter or 0) != 0):
        inter = 0.0 if inter is None or not np.isfinite(inter) else inter
        dtype = nib.volumeutils.apply_read_scaling(np.zeros(1, level0.dtype), slope, inter).dtype
        data = data.map_blocks(nib.volumeutils.apply_read_scaling, slope, inter, dtype=dtype,
                               meta=np.empty((0,) * data.ndim, dtype))
    t_r = None
    if level0.ndim == 4:
        step = float(header.get_zooms()[3]) * {"msec": 1e-3, "usec": 1e-6}.get(header.get_xyzt_units()[1], 1.0)
        t_r = step if np.isfinite(step) and step > 0 else None
    image = image_dataarray(data, affine, t_r=t_r, name=multiscale.get("name") or None)
    image.attrs["affine"] = affine_attr(affine)
    return image


def _foreign_token(zgroup: zarr.Group, path: str):
    """What identifies a foreign store's level 0 without a manifest: its metadata and files' identities."""
    token = [zgroup[path].metadata.to_dict().__repr__()]
    store = getattr(zgroup.store, "root", None)
    if store is not None:
        for key in ("zarr.json", f"{path}/zarr.json", f"{path}/c"):
            with contextlib.suppress(OSError):
                stat = os.stat(Path(store) / zgroup.path / key)
                token.append((key, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns))
    return tuple(token)


def _nifti_zarr_header(array: zarr.Array, where: str):
    if array.ndim != 1 or array.dtype != np.uint8 or not 348 <= array.shape[0] <= 2**20:
        raise CorruptStoreError(
            f"{where}: array {HEADER_ARRAY!r} has shape {array.shape} and dtype {array.dtype}; a NIfTI-Zarr "
            "header is a 1D uint8 array of at least 348 bytes."
        )
    try:
        raw = bytes(array[:])
    except LazymaskError:
        raise
    except Exception as exc:
        raise CorruptStoreError(f"{where}: its {HEADER_ARRAY!r} header cannot be read ({type(exc).__name__}).") from None
    size = int.from_bytes(raw[:4], "little")
    klass = nib.Nifti2Header if size == 540 else nib.Nifti1Header
    try:
        return klass.from_fileobj(_io.BytesIO(raw[: klass.sizeof_hdr]), check=True)
    except Exception as exc:
        raise CorruptStoreError(f"{where}: its {HEADER_ARRAY!r} array is not a valid NIfTI header ({exc}).") from None


