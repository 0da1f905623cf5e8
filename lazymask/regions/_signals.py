"""Region signals in and out of images, lazily: nilearn's ``nilearn.regions`` functions.

Contract
--------
* :func:`region_signals` applies a region operator (:mod:`lazymask.regions._operators`) to every
  time chunk of a lazy 4D image; the operator is ONE key of the graph, so the graph has as many
  tasks for 10 regions as for 1000.
* :func:`signals_to_image` is the lazy inverse: ``(t, region)`` signals blockwise to a 4D image.
* The public functions (:func:`img_to_signals_labels`, :func:`signals_to_img_labels`,
  :func:`img_to_signals_maps`, :func:`signals_to_img_maps`) take nilearn 0.14's parameters and
  give its numbers. They read the spatial definition (the atlas, the maps, the mask) when
  called, and only the headers of ``imgs``: the signals (or image) they return are dask-backed
  and computed by the caller's scheduler. Like nilearn they do not resample: every image must
  be on one grid (:class:`lazymask.io.Grid`), else :class:`ImageMismatchError`.
"""

from __future__ import annotations

import warnings

import dask
import dask.array as da
import numpy as np
import xarray as xr

from lazymask.exceptions import ImageMismatchError, ParameterError
from lazymask.image import as_image
from lazymask.io import Grid, as_dask, image_dataarray
from lazymask.masking import read_small
from lazymask.regions._labels import label_values, labels_expansion, labels_operator, warn_keep_masked_labels
from lazymask.regions._maps import maps_expansion, maps_matrix, masked_maps_operator, warn_keep_masked_maps
from lazymask.regions._operators import STRATEGIES, Expansion, _Operator

__all__ = [
    "img_to_signals_labels",
    "img_to_signals_maps",
    "region_signals",
    "signals_dataarray",
    "signals_to_image",
    "signals_to_img_labels",
    "signals_to_img_maps",
]


# -- graphs ---------------------------------------------------------------------------------------------
def region_signals(image: xr.DataArray, operator: _Operator) -> da.Array:
    """Apply ``operator`` to every time chunk of a 4D image: a lazy ``(time, region)`` dask array.

    The operator enters the graph once (one key); each time chunk is one task.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> from lazymask.regions._operators import LabelOperator
    >>> img = xr.DataArray(np.ones((1, 1, 2, 3)), dims=("i", "j", "k", "time"))
    >>> region_signals(img, LabelOperator(np.array([[[1, 2]]]), 0, "sum")).compute().tolist()
    [[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]]
    """
    data = as_dask(image).rechunk({0: -1, 1: -1, 2: -1})
    out_dtype = operator.output_dtype(data.dtype)
    shared = dask.delayed(operator, pure=True, traverse=False)
    return da.blockwise(
        _apply_operator, "tr", data, "ijkt", shared, None,
        new_axes={"r": operator.n_regions}, concatenate=False,
        dtype=out_dtype, meta=np.empty((0, 0), dtype=out_dtype),
    )


def _apply_operator(block, operator: _Operator) -> np.ndarray:
    # the spatial axes hold one chunk each: unwrap the nested lists of the contracted axes instead of
    # letting dask concatenate (which would copy every block into C order)
    while isinstance(block, list):
        (block,) = block
    if block.dtype.kind == "f" and not np.isfinite(np.sum(block, dtype=np.float64)):
        # one cheap pass: a NaN or an infinity anywhere makes the sum non-finite (nilearn warns, then reads 0)
        warnings.warn("Non-finite values detected. These values will be replaced with zeros.", stacklevel=2)
    return operator(block)


def signals_dataarray(signals: da.Array, region_ids, region_names=None, extra_coords=None) -> xr.DataArray:
    """Label a ``(time, region)`` array: ``region`` ids and ``region_name`` (plus e.g. seed x, y, z).

    Examples
    --------
    >>> import numpy as np
    >>> signals_dataarray(np.zeros((2, 1)), [3], ["left"])["region_name"].values.tolist()
    ['left']
    """
    names = [str(value) for value in np.asarray(region_ids).tolist()] if region_names is None else region_names
    coords = {"region": np.asarray(region_ids), "region_name": ("region", np.asarray(names, dtype=str))}
    for name, values in (extra_coords or {}).items():
        coords[name] = ("region", np.asarray(values))
    return xr.DataArray(signals, dims=("time", "region"), coords=coords)


