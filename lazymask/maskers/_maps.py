"""Signals of (probabilistic, possibly overlapping) maps: ``NiftiMapsMasker`` and its Multi twin.

The signals are nilearn's least-squares fit of the maps to each volume,
``lstsq(maps[voxels], data[voxels])``. With ``W`` the ``(map, voxel)`` matrix on the voxels some
map touches, that is ``pinv(W W^T) W x``: ``W`` (sparse when the maps are) and ``pinv(W W^T)`` are
built once at fit, then each time chunk costs one product.
"""

from __future__ import annotations

import warnings

import dask
import numpy as np
import scipy.sparse as sp
import xarray as xr
from sklearn.utils._param_validation import StrOptions

from lazymask.exceptions import ImageMismatchError, ParameterError
from lazymask.image._inputs import as_image
from lazymask.image._resample import resample_img
from lazymask.io import get_affine
from lazymask.maskers._regions import (
    Expansion,
    LinearOperator,
    MultiMixin,
    RegionMasker,
    check_same_grids,
    finite,
    gram_pseudo_inverse,
    grid_of,
    image_grid,
    resample_nearest,
    same_grid,
    signal_float,
    signals_to_image,
    sparse_or_dense,
    volumes_matrix,
)
from lazymask.masking._volumes import load_mask, mask_dataarray

__all__ = ["NiftiMapsMasker", "MultiNiftiMapsMasker"]

#: Maps read at once while building the operator (bounds the memory of ``fit``).
MAPS_PER_READ = 32


class MapsDtype:
    """Signals' dtype: that of ``lstsq(maps, data)`` (float32 maps and int16/float32 data: float32)."""

    def __init__(self, maps_dtype):
        self.maps_dtype = np.dtype(maps_dtype)
        self.__name__ = f"maps-{self.maps_dtype}"

    def __call__(self, data_dtype) -> np.dtype:
        maps = self.maps_dtype if self.maps_dtype.kind == "f" else np.dtype(np.float64)
        return np.result_type(maps, signal_float(data_dtype))


def maps_matrix(maps: xr.DataArray, mask: np.ndarray | None) -> sp.csr_matrix:
    """The ``(map, voxel)`` sparse matrix of a 4D maps image (Fortran voxel order), read a few maps at a time.

    Non-finite values are 0; voxels outside ``mask`` are 0.
    """
    data = maps.data
    rows = []
    for start in range(0, maps.shape[3], MAPS_PER_READ):
        block = data[..., start:start + MAPS_PER_READ]
        if not isinstance(block, np.ndarray):
            (block,) = dask.compute(block, scheduler="threads")
        values = finite(volumes_matrix(np.asarray(block)))
        if mask is not None:
            values = values * mask.ravel(order="F")[:, None]
        rows.append(sp.csr_matrix(values.T))
    return sp.vstack(rows, format="csr")


