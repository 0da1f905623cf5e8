"""Mean signals in spheres around seeds (world mm): ``NiftiSpheresMasker``.

The spheres are built once per grid as a sparse ``(seed, voxel)`` averaging matrix
(:func:`lazymask.regions.sphere_operator`); each time chunk then costs one sparse product for
all seeds.
"""

from __future__ import annotations

import numbers

import numpy as np
import xarray as xr
from sklearn.utils._param_validation import Interval

from lazymask.exceptions import ParameterError
from lazymask.io import Grid
from lazymask.maskers._region_base import (
    Extraction,
    RegionMasker,
    image_grid,
    load_region_mask,
    resample_nearest,
)
from lazymask.masking import mask_dataarray
from lazymask.regions import sphere_expansion, sphere_membership, sphere_operator, signals_to_image

__all__ = ["NiftiSpheresMasker", "sphere_membership"]


def check_seeds(seeds) -> list[list[float]]:
    """Seeds as a list of ``[x, y, z]`` (mm); clear errors for anything else.

    Examples
    --------
    >>> check_seeds([(0, 1, 2)])
    [[0.0, 1.0, 2.0]]
    """
    seeds_error = "Seeds must be a list of triplets of coordinates in native space: "
    if seeds is None or not hasattr(seeds, "__iter__") or isinstance(seeds, str):
        raise ParameterError(f"{seeds_error}(x, y, z) world coordinates in mm; got {type(seeds).__name__}.")
    checked = []
    for index, seed in enumerate(seeds):
        if not hasattr(seed, "__len__") or len(seed) != 3:
            raise ParameterError(f"{seeds_error}seeds[{index}]={seed!r}, expected 3 coordinates (x, y, z) in mm.")
        try:
            coordinates = [float(value) for value in seed]
        except (TypeError, ValueError):
            raise ParameterError(f"{seeds_error}seeds[{index}]={seed!r}, expected 3 numbers (x, y, z) in mm.") \
                from None
        if not np.all(np.isfinite(coordinates)):
            raise ParameterError(f"seeds[{index}]={list(seed)!r} holds a non-finite coordinate (NaN or "
                                 "infinity); every seed needs 3 finite world coordinates (x, y, z) in mm.")
        checked.append(coordinates)
    if not checked:
        raise ParameterError("seeds is empty: pass at least one (x, y, z) seed.")
    return checked


class NiftiSpheresMasker(RegionMasker):
    """Mean signals in spheres around seeds, lazily (nilearn's ``NiftiSpheresMasker``).

    Parameters
    ----------
    seeds : list of (x, y, z)
        Seed coordinates in world millimetres (the images' space).
    radius : float or None, default=None
        Sphere radius in mm; ``None`` takes the voxel nearest to each seed.
    mask_img : image, optional
        Only voxels in the mask belong to spheres; needed by ``inverse_transform``.
    allow_overlap : bool, default=False
        If False, spheres sharing a voxel are an error.
    smoothing_fwhm, standardize, standardize_confounds, high_variance_confounds, detrend, low_pass, high_pass, t_r, dtype, clean_args
        Preprocessing and cleaning, as in :class:`lazymask.maskers.NiftiMasker`.
    memory, memory_level, verbose, reports
        Accepted for compatibility.

    Attributes
    ----------
    seeds_ : list of [x, y, z]
    n_elements_ : int
    mask_img_ : xarray.DataArray or None

    Examples
    --------
    >>> masker = NiftiSpheresMasker([(-2, -53, 26), (0, 52, 6)], radius=8)   # doctest: +SKIP
    >>> signals = masker.fit_transform("bold.nii.gz")                       # doctest: +SKIP
    >>> signals.coords["x"].values                                            # doctest: +SKIP
    """

    _parameter_constraints = {
        "seeds": [None, "array-like"],
        "radius": [None, Interval(numbers.Real, 0, None, closed="left")],
        "allow_overlap": ["boolean"],
    }

    def __init__(self, seeds=None, radius=None, mask_img=None, smoothing_fwhm=None, standardize=False,
                 standardize_confounds=True, high_variance_confounds=False, detrend=False, low_pass=None,
                 high_pass=None, t_r=None, dtype=None, memory=None, memory_level=1, verbose=0,
                 allow_overlap=False, reports=True, clean_args=None):
        self.seeds = seeds
        self.radius = radius
        self.mask_img = mask_img
        self.smoothing_fwhm = smoothing_fwhm
        self.standardize = standardize
        self.standardize_confounds = standardize_confounds
        self.high_variance_confounds = high_variance_confounds
        self.detrend = detrend
        self.low_pass = low_pass
        self.high_pass = high_pass
        self.t_r = t_r
        self.dtype = dtype
        self.memory = memory
        self.memory_level = memory_level
        self.verbose = verbose
        self.allow_overlap = allow_overlap
        self.reports = reports
        self.clean_args = clean_args

    _spatial_params = ("seeds", "mask_img")

    def _fit(self, imgs):
        if self.radius is not None and self.radius < 0:
            raise ParameterError(f"radius={self.radius!r}: expected a non-negative number of mm, or None.")
        self.seeds_ = check_seeds(self.seeds)
        mask = load_region_mask(self.mask_img) if self.mask_img is not None else None
        self.mask_img_ = None if mask is None else mask_dataarray(mask[0], mask[1], name="mask_img")
        self.n_elements_ = len(self.seeds_)
        try:
            self._fit_extraction(imgs, image_grid(imgs))
        except ParameterError:
            # as nilearn, fit accepts spheres that are empty or overlap on these images: transform
            # (which builds them again on its images) and inverse_transform raise
            self._extraction_ = None

    def _candidates_on(self, grid: Grid):
        if self.mask_img_ is None:
            return None
        mask = np.asarray(self.mask_img_.values)
        return resample_nearest(mask, Grid.of(self.mask_img_).affine, grid).astype(bool)

    def _build_extraction(self, grid: Grid) -> Extraction:
        operator = sphere_operator(self.seeds_, self.radius, grid, self._candidates_on(grid), self.allow_overlap)
        seeds = np.asarray(self.seeds_)
        extra = {"x": seeds[:, 0], "y": seeds[:, 1], "z": seeds[:, 2]}
        return Extraction(grid, operator, np.arange(len(seeds)), self.get_feature_names_out(), extra)

    def get_feature_names_out(self, input_features=None) -> list[str]:
        """``<classname><i>`` for each seed (scikit-learn's convention, as nilearn)."""
        self._check_fitted()
        return [f"{type(self).__name__.lower()}{i}" for i in range(self.n_elements_)]

    def _inverse(self, signals):
        if self.mask_img_ is None:
            raise ParameterError("Please provide mask_img at initialization to provide a reference for the "
                                 "inverse_transform: NiftiSpheresMasker needs a grid to invert.")
        grid = Grid.of(self.mask_img_)
        expansion = sphere_expansion(self.seeds_, self.radius, grid, self.mask_img_.values, self.allow_overlap)
        image = signals_to_image(signals.astype(np.result_type(signals.dtype, np.float64)), grid.shape, grid.affine,
                                 expansion)
        return self._as_inverse_dtype(image, signals.dtype)

    def _spatial_array(self, name: str) -> xr.DataArray | None:
        if name == "seeds":
            return xr.DataArray(np.asarray(self.seeds_), dims=("seed", "xyz"), coords={"xyz": ["x", "y", "z"]})
        return super()._spatial_array(name)

    @classmethod
    def _spatial_value(cls, name: str, array: xr.DataArray | None):
        return np.asarray(array).tolist() if name == "seeds" else array
