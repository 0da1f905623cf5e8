"""Operations on image DataArrays, lazy and blockwise over time: nilearn's ``image`` functions.

Mean, smoothing, resampling, selection (``index_img``, ``iter_img``), concatenation, voxel-wise
arithmetic (``math_img``, ``threshold_img``) and the cleaning front ends (``clean_img``,
``high_variance_confounds``, which load :mod:`lazymask.signal` when called).

The second group of names are the building blocks the layers above (``masking``, ``regions``,
``maskers``) use: image coercion at the edge, the resampling and smoothing kernels on bare arrays,
the one-pass time mean, and the one grid check.
"""

from lazymask.image._inputs import as_image, is_image_list
from lazymask.image._math import math_img, threshold_img
from lazymask.image._mean import known_time_means, mean_img, time_mean_volume
from lazymask.image._resample import (
    check_resample_inputs,
    check_same_grid,
    resample_array,
    resample_img,
    resample_to_img,
)
from lazymask.image._select import concat_imgs, index_img, iter_img, load_img, new_img_like
from lazymask.image._signal_images import clean_img, high_variance_confounds
from lazymask.image._smooth import normalize_fwhm, smooth_array, smooth_img

__all__ = [
    "clean_img",
    "concat_imgs",
    "high_variance_confounds",
    "index_img",
    "iter_img",
    "load_img",
    "math_img",
    "mean_img",
    "new_img_like",
    "resample_img",
    "resample_to_img",
    "smooth_img",
    "threshold_img",
    # building blocks for the layers above
    "as_image",
    "check_resample_inputs",
    "check_same_grid",
    "is_image_list",
    "known_time_means",
    "normalize_fwhm",
    "resample_array",
    "smooth_array",
    "time_mean_volume",
]
