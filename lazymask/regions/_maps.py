"""Maps (probabilistic, possibly overlapping) as a least-squares operator, and maps on another grid.

The signals are nilearn's least-squares fit of the maps to each volume,
``lstsq(maps[voxels], data[voxels])``. With ``W`` the ``(map, voxel)`` matrix on the voxels some
map touches, that is ``pinv(W W^T) W x``: ``W`` (sparse when the maps are) and ``pinv(W W^T)`` are
built once, then each time chunk costs one product.

Maps on another grid (:func:`resample_maps`) are nilearn's: non-finite values set to 0
(``ensure_finite``), then linear interpolation (:func:`scipy.ndimage.affine_transform`, order 1,
0 outside the field of view), map by map. A map is computed only on the box of target voxels
whose interpolation reads one of its non-zero voxels (elsewhere it is 0 anyway), so a 1 mm
atlas of local maps costs about one pass over its voxels, not one interpolation of the whole
target grid per map. Linear interpolation stays within the maps' range extended to 0, so
nilearn's clipping (a reduction over every map) changes nothing and is not computed.
"""

from __future__ import annotations

import warnings

import dask
import dask.array as da
import numpy as np
import scipy.sparse as sp
import xarray as xr
from scipy import ndimage

from lazymask.exceptions import ParameterError
from lazymask.io import as_dask, get_affine, image_dataarray
from lazymask.regions._operators import (
    Expansion,
    LinearOperator,
    finite,
    gram_pseudo_inverse,
    signal_float,
    sparse_or_dense,
    volumes_matrix,
)


class MapsDtype:
    """Signals' dtype: that of ``lstsq(maps, data)`` (float32 maps and int16/float32 data: float32)."""

    def __init__(self, maps_dtype):
        self.maps_dtype = np.dtype(maps_dtype)
        self.__name__ = f"maps-{self.maps_dtype}"

    def __call__(self, data_dtype) -> np.dtype:
        maps = self.maps_dtype if self.maps_dtype.kind == "f" else np.dtype(np.float64)
        return np.result_type(maps, signal_float(data_dtype))


def maps_matrix(maps: xr.DataArray, mask: np.ndarray | None = None) -> sp.csr_matrix:
    """The ``(map, voxel)`` sparse matrix of a 4D maps image (Fortran voxel order), in one compute.

    Non-finite values are 0; voxels outside ``mask`` are 0. Lazy maps are computed by the
    caller's scheduler in ONE computation, chunk by chunk along the maps (each chunk read, and
    resampled when the maps are a resampled image, once), each chunk kept only as sparse rows.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> maps = xr.DataArray(np.ones((1, 1, 2, 3)), dims=("i", "j", "k", "time"))
    >>> maps_matrix(maps).shape
    (3, 2)
    """
    keep = None if mask is None else np.asarray(mask, dtype=bool).ravel(order="F")
    if isinstance(getattr(maps, "data", maps), np.ndarray):
        return _sparse_rows(np.asarray(maps.data), keep)
    data = as_dask(maps).rechunk({0: -1, 1: -1, 2: -1})
    shared = dask.delayed(keep, pure=True, traverse=False)
    parts = [dask.delayed(_sparse_rows, pure=True)(block, shared) for block in data.to_delayed().ravel()]
    (rows,) = dask.compute(parts)
    return sp.vstack(rows, format="csr")


def _sparse_rows(block: np.ndarray, keep: np.ndarray | None) -> sp.csr_matrix:
    """A ``(i, j, k, map)`` block as sparse ``(map, voxel)`` rows (non-finite and outside ``keep``: 0)."""
    values = finite(volumes_matrix(np.asarray(block)))
    if keep is not None:
        values = values * keep[:, None]
    return sp.csr_matrix(values.T)


def maps_operator(matrix: sp.csr_matrix, maps_dtype, keep_empty: bool) -> tuple[LinearOperator, np.ndarray]:
    """The least-squares operator of a ``(map, voxel)`` matrix, and the indices of the maps it keeps.

    Maps with no non-zero voxel are dropped unless ``keep_empty`` (their signal is then 0).

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> op, kept = maps_operator(sp.csr_matrix(np.array([[1.0, 0.0], [0.0, 0.0]])), np.float32, False)
    >>> kept.tolist(), op.n_regions
    ([0], 1)
    """
    kept = np.arange(matrix.shape[0]) if keep_empty else np.flatnonzero(np.diff(matrix.indptr) > 0)
    matrix = matrix[kept]
    support = np.unique(matrix.indices)
    weights = matrix[:, support].astype(np.float64)
    weights.sort_indices()
    weights = sparse_or_dense(weights)
    return LinearOperator(support, weights, gram_pseudo_inverse(weights), MapsDtype(maps_dtype)), kept


