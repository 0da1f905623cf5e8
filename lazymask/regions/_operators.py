"""Region operators: small picklable objects that map a numpy block ``(i, j, k, t)`` to ``(t, region)``.

Contract
--------
* A *region operator* is built once from a 3D grid and a spatial definition (labels, maps or
  spheres). It holds the flat Fortran-order indices of the voxels it reads (``voxels``) and
  whatever the reduction needs, and maps a block ``(i, j, k, t)`` to signals ``(t, region)``.
  Its cost does not depend on the number of regions beyond the arrays it holds: there is no
  Python loop over regions anywhere.
* Its dask token is computed once at build time (the arrays are hashed once), so the operator
  enters a graph as ONE key however many regions it holds.
* Non-finite voxel values are read as 0 (nilearn's ``ensure_finite=True``).
* An :class:`Expansion` is the way back: ``(t, region)`` signals to voxel values.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from dask.base import tokenize

#: Label statistics (nilearn's ``strategy`` values).
STRATEGIES = ("mean", "median", "sum", "minimum", "maximum", "variance", "standard_deviation")

#: A sparse (voxel x region) operator is stored dense above this fraction of non-zeros.
DENSE_FRACTION = 0.25


# -- blocks -------------------------------------------------------------------------------------------
_ORDER_FREE = ("sum", "mean", "variance", "standard_deviation")


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
    ids : array-like, optional
        Sorted label values of the output columns (default: the labels found); labels listed
        here but absent from ``labels`` get signals of 0 (nilearn's ``keep_masked_labels``).

    Examples
    --------
    >>> import numpy as np
    >>> op = LabelOperator(np.array([[[0, 1], [2, 2]]]), 0, "mean")
    >>> op(np.arange(4.0).reshape(1, 2, 2, 1)).tolist()
    [[1.0, 2.5]]
    """

    def __init__(self, labels: np.ndarray, background_label, strategy: str, ids=None):
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy={strategy!r}: expected one of {STRATEGIES}.")
        flat = np.asarray(labels).ravel(order="F")
        inside = np.flatnonzero((flat != background_label) & np.isfinite(flat))
        order = np.argsort(flat[inside], kind="stable")
        self.voxels = inside[order]
        present, self.starts, self.counts = np.unique(flat[self.voxels], return_index=True, return_counts=True)
        self.present = present
        self.codes = np.repeat(np.arange(present.size), self.counts)
        self.ids = present if ids is None else np.asarray(ids)
        # output column of each present label (labels in ``ids`` but absent from ``labels`` give 0)
        self.columns = np.searchsorted(self.ids, present) if ids is not None else None
        if ids is not None and (np.any(self.columns >= self.ids.size) or np.any(self.ids[self.columns] != present)):
            raise ValueError("ids must be sorted and hold every label value of labels.")
        self.strategy = strategy
        # sums, means and variances do not need the voxels grouped by label: read in file order
        # (a streaming gather, about 2.5x faster per volume than in label order), each with its code
        self._by_position = strategy in _ORDER_FREE
        if self._by_position:
            in_file_order = np.argsort(self.voxels, kind="stable")
            self._voxels, self._codes = self.voxels[in_file_order], self.codes[in_file_order]
        else:
            self._voxels, self._codes = self.voxels, self.codes
        self._set_token(self.voxels, self.ids, self.counts, self.columns, strategy)

    @property
    def n_regions(self) -> int:
        return int(self.ids.size)

    def output_dtype(self, data_dtype) -> np.dtype:
        return float_output(data_dtype)

    def __call__(self, block: np.ndarray) -> np.ndarray:
        matrix = volumes_matrix(block)
        out = np.zeros((matrix.shape[1], self.n_regions), dtype=self.output_dtype(block.dtype))
        if self.present.size == 0:
            return out
        statistic = getattr(self, f"_{self.strategy}")
        columns = slice(None) if self.columns is None else self.columns
        for t in range(matrix.shape[1]):
            out[t, columns] = statistic(finite(matrix[:, t][self._voxels]))
        return out

    def _sum(self, values):
        return np.bincount(self._codes, weights=values, minlength=self.present.size)

    def _mean(self, values):
        return self._sum(values) / self.counts

    def _variance(self, values):
        centred = values - self._mean(values)[self._codes]
        return np.bincount(self._codes, weights=centred * centred, minlength=self.present.size) / self.counts

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


# -- the way back -------------------------------------------------------------------------------
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


def _expand_block(block, expansion: Expansion, *, shape):
    return expansion(block, shape)


