"""Signals of (probabilistic, possibly overlapping) maps: ``NiftiMapsMasker`` and its Multi twin.

The signals are nilearn's least-squares fit of the maps to each volume (see
:func:`lazymask.regions.img_to_signals_maps`): the operator is built once at fit, then each time
chunk costs one product. Maps that need resampling are resampled once, during ``fit``, while
their ``(map, voxel)`` matrix is read; the fitted matrix then serves ``inverse_transform``.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import xarray as xr

from lazymask.exceptions import ImageMismatchError, ParameterError
from lazymask.image import as_image
from lazymask.io import Grid, get_affine
from lazymask.maskers._region_base import (
    Extraction,
    MultiMixin,
    RegionMasker,
    check_allowed,
    check_same_grids,
    image_grid,
    load_region_mask,
    missing_image,
    resample_nearest,
)
from lazymask.masking import mask_dataarray
from lazymask.regions import (
    maps_expansion,
    maps_matrix,
    masked_maps_operator,
    resample_maps,
    signals_to_image,
    warn_keep_masked_maps,
)

__all__ = ["NiftiMapsMasker", "MultiNiftiMapsMasker"]


class NiftiMapsMasker(RegionMasker):
    """Signals of 4D maps (one volume per region), lazily (nilearn's ``NiftiMapsMasker``).

    Each volume's signals are the least-squares coefficients of the maps, as in nilearn 0.14.

    Parameters
    ----------
    maps_img : 4D image
        The maps, one per volume (probabilistic atlas, ICA components...).
    mask_img : image, optional
        Voxels outside it are ignored; maps left empty by it are dropped (with a warning).
    allow_overlap : bool, default=True
        If False, maps that share a voxel are an error.
    smoothing_fwhm, standardize, standardize_confounds, high_variance_confounds, detrend, low_pass, high_pass, t_r, dtype, clean_args
        Preprocessing and cleaning, as in :class:`lazymask.maskers.NiftiMasker`.
    resampling_target : {"data", "mask", "maps", None}, default="data"
        Which grid extraction happens on; ``None`` requires every image on one grid.
    keep_masked_maps : bool, default=False
        Deprecated in nilearn 0.14 (a FutureWarning at transform when there is a mask, as there):
        keep the maps that ``mask_img`` empties, with signals of 0.
    memory, memory_level, verbose, reports
        Accepted for compatibility.

    Attributes
    ----------
    maps_img_ : xarray.DataArray
        The maps on the grid of extraction (lazy).
    mask_img_ : xarray.DataArray or None
    n_elements_ : int
        Number of maps.
    mean_img_ : xarray.DataArray or None
        Lazy mean of the fitted images, for the report.

    Examples
    --------
    >>> masker = NiftiMapsMasker("difumo1024.nii.gz")       # doctest: +SKIP
    >>> signals = masker.fit_transform("bold.nii.gz")       # doctest: +SKIP
    """

    _parameter_constraints = {
        "maps_img": "no_validation",  # an image
        "allow_overlap": ["boolean"],
        "resampling_target": "no_validation",  # checked at fit, with nilearn's messages
        "keep_masked_maps": ["boolean"],
    }

    def __init__(self, maps_img=None, mask_img=None, allow_overlap=True, smoothing_fwhm=None,
                 standardize=False, standardize_confounds=True, high_variance_confounds=False,
                 detrend=False, low_pass=None, high_pass=None, t_r=None, dtype=None,
                 resampling_target="data", keep_masked_maps=False, memory=None, memory_level=0, verbose=0,
                 reports=True, clean_args=None):
        self.maps_img = maps_img
        self.mask_img = mask_img
        self.allow_overlap = allow_overlap
        self.smoothing_fwhm = smoothing_fwhm
        self.standardize = standardize
        self.standardize_confounds = standardize_confounds
        self.high_variance_confounds = high_variance_confounds
        self.detrend = detrend
        self.low_pass = low_pass
        self.high_pass = high_pass
        self.t_r = t_r
        self.dtype = dtype
        self.resampling_target = resampling_target
        self.keep_masked_maps = keep_masked_maps
        self.memory = memory
        self.memory_level = memory_level
        self.verbose = verbose
        self.reports = reports
        self.clean_args = clean_args

    _spatial_params = ("maps_img", "mask_img")
    _spatial_word = "maps"

    # -- fit ------------------------------------------------------------------------------------------
    def _fit(self, imgs):
        check_allowed(self.resampling_target, ("mask", "maps", "data", None), "resampling_target")
        if self.resampling_target == "mask" and self.mask_img is None:
            raise ParameterError("resampling_target has been set to 'mask' but no mask has been provided: "
                                 "pass a mask_img or another resampling_target.")
        if self.maps_img is None:
            raise missing_image("maps_img", "the maps (a 4D image, one volume per map)")
        maps = as_image(self.maps_img, "maps_img", ndim=(3, 4))
        if maps.ndim == 3:  # one map, as nilearn reads a 3D maps image
            maps = maps.expand_dims("time", axis=3)
        mask = load_region_mask(self.mask_img) if self.mask_img is not None else None
        mask_grid = None if mask is None else Grid(mask[0].shape, mask[1])
        data = image_grid(imgs)
        maps_grid = Grid.of(maps)
        if self.resampling_target is None:
            check_same_grids(maps_img=maps_grid, mask_img=mask_grid, imgs=data)
        reference = {"data": data, "mask": mask_grid, "maps": maps_grid, None: maps_grid}[self.resampling_target]
        self._maps_resampled = reference is not None and not maps_grid.same_as(reference)
        if self._maps_resampled:
            maps = self._resample_spatial(maps, reference, when="fit")
        if mask is not None and reference is not None and not mask_grid.same_as(reference):
            mask = (resample_nearest(mask[0].astype(np.int8), mask[1], reference).astype(bool), reference.affine)
        self.maps_img_ = maps
        self.mask_img_ = None if mask is None else mask_dataarray(mask[0], mask[1], name="mask_img")
        self.n_elements_ = int(maps.shape[3])
        if reference is None and (mask_grid is None or mask_grid.same_as(maps_grid)):
            reference = maps_grid  # the maps are read now (empty maps fail at fit, as in nilearn)
        self._fit_extraction(imgs, reference)  # fails now for empty or overlapping maps

    def _resample_spatial(self, image: xr.DataArray, grid: Grid, when: str) -> xr.DataArray:
        """Maps on ``grid`` (nilearn's linear resampling), lazily, chunk by chunk as they are read.

        Building the matrix then reads and resamples each map exactly once, each map only on the
        target voxels its support reaches (:func:`lazymask.regions.resample_maps`).
        """
        del when
        return resample_maps(image, grid.affine, grid.shape)

    def _target_grid(self):
        if self.resampling_target == "maps":
            return get_affine(self.maps_img_), tuple(self.maps_img_.shape[:3])
        if self.resampling_target == "mask":
            return get_affine(self.mask_img_), tuple(self.mask_img_.shape)
        return None, None

    # -- extraction -----------------------------------------------------------------------------------
    def _build_extraction(self, grid: Grid) -> Extraction:
        maps, mask = self._spatial_on(grid)
        matrix = maps_matrix(maps)  # read once; the mask is applied to the matrix below
        if matrix.nnz == 0 and (getattr(self, "_maps_resampled", False) or not Grid.of(self.maps_img_).same_as(grid)):
            raise ParameterError("No map left after resampling maps_img onto the images' grid: check that "
                                 "maps_img and the images cover the same space.")
        if mask is not None:
            matrix = (matrix @ sp.diags(np.asarray(mask, dtype=bool).ravel(order="F").astype(matrix.dtype))).tocsr()
            matrix.eliminate_zeros()
        operator, kept = masked_maps_operator(matrix, maps.dtype, masked=mask is not None,
                                              keep_masked_maps=bool(self.keep_masked_maps),
                                              allow_overlap=bool(self.allow_overlap), stacklevel=8)
        return Extraction(grid, operator, kept, self._feature_names(kept), matrix=matrix)

    def _extract(self, img4d: xr.DataArray) -> xr.DataArray:
        if self.keep_masked_maps and self.mask_img_ is not None:
            warn_keep_masked_maps(stacklevel=5)
        return super()._extract(img4d)

    def _feature_names(self, indices) -> list[str]:
        prefix = type(self).__name__.lower()
        return [f"{prefix}{i}" for i in np.asarray(indices).tolist()]

    def get_feature_names_out(self, input_features=None) -> list[str]:
        """``<classname><i>`` for each map (scikit-learn's convention, as nilearn)."""
        self._check_fitted()
        return self._feature_names(range(self.n_elements_))

    # -- inverse, report, persistence -------------------------------------------------------------------
    def _inverse(self, signals):
        grid = Grid.of(self.maps_img_)
        mask = None if self.mask_img_ is None else np.asarray(self.mask_img_.values).astype(bool)
        if mask is not None and mask.shape != grid.shape:
            raise ImageMismatchError(f"mask_img_ has shape {mask.shape} but maps_img_ has {grid.shape}; fit with "
                                     "resampling_target='maps' or on the images' grid to invert.")
        fitted = self._extraction_
        on_grid = fitted is not None and fitted.grid.same_as(grid)
        matrix = fitted.matrix if on_grid else maps_matrix(self.maps_img_, mask)
        dtype = np.result_type(signals.dtype, self.maps_img_.dtype, np.float32)
        image = signals_to_image(signals.astype(dtype), grid.shape, grid.affine, maps_expansion(matrix))
        return self._as_inverse_dtype(image, signals.dtype)


class MultiNiftiMapsMasker(MultiMixin, NiftiMapsMasker):
    """:class:`NiftiMapsMasker` for lists of runs: ``transform`` returns one lazy DataArray per run.

    Parameters
    ----------
    n_jobs : int, default=1
        Accepted for compatibility with nilearn; the dask scheduler decides the parallelism.
    **parameters
        Every parameter of :class:`NiftiMapsMasker`, with the same defaults.

    Examples
    --------
    >>> signals = MultiNiftiMapsMasker("maps.nii.gz").fit_transform(["r1.nii.gz", "r2.nii.gz"])  # doctest: +SKIP
    """

    def __init__(self, maps_img=None, mask_img=None, allow_overlap=True, smoothing_fwhm=None,
                 standardize=False, standardize_confounds=True, high_variance_confounds=False,
                 detrend=False, low_pass=None, high_pass=None, t_r=None, dtype=None,
                 resampling_target="data", keep_masked_maps=False, memory=None, memory_level=0, n_jobs=1,
                 verbose=0, reports=True, clean_args=None):
        super().__init__(maps_img=maps_img, mask_img=mask_img, allow_overlap=allow_overlap,
                         smoothing_fwhm=smoothing_fwhm, standardize=standardize,
                         standardize_confounds=standardize_confounds,
                         high_variance_confounds=high_variance_confounds, detrend=detrend, low_pass=low_pass,
                         high_pass=high_pass, t_r=t_r, dtype=dtype, resampling_target=resampling_target,
                         keep_masked_maps=keep_masked_maps, memory=memory, memory_level=memory_level,
                         verbose=verbose, reports=reports, clean_args=clean_args)
        self.n_jobs = n_jobs
