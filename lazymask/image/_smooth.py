"""Spatial Gaussian smoothing (FWHM in millimetres), volume by volume, blockwise over time."""

from __future__ import annotations

import warnings

import dask.array as da
import numpy as np
from scipy.ndimage import gaussian_filter1d

from lazymask.exceptions import ParameterError
from lazymask.image._inputs import as_image, is_image_list
from lazymask.io import get_affine

FWHM_OVER_SIGMA = np.sqrt(8 * np.log(2))


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
    values = np.array([0.0 if v is None else float(v) for v in values])
    if values.size not in (1, 3) or np.any(values < 0):
        raise ParameterError(f"fwhm={fwhm!r}: expected one or three non-negative numbers (mm).")
    if np.all(values == 0):
        warnings.warn(f"fwhm={fwhm!r}: no smoothing is done (set fwhm=None to say so).", stacklevel=3)
        return None
    return np.broadcast_to(values, (3,)).copy()


def fwhm_to_sigma(fwhm: np.ndarray, affine) -> np.ndarray:
    """Per-axis Gaussian sigma in voxels from FWHMs in mm and the affine's voxel sizes."""
    voxel_sizes = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
    return fwhm / (FWHM_OVER_SIGMA * voxel_sizes)


def _fast_smooth(arr: np.ndarray) -> np.ndarray:
    """Each voxel plus 0.2 x each of its 6 face neighbours, divided by 2.2 (nilearn's 'fast')."""
    weight = 0.2
    neighbours = weight * arr
    out = arr.copy()
    for axis in range(3):
        head = [slice(None)] * arr.ndim
        tail = [slice(None)] * arr.ndim
        head[axis], tail[axis] = slice(None, -1), slice(1, None)
        out[tuple(head)] += neighbours[tuple(tail)]
        out[tuple(tail)] += neighbours[tuple(head)]
    out /= 1 + 6 * weight
    return out


def smooth_array(arr: np.ndarray, affine, fwhm, ensure_finite: bool = True) -> np.ndarray:
    """Smooth a 3D or 4D numpy array along its 3 spatial axes (returns a new array).

    Same numbers as nilearn's ``smooth_array``: integers become float32, non-finite values
    become 0 when ``ensure_finite``, then one 1D Gaussian filter per spatial axis with
    sigma = FWHM / (sqrt(8 ln 2) x voxel size); ``fwhm="fast"`` is the 6-neighbour average.
    """
    fwhm = normalize_fwhm(fwhm) if not isinstance(fwhm, np.ndarray) else fwhm
    out = np.array(arr, dtype=smoothed_dtype(arr.dtype), copy=True, order="K")
    if ensure_finite and out.dtype.kind == "f":
        out[~np.isfinite(out)] = 0
    if isinstance(fwhm, str):
        return _fast_smooth(out)
    if fwhm is None:
        return out
    for axis, sigma in enumerate(fwhm_to_sigma(fwhm, affine)):
        if sigma > 0:
            gaussian_filter1d(out, sigma, output=out, axis=axis)
    return out


def smooth_img(imgs, fwhm):
    """Smooth image(s) spatially with a Gaussian of FWHM ``fwhm`` mm, lazily, volume by volume.

    Same parameters and numbers as :func:`nilearn.image.smooth_img`. Each time chunk is
    smoothed on its own (smoothing is spatial, so no overlap between chunks is needed).

    Parameters
    ----------
    imgs : image or list of images
        Anything :func:`lazymask.io.open_nifti` accepts; a list gives a list.
    fwhm : float, sequence of 3 floats, "fast" or None
        Full width at half maximum in millimetres (per axis when 3 numbers); ``"fast"`` is a
        quick 6-neighbour average; ``None`` smooths nothing (non-finite values still become 0).

    Returns
    -------
    xarray.DataArray or list of them
        Lazy images with the input's dims, chunks and affine; float dtype.

    Examples
    --------
    >>> smoothed = smooth_img("bold.nii.gz", fwhm=6)   # builds a graph, reads nothing  # doctest: +SKIP
    """
    if is_image_list(imgs):
        return [smooth_img(img, fwhm) for img in imgs]
    image = as_image(imgs, "imgs")
    fwhm = normalize_fwhm(fwhm)
    affine = get_affine(image)
    data = image.data if isinstance(image.data, da.Array) else da.from_array(image.data)
    out_dtype = smoothed_dtype(data.dtype)
    smoothed = data.map_blocks(
        smooth_array, affine, fwhm, dtype=out_dtype, meta=np.empty((0,) * data.ndim, dtype=out_dtype)
    )
    return image.copy(data=smoothed)