def maps_operator(matrix: sp.csr_matrix, maps_dtype, keep_empty: bool):
    """The least-squares operator of a ``(map, voxel)`` matrix, and the indices of the maps kept."""
    kept = np.arange(matrix.shape[0]) if keep_empty else np.flatnonzero(np.diff(matrix.indptr) > 0)
    matrix = matrix[kept]
    support = np.unique(matrix.indices)
    weights = matrix[:, support].astype(np.float64)
    weights.sort_indices()
    weights = sparse_or_dense(weights)
    return LinearOperator(support, weights, gram_pseudo_inverse(weights), MapsDtype(maps_dtype)), kept, support


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
    memory, memory_level, verbose, reports
        Accepted for compatibility.

    Attributes
    ----------
    maps_img_ : xarray.DataArray
        The maps on the grid of extraction (lazy).
    mask_img_ : xarray.DataArray or None
    n_elements_ : int
        Number of maps.

    Examples
    --------
    >>> masker = NiftiMapsMasker("difumo1024.nii.gz")       # doctest: +SKIP
    >>> signals = masker.fit_transform("bold.nii.gz")       # doctest: +SKIP
    """

    _parameter_constraints = {
        "maps_img": "no_validation",  # an image
        "allow_overlap": ["boolean"],
        "resampling_target": [StrOptions({"data", "mask", "maps"}), None],
    }

    def __init__(self, maps_img=None, mask_img=None, allow_overlap=True, smoothing_fwhm=None,
                 standardize=False, standardize_confounds=True, high_variance_confounds=False,
                 detrend=False, low_pass=None, high_pass=None, t_r=None, dtype=None,
                 resampling_target="data", memory=None, memory_level=0, verbose=0, reports=True,
                 clean_args=None):
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
        self.memory = memory
        self.memory_level = memory_level
        self.verbose = verbose
        self.reports = reports
        self.clean_args = clean_args

    # -- fit ------------------------------------------------------------------------------------------
    def _fit(self, imgs):
        if self.maps_img is None:
            raise ParameterError("maps_img=None: pass the maps (a 4D image, one volume per map).")
        if self.resampling_target == "mask" and self.mask_img is None:
            raise ParameterError("resampling_target='mask' but mask_img=None; pass a mask or another target.")
        maps = as_image(self.maps_img, "maps_img", ndim=(4,))
        mask = load_mask(self.mask_img) if self.mask_img is not None else None
        mask_grid = None if mask is None else (mask[0].shape, mask[1])
        data = image_grid(imgs)
        if self.resampling_target is None:
            check_same_grids(maps_img=grid_of(maps), mask_img=mask_grid, imgs=data)
        reference = {"data": data, "mask": mask_grid, "maps": grid_of(maps), None: None}[self.resampling_target]
        if reference is not None and not same_grid(grid_of(maps), reference):
            maps = self._resample_maps(maps, reference)
        if mask is not None and reference is not None and not same_grid(mask_grid, reference):
            mask = (resample_nearest(mask[0].astype(np.int8), mask[1], reference).astype(bool), reference[1])
        self.maps_img_ = maps
        self.mask_img_ = None if mask is None else mask_dataarray(mask[0], mask[1], name="mask_img")
        self.n_elements_ = int(maps.shape[3])
        self._operators = {}
        if reference is not None:
            self._operator_for(reference)  # fails now for empty or overlapping maps
        self._remember_report_image(imgs)

    @staticmethod
    def _resample_maps(maps: xr.DataArray, grid) -> xr.DataArray:
        return resample_img(maps, target_affine=grid[1], target_shape=grid[0], interpolation="linear")

    def _target_grid(self):
        if self.resampling_target == "maps":
            return get_affine(self.maps_img_), tuple(self.maps_img_.shape[:3])
        if self.resampling_target == "mask":
            return get_affine(self.mask_img_), tuple(self.mask_img_.shape)
        return None, None

    # -- extraction -----------------------------------------------------------------------------------
    def _spatial_on(self, grid):
        maps = self.maps_img_
        mask = None if self.mask_img_ is None else np.asarray(self.mask_img_.values).astype(bool)
        mask_grid = None if self.mask_img_ is None else grid_of(self.mask_img_)
        if self.resampling_target is None:
            check_same_grids(maps_img=grid_of(maps), mask_img=mask_grid, imgs=grid)
        if not same_grid(grid_of(maps), grid):
            warnings.warn("Resampling maps at transform time; fit on the images you transform "
                          "(or use fit_transform) to avoid it.", stacklevel=5)
            maps = self._resample_maps(maps, grid)
        if mask is not None and not same_grid(mask_grid, grid):
            warnings.warn("Resampling mask_img at transform time; fit on the images you transform "
                          "(or use fit_transform) to avoid it.", stacklevel=5)
            mask = resample_nearest(mask.astype(np.int8), mask_grid[1], grid).astype(bool)
        return maps, mask

    def _build_operator(self, grid):
        maps, mask = self._spatial_on(grid)
        matrix = maps_matrix(maps, mask)
        if matrix.nnz == 0:
            where = "after applying mask_img" if mask is not None else "(every value is 0)"
            raise ParameterError(f"No map left {where}: maps_img has no non-zero voxel there.")
        if not self.allow_overlap:
            _check_no_overlap(matrix, maps.dtype)
        operator, kept, _ = maps_operator(matrix, maps.dtype, keep_empty=mask is None)
        if kept.size < matrix.shape[0]:
            lost = sorted(set(range(matrix.shape[0])) - set(kept.tolist()))
            warnings.warn(f"After applying mask_img to the maps, the maps {lost} were removed (empty in the "
                          f"mask): {kept.size} of {matrix.shape[0]} maps remain.", stacklevel=5)
        return operator, kept, self._feature_names(kept), None

    def _feature_names(self, indices) -> list[str]:
        prefix = type(self).__name__.lower()
        return [f"{prefix}{i}" for i in np.asarray(indices).tolist()]

    def get_feature_names_out(self, input_features=None) -> list[str]:
        """``<classname><i>`` for each map (scikit-learn's convention, as nilearn)."""
        self._check_fitted()
        return self._feature_names(range(self.n_elements_))

    # -- inverse, report, persistence -------------------------------------------------------------------
    def _inverse(self, signals):
        grid = grid_of(self.maps_img_)
        mask = None if self.mask_img_ is None else np.asarray(self.mask_img_.values).astype(bool)
        if mask is not None and mask.shape != grid[0]:
            raise ImageMismatchError(f"mask_img_ has shape {mask.shape} but maps_img_ has {grid[0]}; fit with "
                                     "resampling_target='maps' or on the images' grid to invert.")
        matrix = maps_matrix(self.maps_img_, mask)
        support = np.unique(matrix.indices)
        weights = matrix[:, support].T.tocsr()
        dtype = np.result_type(signals.dtype, self.maps_img_.dtype)
        return signals_to_image(signals.astype(dtype), grid[0], grid[1], Expansion(support, weights))

    def _report(self):
        from lazymask.reporting import maps_report

        shape, affine = grid_of(self.maps_img_)
        (maps,) = dask.compute(self.maps_img_.data)
        return maps_report(self._report_background(shape, affine), np.asarray(maps), affine,
                           parameters=self.json_parameters(), title=type(self).__name__)

    def _spatial_arrays(self) -> dict[str, xr.DataArray]:
        arrays = {"maps_img": self.maps_img_}
        if self.mask_img_ is not None:
            arrays["mask_img"] = self.mask_img_
        return arrays

    @classmethod
    def _from_store(cls, parameters: dict, arrays: dict[str, xr.DataArray]):
        names = {name for name in cls._get_param_names() if name not in ("maps_img", "mask_img")}
        masker = cls(maps_img=arrays["maps_img"], mask_img=arrays.get("mask_img"),
                     **{k: v for k, v in parameters.items() if k in names})
        return masker.fit()


def _check_no_overlap(matrix: sp.csr_matrix, dtype) -> None:
    """nilearn's test: a voxel where two maps exceed the dtype's epsilon is an overlap."""
    threshold = np.finfo(dtype).eps if np.dtype(dtype).kind == "f" else 0
    positive = matrix.copy()
    positive.data = (positive.data >= threshold) & (positive.data > 0)
    per_voxel = np.asarray(positive.sum(axis=0)).ravel()
    if np.any(per_voxel > 1):
        raise ParameterError(
            f"allow_overlap=False but maps overlap in {int((per_voxel > 1).sum())} voxels (two or more maps "
            "are positive there; the overlap may come from the atlas or from resampling). Pass "
            "allow_overlap=True or use non-overlapping maps."
        )


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
                 resampling_target="data", memory=None, memory_level=0, n_jobs=1, verbose=0, reports=True,
                 clean_args=None):
        super().__init__(maps_img=maps_img, mask_img=mask_img, allow_overlap=allow_overlap,
                         smoothing_fwhm=smoothing_fwhm, standardize=standardize,
                         standardize_confounds=standardize_confounds,
                         high_variance_confounds=high_variance_confounds, detrend=detrend, low_pass=low_pass,
                         high_pass=high_pass, t_r=t_r, dtype=dtype, resampling_target=resampling_target,
                         memory=memory, memory_level=memory_level, verbose=verbose, reports=reports,
                         clean_args=clean_args)
        self.n_jobs = n_jobs
