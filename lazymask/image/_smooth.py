"""Spatial Gaussian smoothing (FWHM in millimetres), a whole time chunk at a time.

Contract (what nilearn 0.14's ``smooth_array`` computes, and how lazymask computes it):

- Integer data become float32 (64-bit integers float64); float data keep their dtype. With
  ``ensure_finite``, NaNs and infinities become 0 first.
- ``fwhm`` in mm becomes one sigma per spatial axis, ``fwhm / (sqrt(8 ln 2) x voxel size)``, the
  voxel sizes being the norms of the affine's first three columns; each axis whose sigma is > 0 is
  filtered by :func:`scipy.ndimage.gaussian_filter1d` (``mode="reflect"``, ``truncate=4``), axis 0,
  then 1, then 2. ``fwhm="fast"`` is the 6-neighbour average ``(x + 0.2 x neighbours) / 2.2``.
- lazymask applies the same filter as a matrix: along an axis of length ``n``, the filter is the
  ``(n, n)`` matrix ``gaussian_filter1d(eye(n))`` (boundaries included), so filtering a whole
  ``(i, j, k, t)`` chunk along an axis is one batch of matrix products (BLAS, in float32 for
  float32 results), restricted to the band of the matrix that is not zero. The numbers equal
  scipy's within float32 rounding; neither the chunk's time length nor its memory layout changes
  any of them: the products run on Fortran-ordered volumes (a C-ordered block is copied), one
  volume's shape each.
- The result of a block keeps the block's layout: Fortran-ordered (``i`` fastest) as the volumes
  read from NIfTI are, so masking it needs no copy, or C-ordered for a C-ordered block (any other
  layout becomes Fortran). A task holds the input block and two float buffers of its size.
- A single 3D volume is filtered by scipy itself (nilearn's numbers exactly, in the volume's
  layout): the products pay only across the volumes of a chunk.
- Values that must stay non-finite (``ensure_finite=False`` with NaNs) are filtered by scipy
  itself, so that a NaN spreads over the filter's width only, as in nilearn.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.ndimage import gaussian_filter1d

from lazymask._blas import single_threaded_blas
from lazymask._pages import empty
from lazymask.exceptions import ParameterError
from lazymask.image._inputs import as_image, is_image_list
from lazymask.io import as_dask, get_affine

FWHM_OVER_SIGMA = np.sqrt(8 * np.log(2))
# Output rows of the filter matrix per matrix product: products over the matrix's band only.
# Measured (CPU time, one thread) on a 91 x 109 x 91 x 17 float32 chunk, fwhm 6 mm at 2 mm, per axis
# 0/1/2: 32 rows 38/21/21 ms, 8 rows 101/25/19 ms, the whole matrix 39/31/35 ms; gaussian_filter1d
# on the same Fortran-ordered chunk about 420 ms for the three axes.
BAND_ROWS = 32


def smoothed_dtype(dtype) -> np.dtype:
    """The dtype smoothing gives: float32 for integers (float64 for 64-bit ones), else unchanged."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iub":
        return np.dtype(np.float64) if dtype.itemsize == 8 else np.dtype(np.float32)
    return dtype


def normalize_fwhm(fwhm):
    """``None``, ``"fast"`` or an array of 3 per-axis FWHMs in mm (``None`` entries mean 0)."""
    if fwhm is None:
        return None
    if isinstance(fwhm, str):
        if fwhm != "fast":
            raise ParameterError(f"fwhm={fwhm!r}: expected a number, 3 numbers, 'fast' or None.")
        return fwhm
    values = np.atleast_1d(np.asarray(fwhm, dtype=object)).ravel()
    try:
        values = np.array([0.0 if v is None else float(v) for v in values])
    except (TypeError, ValueError):
        raise ParameterError(f"fwhm={fwhm!r}: expected a number, 3 numbers, 'fast' or None.") from None
    if values.size not in (1, 3) or not np.all(values >= 0):
        raise ParameterError(f"fwhm={fwhm!r}: expected one or three non-negative numbers (mm).")
    if np.all(values == 0):
        warnings.warn(f"fwhm={fwhm!r}: no smoothing is done (set fwhm=None to say so).", stacklevel=3)
        return None
    return np.broadcast_to(values, (3,)).copy()


def fwhm_to_sigma(fwhm: np.ndarray, affine) -> np.ndarray:
    """Per-axis Gaussian sigma in voxels from FWHMs in mm and the affine's voxel sizes."""
    voxel_sizes = np.sqrt((np.asarray(affine, dtype=float)[:3, :3] ** 2).sum(axis=0))
    return fwhm / (FWHM_OVER_SIGMA * voxel_sizes)


def gaussian_operator(n: int, sigma: float) -> np.ndarray:
    """The ``(n, n)`` matrix ``M`` with ``M @ line == gaussian_filter1d(line, sigma)`` (float64).

    Column ``j`` is the filter's response to the ``j``-th unit vector, boundaries included.
    """
    return gaussian_filter1d(np.eye(n), sigma, axis=0)


