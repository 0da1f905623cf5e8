"""Reading and writing images: NIfTI files and zarr stores to and from lazy DataArrays."""

from lazymask.io import _accessor  # noqa: F401 - registers the .nifti accessor
from lazymask.io._arrays import as_dask
from lazymask.io._grid import Grid
from lazymask.storage import file_identity
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
from lazymask.io._reader import VolumeReader
from lazymask.io._runcache import clear_run_cache, persist_within_budget, run_cache_entries
from lazymask.io._write import to_nibabel, to_nifti
from lazymask.io._staging import Found, check_target, found_unless, staged_path
from lazymask.io._zarr import (
    PendingMember,
    StagedGroup,
    check_group_target,
    is_complete,
    normalise_group,
    open_zarr,
    inspect_store,
    read_group_metadata,
    require_root,
    staged_group,
    to_zarr,
    verify,
    write_member,
)

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
    "verify",
    "check_target",
    "staged_path",
    "Found",
    "found_unless",
    "staged_group",
    "StagedGroup",
    "write_member",
    "check_group_target",
    "read_group_metadata",
    "inspect_store",
    "require_root",
    "normalise_group",
    "PendingMember",
    "VolumeReader",
    "clear_run_cache",
    "persist_within_budget",
    "run_cache_entries",
]
