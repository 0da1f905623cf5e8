"""The region maskers' shared part: an estimator that composes :mod:`lazymask.regions`.

Contract (on top of :class:`lazymask.maskers.BaseMasker`'s)
----------------------------------------------------------
* ``fit`` computes everything: the spatial definition on the grid of extraction (subclass hook
  ``_fit``) and, when that grid is known at fit (the images were given, or the resampling
  target is the atlas), the region operator ``_extraction_`` (:class:`Extraction`) built once
  by the hook ``_build_extraction(grid)``.
* ``transform`` and ``inverse_transform`` change nothing on ``self``: images on the fitted grid
  use ``_extraction_``; images on another grid get an operator built for that call only (a
  warning says the spatial images are resampled at transform time).
* What a report needs is public: the spatial images (``labels_img_``, ``maps_img_``,
  ``mask_img_``, ``seeds_``), the regions (``n_elements_`` and, for labels, ``lut_``,
  ``region_ids_``, ``region_names_``) and ``mean_img_``, a lazy mean of the fitted images
  (``None`` without images or with ``reports=False``), computed only by a report.
* Persistence: ``_spatial_params`` names the constructor parameters a store keeps as arrays;
  ``_spatial_arrays`` and ``_from_store`` are written once here from it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import xarray as xr

from lazymask.image import as_image, mean_img, resample_array
from lazymask.io import Grid, get_affine
from lazymask.exceptions import DimensionError, ImageMismatchError, ParameterError
from lazymask.maskers._base import BaseMasker, InvalidParameterError
from lazymask.maskers._runs import check_per_run_type, per_run
from lazymask.masking import read_small
from lazymask.regions import STRATEGIES, region_signals, signals_dataarray

__all__ = ["STRATEGIES", "Extraction", "MultiMixin", "RegionMasker", "load_volume", "resample_nearest"]

RESAMPLE_FIX = "pass a resampling_target (e.g. 'data') or resample the images onto one grid first " \
               "(lazymask.image.resample_to_img)."


@dataclass(frozen=True)
class Extraction:
    """A region operator built for one grid, and the labels of its output columns."""

    grid: Grid
    operator: object
    ids: np.ndarray
    names: list
    extra_coords: dict | None = None
    #: What else the way back needs (the maps' ``(map, voxel)`` matrix), when built with it.
    matrix: object = None


def check_same_grids(**grids) -> None:
    """``resampling_target=None`` at fit: every given grid (``None`` skipped) must be the same.

    Else :class:`ImageMismatchError` listing, as nilearn does, each pair that differs in shape or affine.
    """
    named = [(name, grid) for name, grid in grids.items() if grid is not None]
    errors = []
    for index, (name, grid) in enumerate(named):
        for other_name, other in named[index + 1:]:
            if grid.shape != other.shape:
                errors.append(f"- {name} and {other_name} do not have the same shape")
            if not grid.same_as(other, check_shape=False):
                errors.append(f"- {name} and {other_name} do not have the same affine")
    if errors:
        raise ImageMismatchError("Following field of view errors were detected:\n" + "\n".join(errors)
                                 + "\nresampling_target=None requires one grid; " + RESAMPLE_FIX)


def check_transform_grid(image_grid: Grid, image_name: str, grid: Grid) -> None:
    """``resampling_target=None`` at transform: the images must be on the fitted grid (nilearn's words)."""
    if grid.same_as(image_grid):
        return
    what = "Images have incompatible shapes." if grid.shape != image_grid.shape else \
        "Images have different affine matrices."
    raise ImageMismatchError(f"{what} {grid.mismatch('imgs', image_grid, image_name, RESAMPLE_FIX)}")


def check_allowed(value, allowed, name: str) -> None:
    """nilearn's check of a parameter against its allowed values (an :class:`InvalidParameterError`)."""
    if value not in allowed:
        raise InvalidParameterError(f"'{name}' must be one of {allowed}.\n'{value}' was provided.")


def missing_image(name: str, what: str) -> InvalidParameterError:
    """The error for a required image parameter left at None (a TypeError and a ValueError, as nilearn's)."""
    return InvalidParameterError(f"{name}=None: the input should be a NiftiLike object; pass {what}.")


def _is_mask_warning(caught) -> bool:
    """A warning about regions that ``mask_img`` removed (nilearn gives it at transform)."""
    return issubclass(caught.category, UserWarning) and str(caught.message).startswith("After applying mask")


class RegionMasker(BaseMasker):
    """Common part of the region maskers (see the module's contract). Not used directly.

    Subclasses implement ``_fit`` (setting the spatial attributes, then calling
    :meth:`_fit_extraction`), ``_build_extraction(grid)`` and ``_inverse``.
    """

    _fitted_attribute = "n_elements_"
    #: Constructor parameters a store keeps as arrays (the first is required).
    _spatial_params: ClassVar[tuple[str, ...]] = ()

    # -- fit ------------------------------------------------------------------------------------------
    def _fit_extraction(self, imgs, reference: Grid | None) -> None:
        """Build the operator on ``reference`` (when known) and keep the report's lazy mean."""
        self._mask_warnings_ = ()
        if reference is None:
            self._extraction_ = None
        else:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                self._extraction_ = self._build_extraction(reference)
            # as nilearn, regions a mask removes are told at each transform (not at fit); the rest now
            self._mask_warnings_ = tuple(str(w.message) for w in caught if _is_mask_warning(w))
            for caught_warning in caught:
                if not _is_mask_warning(caught_warning):
                    warnings.warn_explicit(caught_warning.message, caught_warning.category,
                                           caught_warning.filename, caught_warning.lineno)
        self.mean_img_ = None
        if imgs is not None and getattr(self, "reports", True):
            first = imgs[0] if isinstance(imgs, list | tuple) else imgs
            self.mean_img_ = mean_img(first)

    def _build_extraction(self, grid: Grid) -> Extraction:  # pragma: no cover - abstract
        raise NotImplementedError

    def _extraction_on(self, grid: Grid) -> Extraction:
        """The fitted extraction when ``grid`` is the fitted one; else one built now (``self`` unchanged)."""
        fitted = self._extraction_
        if fitted is not None and fitted.grid.same_as(grid):
            return fitted
        return self._build_extraction(grid)

    def _spatial_on(self, grid: Grid):
        """The fitted spatial image (``<first spatial parameter>_``) and mask on ``grid``.

        Resampled (with a warning) when ``grid`` is not the fitted one; with
        ``resampling_target=None`` every grid must be the same.
        """
        name = self._spatial_params[0]
        image = getattr(self, f"{name}_")
        image_grid = Grid.of(image)
        if self.resampling_target is None:
            check_transform_grid(image_grid, name, grid)
            if self.mask_img_ is not None:
                check_transform_grid(Grid.of(self.mask_img_), "mask_img", grid)
        if not image_grid.same_as(grid):
            warnings.warn(f"Resampling {self._spatial_word} at transform time; fit on the images you transform "
                          "(or use fit_transform) to avoid it.", stacklevel=7)
            image = self._resample_spatial(image, grid, when="transform")
        return image, mask_on(self.mask_img_, grid, warn_name="mask_img")

    def _check_resamplable(self, image, target_affine, target_shape) -> None:
        """Images off the labels'/maps' grid are resampled onto it, with nilearn's warning."""
        if self.resampling_target in ("labels", "maps"):
            warnings.warn(f"Resampling images at transform time onto the {self.resampling_target}' grid; "
                          "resample the images onto that grid first, or use resampling_target='data', to "
                          "avoid it.", stacklevel=7)

    #: How warnings name the spatial image ("labels", "maps").
    _spatial_word: ClassVar[str] = "regions"

    def _resample_spatial(self, image: xr.DataArray, grid: Grid, when: str) -> xr.DataArray:  # pragma: no cover
        raise NotImplementedError

    # -- transform ------------------------------------------------------------------------------------
    def _open(self, imgs):
        """One image (a list of 3D images is one 4D run); a list of 4D runs is nilearn's 5D error."""
        if isinstance(imgs, list | tuple) and imgs and not isinstance(self, MultiMixin):
            first = as_image(imgs[0], "imgs[0]", ndim=(3, 4))
            if first.ndim == 4:
                raise DimensionError(
                    "Input data has incompatible dimensionality: Expected dimension is 4D and you provided a "
                    f"list of 4D images (5D): {type(self).__name__} takes one run; use "
                    f"Multi{type(self).__name__} (or transform each run) for a list of runs.")
        return super()._open(imgs)

    def _extract(self, img4d: xr.DataArray) -> xr.DataArray:
        extraction = self._extraction_on(Grid.of(img4d))
        if extraction is self._extraction_:
            for message in getattr(self, "_mask_warnings_", ()):
                warnings.warn(message, UserWarning, stacklevel=6)
        signals = region_signals(img4d, extraction.operator)
        return signals_dataarray(signals, extraction.ids, extraction.names, extraction.extra_coords)

    # -- inverse --------------------------------------------------------------------------------------
    def _as_inverse_dtype(self, image: xr.DataArray, signals_dtype) -> xr.DataArray:
        """nilearn's ``inverse_transform`` dtype: the signals', or ``dtype`` when given ("auto": int32/float32)."""
        target = np.dtype(signals_dtype)
        if isinstance(self.dtype, str) and self.dtype == "auto":
            target = np.dtype(np.int32 if target.kind in "iu" else np.float32)
        elif self.dtype is not None:
            target = np.dtype(self.dtype)
        return image if image.dtype == target else image.astype(target)

    # -- report ---------------------------------------------------------------------------------------
    # -- persistence ----------------------------------------------------------------------------------
    def _spatial_arrays(self) -> dict[str, xr.DataArray]:
        arrays = {name: self._spatial_array(name) for name in self._spatial_params}
        return {name: array for name, array in arrays.items() if array is not None}

    def _spatial_array(self, name: str) -> xr.DataArray | None:
        """The fitted value of the spatial parameter ``name`` as a DataArray (default: ``<name>_``)."""
        return getattr(self, f"{name}_", None)

    @classmethod
    def _spatial_value(cls, name: str, array: xr.DataArray | None):
        """The constructor value of ``name`` rebuilt from its stored array (default: the array)."""
        return array

    @classmethod
    def _from_store(cls, parameters: dict, arrays: dict[str, xr.DataArray]):
        """A fitted masker from a store: spatial parameters from its arrays (never a path), the rest as saved."""
        spatial = {name: cls._spatial_value(name, arrays.get(name)) for name in cls._spatial_params}
        spatial.update(cls._parameters_from_arrays(arrays))
        names = set(cls._get_param_names()) - set(spatial)
        masker = cls(**spatial, **{k: v for k, v in parameters.items() if k in names})
        return masker.fit()

    @classmethod
    def _parameters_from_arrays(cls, arrays: dict[str, xr.DataArray]) -> dict:
        """Further constructor parameters rebuilt from stored arrays (e.g. a labels masker's ``lut``)."""
        return {}


def load_volume(img, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A small 3D image's values (read now) and affine; clear errors for 4D input."""
    image = as_image(img, name, ndim=(3,))
    return read_small(image), get_affine(image)


def load_region_mask(mask_img) -> tuple[np.ndarray, np.ndarray]:
    """The region maskers' ``mask_img`` as nilearn's maskers read it: a boolean volume and its affine.

    Non-finite values are 0 (with nilearn's "Non-finite values detected" warning), any non-zero
    value is inside, and a 4D image is the voxels non-zero in every volume. An empty mask is an
    error (nilearn's words first).
    """
    image = as_image(mask_img, "mask_img", ndim=(3, 4))
    values = read_small(image)
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        warnings.warn("Non-finite values detected in mask_img. These values will be replaced with zeros.",
                      stacklevel=5)
        values = np.where(np.isfinite(values), values, 0)
    inside = values.astype(bool)
    if inside.ndim == 4:
        inside = inside.all(axis=3)
    if not inside.any():
        raise ParameterError("The mask is invalid as it is empty: it masks all data. mask_img has no non-zero "
                             "voxel; pass another mask.")
    return inside, get_affine(image)


def image_grid(imgs) -> Grid | None:
    """The grid of the images given to ``fit`` (the first of a list), from headers only."""
    if imgs is None:
        return None
    first = imgs[0] if isinstance(imgs, list | tuple) else imgs
    return Grid.of(as_image(first, "imgs", ndim=(3, 4)))


def resample_nearest(volume: np.ndarray, affine, grid: Grid) -> np.ndarray:
    """A small 3D volume resampled onto ``grid`` with nearest-neighbour interpolation."""
    out, _ = resample_array(np.asarray(volume), affine, target_affine=grid.affine, target_shape=grid.shape,
                            interpolation="nearest", clip=False)
    return out


def mask_on(mask_img_: xr.DataArray | None, grid: Grid, warn_name: str | None = None) -> np.ndarray | None:
    """A fitted mask as booleans on ``grid`` (nearest-neighbour resampled when needed, with a warning if named)."""
    if mask_img_ is None:
        return None
    mask = np.asarray(mask_img_.values).astype(bool)
    mask_grid = Grid.of(mask_img_)
    if mask_grid.same_as(grid):
        return mask
    if warn_name is not None:
        warnings.warn(f"Resampling {warn_name} at transform time; fit on the images you transform "
                      "(or use fit_transform) to avoid it.", stacklevel=8)
    return resample_nearest(mask.astype(np.int8), mask_grid.affine, grid).astype(bool)


class MultiMixin:
    """``fit``/``transform`` of a list of runs: one lazy result per run (nilearn's Multi maskers)."""

    def fit_transform(self, imgs, y=None, confounds=None, sample_mask=None, **fit_params):
        """Fit on ``imgs`` (the first run gives the grid), then transform each run lazily."""
        self.fit(imgs, y, **fit_params)
        return self.transform(imgs, confounds=confounds, sample_mask=sample_mask)

    def transform(self, imgs, confounds=None, sample_mask=None):
        """Signals of one run (a DataArray) or of each run of a list (a list of DataArrays), lazily."""
        self._check_fitted()
        check_per_run_type(confounds, "confounds")
        check_per_run_type(sample_mask, "sample_mask")
        if not isinstance(imgs, list | tuple):
            confounds = confounds[0] if isinstance(confounds, list) else confounds
            sample_mask = sample_mask[0] if isinstance(sample_mask, list) else sample_mask
            return super().transform(imgs, confounds=confounds, sample_mask=sample_mask)
        return self.transform_imgs(imgs, confounds=confounds, sample_mask=sample_mask)

    def transform_imgs(self, imgs_list, confounds=None, n_jobs=1, sample_mask=None):
        """One lazy ``(time, region)`` DataArray per run (``n_jobs`` is accepted: dask schedules)."""
        self._check_fitted()
        confounds = per_run(confounds, len(imgs_list), "confounds")
        sample_mask = per_run(sample_mask, len(imgs_list), "sample_mask")
        self._log_extraction()
        return [
            self._transform_one(img, conf, mask, add_hv_first=False, cast=True)
            for img, conf, mask in zip(imgs_list, confounds, sample_mask, strict=True)
        ]