def operator_bands(operator: np.ndarray, dtype, rows: int | None = None) -> list[tuple[slice, slice, np.ndarray]]:
    """``(output rows, input columns, weights)`` covering the non-zero part of ``operator``.

    ``rows`` output rows per band (default :data:`BAND_ROWS`); all rows are covered.
    """
    rows = BAND_ROWS if rows is None else rows
    bands = []
    for start in range(0, operator.shape[0], rows):
        block = operator[start : start + rows]
        used = np.flatnonzero(block.any(axis=0))
        columns = slice(int(used[0]), int(used[-1]) + 1) if used.size else slice(0, 1)
        bands.append((slice(start, start + block.shape[0]), columns, np.ascontiguousarray(block[:, columns], dtype)))
    return bands


def _axis_view(values: np.ndarray, axis: int) -> np.ndarray:
    """A C-ordered ``(outer, n, inner)`` view of a C- or Fortran-ordered ``values``, ``n`` along ``axis``."""
    shape = values.shape
    before, n, after = int(np.prod(shape[:axis])), shape[axis], int(np.prod(shape[axis + 1 :]))
    if values.flags.f_contiguous:  # its transpose is C-ordered, the axes reversed
        return values.T.reshape(after, n, before)
    return values.reshape(before, n, after)


def _filter_axis(source: np.ndarray, target: np.ndarray, axis: int, bands) -> None:
    """Filter ``source`` along spatial ``axis`` into ``target`` (both C- or both Fortran-ordered)."""
    src, dst = _axis_view(source, axis), _axis_view(target, axis)
    # Along the fastest axis, one product per volume: BLAS may round a row differently by its
    # place in a product (seen with OpenBLAS 0.3.31 on AMD EPYC: the products over a whole chunk
    # differed in the last bit between chunkings), so no product's shape may depend on how many
    # volumes the block holds. Along the other axes, each product is within a volume already.
    volume_rows = int(np.prod(source.shape[1:3])) if source.ndim == 4 and source.flags.f_contiguous else src.shape[0]
    for rows, columns, weights in bands:
        if src.shape[2] == 1:  # the axis is the fastest one: (outer, columns) @ weights.T
            for start in range(0, src.shape[0], max(volume_rows, 1)):
                outer = slice(start, start + volume_rows)
                np.matmul(src[outer, columns, 0], weights.T, out=dst[outer, rows, 0])
        else:
            np.matmul(weights, src[:, columns, :], out=dst[:, rows, :])


