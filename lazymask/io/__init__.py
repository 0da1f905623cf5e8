"""Reading and writing images: NIfTI files and zarr stores to and from lazy DataArrays."""

from lazymask.io import _accessor  # noqa: F401 - registers the .nifti accessor
from lazymask.io._arrays import as_dask
from lazymask.io._grid import Grid
from lazymask.io._identity import file_identity
from lazymask.io._meta import (
    IMAGE_DIMS_3D,
    IMAGE_DIMS_4D,
    SPATIAL_DIMS,
    affine_attr,
    get_affine,
    get_t_r,
    get_zooms,
    image_dataarray,
)
from lazymask.io._nifti import open_nifti
from lazymask.io._write import to_nibabel, to_nifti
from lazymask.io._zarr import is_complete, open_zarr, to_zarr

__all__ = [
    "Grid",
    "as_dask",
    "IMAGE_DIMS_3D",
    "IMAGE_DIMS_4D",
    "SPATIAL_DIMS",
    "affine_attr",
    "file_identity",
    "get_affine",
    "get_t_r",
    "get_zooms",
    "image_dataarray",
    "is_complete",
    "open_nifti",
    "open_zarr",
    "to_nibabel",
    "to_nifti",
    "to_zarr",
]
