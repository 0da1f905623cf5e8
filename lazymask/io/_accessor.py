"""The ``.nifti`` accessor: spatial metadata and NIfTI conversion on any image DataArray.

Registered when :mod:`lazymask` is imported, in the way rioxarray's ``.rio`` is::

    img = lazymask.open_nifti("bold.nii.gz")
    img.nifti.affine, img.nifti.zooms, img.nifti.t_r
    img.mean("time").nifti.to_nibabel()
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from lazymask.io._meta import get_affine, get_t_r, get_zooms


@xr.register_dataarray_accessor("nifti")
class NiftiAccessor:
    """Spatial metadata of an image DataArray (dims ``i, j, k[, time]``, ``attrs["affine"]``).

    Examples
    --------
    >>> img = lazymask.open_nifti("bold.nii.gz")  # doctest: +SKIP
    >>> img.nifti.zooms                            # doctest: +SKIP
    (2.0, 2.0, 2.0)
    """

    def __init__(self, obj: xr.DataArray):
        self._obj = obj

    @property
    def affine(self) -> np.ndarray:
        """The 4x4 voxel-to-world affine (float64)."""
        return get_affine(self._obj)

    @property
    def zooms(self) -> tuple[float, ...]:
        """Voxel sizes in millimetres."""
        return get_zooms(self._obj)

    @property
    def t_r(self) -> float | None:
        """Repetition time in seconds, or ``None``."""
        return get_t_r(self._obj)

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        """The ``(i, j, k)`` shape."""
        return tuple(self._obj.sizes[d] for d in ("i", "j", "k"))

    def to_nibabel(self):
        """Compute the image and return it as an in-memory ``nibabel.Nifti1Image``."""
        from lazymask.io._write import to_nibabel

        return to_nibabel(self._obj)

    def to_nifti(self, path, **kwargs):
        """Write the image to a ``.nii``/``.nii.gz`` file chunk by chunk (see :func:`lazymask.to_nifti`)."""
        from lazymask.io._write import to_nifti

        return to_nifti(self._obj, path, **kwargs)
