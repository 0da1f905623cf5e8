"""Shared machinery of the region maskers: region operators built once at fit, applied per time chunk.

Contract
--------
* A *region operator* is a small picklable object built from a 3D grid (shape, affine) and the
  masker's spatial definition (labels, maps or spheres). It holds the flat Fortran-order indices
  of the voxels it reads (``voxels``) and whatever the reduction needs, and maps a numpy block
  ``(i, j, k, t)`` to signals ``(t, region)``. Its cost does not depend on the number of regions
  beyond the arrays it holds: there is no Python loop over regions anywhere.
* :func:`region_signals` applies an operator to every time chunk of a lazy 4D image; the
  operator is ONE key of the graph, so the graph has as many tasks for 10 regions as for 1000.
* :func:`signals_to_image` is the lazy inverse: ``(t, region)`` signals blockwise to a 4D image.
* Non-finite voxel values are read as 0 (nilearn's ``ensure_finite=True``).
"""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import scipy.sparse as sp
import xarray as xr
from dask.base import tokenize

from lazymask.exceptions import ImageMismatchError, ParameterError
from lazymask.image import mean_img
from lazymask.image._inputs import as_image
from lazymask.image._resample import resample_array
from lazymask.io import get_affine, image_dataarray
from lazymask.maskers._base import BaseMasker
from lazymask.masking._volumes import read_small

#: Label statistics (nilearn's ``strategy`` values).
STRATEGIES = ("mean", "median", "sum", "minimum", "maximum", "variance", "standard_deviation")

#: A sparse (voxel x region) operator is stored dense above this fraction of non-zeros.
DENSE_FRACTION = 0.25


# -- grids --------------------------------------------------------------------------------------------
def grid_of(image: xr.DataArray) -> tuple[tuple[int, int, int], np.ndarray]:
    """``(spatial shape, affine)`` of an image DataArray."""
    return tuple(int(n) for n in image.shape[:3]), get_affine(image)


def same_grid(grid_a, grid_b) -> bool:
    """True when two ``(shape, affine)`` grids are the same (nilearn's ``check_same_fov`` tolerance)."""
    (shape_a, affine_a), (shape_b, affine_b) = grid_a, grid_b
    return tuple(shape_a) == tuple(shape_b) and np.allclose(affine_a, affine_b)


def check_same_grids(**images) -> None:
    """Raise :class:`ImageMismatchError` naming the images whose grids differ (``resampling_target=None``)."""
    named = [(name, grid) for name, grid in images.items() if grid is not None]
    first_name, first = named[0]
    for name, grid in named[1:]:
        if not same_grid(first, grid):
            raise ImageMismatchError(
                f"resampling_target=None but {name} has spatial shape {grid[0]} and affine "
                f"{np.round(grid[1], 4).tolist()} while {first_name} has {first[0]} and "
                f"{np.round(first[1], 4).tolist()}; pass a resampling_target (e.g. 'data') or "
                "resample the images onto one grid first (lazymask.image.resample_to_img)."
            )


def world_coordinates(shape, affine, flat_indices=None) -> np.ndarray:
    """World (mm) coordinates ``(n, 3)`` of voxels given by flat Fortran-order indices (all by default)."""
    if flat_indices is None:
        flat_indices = np.arange(int(np.prod(shape)))
    ijk = np.stack(np.unravel_index(flat_indices, shape, order="F"), axis=1).astype(np.float64)
    return ijk @ np.asarray(affine)[:3, :3].T + np.asarray(affine)[:3, 3]


# -- blocks -------------------------------------------------------------------------------------------
def volumes_matrix(block: np.ndarray) -> np.ndarray:
    """A ``(i, j, k, t)`` block as a ``(voxel, t)`` matrix in Fortran voxel order (a view when possible)."""
    return block.reshape(-1, block.shape[-1], order="F")


