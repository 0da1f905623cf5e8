"""NiftiMasker: voxel signals inside a brain mask, as a lazy ``(time, voxel)`` DataArray.

Reads per ``fit_transform`` of a run (a mask computed from the data, ``reports=True``): one pass
for the mean (it gives both the mask and the report's background image) and one for the
extraction; nilearn decompresses a ``.nii.gz`` about 2.5 times. With ``high_variance_confounds``
add two passes (the variance reduction and the Gram matrix over all voxels).
"""

from __future__ import annotations

import inspect
import warnings
from functools import partial

import dask
import numpy as np
import xarray as xr

from lazymask.exceptions import ImageMismatchError, ParameterError
from lazymask.image._inputs import as_image
from lazymask.image._mean import time_mean_volume
from lazymask.image._resample import check_resample_inputs, resample_array
from lazymask.io import get_affine, image_dataarray
from lazymask.masking import apply_mask, compute_background_mask, compute_brain_mask, compute_epi_mask, unmask
from lazymask.masking._volumes import load_mask
from lazymask.maskers._base import BaseMasker

MASK_STRATEGIES = ("background", "epi", "whole-brain-template", "gm-template", "wm-template")


def mask_function(strategy: str, multi: bool = False):
    """The ``lazymask.masking`` function computing a mask for ``mask_strategy``."""
    from lazymask import masking

    single = {"background": compute_background_mask, "epi": compute_epi_mask}
    several = {"background": masking.compute_multi_background_mask, "epi": masking.compute_multi_epi_mask}
    brain = masking.compute_multi_brain_mask if multi else compute_brain_mask
    functions = dict(several if multi else single)
    for name, mask_type in (("whole-brain-template", "whole-brain"), ("gm-template", "gm"), ("wm-template", "wm")):
        functions[name] = partial(brain, mask_type=mask_type)
    if strategy not in functions:
        raise ParameterError(
            f"mask_strategy={strategy!r}: expected one of {list(MASK_STRATEGIES)} "
            "(or pass a mask in mask_img)."
        )
    return functions[strategy]


def supported_mask_args(function, mask_args: dict | None, strategy: str, excluded=("imgs",)) -> dict:
    """The entries of ``mask_args`` ``function`` accepts; warns about the others (as nilearn)."""
    target = function.func if isinstance(function, partial) else function
    accepted = set(inspect.signature(target).parameters) - set(excluded)
    kept = {k: v for k, v in (mask_args or {}).items() if k in accepted}
    skipped = [k for k in (mask_args or {}) if k not in accepted]
    if skipped:
        warnings.warn(
            f"mask_args {skipped} are not parameters of the masking strategy {strategy!r} "
            f"({target.__name__}); they are ignored.", UserWarning, stacklevel=4,
        )
    return kept


def _check_dtype(value):
    if value is None or (isinstance(value, str) and value == "auto"):
        return None
    try:
        np.dtype(value)
    except TypeError:
        return "expected None, 'auto' or a numpy dtype."
    return None


