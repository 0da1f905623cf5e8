"""Maps (probabilistic, possibly overlapping) as a least-squares operator.

The signals are nilearn's least-squares fit of the maps to each volume,
``lstsq(maps[voxels], data[voxels])``. With ``W`` the ``(map, voxel)`` matrix on the voxels some
map touches, that is ``pinv(W W^T) W x``: ``W`` (sparse when the maps are) and ``pinv(W W^T)`` are
built once, then each time chunk costs one product.
"""

from __future__ import annotations

import warnings

import dask
import numpy as np
import scipy.sparse as sp
import xarray as xr

from lazymask.exceptions import ParameterError
from lazymask.io import as_dask
from lazymask.regions._operators import (
    Expansion,
    LinearOperator,
    finite,
    gram_pseudo_inverse,
    signal_float,
    sparse_or_dense,
    volumes_matrix,
)

#: Maps per chunk when maps are resampled (bounds the memory of reading them: a chunk at a time).
MAPS_PER_READ = 32


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
            f"allow_overlap=False but maps overlap in {int((per_voxel > 1).sum())} voxels (two or more maps "
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
        where = "after applying mask_img" if masked else "(every value is 0)"
        raise ParameterError(f"No map left {where}: maps_img has no non-zero voxel there.")
    if not allow_overlap:
        check_no_overlap(matrix, maps_dtype)
    operator, kept = maps_operator(matrix, maps_dtype, keep_empty=keep_masked_maps or not masked)
    if kept.size < matrix.shape[0]:
        lost = sorted(set(range(matrix.shape[0])) - set(kept.tolist()))
        warnings.warn(f"After applying mask_img to the maps, the maps {lost} were removed (empty in the "
                      f"mask): {kept.size} of {matrix.shape[0]} maps remain.", stacklevel=stacklevel)
    return operator, kept


def warn_keep_masked_maps(stacklevel: int = 3) -> None:
    """nilearn 0.14's FutureWarning for ``keep_masked_maps=True`` with a mask (removed in nilearn 0.15)."""
    warnings.warn('Applying "mask_img" before signal extraction may result in empty region signals in the '
                  'output. These are currently kept.\n"keep_masked_maps" parameter will be removed in version '
                  '0.15. Set "keep_masked_maps=False" to silence this warning.', FutureWarning,
                  stacklevel=stacklevel)