def signals_to_image(signals, shape, affine, expansion: Expansion) -> xr.DataArray:
    """Lazy inverse: ``(t, region)`` or ``(region,)`` signals to a 4D (or 3D) image DataArray.

    Blockwise over the signals' time chunks; the expansion enters the graph once.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> exp = Expansion(np.array([0, 1]), sp.csr_matrix(np.eye(2)))
    >>> signals_to_image(np.array([4.0, 5.0]), (1, 1, 2), np.eye(4), exp).values.tolist()
    [[[4.0, 5.0]]]
    """
    array = signals.data if isinstance(signals, xr.DataArray) else signals
    one_row = array.ndim == 1
    array = da.asarray(array[None, :] if one_row else array)
    array = array.rechunk({1: -1})
    out_dtype = array.dtype
    shared = dask.delayed(expansion, pure=True, traverse=False)
    volumes = da.blockwise(
        _expand_signals, "ijkt", array, "tr", shared, None,
        new_axes={"i": shape[0], "j": shape[1], "k": shape[2]}, concatenate=True,
        dtype=out_dtype, meta=np.empty((0, 0, 0, 0), dtype=out_dtype), shape=tuple(shape),
    )
    image = image_dataarray(volumes, affine)
    return image.isel(time=0, drop=True) if one_row else image


def _expand_signals(block, expansion: Expansion, *, shape):
    return expansion(block, shape)


# -- inputs ----------------------------------------------------------------------------------------------
def _volume(img, name: str) -> tuple[np.ndarray, Grid]:
    """A small 3D image's values (read now, non-finite values as 0) and its grid."""
    image = as_image(img, name, ndim=(3,))
    values = read_small(image)
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        values = np.where(np.isfinite(values), values, 0)
    return values, Grid.of(image)


def check_one_grid(grid: Grid, name: str, other: Grid, other_name: str, fix: str) -> None:
    """:class:`ImageMismatchError` unless both grids are the same, opening with nilearn's words.

    Examples
    --------
    >>> import numpy as np
    >>> check_one_grid(Grid((2, 2, 2), np.eye(4)), "a", Grid((2, 2, 2), np.eye(4)), "b", "")
    """
    if grid.same_as(other):
        return
    what = "Images have incompatible shapes." if grid.shape != other.shape else \
        "Images have different affine matrices."
    raise ImageMismatchError(f"{what} {grid.mismatch(name, other, other_name, fix)}")


def _mask_on(mask_img, grid: Grid, grid_name: str) -> np.ndarray | None:
    """``mask_img`` (non-zero: inside) as a boolean volume, checked to be on ``grid``."""
    if mask_img is None:
        return None
    values, mask_grid = _volume(mask_img, "mask_img")
    check_one_grid(mask_grid, "mask_img", grid, grid_name, "resample mask_img onto it first "
                   "(lazymask.image.resample_to_img(mask_img, ..., interpolation='nearest')).")
    return values != 0


def _check_signals(signals, n_regions: int, name: str):
    array = signals.data if isinstance(signals, xr.DataArray) else signals
    array = array if isinstance(array, da.Array) else np.asarray(array)
    if array.ndim not in (1, 2) or array.shape[-1] != n_regions:
        raise ParameterError(f"{name} has shape {tuple(array.shape)}: expected ({n_regions},) or "
                             f"(n_time, {n_regions}), one column per region.")
    return array


def check_strategy(strategy) -> None:
    """:class:`ParameterError` (a ``ValueError``) for an unknown reduction strategy, in nilearn's words.

    Examples
    --------
    >>> check_strategy("median")
    """
    if strategy not in STRATEGIES:
        raise ParameterError(f"'strategy' must be one of {set(STRATEGIES)}.\n'{strategy}' was provided.")


_FIX = "the regions functions do not resample: resample one onto the other first (lazymask.image.resample_to_img)."


