"""Mean signals in spheres around seeds (world mm): ``NiftiSpheresMasker``.

The spheres are built once per grid as a sparse ``(seed, voxel)`` averaging matrix; each time
chunk then costs one sparse product for all seeds. A sphere holds, as in nilearn 0.14, the voxels
whose centre lies within ``radius`` mm of the seed, the voxel nearest to the seed, and the first
voxel (in C order) whose world coordinates truncate to the seed's truncated coordinates.
"""

from __future__ import annotations

import numbers

import numpy as np
import scipy.sparse as sp
import xarray as xr
from scipy.spatial import cKDTree
from sklearn.utils._param_validation import Interval, StrOptions

from lazymask.exceptions import ParameterError
from lazymask.maskers._regions import (
    Expansion,
    LinearOperator,
    RegionMasker,
    grid_of,
    resample_nearest,
    signals_to_image,
    world_coordinates,
)
from lazymask.masking._volumes import load_mask, mask_dataarray

__all__ = ["NiftiSpheresMasker", "sphere_membership"]


def check_seeds(seeds) -> list[list[float]]:
    """Seeds as a list of ``[x, y, z]`` (mm); clear errors for anything else."""
    if seeds is None or not hasattr(seeds, "__iter__") or isinstance(seeds, str):
        raise ParameterError(f"seeds must be a list of (x, y, z) world coordinates in mm; got {type(seeds).__name__}.")
    checked = []
    for index, seed in enumerate(seeds):
        if not hasattr(seed, "__len__") or len(seed) != 3:
            raise ParameterError(f"seeds[{index}]={seed!r}: expected 3 coordinates (x, y, z) in mm.")
        checked.append([float(value) for value in seed])
    if not checked:
        raise ParameterError("seeds is empty: pass at least one (x, y, z) seed.")
    return checked


def sphere_membership(seeds, radius, shape, affine, candidates: np.ndarray | None = None) -> sp.csr_matrix:
    """Boolean ``(seed, voxel)`` CSR matrix (flat Fortran voxel order) of the voxels of each sphere.

    ``candidates`` (3D bool) restricts the voxels (a mask); ``radius=None`` keeps only the voxels
    nilearn adds on top of the radius search (the nearest voxel, and the truncation match).

    Examples
    --------
    >>> m = sphere_membership([[0.0, 0.0, 0.0]], 2.0, (5, 5, 5), np.diag([2.0, 2.0, 2.0, 1.0]))
    >>> int(m.sum())
    4
    """
    seeds = np.asarray(seeds, dtype=np.float64)
    affine = np.asarray(affine, dtype=np.float64)
    candidates = np.ones(shape, dtype=bool) if candidates is None else np.asarray(candidates, dtype=bool)
    voxels = np.flatnonzero(candidates.ravel(order="F"))
    coords = world_coordinates(shape, affine, voxels)
    tree = cKDTree(coords)
    reach = float(radius or 0.0)
    voxel_size = float(np.abs(affine[:3, :3]).sum(axis=0).max())
    rows, cols = [], []
    within = tree.query_ball_point(seeds, reach * (1 + 1e-9) + 1e-12)
    near = tree.query_ball_point(seeds, max(reach, 2.0) + voxel_size)
    for k, seed in enumerate(seeds):
        members = [i for i in within[k] if ((coords[i] - seed) ** 2).sum() <= reach * reach]
        members += _nearest_voxel(seed, shape, affine, candidates, voxels)
        members += _truncation_match(seed, coords, near[k], voxels, shape)
        members = np.unique(np.asarray(members, dtype=np.int64))
        rows.append(np.full(members.size, k))
        cols.append(members)
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    return sp.csr_matrix((np.ones(rows.size, dtype=bool), (rows, voxels[cols])),
                         shape=(len(seeds), int(np.prod(shape))))


def _nearest_voxel(seed, shape, affine, candidates, voxels) -> list[int]:
    """Position (in ``voxels``) of the voxel nearest to ``seed`` (nilearn rounds half to even), if a candidate."""
    ijk = np.round(np.linalg.inv(affine) @ np.append(seed, 1.0))[:3].astype(int)
    if np.any(ijk < 0) or np.any(ijk >= np.asarray(shape)) or not candidates[tuple(ijk)]:
        return []
    flat = int(np.ravel_multi_index(tuple(ijk), shape, order="F"))
    return [int(np.searchsorted(voxels, flat))]


def _truncation_match(seed, coords, nearby, voxels, shape) -> list[int]:
    """nilearn's extra voxel: the first (C order) whose truncated world coordinates equal the seed's."""
    nearby = np.asarray(nearby, dtype=np.int64)
    if nearby.size == 0:
        return []
    match = nearby[np.all(np.trunc(coords[nearby]) == np.trunc(seed), axis=1)]
    if match.size == 0:
        return []
    c_order = np.ravel_multi_index(np.unravel_index(voxels[match], shape, order="F"), shape, order="C")
    return [int(match[np.argmin(c_order)])]


