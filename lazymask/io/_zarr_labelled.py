"""Labelled arrays (voxel and region signals, any DataArray that is not an image), the xarray way.

Contract
--------
* The group holds the array ``data`` beside one array per coordinate (as ``xarray.to_zarr``
  writes them), so xarray reads it too.
* Chunks: the input's first-dim (time) chunking is kept, so writing extraction output needs no
  all-to-all rechunk; the other dim is cut to ``config.get("zarr_chunk_bytes")``.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import xarray as xr

from lazymask import config
from lazymask.exceptions import CorruptStoreError
from lazymask.io._zarr_read import _lazy, _member, _Opened, _SafeChunks, _token
from lazymask.io._zarr_schema import DATA_ARRAY, _codecs, default_compressor
from lazymask.storage import StagedGroup

__all__ = ["array_chunks"]


def array_chunks(shape: tuple[int, ...], itemsize: int, first_chunks: tuple[int, ...],
                 second_chunks: tuple[int, ...] = ()) -> tuple[int, ...]:
    """Stored chunks of a labelled array: the input's first-dim chunk, the rest cut to the chunk budget.

    The first dim (``time`` for signals) keeps the chunk the data comes in, so writing extraction
    output needs no all-to-all rechunk; the second dim is cut so a chunk holds about
    ``config.get("zarr_chunk_bytes")`` -- or keeps the data's own chunks along it
    (``second_chunks``) when they are regular and a chunk holds between half that and that (the
    blocks cleaning makes: stored as they are, without a rechunk); further dims are kept whole.

    Examples
    --------
    >>> array_chunks((100, 10), 4, (25,))
    (25, 10)
    """
    budget = config.get("zarr_chunk_bytes")
    if len(shape) == 0:
        return ()
    first = max(1, min(shape[0], first_chunks[0] if first_chunks else shape[0]))
    if len(shape) == 1:
        return (max(first, min(shape[0], budget // itemsize)),)
    rest = int(np.prod(shape[2:])) * itemsize
    second = max(1, min(shape[1], budget // max(first * rest, 1)))
    if _regular(second_chunks) and budget // 2 < first * second_chunks[0] * rest <= budget:
        second = second_chunks[0]
    return (first, second, *shape[2:])


def _regular(chunks: tuple[int, ...]) -> bool:
    """Chunks zarr can store as they are: all equal, the last one smaller or equal."""
    return len(chunks) > 0 and all(c == chunks[0] for c in chunks[:-1]) and chunks[-1] <= chunks[0]


def _write_array(obj: xr.DataArray, staged: StagedGroup, compressor, compute: bool = True):
    data = obj.variable.data
    first = data.chunks[0] if isinstance(data, da.Array) and data.ndim else ()
    chunks = array_chunks(obj.shape, obj.dtype.itemsize, first[:1], data.chunks[1] if len(first) and data.ndim > 1 else ())
    if isinstance(data, da.Array):
        data = data.rechunk(chunks)
    coords = {name: _storable_coord(coord) for name, coord in obj.coords.items()}
    bare = xr.DataArray(data, dims=obj.dims, coords=coords, name=DATA_ARRAY)
    encoding = {DATA_ARRAY: {"chunks": chunks, "compressors": _codecs(compressor)}}
    encoding.update({name: {"compressors": _codecs(default_compressor())} for name in coords})
    dataset = bare.to_dataset()
    dataset.attrs = staged.open().attrs.asdict()  # xarray replaces the group's attributes
    return dataset.to_zarr(staged.store, group=staged.path or None, mode="a", zarr_format=3, compute=compute,
                           consolidated=False, encoding=encoding, write_empty_chunks=True)


def _storable_coord(coord: xr.DataArray) -> xr.Variable:
    values = coord.values
    if values.dtype.kind == "U":  # variable-length strings: a zarr v3 data type other tools read
        values = values.astype(object)
    return xr.Variable(coord.dims, values)


def _read_array(opened: _Opened, where: str) -> xr.DataArray:
    meta = opened.meta
    array = _member(opened.zgroup, DATA_ARRAY, where)
    dims = tuple(meta["dims"])
    if array.ndim != len(dims):
        raise CorruptStoreError(f"{where}: array {DATA_ARRAY!r} has {array.ndim} dims, but {dims} were written.")
    sizes = dict(zip(dims, array.shape, strict=True))
    coords = {}
    for name, info in meta["coords"].items():
        coord = _member(opened.zgroup, name, where)
        cdims = tuple(info["dims"])
        expected = tuple(sizes[d] for d in cdims)
        if tuple(coord.shape) != expected:
            raise CorruptStoreError(
                f"{where}: coordinate {name!r} has shape {tuple(coord.shape)} but the data's {cdims} is "
                f"{expected}; the metadata was altered."
            )
        if cdims == (name,):  # an index coordinate: read now (a few numbers), as xarray does
            values = np.asarray(_SafeChunks(coord, name, where, None)[(slice(None),) * coord.ndim])
        else:
            values = _lazy(coord, name, where, _token(opened, name))
        dtype = np.dtype(info["dtype"])
        values = values if values.dtype == dtype else values.astype(dtype)
        coords[name] = xr.Variable(cdims, values, attrs=dict(info.get("attrs", {})))
    data = _lazy(array, DATA_ARRAY, where, _token(opened, DATA_ARRAY))
    data = data if data.dtype == np.dtype(meta["dtype"]) else data.astype(np.dtype(meta["dtype"]))
    return xr.DataArray(data, dims=dims, coords=coords)

