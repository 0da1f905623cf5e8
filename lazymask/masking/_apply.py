"""Voxel signals in and out of a mask, blockwise over time chunks.

``apply_mask`` turns each Fortran-ordered ``(i, j, k, t)`` chunk into ``(t, voxel)`` without a
C-order copy of the chunk: the chunk is viewed as ``(t, all voxels)`` and the mask's voxels are
gathered from each volume. Voxels come in nilearn's order (C order of the 3D mask, ``data[mask]``).
``unmask`` scatters each ``(t, voxel)`` chunk back into volumes.
"""

from __future__ import annotations

import functools
import numbers

import dask
import dask.array as da
from dask.core import flatten
from dask.highlevelgraph import HighLevelGraph, MaterializedLayer
import numpy as np
import xarray as xr

from lazymask import config
from lazymask._pages import empty
from lazymask.exceptions import ParameterError, ShapeMismatchError
from lazymask.image import as_image, normalize_fwhm, smooth_array
from lazymask.io import get_affine, image_dataarray
from lazymask.masking._volumes import check_mask_matches, load_mask


def fortran_voxel_index(mask: np.ndarray, nonzero: tuple[np.ndarray, ...] | None = None) -> np.ndarray:
    """Positions, in the Fortran-flattened volume, of the mask's voxels in C order (nilearn's).

    ``nonzero``: ``np.nonzero(mask)`` when the caller has it already."""
    return np.ravel_multi_index(np.nonzero(mask) if nonzero is None else nonzero, mask.shape, order="F")


def output_dtype(dtype, input_dtype) -> np.dtype:
    """``dtype="f"``: the input's float dtype, or float32 for integer data; else ``dtype``."""
    if isinstance(dtype, str) and dtype == "f":
        input_dtype = np.dtype(input_dtype)
        return input_dtype if input_dtype.kind == "f" else np.dtype(np.float32)
    return np.dtype(dtype)