def finite(values: np.ndarray) -> np.ndarray:
    """``values`` with NaN and infinities replaced by 0 (a copy only when some are found)."""
    if values.dtype.kind != "f":
        return values
    bad = ~np.isfinite(values)
    if bad.any():
        values = values.copy()
        values[bad] = 0
    return values


def float_output(dtype) -> np.dtype:
    """float32 for float32 data, float64 otherwise (nilearn's rule for label statistics)."""
    return np.dtype(np.float32) if np.dtype(dtype) == np.float32 else np.dtype(np.float64)


def signal_float(dtype) -> np.dtype:
    """The float dtype signals of ``dtype`` data get: float64 for 8-byte data, float32 otherwise."""
    return np.dtype(np.float64) if np.dtype(dtype).itemsize >= 8 else np.dtype(np.float32)


class _Operator:
    """Base of the region operators: a stable dask token computed once (the arrays are hashed once)."""

    voxels: np.ndarray

    def _set_token(self, *parts) -> None:
        self._token = tokenize(type(self).__name__, *parts)

    def __dask_tokenize__(self):
        return self._token

    @property
    def n_regions(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def output_dtype(self, data_dtype) -> np.dtype:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, block: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


# -- labels: grouped reductions --------------------------------------------------------------------
class LabelOperator(_Operator):
    """Statistics of the voxels of each label, for all labels in one grouped pass per volume.

    At build time the labelled voxels are sorted once by label, so that each label is one
    contiguous segment: sums, means and variances are ``np.bincount`` over the segment codes,
    minima/maxima ``np.minimum.reduceat``/``np.maximum.reduceat`` over the segments, medians one
    sort of (segment, value) keys per volume.

    Parameters
    ----------
    labels : numpy.ndarray (3D)
        Label per voxel (already masked: voxels outside the mask hold ``background_label``).
    background_label : number
        The value of "no region".
    strategy : str
        One of :data:`STRATEGIES`.
    """

    def __init__(self, labels: np.ndarray, background_label, strategy: str):
        flat = np.asarray(labels).ravel(order="F")
        inside = np.flatnonzero((flat != background_label) & np.isfinite(flat))
        order = np.argsort(flat[inside], kind="stable")
        self.voxels = inside[order]
        ids, self.starts, self.counts = np.unique(flat[self.voxels], return_index=True, return_counts=True)
        self.ids = ids
        self.codes = np.repeat(np.arange(ids.size), self.counts)
        self.strategy = strategy
        self._set_token(self.voxels, self.ids, self.counts, strategy)

    @property
    def n_regions(self) -> int:
        return int(self.ids.size)

    def output_dtype(self, data_dtype) -> np.dtype:
        return float_output(data_dtype)

    def __call__(self, block: np.ndarray) -> np.ndarray:
        matrix = volumes_matrix(block)
        out = np.empty((matrix.shape[1], self.n_regions), dtype=self.output_dtype(block.dtype))
        statistic = getattr(self, f"_{self.strategy}")
        for t in range(matrix.shape[1]):
            out[t] = statistic(finite(matrix[:, t][self.voxels]))
        return out

    def _sum(self, values):
        return np.bincount(self.codes, weights=values, minlength=self.n_regions)

    def _mean(self, values):
        return self._sum(values) / self.counts

    def _variance(self, values):
        centred = values - self._mean(values)[self.codes]
        return np.bincount(self.codes, weights=centred * centred, minlength=self.n_regions) / self.counts

    def _standard_deviation(self, values):
        return np.sqrt(self._variance(values))

    def _minimum(self, values):
        return np.minimum.reduceat(values, self.starts)

    def _maximum(self, values):
        return np.maximum.reduceat(values, self.starts)

    def _median(self, values):
        ordered = sort_segments(values, self.codes)
        low = ordered[self.starts + (self.counts - 1) // 2].astype(np.float64)
        high = ordered[self.starts + self.counts // 2].astype(np.float64)
        return (low + high) / 2.0


def sort_segments(values: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Sort ``values`` within each run of equal, non-decreasing ``codes`` (one sort, no loop).

    Values of at most 32 bits are mapped to order-preserving unsigned integers and packed
    below the segment code in one uint64 key; wider values use a lexicographic sort.
    """
    if values.dtype.itemsize > 4 or values.dtype.kind not in "iuf":
        return values[np.lexsort((values, codes))]
    ordered_bits = _ordered_uint32(values)
    keys = (codes.astype(np.uint64) << np.uint64(32)) | ordered_bits.astype(np.uint64)
    keys.sort()
    return _from_ordered_uint32((keys & np.uint64(0xFFFFFFFF)).astype(np.uint32), values.dtype)


def _ordered_uint32(values: np.ndarray) -> np.ndarray:
    """Map values (<= 32 bits) to uint32 so that unsigned order equals numeric order."""
    if values.dtype.kind == "f":
        bits = values.astype(np.float32).view(np.uint32)
        negative = (bits >> np.uint32(31)).astype(bool)
        return np.where(negative, ~bits, bits | np.uint32(0x80000000))
    if values.dtype.kind == "i":
        return (values.astype(np.int64) + 2**31).astype(np.uint32)
    return values.astype(np.uint32)


def _from_ordered_uint32(bits: np.ndarray, dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        positive = (bits >> np.uint32(31)).astype(bool)
        raw = np.where(positive, bits & np.uint32(0x7FFFFFFF), ~bits)
        return raw.view(np.float32).astype(dtype)
    if dtype.kind == "i":
        return (bits.astype(np.int64) - 2**31).astype(dtype)
    return bits.astype(dtype)


# -- maps and spheres: one linear operator ---------------------------------------------------------
class LinearOperator(_Operator):
    """Signals as ``post @ weights @ X`` on the voxels the weights touch.

    ``weights`` is a ``(region, voxel)`` matrix on ``voxels`` (scipy CSR when sparse, else a dense
    array), ``post`` an optional ``(region, region)`` matrix applied after (the pseudo-inverse of
    the maps' Gram matrix, which turns the projection into nilearn's least squares).
    """

    def __init__(self, voxels: np.ndarray, weights, post: np.ndarray | None = None, dtype_rule=signal_float):
        self.voxels = np.asarray(voxels, dtype=np.int64)
        self.weights = weights
        self.post = post
        self.dtype_rule = dtype_rule
        token_weights = (weights.data, weights.indices, weights.indptr) if sp.issparse(weights) else weights
        self._set_token(self.voxels, token_weights, post, getattr(dtype_rule, "__name__", str(dtype_rule)))

    @property
    def n_regions(self) -> int:
        return int(self.weights.shape[0])

    def output_dtype(self, data_dtype) -> np.dtype:
        return np.dtype(self.dtype_rule(data_dtype))

    def __call__(self, block: np.ndarray) -> np.ndarray:
        matrix = volumes_matrix(block)
        values = finite(matrix[self.voxels]).astype(np.float64, copy=False)
        projected = self.weights @ values
        if self.post is not None:
            projected = self.post @ projected
        return np.asarray(projected.T, dtype=self.output_dtype(block.dtype))


def sparse_or_dense(matrix: sp.csr_matrix):
    """Keep a (region, voxel) operator sparse unless it is dense enough for BLAS to win."""
    n_cells = matrix.shape[0] * max(matrix.shape[1], 1)
    return matrix.toarray() if matrix.nnz > DENSE_FRACTION * n_cells else matrix


def gram_pseudo_inverse(weights) -> np.ndarray:
    """``pinv(W @ W.T)`` (float64): with it, ``pinv(W W^T) W X`` is the least-squares ``pinv(W^T) X``."""
    gram = weights @ weights.T
    gram = gram.toarray() if sp.issparse(gram) else np.asarray(gram)
    return np.linalg.pinv(gram.astype(np.float64), hermitian=True)


# -- graphs ---------------------------------------------------------------------------------------------
def region_signals(image: xr.DataArray, operator: _Operator) -> da.Array:
    """Apply ``operator`` to every time chunk of a 4D image: a lazy ``(time, region)`` dask array.

    The operator enters the graph once (one key); each time chunk is one task.
    """
    data = image.data if isinstance(image.data, da.Array) else da.from_array(np.asarray(image.data))
    data = data.rechunk({0: -1, 1: -1, 2: -1})
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
    return operator(block)


def signals_dataarray(signals: da.Array, region_ids, region_names, extra_coords=None) -> xr.DataArray:
    """Label a ``(time, region)`` array: ``region`` ids and ``region_name`` (plus e.g. seed x, y, z)."""
    coords = {"region": np.asarray(region_ids), "region_name": ("region", np.asarray(region_names, dtype=str))}
    for name, values in (extra_coords or {}).items():
        coords[name] = ("region", np.asarray(values))
    return xr.DataArray(signals, dims=("time", "region"), coords=coords)


class Expansion:
    """Region signals back to voxel values: ``values[voxel, t] = (matrix @ signals.T)`` on ``voxels``.

    ``matrix`` is ``(voxel, region)``: a 0/1 indicator for labels, the maps for maps, the
    overlap-scaled sphere membership for spheres (scipy sparse or dense).
    """

    def __init__(self, voxels: np.ndarray, matrix):
        self.voxels = np.asarray(voxels, dtype=np.int64)
        self.matrix = matrix
        parts = (matrix.data, matrix.indices, matrix.indptr) if sp.issparse(matrix) else matrix
        self._token = tokenize("Expansion", self.voxels, parts)

    def __dask_tokenize__(self):
        return self._token

    def __call__(self, block: np.ndarray, shape) -> np.ndarray:
        out = np.zeros((int(np.prod(shape)), block.shape[0]), dtype=block.dtype, order="F")
        out[self.voxels] = np.asarray(self.matrix @ block.T, dtype=block.dtype)
        return out.reshape((*shape, block.shape[0]), order="F")


def signals_to_image(signals, shape, affine, expansion: Expansion) -> xr.DataArray:
    """Lazy inverse: ``(t, region)`` or ``(region,)`` signals to a 4D (or 3D) image DataArray.

    Blockwise over the signals' time chunks; the expansion enters the graph once.
    """
    array = signals.data if isinstance(signals, xr.DataArray) else signals
    one_row = array.ndim == 1
    array = da.asarray(array[None, :] if one_row else array)
    array = array.rechunk({1: -1})
    out_dtype = array.dtype
    shared = dask.delayed(expansion, pure=True, traverse=False)
    volumes = da.blockwise(
        _expand_block, "ijkt", array, "tr", shared, None,
        new_axes={"i": shape[0], "j": shape[1], "k": shape[2]}, concatenate=True,
        dtype=out_dtype, meta=np.empty((0, 0, 0, 0), dtype=out_dtype), shape=tuple(shape),
    )
    image = image_dataarray(volumes, affine)
    return image.isel(time=0, drop=True) if one_row else image


def _expand_block(block, expansion: Expansion, *, shape):
    return expansion(block, shape)


# -- the estimators' shared part ---------------------------------------------------------------------
class RegionMasker(BaseMasker):
    """Common part of the region maskers: spatial images loaded once, operators cached per grid.

    Subclasses implement ``_build_operator(grid)`` (an operator and the region coordinates for
    images on ``grid``) and set ``_operators`` / ``_report_mean`` in their ``_fit``.
    """

    _fitted_attribute = "n_elements_"

    def _remember_report_image(self, imgs) -> None:
        """Keep a lazy mean of the fitted images for the report (computed only by ``generate_report``)."""
        self._report_mean = None
        if imgs is not None and getattr(self, "reports", True):
            first = imgs[0] if isinstance(imgs, list | tuple) else imgs
            self._report_mean = mean_img(first)

    def _report_background(self, shape, affine) -> np.ndarray | None:
        """The mean image resampled onto ``(shape, affine)`` (continuous), computed now; None without one."""
        mean = getattr(self, "_report_mean", None)
        if mean is None:
            return None
        values = read_small(mean).astype(np.float64)
        if not same_grid(grid_of(mean), (shape, affine)):
            values, _ = resample_array(values, get_affine(mean), target_affine=affine, target_shape=shape)
        return values

    def _operator_for(self, grid):
        """The operator (and region coordinates) for images on ``grid``, built once per grid."""
        key = (tuple(grid[0]), tuple(np.round(np.asarray(grid[1]), 6).ravel()))
        cache = self.__dict__.setdefault("_operators", {})
        if key not in cache:
            cache[key] = self._build_operator(grid)
        return cache[key]

    def _build_operator(self, grid):  # pragma: no cover - abstract
        raise NotImplementedError

    def _extract(self, img4d: xr.DataArray) -> xr.DataArray:
        operator, ids, names, extra = self._operator_for(grid_of(img4d))
        return signals_dataarray(region_signals(img4d, operator), ids, names, extra)


def load_volume(img, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A small 3D image's values (read now) and affine; clear errors for 4D input."""
    image = as_image(img, name, ndim=(3,))
    return read_small(image), get_affine(image)


def image_grid(imgs) -> tuple | None:
    """The grid of the images given to ``fit`` (the first of a list), from headers only."""
    if imgs is None:
        return None
    first = imgs[0] if isinstance(imgs, list | tuple) else imgs
    return grid_of(as_image(first, "imgs", ndim=(3, 4)))


def resample_nearest(volume: np.ndarray, affine, grid) -> np.ndarray:
    """A small 3D volume resampled onto ``grid`` with nearest-neighbour interpolation."""
    out, _ = resample_array(np.asarray(volume), affine, target_affine=grid[1], target_shape=grid[0],
                            interpolation="nearest", clip=False)
    return out


class MultiMixin:
    """``fit``/``transform`` of a list of runs: one lazy result per run (nilearn's Multi maskers)."""

    def fit_transform(self, imgs, y=None, confounds=None, sample_mask=None, **fit_params):
        """Fit on ``imgs`` (the first run gives the grid), then transform each run lazily."""
        self.fit(imgs, y, **fit_params)
        return self.transform(imgs, confounds=confounds, sample_mask=sample_mask)

    def transform(self, imgs, confounds=None, sample_mask=None):
        """Signals of one run (a DataArray) or of each run of a list (a list of DataArrays), lazily."""
        self._check_fitted()
        if not isinstance(imgs, list | tuple):
            confounds = confounds[0] if isinstance(confounds, list) else confounds
            sample_mask = sample_mask[0] if isinstance(sample_mask, list) else sample_mask
            return super().transform(imgs, confounds=confounds, sample_mask=sample_mask)
        return self.transform_imgs(imgs, confounds=confounds, sample_mask=sample_mask)

    def transform_imgs(self, imgs_list, confounds=None, n_jobs=1, sample_mask=None):
        """One lazy ``(time, region)`` DataArray per run (``n_jobs`` is accepted: dask schedules)."""
        self._check_fitted()
        confounds = _per_run(confounds, len(imgs_list), "confounds")
        sample_mask = _per_run(sample_mask, len(imgs_list), "sample_mask")
        return [
            self._transform_one(img, conf, mask, add_hv_first=False, cast=True)
            for img, conf, mask in zip(imgs_list, confounds, sample_mask, strict=True)
        ]


def _per_run(values, n_runs: int, name: str) -> list:
    if values is None:
        return [None] * n_runs
    if not isinstance(values, list | tuple) or len(values) != n_runs:
        found = len(values) if isinstance(values, list | tuple) else type(values).__name__
        raise ParameterError(f"{name}: expected a list of {n_runs} entries (one per run), got {found}.")
    return list(values)