def maps_expansion(matrix: sp.csr_matrix) -> Expansion:
    """The way back of maps: ``signals @ maps`` on the voxels some map touches.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> exp = maps_expansion(sp.csr_matrix(np.array([[1.0, 0.5]])))
    >>> exp(np.array([[2.0]]), (1, 1, 2))[..., 0].tolist()
    [[[2.0, 1.0]]]
    """
    support = np.unique(matrix.indices)
    return Expansion(support, matrix[:, support].T.tocsr())


def check_no_overlap(matrix: sp.csr_matrix, dtype) -> None:
    """nilearn's test: a voxel where two maps exceed the dtype's epsilon is an overlap (ParameterError)."""
    threshold = np.finfo(dtype).eps if np.dtype(dtype).kind == "f" else 0
    positive = matrix.copy()
    positive.data = (positive.data >= threshold) & (positive.data > 0)
    per_voxel = np.asarray(positive.sum(axis=0)).ravel()
    if np.any(per_voxel > 1):
        raise ParameterError(
            "Overlap detected in the maps: allow_overlap=False but maps overlap in "
            f"{int((per_voxel > 1).sum())} voxels (two or more maps "
            "are positive there; the overlap may come from the atlas or from resampling). Pass "
            "allow_overlap=True or use non-overlapping maps."
        )


def masked_maps_operator(matrix: sp.csr_matrix, maps_dtype, masked: bool, keep_masked_maps: bool = False, *,
                         allow_overlap: bool = True, stacklevel: int = 4) -> tuple[LinearOperator, np.ndarray]:
    """:func:`maps_operator` with nilearn's rules for maps a mask empties, and its checks.

    ``matrix`` holds the maps restricted to the mask (``masked=True``) or whole. Without a mask
    every map is kept; with one, maps left empty are dropped with a warning, unless
    ``keep_masked_maps`` (nilearn's deprecated option: they are kept, their signal is 0). No
    non-zero voxel at all, or overlapping maps when ``allow_overlap=False``: ParameterError.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> op, kept = masked_maps_operator(sp.csr_matrix(np.eye(2)), np.float32, masked=False)
    >>> kept.tolist()
    [0, 1]
    """
    if matrix.nnz == 0:
        if masked:
            raise ParameterError("No map left after applying mask to the maps image: maps_img has no non-zero "
                                 "voxel in mask_img.")
        raise ParameterError("maps_img contains no map: every value is 0.")
    if not allow_overlap:
        check_no_overlap(matrix, maps_dtype)
    operator, kept = maps_operator(matrix, maps_dtype, keep_empty=keep_masked_maps or not masked)
    if kept.size < matrix.shape[0]:
        lost = set(range(matrix.shape[0])) - set(kept.tolist())
        # nilearn's wording (callers match on it); the maps lost are empty inside the mask
        warnings.warn(f"After applying mask to the maps image, maps with the following indices were removed: "
                      f"{lost}. Out of {matrix.shape[0]} maps, the masked map image only contains "
                      f"{kept.size} maps.", stacklevel=stacklevel)
    return operator, kept


def warn_keep_masked_maps(stacklevel: int = 3) -> None:
    """nilearn 0.14's FutureWarning for ``keep_masked_maps=True`` with a mask (removed in nilearn 0.15)."""
    warnings.warn('Applying "mask_img" before signal extraction may result in empty region signals in the '
                  'output. These are currently kept.\n"keep_masked_maps" parameter will be removed in version '
                  '0.15. Set "keep_masked_maps=False" to silence this warning.', FutureWarning,
                  stacklevel=stacklevel)


# -- maps on another grid ------------------------------------------------------------------------------
def maps_voxel_transform(source_affine, target_affine) -> tuple[np.ndarray, np.ndarray]:
    """nilearn's ``resample_img`` transform: target voxel -> source voxel, as ``(matrix, offset)``.

    ``matrix`` is the diagonal (a 3-vector) when the 3x3 part is diagonal, as nilearn passes it to
    :func:`scipy.ndimage.affine_transform`.

    Examples
    --------
    >>> matrix, offset = maps_voxel_transform(np.eye(4), np.diag([2.0, 2.0, 2.0, 1.0]))
    >>> matrix.tolist(), offset.tolist()
    ([2.0, 2.0, 2.0], [0.0, 0.0, 0.0])
    """
    source_affine = np.asarray(source_affine, dtype=np.float64)
    target_affine = np.asarray(target_affine, dtype=np.float64)
    transform = np.eye(4) if np.all(target_affine == source_affine) else np.linalg.inv(source_affine) @ target_affine
    matrix, offset = transform[:3, :3], transform[:3, 3]
    if np.all(np.diag(np.diag(matrix)) == matrix):
        matrix = np.diag(matrix)
    return matrix, offset


def _support_bounds(volume: np.ndarray) -> np.ndarray | None:
    """``(3, 2)`` first and last index of the non-zero voxels along each axis (``None``: all 0)."""
    nonzero = volume != 0
    plane = nonzero.any(axis=2)  # each reduction runs along whole planes or rows, whatever the order
    if not plane.any():
        return None
    along = [plane.any(axis=1), plane.any(axis=0), nonzero.any(axis=(0, 1))]
    return np.array([[np.argmax(a), a.size - 1 - np.argmax(a[::-1])] for a in along])


