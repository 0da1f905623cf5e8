"""Small 3D volumes in and out of masking: lazy means of runs, loaded masks, mask DataArrays."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import xarray as xr

from lazymask.exceptions import DimensionError, ImageMismatchError
from lazymask.image import as_image, resample_array, smooth_array, time_mean_volume
from lazymask.io import get_affine, image_dataarray
from lazymask.masking._compute import check_binary_mask


def lazy_mean(image: xr.DataArray) -> da.Array | np.ndarray:
    """The lazy mean over time of a 3D/4D image DataArray (3D: the volume itself).

    A 3D volume already in memory (a masker's computed mean, say) is returned as it is:
    ``dask.compute`` passes it through, and no dask array is made of it (that hashed its 8 MB:
    ~20 ms of a masker's fit).
    """
    if image.ndim == 3 and isinstance(image.data, np.ndarray):
        return image.data
    return time_mean_volume(image)


def finish_mean(mean: np.ndarray, affine, target_affine, target_shape, smooth) -> tuple[np.ndarray, np.ndarray]:
    """Resample a computed mean (continuous, clipped) and smooth it by ``smooth`` voxels FWHM.

    What nilearn's ``compute_mean`` does after averaging; NaNs stay NaN through the smoothing.
    """
    mean, affine = resample_array(np.array(mean), affine, target_affine, target_shape)
    if smooth:
        nans = np.isnan(mean)
        mean = smooth_array(mean, np.eye(4), smooth, ensure_finite=True)
        mean[nans] = np.nan
    return mean, affine


def read_small(image: xr.DataArray) -> np.ndarray:
    """The values of a small image (a mask, a template) at graph-build time.

    A mask is one small volume, read here once (on the user's scheduler, as every computation
    is), so that the graph built on it has its shape; the large data are never touched.
    """
    data = image.data
    if isinstance(data, da.Array):
        (data,) = dask.compute(data)
    return np.asarray(data)


def load_mask(mask_img, name: str = "mask_img", allow_empty: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A validated boolean 3D mask and its affine, from anything ``open_nifti`` accepts."""
    image = as_image(mask_img, name, ndim=(3, 4))
    if image.ndim == 4:  # one volume in a 4D file is a 3D mask to nilearn; more is not a mask
        if image.shape[3] != 1:
            raise DimensionError(
                4, 3, f"{name} is a 4D image of shape {tuple(image.shape)}; expected a 3D image. Select the "
                "volume you need first (lazymask works on 3D images and 4D runs).")
        image = image.isel(time=0, drop=True)
    return check_binary_mask(read_small(image), name, allow_empty=allow_empty), get_affine(image)


def mask_dataarray(mask: np.ndarray, affine, name: str = "mask") -> xr.DataArray:
    """A computed mask as a 3D int8 DataArray (nilearn's mask dtype) with its affine."""
    return image_dataarray(np.asarray(mask, dtype=np.int8), affine, name=name)


def check_mask_matches(mask: np.ndarray, mask_affine, image: xr.DataArray, image_name: str) -> None:
    """Raise :class:`ImageMismatchError` unless the mask and the image share a grid (nilearn's messages)."""
    fix = ("resample the mask onto the image's grid "
           "(lazymask.image.resample_to_img(mask_img, img, interpolation='nearest')).")
    if not np.allclose(mask_affine, get_affine(image)):
        raise ImageMismatchError(
            f"Mask affine:\n{np.asarray(mask_affine)}\n is different from img affine:\n{get_affine(image)}\n"
            f"(mask_img and {image_name}); {fix}"
        )
    if mask.shape != tuple(image.shape[:3]):
        raise ImageMismatchError(
            f"Mask shape: {mask.shape}\n is different from img shape:{tuple(image.shape[:3])}\n"
            f"(mask_img and {image_name}); {fix}"
        )
