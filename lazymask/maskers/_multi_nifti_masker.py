"""MultiNiftiMasker: one mask for several runs, a lazy DataArray per run.

``fit`` computes every run's mean in one ``dask.compute`` (the scheduler reads the runs
concurrently; ``fit_transform`` computes them in the same ``dask.persist`` that keeps the runs
that fit in the memory budget: one pass over every run, each decompressed once for both) and
intersects the per-run masks as nilearn's ``compute_multi_*_mask`` do;
``transform`` returns a list of lazy DataArrays, so ``dask.compute(*signals)`` (or
``save_signals(signals, store, groups)``, one group per run, the runs of a memory-budget window in
one compute) lets the scheduler work on several runs at once.
"""

from __future__ import annotations

import warnings

from lazymask.exceptions import ParameterError
from lazymask.image import as_image, check_same_grid, is_image_list, known_time_means, time_mean_volume
from lazymask.io import get_affine, image_dataarray, persist_within_budget
from lazymask.masking import accepted_arguments, mask_strategy, mask_strategy_arguments
from lazymask.maskers._runs import check_per_run_type, per_run
from lazymask.maskers._nifti_masker import NiftiMasker


class MultiNiftiMasker(NiftiMasker):
    """:class:`NiftiMasker` for a list of runs, as nilearn's ``MultiNiftiMasker``.

    Same parameters as :class:`NiftiMasker` plus ``n_jobs`` (accepted for compatibility:
    parallelism comes from the dask scheduler, e.g. a ``distributed.Client``). A list of runs
    gives a list of lazy DataArrays; ``confounds`` and ``sample_mask`` are then lists with one
    entry per run. A single image is transformed as :class:`NiftiMasker` does.

    Parameters
    ----------
    n_jobs : int, default=1
        Accepted for compatibility with nilearn; the dask scheduler decides the parallelism.
    mask_img, runs, smoothing_fwhm, standardize, standardize_confounds, detrend, high_variance_confounds, low_pass, high_pass, t_r, target_affine, target_shape, mask_strategy, mask_args, dtype, memory, memory_level, verbose, reports, cmap, clean_args
        As in :class:`NiftiMasker`; ``mask_strategy`` computes one mask common to all runs.

    Examples
    --------
    >>> masker = MultiNiftiMasker(mask_strategy="epi", standardize="zscore_sample")  # doctest: +SKIP
    >>> signals = masker.fit_transform(["run-1.nii.gz", "run-2.nii.gz"])  # lazy   # doctest: +SKIP
    >>> import dask; computed = dask.compute(*signals)   # both runs at once       # doctest: +SKIP
    """

    _allow_empty_mask = True  # as nilearn's: a template mask may miss the runs' field of view

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
        memory_level=0,
        n_jobs=1,
        verbose=0,
        reports=True,
        cmap="gray",
        clean_args=None,
    ):
        super().__init__(
            mask_img=mask_img, runs=runs, smoothing_fwhm=smoothing_fwhm, standardize=standardize,
            standardize_confounds=standardize_confounds, detrend=detrend,
            high_variance_confounds=high_variance_confounds, low_pass=low_pass, high_pass=high_pass,
            t_r=t_r, target_affine=target_affine, target_shape=target_shape,
            mask_strategy=mask_strategy, mask_args=mask_args, dtype=dtype, memory=memory,
            memory_level=memory_level, verbose=verbose, reports=reports, cmap=cmap, clean_args=clean_args,
        )
        self.n_jobs = n_jobs

    # -- fit: several runs ------------------------------------------------------------------------
    def _fit_images(self, imgs):
        if imgs is None or not is_image_list(imgs):
            return super()._fit_images(imgs)
        if len(imgs) == 0:
            raise ParameterError("imgs is an empty list: pass at least one run.")
        images = [as_image(img, f"imgs[{index}]") for index, img in enumerate(imgs)]
        if self.target_affine is None and self.mask_img is None:  # a given mask_img: runs resampled to it
            check_same_grid(images, "imgs")
        return images

    def _strategy(self):
        if self.mask_strategy == "template":  # nilearn's deprecated name (warned about in _compute_mask)
            return mask_strategy("whole-brain-template")
        return super()._strategy()

    def _mean_images(self, images, means):
        if not isinstance(images, list):
            return super()._mean_images(images, means)
        return [image_dataarray(mean, get_affine(image)) for mean, image in zip(means, images, strict=True)]

    def _compute_mask(self, images):
        if not isinstance(images, list):
            images = [images]
        if self.mask_strategy == "template":
            warnings.warn("Masking strategy 'template' is deprecated. Please use 'whole-brain-template' instead.",
                          UserWarning, stacklevel=5)
        function = self._strategy().multi
        accepted = accepted_arguments(function)
        mask_args = {name: getattr(self, name) for name in ("target_affine", "target_shape")
                     if getattr(self, name) is not None and name in accepted}
        mask_args.update(mask_strategy_arguments(function, self.mask_args, self.mask_strategy))
        return function(images, memory=self.memory, **mask_args)

    # -- transform: a list of runs ----------------------------------------------------------------
    def transform(self, imgs, confounds=None, sample_mask=None):
        """Signals of each run (a list of lazy DataArrays), or of one image (one DataArray).

        Parameters
        ----------
        imgs : image or list of images
            Runs to transform.
        confounds : list, optional
            One entry per run (None, an array, a DataFrame, a path or a list of these).
        sample_mask : list, optional
            One entry per run.

        Returns
        -------
        list of xarray.DataArray, or xarray.DataArray for a single image
        """
        self._check_fitted()
        check_per_run_type(confounds, "confounds")
        check_per_run_type(sample_mask, "sample_mask")
        if not is_image_list(imgs):  # one image: its confounds and sample mask, or a list of one
            return super().transform(imgs, confounds=confounds[0] if isinstance(confounds, list) else confounds,
                                     sample_mask=sample_mask[0] if isinstance(sample_mask, list) else sample_mask)
        confounds = per_run(confounds, len(imgs), "confounds")
        sample_mask = per_run(sample_mask, len(imgs), "sample_mask")
        self._log_extraction()
        return [
            self._transform_one(img, run_confounds, run_mask, add_hv_first=False, cast=False)
            for img, run_confounds, run_mask in zip(imgs, confounds, sample_mask, strict=True)
        ]

    def transform_imgs(self, imgs_list, confounds=None, sample_mask=None, copy=True, n_jobs=1):
        """Signals of each run of ``imgs_list``: one lazy DataArray per run (nilearn's method).

        Parameters
        ----------
        imgs_list : list of images
            Runs to transform.
        confounds : list, optional
            One entry per run.
        sample_mask : list, optional
            One entry per run.
        copy : bool, default=True
            Accepted for nilearn compatibility: lazymask never modifies its input.
        n_jobs : int, default=1
            Accepted for nilearn compatibility: dask schedules the work.

        Returns
        -------
        list of xarray.DataArray

        Examples
        --------
        >>> import numpy as np, nibabel as nib
        >>> from lazymask.maskers import MultiNiftiMasker
        >>> img = nib.Nifti1Image(np.random.default_rng(0).random((5, 5, 5, 3)), np.eye(4))
        >>> mask = nib.Nifti1Image(np.ones((5, 5, 5), "i1"), np.eye(4))
        >>> [s.shape for s in MultiNiftiMasker(mask_img=mask).fit().transform_imgs([img, img])]
        [(3, 125), (3, 125)]
        """
        del copy, n_jobs
        self._check_fitted()
        return self.transform(list(imgs_list), confounds=confounds, sample_mask=sample_mask)

    def fit_transform(self, imgs, y=None, confounds=None, sample_mask=None, **fit_params):
        """``fit(imgs)`` then ``transform(imgs, ...)`` (each run opened once, headers only).

        As :meth:`NiftiMasker.fit_transform`: runs within ``config.get("memory_budget")`` (taken
        in order) are decoded once, for the masks' means and the extraction; the means of every
        run are computed in that same ``dask.persist`` (one pass, the runs read concurrently).
        """
        self._validate_parameters()
        opened = [self._open(img) for img in imgs] if is_image_list(imgs) else imgs
        known = []
        if isinstance(opened, list) and opened and self._fit_reads_data():
            self._fit_images(opened)  # bad grids fail now, before any voxel is read
            known = persist_within_budget(opened, derived=time_mean_volume)  # one pass: runs kept, all means
            opened = [image for image, _ in known]
        with warnings.catch_warnings(), known_time_means(known):
            warnings.filterwarnings("ignore", message=r".*mask was given at masker creation.*")
            self.fit(opened, y, **fit_params)
        return self.transform(opened, confounds=confounds, sample_mask=sample_mask)