def _target_box(bounds: np.ndarray, matrix: np.ndarray, offset: np.ndarray, target_shape) -> tuple[slice, ...] | None:
    """The target voxels whose linear interpolation can read a voxel within ``bounds`` (a box, or None).

    A target voxel ``t`` reads source voxels ``floor(c)`` and ``floor(c) + 1`` of ``c = matrix t +
    offset``: only ``c`` strictly within one voxel of ``bounds`` can give a non-zero value. The box
    holds the preimage of that region, one voxel wider on each side, within the target grid.
    """
    low, high = bounds[:, 0] - 1.0, bounds[:, 1] + 1.0
    corners = np.array(np.meshgrid(*zip(low, high, strict=True), indexing="ij")).reshape(3, -1)
    full = np.diag(matrix) if matrix.ndim == 1 else matrix
    try:
        back = np.linalg.solve(full, corners - offset[:, None])
    except np.linalg.LinAlgError:  # a degenerate affine: no box, the whole grid
        return tuple(slice(0, n) for n in target_shape)
    start = np.maximum(np.floor(back.min(axis=1)).astype(np.int64) - 1, 0)
    stop = np.minimum(np.ceil(back.max(axis=1)).astype(np.int64) + 2, np.asarray(target_shape))
    if np.any(stop <= start):
        return None
    return tuple(slice(int(a), int(b)) for a, b in zip(start, stop, strict=True))


def resample_map(volume: np.ndarray, matrix, offset, target_shape, out_dtype) -> np.ndarray:
    """One map on the target grid: non-finite values 0, linear interpolation on its box only.

    Equal to nilearn's ``resample_img(clean_img(map, ensure_finite=True), interpolation="linear")``
    on the whole grid: outside the box the interpolation reads only zeros (or nothing, 0 too).

    Examples
    --------
    >>> volume = np.zeros((8, 8, 8), np.float32); volume[2, 4, 6] = 1.0
    >>> out = resample_map(volume, np.array([2.0, 2.0, 2.0]), np.zeros(3), (4, 4, 4), np.float32)
    >>> float(out[1, 2, 3]), float(out.sum())
    (1.0, 1.0)
    """
    volume = finite(np.asarray(volume))
    out = np.zeros(target_shape, dtype=out_dtype, order="F")
    bounds = _support_bounds(volume)
    box = None if bounds is None else _target_box(bounds, matrix, offset, target_shape)
    if box is None:
        return out
    start = np.array([s.start for s in box], dtype=np.float64)
    shift = offset + (matrix * start if matrix.ndim == 1 else matrix @ start)
    values = np.zeros([s.stop - s.start for s in box], dtype=out_dtype, order="F")
    ndimage.affine_transform(volume, matrix, offset=shift, output_shape=values.shape, output=values, cval=0.0,
                             order=1)
    out[box] = values
    return out


def _resample_maps_block(block: np.ndarray, matrix, offset, target_shape, out_dtype) -> np.ndarray:
    out = np.zeros((*target_shape, block.shape[3]), dtype=out_dtype, order="F")
    for index in range(block.shape[3]):
        out[..., index] = resample_map(block[..., index], matrix, offset, target_shape, out_dtype)
    return out


def resample_maps(maps: xr.DataArray, target_affine, target_shape) -> xr.DataArray:
    """4D maps on another grid, lazily, each chunk of maps resampled once (nilearn's linear resampling).

    The chunks are the maps' own (a read each: whole volumes); nothing is rechunked or reduced
    across maps. Non-finite values are 0 (nilearn's ``ensure_finite``), and the result is not
    clipped (linear interpolation cannot leave the range of the maps and 0).

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> maps = xr.DataArray(np.ones((4, 4, 4, 2), np.float32), dims=("i", "j", "k", "time"),
    ...                     attrs={"affine": np.eye(4).tolist()})
    >>> out = resample_maps(maps, np.diag([2.0, 2.0, 2.0, 1.0]), (2, 2, 2))
    >>> out.shape, float(out.values.min())
    ((2, 2, 2, 2), 1.0)
    """
    data = as_dask(maps).rechunk({0: -1, 1: -1, 2: -1})
    matrix, offset = maps_voxel_transform(get_affine(maps), target_affine)
    target_shape = tuple(int(n) for n in target_shape)
    out_dtype = data.dtype.newbyteorder("=")
    resampled = da.map_blocks(_resample_maps_block, data, matrix=matrix, offset=offset, target_shape=target_shape,
                              out_dtype=out_dtype, chunks=tuple((n,) for n in target_shape) + data.chunks[3:],
                              dtype=out_dtype, meta=np.empty((0, 0, 0, 0), dtype=out_dtype))
    attrs = {k: v for k, v in maps.attrs.items() if k not in ("affine", "t_r")}
    return image_dataarray(resampled, np.asarray(target_affine, dtype=np.float64), name=maps.name, attrs=attrs)
