"""Spheres around seeds (world mm) as an averaging operator.

A sphere holds, as in nilearn 0.14, the voxels whose centre lies within ``radius`` mm of the
seed, the voxel nearest to the seed, and the first voxel (in C order) whose world coordinates
truncate to the seed's truncated coordinates. The membership is one sparse ``(seed, voxel)``
matrix; each time chunk then costs one sum per seed over its voxels (in nilearn's order).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.spatial import cKDTree

from lazymask.exceptions import ParameterError
from lazymask.io import Grid
from lazymask.regions._operators import Expansion, _Operator, finite, signal_float, volumes_matrix


def sphere_membership(seeds, radius, shape, affine, candidates: np.ndarray | None = None) -> sp.csr_matrix:
    """Boolean ``(seed, voxel)`` CSR matrix (flat Fortran voxel order) of the voxels of each sphere.

    ``candidates`` (3D bool) restricts the voxels (a mask); ``radius=None`` keeps only the voxels
    nilearn adds on top of the radius search (the nearest voxel, and the truncation match).

    Examples
    --------
    >>> import numpy as np
    >>> m = sphere_membership([[0.0, 0.0, 0.0]], 2.0, (5, 5, 5), np.diag([2.0, 2.0, 2.0, 1.0]))
    >>> int(m.sum())
    4
    """
    seeds = np.asarray(seeds, dtype=np.float64)
    grid = Grid(shape, affine)
    shape, affine = grid.shape, grid.affine
    candidates = np.ones(shape, dtype=bool) if candidates is None else np.asarray(candidates, dtype=bool)
    voxels = np.flatnonzero(candidates.ravel(order="F"))
    coords = grid.world_coordinates(voxels)
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
        shown = ", ".join(f"#{i} {np.asarray(seeds[i]).tolist()}" for i in empty[:10])
        raise ParameterError(
            f"These spheres are empty: {empty.tolist()}. {empty.size} sphere(s) hold no voxel: seeds {shown}. "
            "Those seeds lie outside the image (or "
            "outside mask_img) for this radius; check that the seeds are world coordinates (mm) in the "
            "images' space, or increase radius."
        )
    if not allow_overlap:
        per_voxel = np.asarray(membership.astype(np.int32).sum(axis=0)).ravel()
        if np.any(per_voxel > 1):
            pairs = membership[:, np.flatnonzero(per_voxel > 1)].astype(np.int32)
            shared = np.flatnonzero(np.diff(pairs.indptr) > 0)[:10].tolist()
            raise ParameterError(
                "Overlap detected between spheres: allow_overlap=False but spheres overlap "
                f"(seeds {shared} share voxels); pass "
                "allow_overlap=True, a smaller radius, or seeds farther apart."
            )


def sphere_operator(seeds, radius, grid: Grid, candidates=None, allow_overlap: bool = False) -> SphereMeanOperator:
    """The mean over each sphere on ``grid`` (a :class:`SphereMeanOperator`).

    Examples
    --------
    >>> import numpy as np
    >>> from lazymask.io import Grid
    >>> op = sphere_operator([[0.0, 0.0, 0.0]], 2.0, Grid((5, 5, 5), np.diag([2.0, 2.0, 2.0, 1.0])))
    >>> op(np.ones((5, 5, 5, 1))).tolist()
    [[1.0]]
    """
    membership = sphere_membership(seeds, radius, grid.shape, grid.affine, candidates)
    check_spheres(membership, seeds, allow_overlap)
    return SphereMeanOperator(membership, grid.shape)


class SphereMeanOperator(_Operator):
    """The mean of each sphere's voxels, summed in C voxel order then divided by their number.

    That is the order and arithmetic of ``numpy.mean(data[sphere], axis=0)`` (and of nilearn), so
    float64 signals are identical to nilearn's, not only close.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> op = SphereMeanOperator(sp.csr_matrix(np.array([[True, True, False]])), (1, 1, 3))
    >>> op(np.arange(6.0).reshape(1, 1, 3, 2)).tolist()
    [[1.0], [2.0]]
    """

    def __init__(self, membership: sp.csr_matrix, shape):
        membership = membership.tocsr()
        self.voxels = np.unique(membership.indices).astype(np.int64)
        self.members = []
        for row in range(membership.shape[0]):
            flat = membership.indices[membership.indptr[row]:membership.indptr[row + 1]]
            c_order = np.ravel_multi_index(np.unravel_index(flat, shape, order="F"), shape, order="C")
            self.members.append(np.searchsorted(self.voxels, flat[np.argsort(c_order, kind="stable")]))
        self._set_token(self.voxels, *self.members)

    @property
    def n_regions(self) -> int:
        return len(self.members)

    def output_dtype(self, data_dtype) -> np.dtype:
        return signal_float(data_dtype)

    def __call__(self, block: np.ndarray) -> np.ndarray:
        values = finite(volumes_matrix(block)[self.voxels]).astype(np.float64, copy=False)
        out = np.empty((values.shape[1], len(self.members)), dtype=np.float64)
        for column, members in enumerate(self.members):
            out[:, column] = np.add.reduce(values[members], axis=0) / members.size
        return out.astype(self.output_dtype(block.dtype), copy=False)


def sphere_expansion(seeds, radius, grid: Grid, mask, allow_overlap: bool = False) -> Expansion:
    """The way back of spheres: each seed's signal on its voxels (divided by the overlap count when allowed).

    Examples
    --------
    >>> import numpy as np
    >>> from lazymask.io import Grid
    >>> exp = sphere_expansion([[0.0, 0.0, 0.0]], None, Grid((2, 1, 1), np.eye(4)), np.ones((2, 1, 1)))
    >>> exp(np.array([[3.0]]), (2, 1, 1))[..., 0].ravel().tolist()
    [3.0, 0.0]
    """
    membership = sphere_membership(seeds, radius, grid.shape, grid.affine, np.asarray(mask).astype(bool))
    check_spheres(membership, seeds, allow_overlap)
    support = np.unique(membership.indices)
    spread = membership[:, support].astype(np.float64)
    if allow_overlap:
        overlap = np.asarray(spread.sum(axis=0)).ravel()
        spread = spread @ sp.diags(1.0 / np.maximum(overlap, 1))
    return Expansion(support, spread.T.tocsr())