def _set_finite(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind in "fc":
        values[~np.isfinite(values)] = 0
    return values


def mask_block(block, voxel_index, out_dtype, affine=None, fwhm=None, ensure_finite=True):
    """``(t, voxel)`` signals of a Fortran-ordered ``(i, j, k[, t])`` block (3D: ``(voxel,)``)."""
    while isinstance(block, list):  # the contracted spatial axes hold one chunk: unwrap, not concatenate
        (block,) = block  # (dask's concatenation would copy the block into C order: 2 s per 0.36 GB)
    squeeze = block.ndim == 3
    if squeeze:
        block = block[..., np.newaxis]
    if fwhm is not None:
        smoothed = smooth_array(block.astype(out_dtype, copy=False), affine, fwhm, ensure_finite=True)
        block = smoothed.astype(out_dtype, copy=False)
    volumes = block.reshape(-1, block.shape[3], order="F").T  # (t, all voxels): a view when F-ordered
    signals = _take_columns(volumes, voxel_index, out_dtype)
    if ensure_finite and fwhm is None and volumes.dtype.kind in "fc":  # integers are always finite
        signals = _set_finite(signals)
    return signals[0] if squeeze else signals


def _take_columns(volumes: np.ndarray, voxel_index: np.ndarray, out_dtype) -> np.ndarray:
    """``volumes[:, voxel_index]`` cast to ``out_dtype``, a new array, without a block-sized
    temporary in the input's dtype (time by time through one volume-sized buffer): new memory is
    what costs here, not the copy."""
    if volumes.dtype == out_dtype:
        return np.take(volumes, voxel_index, axis=1)
    signals = empty((volumes.shape[0], len(voxel_index)), out_dtype)
    row = np.empty(len(voxel_index), dtype=volumes.dtype)
    for t in range(volumes.shape[0]):
        np.take(volumes[t], voxel_index, out=row)
        signals[t] = row
    return signals



def apply_mask(imgs, mask_img, dtype="f", smoothing_fwhm=None, ensure_finite=True) -> xr.DataArray:
    """Voxel time series inside a mask, as a lazy ``(time, voxel)`` DataArray.

    Same parameters, defaults and numbers as :func:`nilearn.masking.apply_mask`. Building the
    result reads the mask only (a small volume); the data are read when the result is computed,
    chunk by chunk along time.

    Parameters
    ----------
    imgs : image or list of images
        4D run(s) or 3D image(s): anything :func:`lazymask.io.open_nifti` accepts.
    mask_img : image
        3D binary mask on the images' grid (same shape and affine).
    dtype : numpy dtype or "f", default="f"
        Output dtype; ``"f"`` keeps float data's dtype and gives float32 for integer data.
    smoothing_fwhm : float or sequence of 3 floats, optional
        Smooth each volume by this FWHM in mm before masking (implies ``ensure_finite``).
    ensure_finite : bool, default=True
        Replace NaNs and infinities by 0.

    Returns
    -------
    xarray.DataArray
        Dims ``("time", "voxel")`` with coords ``i``, ``j``, ``k`` along ``voxel`` (voxels in
        nilearn's order); for a 3D image, dims ``("voxel",)`` as nilearn returns 1D.

    Notes
    -----
    Difference from nilearn: with an integer ``dtype`` and ``smoothing_fwhm``, nilearn silently
    skips the smoothing (it smooths a float copy that it drops); lazymask smooths, then casts.

    Examples
    --------
    >>> signals = apply_mask("bold.nii.gz", "mask.nii.gz")   # lazy  # doctest: +SKIP
    >>> signals.compute().shape                               # doctest: +SKIP
    """
    image = as_image(imgs, "imgs")
    mask, mask_affine = load_mask(mask_img, "mask_img")
    check_mask_matches(mask, mask_affine, image, "imgs")
    fwhm = normalize_fwhm(smoothing_fwhm)
    data = image.data if isinstance(image.data, da.Array) else da.from_array(image.data)
    data = data.rechunk({0: -1, 1: -1, 2: -1})
    out_dtype = output_dtype(dtype, data.dtype)
    nonzero = np.nonzero(mask)
    voxel_index = fortran_voxel_index(mask, nonzero)
    n_voxels = len(voxel_index)
    kwargs = dict(voxel_index=voxel_index, out_dtype=out_dtype, affine=get_affine(image), fwhm=fwhm,
                  ensure_finite=ensure_finite)
    if data.ndim == 4:
        signals = da.blockwise(mask_block, "tv", data, "ijkt", new_axes={"v": n_voxels}, concatenate=False,
                               dtype=out_dtype, meta=np.empty((0, 0), dtype=out_dtype), **kwargs)
    else:
        signals = da.blockwise(mask_block, "v", data, "ijk", new_axes={"v": n_voxels}, concatenate=False,
                               dtype=out_dtype, meta=np.empty((0,), dtype=out_dtype), **kwargs)
    return _signals_dataarray(signals, nonzero, image)


def in_memory_signals(imgs, mask_img, columns, dtype="f", ensure_finite=True) -> xr.DataArray | None:
    """:func:`apply_mask`'s signals as whole-time blocks of ``columns`` voxels, if the run is in memory.

    When every chunk of the image is already in memory (a persisted run, as ``fit_transform``
    keeps it, or a numpy-backed image) and its volumes are whole in each chunk, each block of
    ``columns`` voxels gathers its voxels straight from all the time chunks: signals chunked
    ``((n_time,), columns)``, with no time-chunked intermediate to regroup, the same values as
    ``apply_mask(imgs, mask_img, dtype, ensure_finite=ensure_finite)``. Otherwise returns None
    (the caller extracts by time chunks) without loading the mask. ``columns`` is a tuple of voxel
    counts adding up to the mask's, or a function of the mask's voxel count that returns one
    (called only when the run is in memory).

    Examples
    --------
    >>> import dask, numpy as np
    >>> from lazymask.io import image_dataarray
    >>> run = image_dataarray(np.arange(2 * 2 * 2 * 3, dtype="int16").reshape(2, 2, 2, 3), np.eye(4))
    >>> mask = image_dataarray(np.ones((2, 2, 2), "int8"), np.eye(4))
    >>> (kept,) = dask.persist(run.chunk({"time": 1}))
    >>> signals = in_memory_signals(kept, mask, columns=(5, 3))
    >>> signals.data.chunks
    ((3,), (5, 3))
    >>> bool((signals.values == apply_mask(run, mask).values).all())
    True
    """
    image = as_image(imgs, "imgs")
    data = image.data
    if image.ndim != 4 or not isinstance(data, da.Array) or data.numblocks[:3] != (1, 1, 1):
        return None
    if not all(isinstance(value, np.ndarray) for value in dict(data.__dask_graph__()).values()):
        return None  # some chunk is still a task (to read, or on a cluster's workers)
    mask, mask_affine = load_mask(mask_img, "mask_img")
    check_mask_matches(mask, mask_affine, image, "imgs")
    nonzero = np.nonzero(mask)
    voxel_index = fortran_voxel_index(mask, nonzero)
    if callable(columns):  # chosen from the mask's size, once the run is known to be in memory
        columns = tuple(columns(len(voxel_index)))
    if sum(columns) != len(voxel_index):
        raise ParameterError(f"columns={columns!r} must add up to the mask's {len(voxel_index)} voxels.")
    out_dtype = output_dtype(dtype, data.dtype)
    chunk_keys = list(flatten(data.__dask_keys__()))  # in time order: one chunk across space
    edges = np.cumsum((0, *columns))
    name = "gather-voxels-" + dask.base.tokenize(data.name, voxel_index, tuple(columns), out_dtype, ensure_finite)
    # one task per block, straight on the kept chunks' keys (a graph built as delayed calls cost ~60 ms here)
    gathers = [(_gather_voxels, chunk_keys, voxel_index[start:stop], out_dtype, ensure_finite)
               for start, stop in zip(edges[:-1], edges[1:], strict=True)]
    graph = _GatherLayer({(name, 0, block): gather for block, gather in enumerate(gathers)}, gathers, data)
    layer = HighLevelGraph.from_collections(name, graph, dependencies=[data])
    signals = da.Array(layer, name, chunks=((data.shape[3],), tuple(int(c) for c in columns)), dtype=out_dtype,
                       meta=np.empty((0, 0), dtype=out_dtype))
    return _signals_dataarray(signals, nonzero, image)


class _GatherLayer(MaterializedLayer):
    """:func:`in_memory_signals`' tasks, with the gathers they run and the kept run they read."""

    def __init__(self, mapping, gathers: list[tuple], source: da.Array):
        super().__init__(mapping)
        self.gathers, self.source = gathers, source


def map_gathered(signals, function, *arrays, rows: int, dtype, **kwargs) -> da.Array | None:
    """``function(block, *arrays, **kwargs)`` run on each block of ``signals`` in the task that gathers it.

    Only for ``signals`` as :func:`in_memory_signals` made it (the dask array itself, or a DataArray
    holding it); otherwise returns None. Each block is gathered inside the new task and seen by no
    other task, so ``function`` may overwrite it and return it: a block's kernel then writes no
    second block-sized array (fresh memory is what costs after decoding: ~0.1 s of page faults
    per 200-volume run). The gathering layer itself is not used: the result reads the kept run's
    chunks directly. ``arrays`` are dask arrays of one chunk each (``function`` gets them as
    numpy), ``kwargs`` plain values; the output blocks have ``rows`` rows, the blocks' columns,
    and ``dtype``.

    Examples
    --------
    >>> import dask, numpy as np
    >>> from lazymask.io import image_dataarray
    >>> run = image_dataarray(np.arange(2 * 2 * 2 * 3, dtype="int16").reshape(2, 2, 2, 3), np.eye(4))
    >>> mask = image_dataarray(np.ones((2, 2, 2), "int8"), np.eye(4))
    >>> (kept,) = dask.persist(run.chunk({"time": 1}))
    >>> signals = in_memory_signals(kept, mask, columns=(5, 3))
    >>> def double(block):
    ...     block *= 2
    ...     return block
    >>> doubled = map_gathered(signals, double, rows=3, dtype=signals.dtype)
    >>> bool((doubled.compute() == 2 * signals.values).all())
    True
    >>> map_gathered(signals.data + 1, double, rows=3, dtype=signals.dtype) is None
    True
    """
    data = signals.data if isinstance(signals, xr.DataArray) else signals
    layer = data.dask.layers.get(data.name) if isinstance(data, da.Array) else None
    if not isinstance(layer, _GatherLayer):
        return None
    if any(not isinstance(array, da.Array) or array.npartitions != 1 for array in arrays):
        raise ParameterError("map_gathered: arrays must be dask arrays of one chunk each.")
    kernel = functools.partial(function, **kwargs) if kwargs else function
    name = f"{dask.utils.funcname(function)}-gathered-" + dask.base.tokenize(data.name, kernel, *arrays, rows, dtype)
    references = [(array.name, *(0,) * array.ndim) for array in arrays]
    graph = {(name, 0, block): (kernel, gather, *references) for block, gather in enumerate(layer.gathers)}
    hlg = HighLevelGraph.from_collections(name, graph, dependencies=[layer.source, *arrays])
    return da.Array(hlg, name, chunks=((rows,), data.chunks[1]), dtype=dtype, meta=np.empty((0, 0), dtype=dtype))


def _gather_voxels(chunks: list[np.ndarray], voxel_index: np.ndarray, out_dtype, ensure_finite: bool) -> np.ndarray:
    """``(t, voxel)`` signals of some voxels, from every Fortran-ordered ``(i, j, k, t)`` chunk of a run."""
    out = empty((sum(c.shape[3] for c in chunks), len(voxel_index)), out_dtype)
    start = 0
    for chunk in chunks:
        volumes = chunk.reshape(-1, chunk.shape[3], order="F").T  # (t, all voxels): a view when F-ordered
        out[start : start + chunk.shape[3]] = np.take(volumes, voxel_index, axis=1)  # cast as apply_mask's astype
        start += chunk.shape[3]
    return _set_finite(out) if ensure_finite and chunks[0].dtype.kind in "fc" else out  # integers are finite


def _signals_dataarray(signals: da.Array, nonzero: tuple[np.ndarray, ...], image: xr.DataArray) -> xr.DataArray:
    i, j, k = nonzero
    coords = {"i": ("voxel", i), "j": ("voxel", j), "k": ("voxel", k)}
    dims = ("voxel",)
    if signals.ndim == 2:
        dims = ("time", "voxel")
        if "time" in image.coords:
            coords["time"] = image.coords["time"]
    attrs = {key: image.attrs[key] for key in ("affine", "t_r") if key in image.attrs}
    return xr.DataArray(signals, dims=dims, coords=coords, attrs=attrs, name="signals")


def unmask_block(block, voxel_index, spatial_shape, order):
    """Volumes ``(i, j, k[, t])`` (zeros outside the mask) from ``(t, voxel)`` or ``(voxel,)`` signals."""
    squeeze = block.ndim == 1
    signals = block[np.newaxis, :] if squeeze else block
    volumes = np.zeros((*spatial_shape, signals.shape[0]), dtype=signals.dtype, order=order)
    if order == "F":
        volumes.reshape(-1, signals.shape[0], order="F")[voxel_index] = signals.T
    else:
        volumes[np.unravel_index(voxel_index, spatial_shape, order="F")] = signals.T
    return volumes[..., 0] if squeeze else volumes


def unmask(X, mask_img, order="F"):
    """Put voxel signals back into images: the inverse of :func:`apply_mask`, lazily.

    Same parameters and numbers as :func:`nilearn.masking.unmask`.

    Parameters
    ----------
    X : array-like, DataArray or dask array, or a list of them
        ``(time, voxel)`` signals (gives a 4D image) or ``(voxel,)`` values (gives a 3D image);
        a list gives a list.
    mask_img : image
        The 3D binary mask the signals were extracted with.
    order : {"F", "C"}, default="F"
        Memory layout of each output chunk.

    Returns
    -------
    xarray.DataArray or list of them
        Lazy 3D or 4D image with the mask's affine, zeros outside the mask, chunked along time
        as ``X`` is.

    Examples
    --------
    >>> img = unmask(signals, "mask.nii.gz")   # lazy  # doctest: +SKIP
    """
    if isinstance(X, list) and X and not isinstance(X[0], numbers.Number):
        return [unmask(x, mask_img, order=order) for x in X]
    if order not in ("F", "C"):
        raise ParameterError(f"order={order!r}: expected 'F' or 'C'.")
    mask, mask_affine = load_mask(mask_img, "mask_img")
    signals, t_r = _as_signals(X, int(mask.sum()))
    voxel_index = fortran_voxel_index(mask)
    kwargs = dict(voxel_index=voxel_index, spatial_shape=mask.shape, order=order)
    meta = np.empty((0,) * (signals.ndim + 2), dtype=signals.dtype)
    if signals.ndim == 2:
        signals = signals.rechunk({1: -1})
        volumes = da.blockwise(unmask_block, "ijkt", signals, "tv", new_axes=dict(zip("ijk", mask.shape, strict=True)),
                               concatenate=True, dtype=signals.dtype, meta=meta, **kwargs)
    else:
        signals = signals.rechunk(-1)
        volumes = da.blockwise(unmask_block, "ijk", signals, "v", new_axes=dict(zip("ijk", mask.shape, strict=True)),
                               concatenate=True, dtype=signals.dtype, meta=meta, **kwargs)
    return image_dataarray(volumes, mask_affine, t_r=t_r)


def _as_signals(X, n_voxels: int) -> tuple[da.Array, float | None]:
    """``X`` as a dask array checked against the mask's voxel count, and its ``t_r`` if known."""
    t_r = None
    if isinstance(X, xr.DataArray):
        t_r = X.attrs.get("t_r")
        X = X.data
    if not isinstance(X, da.Array):
        X = np.asanyarray(X)
        if X.ndim == 2:
            rows = max(1, config.get("mask_chunk_bytes") // max(1, n_voxels * X.dtype.itemsize * 8))
            X = da.from_array(X, chunks=(rows, -1))
        else:
            X = da.from_array(X)
    if X.ndim not in (1, 2):
        raise ShapeMismatchError(
            f"Masked data X must be 2D or 1D array; got shape: {X.shape}. X has shape {X.shape}: expected "
            "(time, voxel) signals (2D) or (voxel,) values (1D)."
        )
    if X.shape[-1] != n_voxels:
        raise ShapeMismatchError(
            f"X must be of shape (samples, {n_voxels}) or ({n_voxels},): X has {X.shape[-1]} voxels along its "
            f"last axis but mask_img has {n_voxels} voxels on; pass the mask the signals were extracted with."
        )
    return X, t_r
