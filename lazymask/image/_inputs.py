"""Converting image inputs (paths, lists, nibabel images, DataArrays) to image DataArrays, once."""

from __future__ import annotations

import numpy as np
import xarray as xr

from lazymask.exceptions import DimensionError, EmptyInputError, ParameterError
from lazymask.io import get_affine, open_nifti


def as_image(img, name: str = "img", ndim: tuple[int, ...] = (3, 4)) -> xr.DataArray:
    """Open ``img`` with :func:`lazymask.io.open_nifti` and check its number of dimensions.

    ``name`` is the parameter's name, quoted in errors.
    """
    if is_image_list(img) and len(img) == 0:
        raise EmptyInputError(f"Cannot concatenate empty objects: {name} is an empty list; pass at least one image.")
    try:
        image = open_nifti(img)
    except DimensionError as error:
        if error.file_dimension is None or len(ndim) != 1 or error.required_dimension == ndim[0]:
            raise
        raise DimensionError(error.file_dimension, ndim[0], f"({name}) {error.detail}") from None
    if not isinstance(image, xr.DataArray):  # pragma: no cover - open_nifti always returns one
        raise ParameterError(f"{name}: could not be opened as an image.")
    if image.ndim not in ndim:
        wanted = " or ".join(f"{n}D" for n in ndim)
        # nilearn's opening words (DimensionError's two numbers), then which parameter and how to fix it
        raise DimensionError(
            image.ndim, max(ndim) if image.ndim > max(ndim) else min(ndim),
            f"{name} is a {image.ndim}D image of shape {image.shape}; expected a {wanted} image. "
            "Select the volumes you need first (lazymask works on 3D images and 4D runs)."
        )
    get_affine(image)  # fails early, with the fix, when the affine is missing
    return image


def is_image_list(imgs) -> bool:
    """True for a list or tuple of images (not a single path or image)."""
    return isinstance(imgs, list | tuple)


def float_dtype_of(dtype) -> np.dtype:
    """The dtype ``numpy.mean`` gives to an array of ``dtype`` (float64 for integers)."""
    return np.mean(np.zeros(1, dtype=dtype)).dtype