def check_spheres(membership: sp.csr_matrix, seeds, allow_overlap: bool) -> None:
    """Empty spheres (seeds outside the image or mask) and, unless allowed, overlaps: clear errors."""
    sizes = np.diff(membership.indptr)
    if np.any(sizes == 0):
        empty = np.flatnonzero(sizes == 0)
        shown = ", ".join(f"#{i} {seeds[i]}" for i in empty[:10])
        raise ParameterError(
            f"{empty.size} sphere(s) hold no voxel: seeds {shown}. Those seeds lie outside the image (or "
            "outside mask_img) for this radius; check that the seeds are world coordinates (mm) in the "
            "images' space, or increase radius."
        )
    if not allow_overlap:
        per_voxel = np.asarray(membership.astype(np.int32).sum(axis=0)).ravel()
        if np.any(per_voxel > 1):
            pairs = membership[:, np.flatnonzero(per_voxel > 1)].astype(np.int32)
            shared = np.flatnonzero(np.diff(pairs.indptr) > 0)[:10].tolist()
            raise ParameterError(
                f"allow_overlap=False but spheres overlap (seeds {shared} share voxels); pass "
                "allow_overlap=True, a smaller radius, or seeds farther apart."
            )


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

    def _fit(self, imgs):
        if self.radius is not None and self.radius < 0:
            raise ParameterError(f"radius={self.radius!r}: expected a non-negative number of mm, or None.")
        self.seeds_ = check_seeds(self.seeds)
        mask = load_mask(self.mask_img) if self.mask_img is not None else None
        self.mask_img_ = None if mask is None else mask_dataarray(mask[0], mask[1], name="mask_img")
        self.n_elements_ = len(self.seeds_)
        self._operators = {}
        self._remember_report_image(imgs)

    def _candidates_on(self, grid):
        if self.mask_img_ is None:
            return None
        mask = np.asarray(self.mask_img_.values)
        return resample_nearest(mask, np.asarray(self.mask_img_.attrs["affine"]), grid).astype(bool)

    def _build_operator(self, grid):
        membership = sphere_membership(self.seeds_, self.radius, grid[0], grid[1], self._candidates_on(grid))
        check_spheres(membership, self.seeds_, self.allow_overlap)
        support = np.unique(membership.indices)
        weights = membership[:, support].astype(np.float64)
        weights = sp.diags(1.0 / np.asarray(weights.sum(axis=1)).ravel()) @ weights
        seeds = np.asarray(self.seeds_)
        names = [f"{type(self).__name__.lower()}{i}" for i in range(len(seeds))]
        extra = {"x": seeds[:, 0], "y": seeds[:, 1], "z": seeds[:, 2]}
        return LinearOperator(support, weights.tocsr()), np.arange(len(seeds)), names, extra

    def get_feature_names_out(self, input_features=None) -> list[str]:
        """``<classname><i>`` for each seed (scikit-learn's convention, as nilearn)."""
        self._check_fitted()
        return [f"{type(self).__name__.lower()}{i}" for i in range(self.n_elements_)]

    def _inverse(self, signals):
        if self.mask_img_ is None:
            raise ParameterError("inverse_transform needs a grid: create the NiftiSpheresMasker with mask_img.")
        shape, affine = grid_of(self.mask_img_)
        membership = sphere_membership(self.seeds_, self.radius, shape, affine,
                                       np.asarray(self.mask_img_.values).astype(bool))
        check_spheres(membership, self.seeds_, self.allow_overlap)
        support = np.unique(membership.indices)
        spread = membership[:, support].astype(np.float64)
        if self.allow_overlap:
            overlap = np.asarray(spread.sum(axis=0)).ravel()
            spread = spread @ sp.diags(1.0 / np.maximum(overlap, 1))
        return signals_to_image(signals, shape, affine, Expansion(support, spread.T.tocsr()))

    def _report(self):
        from lazymask.reporting import spheres_report

        grid = grid_of(self._report_mean) if getattr(self, "_report_mean", None) is not None else (
            grid_of(self.mask_img_) if self.mask_img_ is not None else None)
        if grid is None:
            raise ParameterError("generate_report needs an image: fit the NiftiSpheresMasker on images "
                                 "(or give it a mask_img).")
        return spheres_report(self._report_background(*grid), grid[1], seeds=self.seeds_, radius=self.radius,
                              parameters=self.json_parameters(), title=type(self).__name__)

    def _spatial_arrays(self) -> dict[str, xr.DataArray]:
        arrays = {"seeds": xr.DataArray(np.asarray(self.seeds_), dims=("seed", "xyz"),
                                        coords={"xyz": ["x", "y", "z"]})}
        if self.mask_img_ is not None:
            arrays["mask_img"] = self.mask_img_
        return arrays

    @classmethod
    def _from_store(cls, parameters: dict, arrays: dict[str, xr.DataArray]):
        names = {name for name in cls._get_param_names() if name not in ("seeds", "mask_img")}
        masker = cls(seeds=np.asarray(arrays["seeds"]).tolist(), mask_img=arrays.get("mask_img"),
                     **{k: v for k, v in parameters.items() if k in names})
        return masker.fit()
