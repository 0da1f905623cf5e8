"""NiftiMasker: voxel signals inside a brain mask, as a lazy ``(time, voxel)`` DataArray.

Reads per ``fit_transform`` of a run (a mask computed from the data, ``reports=True``): one
decompression. The run is decoded once and kept in memory when it fits the memory budget
(``lazymask.config``), and both the mean (it gives both the mask and the report's background image)
and the extraction use it; a larger run is read twice, the second time from the run cache when it is
on (:mod:`lazymask.io._runcache`). nilearn decompresses a ``.nii.gz`` about 2.5 times. With ``high_variance_confounds``
add two passes (the variance reduction and the Gram matrix over all voxels).
"""

from __future__ import annotations

import inspect
import warnings

import dask
import numpy as np
import xarray as xr

from lazymask.exceptions import DimensionError, ParameterError
from lazymask.image import as_image, check_resample_inputs, is_image_list, resample_array, time_mean_volume
from lazymask.io import get_affine, image_dataarray
from lazymask.masking import (
    apply_mask,
    in_memory_signals,
    mask_strategy,
    mask_strategy_arguments,
    output_dtype,
    unmask,
)
from lazymask.signal import feature_chunks
from lazymask.maskers._base import BaseMasker
from lazymask.maskers._region_base import load_region_mask


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
        How ``fit`` computes the mask when ``mask_img`` is None (the names of
        :data:`lazymask.masking.MASK_STRATEGIES`).
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
        Keep the mean image (``mean_img_``) for :meth:`generate_report`.
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
    mean_img_ : xarray.DataArray or None
        The mean over time of the (first) fitted run, on that run's grid: in memory when ``fit``
        computed it for the mask (``"background"``/``"epi"``), else lazy (the report computes it
        and does not keep it). None when ``fit`` had no image or ``reports=False``.
    mask_img_before_resampling_ : xarray.DataArray or None
        The mask before ``target_affine``/``target_shape`` resampled it (None when they did not
        change its grid); the report draws both outlines.

    Examples
    --------
    >>> masker = NiftiMasker(mask_strategy="epi", detrend=True, t_r=2.0)   # doctest: +SKIP
    >>> signals = masker.fit_transform("bold.nii.gz")     # lazy              # doctest: +SKIP
    >>> save_signals(signals, "signals.zarr")             # computes, streams # doctest: +SKIP
    """

    _allow_empty_mask = False  # nilearn's NiftiMasker refuses an empty mask, its MultiNiftiMasker not

    _parameter_constraints = {
        "runs": [None, "array-like"],
        "target_affine": [None, "array-like"],
        "target_shape": [None, "array-like"],
        "mask_strategy": [str],  # checked at fit, when a mask is computed (nilearn's message)
        "mask_args": [None, dict],
        "cmap": [None, str, callable],
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
        means = self._fit_means(images)
        if self.mask_img is not None:
            if images is not None:
                warnings.warn(
                    f"[{type(self).__name__}.fit] Generation of a mask has been requested (imgs != None) "
                    "while a mask was given at masker creation. Given mask will be used.",
                    RuntimeWarning, stacklevel=3,
                )
            # as nilearn's maskers read it: any non-zero value inside, a 4D image the voxels on in every volume
            mask, mask_affine = load_region_mask(self.mask_img)
        elif images is None:
            raise ParameterError(
                f"Parameter 'imgs' must be provided to {type(self).__name__}.fit() if no mask is passed "
                f"to mask_img: pass the images to compute a mask from (mask_strategy={self.mask_strategy!r})."
            )
        else:
            mask_input = images if means is None else self._mean_images(images, means)
            mask_image = self._compute_mask(mask_input)
            mask, mask_affine = np.asarray(mask_image.values, dtype=bool), get_affine(mask_image)
        self._set_mask(mask, mask_affine)
        self.mean_img_ = self._fitted_mean(images, means)
        return self

    def _fit_images(self, imgs):
        if imgs is None:
            return None
        return as_image(_volume_list(imgs), "imgs")

    def _open(self, imgs):
        return super()._open(_volume_list(imgs))

    def _mean_images(self, images, means):
        """Stand-ins for the fitted images: their means, when the mask is computed from means."""
        return image_dataarray(means[0], get_affine(images))

    def _fit_reads_data(self) -> bool:
        return self._uses_mean()

    def _uses_mean(self) -> bool:
        return self.mask_img is None and self._strategy().uses_mean

    def _strategy(self):
        """The :class:`lazymask.masking.MaskStrategy` of ``mask_strategy`` (unknown: nilearn's error)."""
        return mask_strategy(self.mask_strategy)

    def _fit_means(self, images) -> list[np.ndarray] | None:
        """The mean volume of each fitted run, computed in one pass, when the mask is computed from them."""
        if images is None or not self._uses_mean():
            return None
        runs = images if isinstance(images, list) else [images]
        return [np.asarray(m) for m in dask.compute(*[time_mean_volume(run) for run in runs])]

    def _fitted_mean(self, images, means) -> xr.DataArray | None:
        """``mean_img_``: the first run's mean (computed when ``fit`` needed it, else lazy)."""
        if images is None or not self.reports:
            return None
        first = images[0] if isinstance(images, list) else images
        if means is not None:
            return image_dataarray(means[0], get_affine(first), name="mean_img")
        return image_dataarray(time_mean_volume(first), get_affine(first), name="mean_img")

    def _compute_mask(self, images) -> xr.DataArray:
        function = self._strategy().single
        mask_args = mask_strategy_arguments(function, self.mask_args, self.mask_strategy)
        return function(images, memory=self.memory, **mask_args)

    def _empty_mask_message(self, on_before_resampling: bool) -> str:
        """Say where the mask became empty: the given mask_img, the strategy, or the resampling."""
        return "The mask is invalid as it is empty: it masks all data; " + self._empty_mask_reason(on_before_resampling)

    def _empty_mask_reason(self, on_before_resampling: bool) -> str:
        if on_before_resampling:
            return (f"the mask is empty (no voxel on) after resampling to target_affine/target_shape "
                    f"(target_shape={self.target_shape}); check that the target grid covers the mask.")
        if self.mask_img is not None:
            return "mask_img is empty (no voxel on); pass a mask with at least one voxel on."
        return (f"the mask computed with mask_strategy={self.mask_strategy!r} and "
                f"mask_args={self.mask_args!r} is empty (no voxel on); loosen mask_args (for 'epi': "
                "lower_cutoff/upper_cutoff, opening) or pass mask_img.")

    def _set_mask(self, mask: np.ndarray, mask_affine) -> None:
        original = (mask, np.asarray(mask_affine, dtype=float))
        if self.target_affine is not None:
            resampled, affine = resample_array(mask.astype(np.int8), mask_affine, self.target_affine,
                                               self.target_shape, interpolation="nearest")
            mask, mask_affine = resampled != 0, affine
        if not mask.any() and not self._allow_empty_mask:
            raise ParameterError(self._empty_mask_message(original[0].any()))
        self.mask_img_ = image_dataarray(mask.astype(np.int8), mask_affine, name="mask")
        self.affine_ = np.asarray(self.target_affine if self.target_affine is not None else mask_affine,
                                  dtype=float)
        self.n_elements_ = int(mask.sum())
        changed = original[0].shape != mask.shape or not np.allclose(original[1], mask_affine)
        self.mask_img_before_resampling_ = (
            image_dataarray(original[0].astype(np.int8), original[1], name="mask") if changed else None
        )

    # -- transform --------------------------------------------------------------------------------
    def _needs_cleaning(self, confounds, sample_mask) -> bool:
        # nilearn always cleans: with runs alone, clean checks them and stacks the runs by label
        return super()._needs_cleaning(confounds, sample_mask) or self.runs is not None

    def _target_grid(self):
        return get_affine(self.mask_img_), tuple(self.mask_img_.shape)

    def _check_resamplable(self, image, target_affine, target_shape) -> None:
        warnings.warn(
            "imgs are being resampled to the mask_img resolution. This process is memory intensive. "
            "You might want to provide a target_affine that is equal to the affine of the imgs or "
            "resample the mask beforehand to save memory and computation time.",
            UserWarning, stacklevel=4,
        )

    def _extract(self, img4d: xr.DataArray) -> xr.DataArray:
        return apply_mask(img4d, self.mask_img_)

    def _extract_whole_time(self, img4d: xr.DataArray) -> xr.DataArray | None:
        # A run kept in memory (fit_transform within the memory budget) is gathered straight into
        # the whole-time voxel blocks cleaning works on: no time-chunked signals to regroup.
        itemsize = output_dtype("f", img4d.dtype).itemsize
        return in_memory_signals(img4d, self.mask_img_,
                                 lambda n_voxels: feature_chunks(img4d.shape[3], (n_voxels,), itemsize))

    def _inverse(self, signals):
        return unmask(signals, self.mask_img_)

    # -- persistence ------------------------------------------------------------------------------
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


def _volume_list(imgs):
    """``imgs``, checked as nilearn checks a list given for one image: 3D volumes (or 4D of one volume).

    A list of 4D runs is one 5D input to nilearn (a ``DimensionError``); a
    :class:`MultiNiftiMasker` takes one run per list entry.
    """
    if not is_image_list(imgs):
        return imgs
    opened = [as_image(img, f"imgs[{index}]") for index, img in enumerate(imgs)]
    for index, image in enumerate(opened):
        if image.ndim == 4 and image.shape[3] != 1:
            error = DimensionError(
                4, 3, f"imgs[{index}] is a 4D run of shape {tuple(image.shape)}: a list given for one image "
                "holds 3D volumes; concatenate the runs (lazymask.image.concat_imgs) or use MultiNiftiMasker.")
            error.increment_stack_counter()
            raise error
    return imgs
