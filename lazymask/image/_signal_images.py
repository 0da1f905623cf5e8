"""Image-level front ends of :mod:`lazymask.signal`: ``clean_img`` and ``high_variance_confounds``.

nilearn keeps them in ``nilearn.image``, so lazymask does too (``lazymask.image.clean_img``). They
are the one place where ``image`` uses the layers above it (``masking`` and ``signal``): those
imports happen inside the functions, so importing :mod:`lazymask.image` never loads them and the
layers stay acyclic (an explicit exception of the import-layer rule, listed with the layer test).

Both are lazy: the voxels are viewed as a ``(time, voxel)`` dask array (through
:func:`lazymask.masking.apply_mask` when a mask is given, else a reshape), cleaned or reduced
lazily, and put back into an image (:func:`lazymask.masking.unmask` or a reshape).
"""

from __future__ import annotations

import dask.array as da
import xarray as xr

from lazymask.exceptions import ParameterError
from lazymask.image._inputs import as_image
from lazymask.io import get_affine, get_t_r, image_dataarray

__all__ = ["clean_img", "high_variance_confounds"]


def _voxel_signals(image: xr.DataArray, mask_img):
    """The run as ``(time, voxel)``: inside ``mask_img``, or every voxel (C order, as nilearn)."""
    if mask_img is not None:
        from lazymask.masking import apply_mask

        return apply_mask(image, mask_img).data
    data = da.asarray(image.data)
    return data.reshape(-1, data.shape[3]).T


def clean_img(imgs, runs=None, detrend: bool = True, standardize=True, confounds=None, low_pass=None,
              high_pass=None, t_r=None, ensure_finite: bool = False, mask_img=None, **kwargs) -> xr.DataArray:
    """Clean every voxel's time series of a 4D image (nilearn's ``image.clean_img``), lazily.

    Detrending, filtering, confound removal and standardization are
    :func:`lazymask.signal.clean`'s, with ``clean_img``'s defaults (``standardize=True``);
    ``clean__<name>`` keywords go to :func:`~lazymask.signal.clean` (for example
    ``clean__sample_mask``). With ``mask_img`` only the voxels inside are cleaned and the rest
    of the result is 0.

    Parameters
    ----------
    imgs : 4D image
    runs : array-like of int, optional
        The run of each volume (each run is cleaned on its own).
    detrend : bool, default=True
    standardize : {"zscore_sample", "zscore", "psc", True, False}, default=True
    confounds : array-like, DataFrame, path, or list of them, optional
    low_pass, high_pass : float, optional
        Cutoffs in Hz (need ``t_r``).
    t_r : float, optional
        Repetition time in seconds. Required when filtering: as in nilearn, the header's value
        is not taken silently (the error quotes it).
    ensure_finite : bool, default=False
    mask_img : 3D image, optional
    **kwargs
        ``clean__*`` keywords for :func:`lazymask.signal.clean`.

    Returns
    -------
    xarray.DataArray
        The lazy cleaned 4D image.

    Examples
    --------
    >>> from lazymask.testing import fake_fmri
    >>> cleaned = clean_img(fake_fmri(shape=(6, 6, 6), n_volumes=20), detrend=True)
    >>> cleaned.shape
    (6, 6, 6, 20)
    """
    from lazymask.signal import clean

    image = as_image(imgs, "imgs", ndim=(4,))
    if (low_pass is not None or high_pass is not None) and t_r is None:
        raise ParameterError(
            "Repetition time (t_r) must be specified for filtering. You specified None. "
            f"imgs header suggest it to be {get_t_r(image)}"
        )
    clean_kwargs = {key[len("clean__"):]: value for key, value in kwargs.items() if key.startswith("clean__")}
    signals = _voxel_signals(image, mask_img)
    cleaned = clean(signals, runs=runs, detrend=detrend, standardize=standardize, confounds=confounds,
                    low_pass=low_pass, high_pass=high_pass, t_r=t_r, ensure_finite=ensure_finite,
                    **clean_kwargs)
    if mask_img is not None:
        from lazymask.masking import unmask

        return unmask(cleaned, mask_img)
    cleaned = da.asarray(cleaned)
    volumes = cleaned.T.reshape(*image.shape[:3], cleaned.shape[0])
    return image_dataarray(volumes, get_affine(image), t_r=get_t_r(image))


def high_variance_confounds(imgs, n_confounds: int = 5, percentile: float = 2.0, detrend: bool = True,
                            mask_img=None):
    """Confounds from the voxels of highest variance of a 4D image (nilearn's), as a lazy array.

    The voxels (inside ``mask_img``, or all of them) are passed to
    :func:`lazymask.signal.high_variance_confounds`: the ``percentile`` % of highest variance are
    kept and their ``n_confounds`` leading singular vectors returned.

    Parameters
    ----------
    imgs : 4D image
    n_confounds : int, default=5
    percentile : float, default=2.0
    detrend : bool, default=True
    mask_img : 3D image, optional

    Returns
    -------
    dask.array.Array, shape (n_time, n_confounds)
        Lazy; ``.compute()`` gives the numpy array nilearn returns.

    Examples
    --------
    >>> from lazymask.testing import fake_fmri
    >>> high_variance_confounds(fake_fmri(shape=(6, 6, 6), n_volumes=20), n_confounds=2).shape
    (20, 2)
    """
    from lazymask.signal import high_variance_confounds as signal_confounds

    image = as_image(imgs, "imgs", ndim=(4,))
    return signal_confounds(_voxel_signals(image, mask_img), n_confounds=n_confounds,
                            percentile=percentile, detrend=detrend)