# -- labels ---------------------------------------------------------------------------------------------
def img_to_signals_labels(imgs, labels_img, mask_img=None, background_label=0, order="F", strategy="mean",
                          keep_masked_labels=False, return_masked_atlas=True, n_jobs=1):
    """Signals of the regions of a labels image, lazily (nilearn's ``img_to_signals_labels``).

    Parameters
    ----------
    imgs : 4D image
        The run (anything :func:`lazymask.io.open_nifti` accepts); only its header is read now.
    labels_img : 3D image
        Regions as labels, on the grid of ``imgs``.
    mask_img : 3D image, optional
        Voxels outside it are background.
    background_label : number, default=0
        The value of "no region".
    order : {"F", "C"}, default="F"
        Accepted for compatibility (the result is a dask array).
    strategy : str, default="mean"
        One of "mean", "median", "sum", "minimum", "maximum", "variance", "standard_deviation".
    keep_masked_labels : bool, default=False
        Deprecated in nilearn (FutureWarning): keep the labels the mask removes, with signals of 0.
    return_masked_atlas : bool, default=True
        Also return the labels after masking (``False`` warns, as in nilearn).
    n_jobs : int, default=1
        Accepted for compatibility: the dask scheduler decides the parallelism.

    Returns
    -------
    signals : xarray.DataArray
        Lazy ``(time, region)`` signals (float32 for float32 data, else float64), ``region`` the labels.
    labels : list
        The label of each column.
    masked_atlas : xarray.DataArray
        The labels after masking (int32), when ``return_masked_atlas``.

    Examples
    --------
    >>> import numpy as np, nibabel as nib
    >>> labels = nib.Nifti1Image(np.array([[[1, 2], [1, 2]], [[3, 3], [3, 3]]], dtype=np.int32), np.eye(4))
    >>> data = np.array([[[[0.3], [0.1]], [[-0.3], [1.9]]], [[[2.0], [2.0]], [[2.0], [2.0]]]])
    >>> signals, ids, atlas = img_to_signals_labels(nib.Nifti1Image(data, np.eye(4)), labels)
    >>> signals.values.round(6).tolist(), ids
    ([[0.0, 1.0, 2.0]], [1, 2, 3])
    """
    del order, n_jobs
    values, grid = _volume(labels_img, "labels_img")
    check_strategy(strategy)
    image = as_image(imgs, "imgs", ndim=(4,))
    check_one_grid(grid, "labels_img", Grid.of(image), "imgs", _FIX)
    mask = _mask_on(mask_img, grid, "labels_img")
    if keep_masked_labels:
        warn_keep_masked_labels(stacklevel=2)
    operator = labels_operator(values, mask, background_label, strategy, keep_masked_labels, stacklevel=3)
    signals = signals_dataarray(region_signals(image, operator), operator.ids)
    labels = operator.ids.tolist()
    if not return_masked_atlas:
        warnings.warn('In version 0.15, "return_masked_atlas" parameter will be removed and the masked atlas '
                      'will always be returned. Set "return_masked_atlas" to True to avoid this warning.',
                      FutureWarning, stacklevel=2)
        return signals, labels
    masked = values if mask is None else np.where(mask, values, background_label)
    return signals, labels, image_dataarray(masked.astype(np.int32), grid.affine, name="labels_img")


def signals_to_img_labels(signals, labels_img, mask_img=None, background_label=0, order="F") -> xr.DataArray:
    """Region signals back to an image, each region's signal on its voxels (nilearn's ``signals_to_img_labels``).

    Parameters
    ----------
    signals : array-like, dask array or xarray.DataArray
        ``(region,)`` or ``(time, region)``, one column per label (sorted, without the background)
        left by ``mask_img``, or one per label of ``labels_img`` (signals extracted with
        ``keep_masked_labels=True``): each column goes to the voxels of its own label.
    labels_img : 3D image
        Regions as labels.
    mask_img : 3D image, optional
        Voxels outside it are 0.
    background_label : number, default=0
        The value of "no region".
    order : {"F", "C"}, default="F"
        Accepted for compatibility.

    Returns
    -------
    xarray.DataArray
        A lazy 3D (1D signals) or 4D image on the grid of ``labels_img``, with the signals' dtype.

    Examples
    --------
    >>> import numpy as np, nibabel as nib
    >>> labels = nib.Nifti1Image(np.array([[[1, 2], [1, 0]]], dtype=np.int32), np.eye(4))
    >>> signals_to_img_labels(np.array([5.0, 7.0]), labels).values.tolist()
    [[[5.0, 7.0], [5.0, 0.0]]]
    """
    del order
    values, grid = _volume(labels_img, "labels_img")
    mask = _mask_on(mask_img, grid, "labels_img")
    operator = labels_operator(values, mask, background_label, "sum", stacklevel=3)
    n_columns = np.shape(signals)[-1] if np.ndim(signals) else None
    n_before_mask = label_values(values, background_label).size
    if mask is not None and n_columns != operator.n_regions and n_columns == n_before_mask:
        # signals extracted with keep_masked_labels=True: one column per label found before the mask, each
        # painted on its own label's voxels (those the mask removed stay 0)
        operator = labels_operator(values, mask, background_label, "sum", keep_masked_labels=True)
    array = _check_signals(signals, operator.n_regions, "signals")
    return signals_to_image(array, grid.shape, grid.affine, labels_expansion(operator))