class NiftiMasker(BaseMasker):
    """Extract voxel time series inside a mask, lazily, as nilearn's ``NiftiMasker`` does.

    The parameters, their defaults and the numbers are nilearn 0.14's. ``fit`` computes the mask
    (one pass over the data for the ``"background"``/``"epi"`` strategies, none for templates);
    ``transform`` builds a dask graph and computes nothing: resampling onto the mask's grid,
    smoothing, masking (blockwise over time chunks) and cleaning (:func:`lazymask.signal.clean`)
    happen when the result is computed, written to zarr (:func:`lazymask.maskers.save_signals`)
    or plotted.

    Parameters
    ----------
    mask_img : image, optional
        A binary 3D mask; computed by ``fit`` from the data (``mask_strategy``) when omitted.
    runs : array-like of shape (n_time,), optional
        A run label per volume; each run is cleaned on its own.
    smoothing_fwhm : float or sequence of 3 floats, optional
        Gaussian smoothing (FWHM, mm) of each volume before masking.
    standardize : {"zscore_sample", "zscore", "psc", True, False, None}, default=False
        Scaling of each series (see :func:`lazymask.signal.clean`).
    standardize_confounds : bool, default=True
        z-score the confounds before regressing them out.
    detrend : bool, default=False
        Remove each series' linear trend.
    high_variance_confounds : bool, default=False
        Add the 5 components of the 2 % highest-variance voxels of the whole image (all voxels,
        as ``nilearn.image.high_variance_confounds``) to the confounds.
    low_pass, high_pass : float, optional
        Butterworth cutoffs in Hz (need ``t_r``).
    t_r : float, optional
        Repetition time in seconds; defaults to the images' header for the ``time`` coordinate.
    target_affine : array (3, 3) or (4, 4), optional
        Resample the mask (nearest) and the images (continuous) to this affine.
    target_shape : tuple of 3 int, optional
        Resample to this shape (with ``target_affine``).
    mask_strategy : {"background", "epi", "whole-brain-template", "gm-template", "wm-template"}, default="background"
        How ``fit`` computes the mask when ``mask_img`` is None.
    mask_args : dict, optional
        Extra arguments of the masking function (e.g. ``{"opening": 1}``); others are ignored
        with a warning.
    dtype : numpy dtype, "auto" or None, default=None
        Output dtype; None keeps the pipeline's (float32 for integer images); "auto": int32 for
        integer images, float32 otherwise.
    memory : None, str, pathlib.Path or joblib.Memory, default=None
        Cache directory for the computed mask (see :mod:`lazymask.masking`).
    memory_level : int, default=1
        Accepted for compatibility (lazymask caches masks only).
    verbose : int, default=0
        Accepted for compatibility.
    reports : bool, default=True
        Keep the mean image (computed with the mask) for :meth:`generate_report`.
    cmap : str, default="gray"
        Accepted for compatibility (the report's background is grey).
    clean_args : dict, optional
        More options for :func:`lazymask.signal.clean` (``filter``, ``ensure_finite``,
        ``butterworth__order``, ...).

    Attributes
    ----------
    mask_img_ : xarray.DataArray
        The mask (3D int8) on the grid signals are extracted on.
    affine_ : numpy.ndarray
        ``target_affine`` when given, else the mask's affine.
    n_elements_ : int
        Number of voxels in the mask.
    clean_args_ : dict
        ``clean_args`` or ``{}``.

    Examples
    --------
    >>> masker = NiftiMasker(mask_strategy="epi", detrend=True, t_r=2.0)   # doctest: +SKIP
    >>> signals = masker.fit_transform("bold.nii.gz")     # lazy              # doctest: +SKIP
    >>> save_signals(signals, "signals.zarr")             # computes, streams # doctest: +SKIP
    """

    _parameter_constraints = {
        "mask_strategy": MASK_STRATEGIES,
        "mask_args": (None, dict),
        "dtype": _check_dtype,
    }

    def __init__(
        self,
        mask_img=None,
        runs=None,
        smoothing_fwhm=None,
        standardize=False,
        standardize_confounds=True,
        detrend=False,
        high_variance_confounds=False,
        low_pass=None,
        high_pass=None,
        t_r=None,
        target_affine=None,
        target_shape=None,
        mask_strategy="background",
        mask_args=None,
        dtype=None,
        memory=None,
        memory_level=1,
        verbose=0,
        reports=True,
        cmap="gray",
        clean_args=None,
    ):
        self.mask_img = mask_img
        self.runs = runs
        self.smoothing_fwhm = smoothing_fwhm
        self.standardize = standardize
        self.standardize_confounds = standardize_confounds
        self.detrend = detrend
        self.high_variance_confounds = high_variance_confounds
        self.low_pass = low_pass
        self.high_pass = high_pass
        self.t_r = t_r
        self.target_affine = target_affine
        self.target_shape = target_shape
        self.mask_strategy = mask_strategy
        self.mask_args = mask_args
        self.dtype = dtype
        self.memory = memory
        self.memory_level = memory_level
        self.verbose = verbose
        self.reports = reports
        self.cmap = cmap
        self.clean_args = clean_args

    # -- fit --------------------------------------------------------------------------------------
    def _fit(self, imgs):
        if self.target_affine is not None or self.target_shape is not None:
            check_resample_inputs(self.target_affine, self.target_shape, "nearest")
        images = self._fit_images(imgs)
        mean = self._report_mean(images)
        if self.mask_img is not None:
            if images is not None:
                warnings.warn(
                    f"[{type(self).__name__}.fit] a mask was given at masker creation: it is used "
                    "and no mask is computed from imgs.", RuntimeWarning, stacklevel=3,
                )
            mask, mask_affine = load_mask(self.mask_img, "mask_img")
        elif images is None:
            raise ParameterError(
                f"{type(self).__name__}.fit() needs imgs when mask_img is None: pass the images to "
                f"compute a mask from (mask_strategy={self.mask_strategy!r}) or give mask_img."
            )
        else:
            mask_input = images if mean is None else self._mean_images(images, mean)
            mask_image = self._compute_mask(mask_input)
            mask, mask_affine = np.asarray(mask_image.values, dtype=bool), get_affine(mask_image)
        self._set_mask(mask, mask_affine, mean, images)
        return self

    def _fit_images(self, imgs):
        if imgs is None:
            return None
        return as_image(imgs, "imgs")

    def _mean_images(self, images, means):
        """Stand-ins for the fitted images: their means, when the mask is computed from means."""
        return image_dataarray(means[0], get_affine(images))

    def _uses_mean(self) -> bool:
        return self.mask_img is None and self.mask_strategy in ("background", "epi")

    def _report_mean(self, images):
        """The mean image(s) when one pass computes them for both the mask and the report."""
        if images is None or not (self.reports or self._uses_mean()):
            return None
        if not self._uses_mean():
            return None  # computed when a report is asked for (the mask needs no data pass)
        return [np.asarray(m) for m in dask.compute(time_mean_volume(images))]

    def _compute_mask(self, images) -> xr.DataArray:
        function = mask_function(self.mask_strategy)
        mask_args = supported_mask_args(function, self.mask_args, self.mask_strategy)
        return function(images, memory=self.memory, **mask_args)

    def _set_mask(self, mask: np.ndarray, mask_affine, means, images) -> None:
        original = (mask, np.asarray(mask_affine, dtype=float))
        if self.target_affine is not None:
            resampled, affine = resample_array(mask.astype(np.int8), mask_affine, self.target_affine,
                                               self.target_shape, interpolation="nearest")
            mask, mask_affine = resampled != 0, affine
        if not mask.any():
            raise ParameterError(
                "the mask is empty (no voxel on) after resampling to target_affine/target_shape; "
                "check that the target grid covers the mask."
            )
        self.mask_img_ = image_dataarray(mask.astype(np.int8), mask_affine, name="mask")
        self.affine_ = np.asarray(self.target_affine if self.target_affine is not None else mask_affine,
                                  dtype=float)
        self.n_elements_ = int(mask.sum())
        self._reporting = None
        if self.reports:
            self._reporting = {
                "mean": None if means is None else means[0],
                "mean_affine": None if images is None else get_affine(images),
                "lazy_images": images if means is None else None,
                "original": original if not np.array_equal(original[0].shape, mask.shape)
                or not np.allclose(original[1], mask_affine) else None,
            }

    # -- transform --------------------------------------------------------------------------------
    def _target_grid(self):
        return get_affine(self.mask_img_), tuple(self.mask_img_.shape)

    def _check_resamplable(self, image, target_affine, target_shape) -> None:
        if self.target_affine is None and np.allclose(get_affine(image), target_affine):
            raise ImageMismatchError(
                f"mask_img has shape {tuple(target_shape)} but imgs has spatial shape "
                f"{tuple(image.shape[:3])} with the same affine, so they do not cover the same field of "
                "view; pass target_affine and target_shape to resample both, or a mask on the images' grid."
            )

    def _extract(self, img4d: xr.DataArray) -> xr.DataArray:
        return apply_mask(img4d, self.mask_img_)

    def _inverse(self, signals):
        return unmask(signals, self.mask_img_)

    # -- reports & persistence --------------------------------------------------------------------
    def _report(self):
        from lazymask.reporting import mask_report

        mask = np.asarray(self.mask_img_.values, dtype=bool)
        affine = get_affine(self.mask_img_)
        reporting = getattr(self, "_reporting", None) or {}
        mean = self._report_background(reporting, mask.shape, affine)
        original = reporting.get("original")
        return mask_report(
            mean, mask, affine,
            original_mask=None if original is None else original[0],
            original_affine=None if original is None else original[1],
            parameters=self.json_parameters(), title=type(self).__name__,
        )

    def _report_background(self, reporting: dict, shape, affine):
        """The mean image on the mask's grid (computed now if fit did not need it), or None."""
        mean = reporting.get("mean")
        if mean is None and reporting.get("lazy_images") is not None:
            (mean,) = dask.compute(time_mean_volume(reporting["lazy_images"]))
            reporting["mean"], reporting["lazy_images"] = np.asarray(mean), None
            mean = reporting["mean"]
        if mean is None:
            return None
        mean_affine = reporting["mean_affine"]
        if mean.shape != tuple(shape) or not np.allclose(mean_affine, affine):
            mean, _ = resample_array(np.asarray(mean, dtype=float), mean_affine, affine, shape)
        return mean

    def _spatial_arrays(self) -> dict[str, xr.DataArray]:
        return {"mask": self.mask_img_}

    @classmethod
    def _from_store(cls, parameters: dict, arrays: dict[str, xr.DataArray]):
        params = {k: v for k, v in parameters.items() if k in inspect.signature(cls).parameters}
        params["mask_img"] = None
        masker = cls(**{**params, "reports": False})
        masker.set_params(mask_img=image_dataarray(np.asarray(arrays["mask"].values), get_affine(arrays["mask"])))
        for name in ("target_affine", "target_shape"):
            if isinstance(params.get(name), list):
                setattr(masker, name, np.asarray(params[name]) if name == "target_affine" else tuple(params[name]))
        masker.fit()
        return masker