def _gaussian_smooth(values: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """Filter the C- or Fortran-ordered float array ``values`` along each axis with sigma > 0.

    ``values`` is used as a work buffer; the result is ``values`` or a new array of its layout.
    """
    spare = None
    for axis, sigma in enumerate(sigmas):
        if sigma > 0:
            bands = operator_bands(gaussian_operator(values.shape[axis], sigma), values.dtype)
            layout = "C" if values.flags.c_contiguous else "F"
            spare = empty(values.shape, values.dtype, order=layout) if spare is None else spare
            _filter_axis(values, spare, axis, bands)
            values, spare = spare, values
    return values


def _fast_smooth(arr: np.ndarray) -> np.ndarray:
    """Each voxel plus 0.2 x each of its 6 face neighbours, divided by 2.2 (nilearn's 'fast')."""
    weight = 0.2
    neighbours = weight * arr
    out = arr.copy(order="K")
    for axis in range(3):
        head = [slice(None)] * arr.ndim
        tail = [slice(None)] * arr.ndim
        head[axis], tail[axis] = slice(None, -1), slice(1, None)
        out[tuple(head)] += neighbours[tuple(tail)]
        out[tuple(tail)] += neighbours[tuple(head)]
    out /= 1 + 6 * weight
    return out


def _work_dtype(out_dtype: np.dtype) -> np.dtype | None:
    """The float dtype the matrix products run in, or None when scipy must filter (for example complex)."""
    if out_dtype in (np.float16, np.float32):
        return np.dtype(np.float32)
    if out_dtype == np.float64:
        return np.dtype(np.float64)
    return None


def smooth_array(arr: np.ndarray, affine, fwhm, ensure_finite: bool = True) -> np.ndarray:
    """Smooth a 3D or 4D numpy array along its 3 spatial axes (returns a new array).

    Same numbers as nilearn's ``smooth_array`` (see the module's contract): integers become
    float32, non-finite values become 0 when ``ensure_finite``, then one 1D Gaussian filter per
    spatial axis with sigma = FWHM / (sqrt(8 ln 2) x voxel size); ``fwhm="fast"`` is the
    6-neighbour average. A 4D array is filtered whole (all its volumes in each matrix product).

    Parameters
    ----------
    arr : numpy.ndarray
        3D volume or 4D ``(i, j, k, t)`` block, any memory layout.
    affine : array-like (4, 4) or (3, 3)
        Its affine (only the voxel sizes are used).
    fwhm : float, sequence of 3 floats, "fast" or None
        Full width at half maximum in mm.
    ensure_finite : bool, default=True
        Replace NaNs and infinities by 0 before filtering.

    Returns
    -------
    numpy.ndarray
        Float array of ``arr``'s shape, C-ordered if ``arr`` is, else Fortran-ordered.

    Examples
    --------
    >>> volume = np.zeros((5, 5, 5), "int16")
    >>> volume[2, 2, 2] = 100
    >>> smoothed = smooth_array(volume, np.eye(4), fwhm=2)
    >>> smoothed.dtype, round(float(smoothed.sum()), 3)
    (dtype('float32'), 100.0)
    """
    fwhm = normalize_fwhm(fwhm)
    out_dtype = smoothed_dtype(arr.dtype)
    work_dtype = _work_dtype(out_dtype)
    if work_dtype is None or isinstance(fwhm, str) or fwhm is None:
        work_dtype = out_dtype
    # a copy in the block's own layout (a transposing copy costs as much as filtering an axis), or
    # straight in Fortran order when the Gaussian products will run (they work in that layout)
    layout = "C" if arr.flags.c_contiguous and not arr.flags.f_contiguous else "F"
    products = not (isinstance(fwhm, str) or fwhm is None or arr.ndim == 3 or work_dtype != _work_dtype(out_dtype))
    values = empty(arr.shape, work_dtype, order="F" if products else layout)  # no hugepage hint (lazymask._pages)
    np.copyto(values, arr, casting="unsafe")
    if ensure_finite and values.dtype.kind in "fc" and arr.dtype.kind not in "iub":
        non_finite = ~np.isfinite(values)
        if non_finite.any():
            values[non_finite] = 0
    if isinstance(fwhm, str):
        return _fast_smooth(values)
    if fwhm is None:
        return values
    sigmas = fwhm_to_sigma(fwhm, affine)
    if not products or not (ensure_finite or np.isfinite(values).all()):
        # a single volume (a mask's mean at fit): scipy's filter, nilearn's own computation; matrix
        # products pay only across the volumes of a chunk (C-ordered 97 x 115 x 97 float64: 10 ms, against 20 ms)
        smoothed = _scipy_smooth(values, sigmas).astype(out_dtype, copy=False)
        return np.ascontiguousarray(smoothed) if layout == "C" else smoothed
    with single_threaded_blas():  # the parallelism is dask's: one block per thread
        # the products in one layout, volume by volume: the numbers depend on neither the block's
        # layout nor its number of volumes (see _filter_axis)
        smoothed = _gaussian_smooth(np.asfortranarray(values), sigmas).astype(out_dtype, copy=False)
    return np.ascontiguousarray(smoothed) if layout == "C" else smoothed


def _scipy_smooth(values: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """nilearn's way, in place: ``gaussian_filter1d`` along each axis with sigma > 0."""
    for axis, sigma in enumerate(sigmas):
        if sigma > 0:
            gaussian_filter1d(values, sigma, output=values, axis=axis)
    return values


def smooth_img(imgs, fwhm):
    """Smooth image(s) spatially with a Gaussian of FWHM ``fwhm`` mm, lazily, a time chunk at a time.

    Same parameters and numbers as :func:`nilearn.image.smooth_img`. Each time chunk is smoothed
    whole, on its own (smoothing is spatial, so chunks need no overlap); a chunk split in space is
    joined first.

    Parameters
    ----------
    imgs : image or list of images
        Anything :func:`lazymask.io.open_nifti` accepts; a list gives a list.
    fwhm : float, sequence of 3 floats, "fast" or None
        Full width at half maximum in millimetres (per axis when 3 numbers; ``None`` entries
        smooth nothing along their axis); ``"fast"`` is a quick 6-neighbour average; ``None``
        smooths nothing (non-finite values still become 0).

    Returns
    -------
    xarray.DataArray or list of them
        Lazy images with the input's dims, time chunks and affine; float32 for integer data
        (float64 for 64-bit integers), else the input's dtype.

    Examples
    --------
    >>> import nibabel as nib
    >>> run = nib.Nifti1Image(np.full((6, 6, 6, 4), 10, "int16"), np.diag([2.0, 2.0, 2.0, 1.0]))
    >>> smoothed = smooth_img(run, fwhm=6)   # builds a graph, computes nothing
    >>> smoothed.dtype, smoothed.shape
    (dtype('float32'), (6, 6, 6, 4))
    >>> bool(np.allclose(smoothed.values, 10))   # a constant image stays constant
    True
    """
    if is_image_list(imgs):
        return [smooth_img(img, fwhm) for img in imgs]
    image = as_image(imgs, "imgs")
    fwhm = normalize_fwhm(fwhm)
    affine = get_affine(image)
    data = as_dask(image)
    data = data.rechunk({axis: -1 for axis in range(3)})  # whole volumes in every block
    out_dtype = smoothed_dtype(data.dtype)
    smoothed = data.map_blocks(
        smooth_array, affine, fwhm, dtype=out_dtype, meta=np.empty((0,) * data.ndim, dtype=out_dtype)
    )
    return image.copy(data=smoothed)