# -- maps -------------------------------------------------------------------------------------------------
def _maps_on(maps_img, mask_img, grid: Grid | None):
    maps = as_image(maps_img, "maps_img", ndim=(4,))
    maps_grid = Grid.of(maps)
    if grid is not None:
        check_one_grid(maps_grid, "maps_img", grid, "imgs", _FIX)
    return maps, maps_grid, _mask_on(mask_img, maps_grid, "maps_img")


def img_to_signals_maps(imgs, maps_img, mask_img=None, keep_masked_maps=False):
    """Signals of maps, lazily: least-squares coefficients of the maps per volume (nilearn's ``img_to_signals_maps``).

    Parameters
    ----------
    imgs : 4D image
        The run; only its header is read now.
    maps_img : 4D image
        The maps (one volume per region), on the grid of ``imgs``; read now.
    mask_img : 3D image, optional
        Voxels outside it are ignored; maps left empty are dropped (with a warning).
    keep_masked_maps : bool, default=False
        Deprecated in nilearn (FutureWarning with a mask): keep the maps the mask empties (signal 0).

    Returns
    -------
    region_signals : xarray.DataArray
        Lazy ``(time, region)`` signals, ``region`` the indices of the maps used.
    labels : list of int
        The map index of each column.

    Examples
    --------
    >>> import numpy as np, nibabel as nib
    >>> maps = nib.Nifti1Image(np.stack([np.ones((2, 2, 2)), np.eye(2)[:, :, None].repeat(2, 2)], -1), np.eye(4))
    >>> data = nib.Nifti1Image(np.full((2, 2, 2, 1), 3.0), np.eye(4))
    >>> signals, ids = img_to_signals_maps(data, maps)
    >>> signals.values.round(6).tolist(), ids
    ([[3.0, 0.0]], [0, 1])
    """
    image = as_image(imgs, "imgs", ndim=(4,))
    maps, _, mask = _maps_on(maps_img, mask_img, Grid.of(image))
    if mask is not None and keep_masked_maps:
        warn_keep_masked_maps(stacklevel=2)
    operator, kept = masked_maps_operator(maps_matrix(maps, mask), maps.dtype, masked=mask is not None,
                                          keep_masked_maps=bool(keep_masked_maps), stacklevel=3)
    return signals_dataarray(region_signals(image, operator), kept), kept.tolist()


def signals_to_img_maps(region_signals, maps_img, mask_img=None) -> xr.DataArray:
    """Region signals back to an image: ``signals @ maps`` (nilearn's ``signals_to_img_maps``).

    Parameters
    ----------
    region_signals : array-like, dask array or xarray.DataArray
        ``(region,)`` or ``(time, region)``, one column per map.
    maps_img : 4D image
        The maps; read now.
    mask_img : 3D image, optional
        Voxels outside it are 0.

    Returns
    -------
    xarray.DataArray
        A lazy 3D or 4D image on the grid of ``maps_img`` (dtype: that of signals times maps).

    Examples
    --------
    >>> import numpy as np, nibabel as nib
    >>> maps = nib.Nifti1Image(np.array([[[[1.0], [0.5]]]]), np.eye(4))
    >>> signals_to_img_maps(np.array([[2.0]]), maps).values[..., 0].tolist()
    [[[2.0, 1.0]]]
    """
    maps, grid, mask = _maps_on(maps_img, mask_img, None)
    matrix = maps_matrix(maps, mask)
    array = _check_signals(region_signals, matrix.shape[0], "region_signals")
    array = array.astype(np.result_type(array.dtype, maps.dtype))
    return signals_to_image(array, grid.shape, grid.affine, maps_expansion(matrix))
