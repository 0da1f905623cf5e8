"""The voxel grid of an image: its spatial shape and affine, compared with one tolerance.

Every place where two images must share a grid (a mask and a run, an atlas and a run, the runs
of a list) asks :meth:`Grid.same_as` and raises :meth:`Grid.mismatch` when they differ, so the
tolerance and the message live here only. The tolerance is nilearn's ``check_same_fov`` one
(``numpy.allclose`` defaults): affines equal to within float32 rounding of the header.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lazymask.exceptions import ImageMismatchError
from lazymask.io._meta import get_affine


@dataclass(frozen=True, eq=False)
class Grid:
    """A 3D voxel grid: ``shape`` (i, j, k) and the 4x4 voxel-to-world ``affine``.

    Parameters
    ----------
    shape : tuple of int
        Spatial shape (the first three dimensions of an image).
    affine : numpy.ndarray
        4x4 voxel-to-world matrix.

    Examples
    --------
    >>> import numpy as np
    >>> a = Grid((2, 3, 4), np.eye(4))
    >>> a.same_as(Grid((2, 3, 4), np.eye(4) + 1e-9))
    True
    >>> a.same_as(Grid((2, 3, 5), np.eye(4)))
    False
    """

    shape: tuple[int, int, int]
    affine: np.ndarray

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(int(n) for n in self.shape[:3]))
        object.__setattr__(self, "affine", np.asarray(self.affine, dtype=np.float64))

    @classmethod
    def of(cls, image) -> Grid:
        """The grid of an image DataArray (or anything with ``.shape`` and ``attrs["affine"]``).

        Examples
        --------
        >>> import numpy as np, xarray as xr
        >>> img = xr.DataArray(np.zeros((2, 2, 2, 5)), dims=("i", "j", "k", "time"),
        ...                    attrs={"affine": np.eye(4).tolist()})
        >>> Grid.of(img).shape
        (2, 2, 2)
        """
        return cls(tuple(image.shape[:3]), get_affine(image))

    def same_as(self, other: Grid, *, check_shape: bool = True) -> bool:
        """True when ``other`` has the same shape (unless ``check_shape=False``) and affine."""
        if check_shape and self.shape != other.shape:
            return False
        return bool(np.allclose(self.affine, other.affine))

    def mismatch(self, name: str, other: Grid, other_name: str, fix: str) -> ImageMismatchError:
        """The error for two grids that differ: names both, shows both, and says ``fix``.

        Examples
        --------
        >>> import numpy as np
        >>> err = Grid((2, 2, 2), np.eye(4)).mismatch("mask_img", Grid((3, 3, 3), np.eye(4)), "imgs",
        ...                                          "resample the mask first.")
        >>> print(err)  # doctest: +NORMALIZE_WHITESPACE
        mask_img has spatial shape (2, 2, 2) and affine [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0],
        [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]] but imgs has (3, 3, 3) and [[1.0, 0.0, 0.0, 0.0],
        [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]; resample the mask first.
        """
        return ImageMismatchError(
            f"{name} has spatial shape {self.shape} and affine {np.round(self.affine, 4).tolist()} "
            f"but {other_name} has {other.shape} and {np.round(other.affine, 4).tolist()}; {fix}"
        )

    def check_same(self, name: str, other: Grid, other_name: str, fix: str, *, check_shape: bool = True) -> None:
        """Raise :meth:`mismatch` unless :meth:`same_as`."""
        if not self.same_as(other, check_shape=check_shape):
            raise self.mismatch(name, other, other_name, fix)

    def world_coordinates(self, flat_indices=None) -> np.ndarray:
        """World (mm) coordinates ``(n, 3)`` of voxels given by flat Fortran-order indices (all by default).

        Examples
        --------
        >>> import numpy as np
        >>> Grid((2, 1, 1), np.diag([2.0, 2.0, 2.0, 1.0])).world_coordinates().tolist()
        [[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]]
        """
        if flat_indices is None:
            flat_indices = np.arange(int(np.prod(self.shape)))
        ijk = np.stack(np.unravel_index(flat_indices, self.shape, order="F"), axis=1).astype(np.float64)
        return ijk @ self.affine[:3, :3].T + self.affine[:3, 3]
