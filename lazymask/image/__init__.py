"""Operations on image DataArrays: mean, smoothing, resampling (lazy, blockwise over time)."""

from lazymask.image._mean import mean_img
from lazymask.image._resample import resample_img, resample_to_img
from lazymask.image._smooth import smooth_img

__all__ = ["mean_img", "resample_img", "resample_to_img", "smooth_img"]
