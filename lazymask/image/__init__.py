"""Operations on image DataArrays: mean, smoothing, resampling."""
