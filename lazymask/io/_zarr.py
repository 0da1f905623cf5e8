"""Zarr stores: lossless, chunked, compressed round trips of images and signals.

Contract
--------
* ``to_zarr(obj, store, group=...)`` then ``open_zarr(store, group=...)`` gives back the same
  DataArray: values, dtype, dims, coords (with their dtypes and attrs), name and every attr
  (``affine``, ``t_r``, units, any JSON-able attr). Zarr format 3.
* **Images** (dims ``i, j, k[, time]``) follow the NIfTI-Zarr convention (neuroscales
  ``nifti-zarr`` 1.0), so other tools read them: the group is an OME-Zarr 0.5 multiscale image
  with one scale, ``"0"``; its axes are ``t`` (second, 4D only), ``z``, ``y``, ``x``
  (millimetre), with the voxel sizes and the repetition time as scale transforms; a ``nifti``
  array holds the binary NIfTI-1 header (348 ``uint8``), the reference for the affine. NIfTI's
  Fortran-ordered ``(i, j, k, t)`` data is the C-ordered array ``(t, k, j, i)``: that is how
  ``"0"`` is stored, and ``open_zarr`` returns the ``(i, j, k, time)`` transpose view of it.
* **Other DataArrays** (voxel signals ``(time, voxel)`` with coords ``i, j, k``; region signals
  ``(time, region)`` with ``region_name``; anything labelled) are written the xarray way: the
  array ``data`` beside one array per coordinate.
* Chunks. Images: whole volumes per chunk, as many as make about ``CHUNK_BYTES`` (32 MiB, within
  the 16-64 MiB that suits both object stores and a worker's memory), because maskers always
  read whole volumes and a chunk read is the unit of decompression. Other arrays: the input's
  time chunking is kept (so writing extraction output needs no all-to-all rechunk) and the other
  dim is cut so a chunk holds about ``CHUNK_BYTES``. Compression: blosc zstd level 1 with byte
  shuffle, which on scanner int16/float32 data keeps ~46 % of the bytes and decodes at well over
  1 GB/s on two cores (DESIGN.md, performance model).
* Writes stream chunk by chunk through dask (memory about one chunk per worker) into a staging
  location; the group is marked complete (``lazymask_complete: true``, written last) and, for a
  local directory, renamed into place only at the end. ``open_zarr`` refuses a group that is not
  marked complete (an interrupted write) or that lazymask did not write.
* ``open_zarr`` reads metadata only (plus the small index coordinates xarray keeps in memory);
  voxels are read when computed. Attributes are parsed as JSON data; nothing is ever unpickled.

The staging helpers (:func:`staged_group`, :func:`is_complete`) are meant for any writer of
self-describing groups (one group per run, complete groups skipped on a re-run).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dask.array as da
import numpy as np
import xarray as xr
import zarr
from zarr.codecs import BloscCodec

from lazymask.exceptions import (
    CorruptImageError,
    ImageFileNotFoundError,
    NotNiftiError,
    ParameterError,
)
from lazymask.io._meta import IMAGE_DIMS_3D, IMAGE_DIMS_4D, get_t_r
from lazymask.io._write import nifti_dtype, nifti_header

__all__ = ["to_zarr", "open_zarr", "staged_group", "is_complete", "CHUNK_BYTES"]

CHUNK_BYTES = 32 * 2**20
"""Target size of one stored chunk (uncompressed)."""

COMPLETE_ATTR = "lazymask_complete"
META_ATTR = "lazymask"
FORMAT_VERSION = 1
IMAGE_ARRAY = "0"
HEADER_ARRAY = "nifti"
DATA_ARRAY = "data"
_STAGING_TAG = ".lazymask-tmp-"


def default_compressor() -> BloscCodec:
    """Blosc zstd level 1 with byte shuffle: the codec lazymask stores chunks with."""
    return BloscCodec(cname="zstd", clevel=1, shuffle="shuffle")


# -- staging: write elsewhere (or unmarked), publish at the end ----------------------------------
@dataclass
class StagedGroup:
    """Where a writer puts a group's arrays: a zarr store and the group's path inside it."""

    store: object
    path: str

    def open(self, mode: str = "r+") -> zarr.Group:
        return zarr.open_group(self.store, path=self.path, mode=mode, zarr_format=3)


@contextlib.contextmanager
def staged_group(store, group: str | None = None, *, overwrite: bool = False) -> Iterator[StagedGroup]:
    """Stage the writing of one zarr group; it is marked complete only when the block succeeds.

    For a local directory (``str``/``Path``) the group is written in a hidden sibling directory
    and renamed into place at the end; for other zarr stores it is written in place, unmarked
    until complete. Either way :func:`open_zarr` and :func:`is_complete` see nothing complete
    until the block has finished without error.

    Parameters
    ----------
    store : str, pathlib.Path or zarr store
        The zarr store (a directory path, or any ``zarr.abc.store.Store``).
    group : str, optional
        Path of the group inside the store (``"sub-01/run-1"``); the root when omitted.
    overwrite : bool, default False
        Replace a complete group already there. An incomplete one (a write that was interrupted)
        is always replaced.

    Yields
    ------
    StagedGroup
        Open it (``staged.open()``) to add arrays and attributes.

    Examples
    --------
    >>> with staged_group("out.zarr", "sub-01/run-1") as staged:   # doctest: +SKIP
    ...     staged.open().create_array("x", shape=(3,), dtype="f4")
    """
    group = normalise_group(group)
    if is_complete(store, group) and not overwrite:
        raise ParameterError(
            f"{_describe(store, group)} already holds a complete lazymask group; pass "
            "overwrite=True to replace it (or skip it: lazymask.io.is_complete tells)."
        )
    if isinstance(store, str | os.PathLike):
        with _staged_directory(Path(store), group) as staged:
            yield staged
    else:
        zarr.open_group(store, path=group, mode="w", zarr_format=3, attributes={COMPLETE_ATTR: False})
        staged = StagedGroup(store, group)
        yield staged
        _mark_complete(staged)


@contextlib.contextmanager
def _staged_directory(root: Path, group: str) -> Iterator[StagedGroup]:
    target = root / group if group else root
    if group:
        _require_parent_groups(root, group)
    elif not target.parent.is_dir():
        raise ParameterError(f"store={str(root)!r}: the directory {str(target.parent)!r} does not exist.")
    _remove_stale_staging(target)
    staging = target.with_name(f".{target.name}{_STAGING_TAG}{uuid.uuid4().hex[:12]}")
    try:
        zarr.open_group(str(staging), mode="w", zarr_format=3, attributes={COMPLETE_ATTR: False})
        staged = StagedGroup(str(staging), "")
        yield staged
        _mark_complete(staged)
        _swap_into_place(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _require_parent_groups(root: Path, group: str) -> None:
    parent = zarr.open_group(str(root), mode="a", zarr_format=3)
    for name in group.split("/")[:-1]:
        parent = parent.require_group(name)


def _remove_stale_staging(target: Path) -> None:
    """Delete staging directories left by interrupted writes of this same target."""
    if target.parent.is_dir():
        for stale in target.parent.glob(f".{target.name}{_STAGING_TAG}*"):
            shutil.rmtree(stale, ignore_errors=True)


def _swap_into_place(staging: Path, target: Path) -> None:
    if target.exists():
        trash = target.with_name(f".{target.name}{_STAGING_TAG}old-{uuid.uuid4().hex[:12]}")
        os.replace(target, trash)
        os.replace(staging, target)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(staging, target)


def _mark_complete(staged: StagedGroup) -> None:
    staged.open().attrs.update({COMPLETE_ATTR: True})


def is_complete(store, group: str | None = None) -> bool:
    """Whether ``store`` holds a complete lazymask group at ``group`` (reads its metadata only).

    Parameters
    ----------
    store : str, pathlib.Path or zarr store
        The zarr store (it need not exist).
    group : str, optional
        The group inside the store; the root when omitted.

    Returns
    -------
    bool
        True when a write by lazymask finished there; False when there is nothing, an
        interrupted write, or a group lazymask did not write.

    Examples
    --------
    >>> if not is_complete("archive.zarr", "sub-01/run-1"):      # doctest: +SKIP
    ...     to_zarr(img, "archive.zarr", group="sub-01/run-1")
    """
    try:
        attrs = open_existing_group(store, normalise_group(group)).attrs
    except (ImageFileNotFoundError, NotNiftiError):
        return False
    return attrs.get(COMPLETE_ATTR) is True


def normalise_group(group) -> str:
    """``group`` as a clean relative path ("" for the root); rejects ``.``/``..`` escapes."""
    if group is None:
        return ""
    if not isinstance(group, str):
        raise ParameterError(f"group={group!r}: expected a str such as 'sub-01/run-1', or None.")
    parts = [p for p in group.strip("/").split("/") if p]
    if any(p in (".", "..") or p.startswith(".") for p in parts):
        raise ParameterError(f"group={group!r}: group names may not be '.', '..' or start with '.'.")
    return "/".join(parts)


def _describe(store, group: str) -> str:
    where = str(store) if isinstance(store, str | os.PathLike) else type(store).__name__
    return f"zarr store {where!r}" + (f", group {group!r}," if group else "")


def open_existing_group(store, group: str) -> zarr.Group:
    """Open an existing zarr group read-only, or raise a lazymask error naming the store."""
    if isinstance(store, str | os.PathLike):
        path = Path(store) / group if group else Path(store)
        if not path.exists():
            raise ImageFileNotFoundError(f"{_describe(store, group)}: no such store or group.")
        store = str(store)
    try:
        return zarr.open_group(store, path=group, mode="r", zarr_format=3)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, ValueError, TypeError) as exc:
        raise NotNiftiError(
            f"{_describe(store, group)} is not a zarr group ({type(exc).__name__}: {exc}); "
            "open NIfTI files with lazymask.open_nifti."
        ) from None


# -- public API -------------------------------------------------------------------------------------
def to_zarr(obj: xr.DataArray, store, *, group: str | None = None, overwrite: bool = False,
            compressor=None):
    """Write a DataArray to a zarr (format 3) store, chunk by chunk, marked complete at the end.

    Parameters
    ----------
    obj : xarray.DataArray
        An image (dims ``("i", "j", "k")`` or ``("i", "j", "k", "time")``, written as NIfTI-Zarr)
        or any other labelled array, such as voxel signals ``("time", "voxel")`` or region signals
        ``("time", "region")``. Attributes must be JSON-able (numbers, strings, lists, dicts).
    store : str, pathlib.Path or zarr store
        A directory (created) or a zarr store object.
    group : str, optional
        The group inside the store (``"sub-01/run-1"``); the store's root when omitted.
    overwrite : bool, default False
        Replace a complete group already there (an interrupted one is always replaced).
    compressor : zarr codec, optional
        Defaults to blosc zstd level 1 with shuffle.

    Returns
    -------
    The ``store`` argument.

    Raises
    ------
    ParameterError
        A complete group exists and ``overwrite`` is False, or an attribute is not JSON-able.

    Examples
    --------
    >>> img = lazymask.open_nifti("bold.nii.gz")                  # doctest: +SKIP
    >>> lazymask.to_zarr(img, "bold.nii.zarr")                     # doctest: +SKIP
    >>> lazymask.open_zarr("bold.nii.zarr").equals(img)            # doctest: +SKIP
    True
    """
    if not isinstance(obj, xr.DataArray):
        raise ParameterError(f"to_zarr writes an xarray.DataArray, found {type(obj).__name__}.")
    compressor = default_compressor() if compressor is None else compressor
    is_image = obj.dims in (IMAGE_DIMS_3D, IMAGE_DIMS_4D)
    meta = _metadata(obj, kind="image" if is_image else "array")
    with staged_group(store, group, overwrite=overwrite) as staged:
        staged.open().attrs.update({META_ATTR: meta})
        if is_image:
            _write_image(obj, staged, compressor)
        else:
            _write_array(obj, staged, compressor)
    return store


def open_zarr(store, *, group: str | None = None) -> xr.DataArray:
    """Open a DataArray written by :func:`to_zarr`, lazily (reads metadata only).

    Parameters
    ----------
    store : str, pathlib.Path or zarr store
        The zarr store.
    group : str, optional
        The group inside the store; the root when omitted.

    Returns
    -------
    xarray.DataArray
        Backed by dask, chunked as stored; images come back with dims ``("i", "j", "k"[, "time"])``.

    Raises
    ------
    ImageFileNotFoundError
        No store or group there.
    NotNiftiError
        The group was not written by lazymask (or is not a zarr group).
    CorruptImageError
        The write of this group did not finish.

    Examples
    --------
    >>> img = lazymask.open_zarr("bold.nii.zarr")                  # doctest: +SKIP
    >>> img.mean("time").compute()                                  # doctest: +SKIP
    """
    group = normalise_group(group)
    zgroup = open_existing_group(store, group)
    meta = _read_metadata(zgroup, _describe(store, group))
    if meta["kind"] == "image":
        data = _read_image(zgroup, meta, _describe(store, group))
    else:
        data = _read_array(store, group, list(meta["coords"]))
    return _restore_labels(data, meta)


# -- metadata (JSON, parsed as data) ----------------------------------------------------------------
def _metadata(obj: xr.DataArray, kind: str) -> dict:
    coords = {
        name: {
            "dims": list(coord.dims),
            "dtype": coord.dtype.str,
            "attrs": _json_attrs(coord.attrs, f"coordinate {name!r}"),
            # image coords (time) are small: kept here; other arrays store coords as zarr arrays
            **({"values": _json_value(coord.values.tolist(), name)} if kind == "image" else {}),
        }
        for name, coord in obj.coords.items()
    }
    if kind == "image":
        for name, coord in obj.coords.items():
            if coord.dtype.kind not in "biufU":
                raise ParameterError(
                    f"coordinate {name!r} has dtype {coord.dtype}; image coordinates must be numbers "
                    "or strings to be stored. Convert it (for time, seconds as float)."
                )
    return {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "name": obj.name if obj.name is None or isinstance(obj.name, str) else str(obj.name),
        "dims": list(obj.dims),
        "dtype": obj.dtype.str,
        "attrs": _json_attrs(obj.attrs, "attribute"),
        "coords": coords,
    }


def _json_attrs(attrs: dict, what: str) -> dict:
    return {str(key): _json_value(value, f"{what} {key!r}") for key, value in attrs.items()}


def _json_value(value, what: str):
    """``value`` with numpy scalars/arrays turned into Python ones; raise if it is not JSON data."""
    def convert(item):
        if isinstance(item, np.ndarray | np.generic):
            return item.tolist()
        raise TypeError(type(item).__name__)

    try:
        return json.loads(json.dumps(value, default=convert))
    except (TypeError, ValueError) as exc:
        raise ParameterError(
            f"{what} cannot be stored in zarr: {exc} is not JSON data (numbers, strings, lists, "
            "dicts). Convert it, or drop it before writing (obj.attrs.pop(...))."
        ) from None


def _read_metadata(zgroup: zarr.Group, where: str) -> dict:
    attrs = zgroup.attrs.asdict()
    meta = attrs.get(META_ATTR)
    if not isinstance(meta, dict) or meta.get("kind") not in ("image", "array"):
        if COMPLETE_ATTR in attrs:
            raise CorruptImageError(f"{where}: a lazymask write that did not finish; write it again.")
        raise NotNiftiError(
            f"{where}: not written by lazymask.to_zarr (no {META_ATTR!r} attribute). lazymask opens "
            "the zarr stores it wrote; open NIfTI files with lazymask.open_nifti."
        )
    if attrs.get(COMPLETE_ATTR) is not True:
        raise CorruptImageError(
            f"{where}: the write of this group did not finish (no '{COMPLETE_ATTR}: true'), so its "
            "data may be partial. Write it again (to_zarr replaces an incomplete group)."
        )
    if meta.get("format_version") != FORMAT_VERSION:
        raise NotNiftiError(
            f"{where}: lazymask store format {meta.get('format_version')!r}, but this lazymask reads "
            f"format {FORMAT_VERSION}. Upgrade lazymask or re-write the store."
        )
    return meta


def _restore_labels(data: xr.DataArray, meta: dict) -> xr.DataArray:
    coords = {}
    for name, info in meta["coords"].items():
        dtype = np.dtype(info["dtype"])
        if "values" in info:
            values = np.asarray(info["values"], dtype=dtype)
        else:  # stays lazy when xarray gave a dask-backed coordinate
            values = data.coords[name].variable.data
            values = values if values.dtype == dtype else values.astype(dtype)
        coords[name] = xr.Variable(tuple(info["dims"]), values, attrs=dict(info["attrs"]))
    data = data.drop_vars(list(data.coords)).assign_coords(coords)
    data.attrs = dict(meta["attrs"])
    data.name = meta["name"]
    return data


# -- images: NIfTI-Zarr -----------------------------------------------------------------------------
def image_time_chunk(volume_nbytes: int, n_volumes: int) -> int:
    """Volumes per stored image chunk: whole volumes adding up to about ``CHUNK_BYTES``."""
    return int(max(1, min(n_volumes, CHUNK_BYTES // max(volume_nbytes, 1))))


def _write_image(img: xr.DataArray, staged: StagedGroup, compressor) -> None:
    header = nifti_header(img)
    dtype = nifti_dtype(img.dtype)
    data = img.data if isinstance(img.data, da.Array) else da.from_array(np.asarray(img.data))
    data = data.astype(dtype, copy=False).transpose()  # (i, j, k[, t]) -> (t, k, j, i)
    if img.ndim == 4:
        volume_nbytes = int(np.prod(data.shape[1:])) * dtype.itemsize
        chunks = (image_time_chunk(volume_nbytes, data.shape[0]), *data.shape[1:])
    else:
        chunks = data.shape
    zgroup = staged.open()
    array = zgroup.create_array(
        IMAGE_ARRAY, shape=data.shape, chunks=chunks, dtype=dtype, compressors=[compressor],
        fill_value=0, dimension_names=_ome_axis_names(img.ndim),
    )
    da.store(data.rechunk(chunks), array, lock=False)
    header_array = zgroup.create_array(HEADER_ARRAY, shape=(348,), chunks=(348,), dtype="u1",
                                       compressors=None, fill_value=0, dimension_names=("nifti_header_byte",))
    header_array[:] = np.frombuffer(header.binaryblock, dtype=np.uint8)
    zgroup.attrs.update({"ome": _ome_metadata(img, header)})


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


def _read_image(zgroup: zarr.Group, meta: dict, where: str) -> xr.DataArray:
    try:
        array = zgroup[IMAGE_ARRAY]
    except KeyError:
        raise CorruptImageError(f"{where}: the image array {IMAGE_ARRAY!r} is missing.") from None
    dims = tuple(meta["dims"])
    if array.ndim != len(dims):
        raise CorruptImageError(f"{where}: array {IMAGE_ARRAY!r} has {array.ndim} dims, expected {len(dims)}.")
    data = da.from_zarr(array).transpose()  # (t, k, j, i) -> (i, j, k, t): a view
    data = data.astype(np.dtype(meta["dtype"]), copy=False)
    return xr.DataArray(data, dims=dims)


# -- other labelled arrays: the xarray layout -------------------------------------------------------
def array_chunks(shape: tuple[int, ...], itemsize: int, first_chunks: tuple[int, ...]) -> tuple[int, ...]:
    """Stored chunks of a labelled array: the input's first-dim chunk, the rest cut to ~CHUNK_BYTES.

    The first dim (``time`` for signals) keeps the chunk the data comes in, so writing extraction
    output needs no all-to-all rechunk; the second dim is cut so a chunk holds about
    ``CHUNK_BYTES``; further dims are kept whole.
    """
    if len(shape) == 0:
        return ()
    first = max(1, min(shape[0], first_chunks[0] if first_chunks else shape[0]))
    if len(shape) == 1:
        return (max(first, min(shape[0], CHUNK_BYTES // itemsize)),)
    rest = int(np.prod(shape[2:])) * itemsize
    second = max(1, min(shape[1], CHUNK_BYTES // max(first * rest, 1)))
    return (first, second, *shape[2:])


def _write_array(obj: xr.DataArray, staged: StagedGroup, compressor) -> None:
    data = obj.variable.data
    first = data.chunks[0] if isinstance(data, da.Array) and data.ndim else ()
    chunks = array_chunks(obj.shape, obj.dtype.itemsize, first[:1])
    if isinstance(data, da.Array):
        data = data.rechunk(chunks)
    coords = {name: _storable_coord(coord) for name, coord in obj.coords.items()}
    bare = xr.DataArray(data, dims=obj.dims, coords=coords, name=DATA_ARRAY)
    encoding = {DATA_ARRAY: {"chunks": chunks, "compressors": [compressor]}}
    dataset = bare.to_dataset()
    dataset.attrs = staged.open().attrs.asdict()  # xarray replaces the group's attributes
    dataset.to_zarr(staged.store, group=staged.path or None, mode="a", zarr_format=3,
                              consolidated=False, encoding=encoding)


def _storable_coord(coord: xr.DataArray) -> xr.Variable:
    values = coord.values
    if values.dtype.kind == "U":  # variable-length strings: a zarr v3 data type other tools read
        values = values.astype(object)
    return xr.Variable(coord.dims, values)


def _read_array(store, group: str, coord_names: list[str]) -> xr.DataArray:
    dataset = xr.open_zarr(
        str(store) if isinstance(store, str | os.PathLike) else store,
        group=group or None, zarr_format=3, consolidated=False, chunks={}, decode_cf=False,
        use_zarr_fill_value_as_mask=False,
    )
    # without CF decoding, xarray does not know which arrays are coordinates: the metadata tells
    dataset = dataset.set_coords([name for name in coord_names if name in dataset.data_vars])
    return dataset[DATA_ARRAY]
