"""nilearn's image plumbing, lazily: load, index, iterate, concatenate, wrap new data like an image.

Contract
--------
* Every function takes what :func:`lazymask.io.open_nifti` takes (paths, globs, nibabel images,
  DataArrays) and returns image DataArrays (dims ``i, j, k[, time]``, ``attrs["affine"]``).
* Nothing is computed and no voxel is read at call time: selections are ``isel`` on the dask
  array, concatenations ``dask.array.concatenate``; headers only are read when a path is given.
* Results equal what ``nilearn.image`` (0.14) returns for the same inputs: same voxels, same dtype
  (where a dtype rule needs the data, as nilearn's int64 down-cast does, it is applied only to
  in-memory arrays; see docs/differences_from_nilearn.md).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import dask.array as da
import numpy as np
import xarray as xr

from lazymask.exceptions import DimensionError, ParameterError
from lazymask.image._inputs import as_image
from lazymask.image._resample import resample_to_img
from lazymask.io import Grid, get_affine, get_t_r, image_dataarray, open_nifti

__all__ = ["concat_imgs", "index_img", "iter_img", "load_img", "new_img_like"]


def _target_dtype(dtype: np.dtype, target):
    """nilearn's dtype rule: ``None`` keeps, ``"auto"`` gives int32 for integers else float32."""
    if target is None:
        return None
    if isinstance(target, str) and target == "auto":
        target = np.int32 if dtype.kind == "i" else np.float32
    target = np.dtype(target)
    return None if target == dtype else target


def load_img(img, wildcards: bool = True, dtype=None) -> xr.DataArray:
    """Open an image lazily (headers only), as ``nilearn.image.load_img`` loads it.

    Parameters
    ----------
    img : str, path, nibabel image, DataArray, or a list of these
        What :func:`lazymask.open_nifti` accepts.
    wildcards : bool, default=True
        Expand a path holding ``*``/``?`` into the sorted list of files it matches (stacked
        along time). With ``False`` the path is taken literally.
    dtype : None, "auto" or dtype, optional
        Cast the voxels: ``"auto"`` gives int32 for integer data and float32 otherwise.

    Returns
    -------
    xarray.DataArray
        A lazy 3D or 4D image.

    Examples
    --------
    >>> import numpy as np, nibabel as nib
    >>> img = load_img(nib.Nifti1Image(np.zeros((2, 2, 2), "int16"), np.eye(4)), dtype="auto")
    >>> img.dims, img.dtype
    (('i', 'j', 'k'), dtype('int32'))
    """
    if not wildcards and isinstance(img, str) and "://" not in img and any(c in img for c in "*?["):
        img = Path(img)  # open_nifti expands globs in strings only (a URL naming an object is never globbed)
    image = open_nifti(img)
    target = _target_dtype(image.dtype, dtype)
    return image if target is None else image.astype(target)


def index_img(imgs, index) -> xr.DataArray:
    """Select volumes of a 4D image: an int gives a 3D image, a slice/list/mask a 4D one.

    Same as ``nilearn.image.index_img``; lazy (a selection on the dask array).

    Parameters
    ----------
    imgs : 4D image
        What :func:`lazymask.open_nifti` accepts.
    index : int, slice, sequence of int, boolean array, or pandas Series
        Volumes to keep.

    Returns
    -------
    xarray.DataArray
        A 3D image for an integer index, else a 4D image.

    Examples
    --------
    >>> import numpy as np, nibabel as nib
    >>> run = nib.Nifti1Image(np.arange(24.0).reshape(1, 2, 3, 4), np.eye(4))
    >>> index_img(run, slice(0, 2)).shape, index_img(run, -1).shape
    ((1, 2, 3, 2), (1, 2, 3))
    """
    image = as_image(imgs, "imgs", ndim=(4,))
    if hasattr(index, "values") and hasattr(index, "iloc"):  # pandas
        index = index.to_numpy().ravel()
    n_volumes = image.sizes["time"]
    if isinstance(index, int | np.integer):
        if not -n_volumes <= index < n_volumes:
            raise IndexError(
                f"Integer index {index} out of range for the {n_volumes} volumes of imgs; "
                f"pass an index in [-{n_volumes}, {n_volumes - 1}]."
            )
        selected = image.isel(time=int(index))
        return selected.drop_vars("time", errors="ignore")
    if not isinstance(index, slice):
        index = np.asarray(index)
        if index.dtype == bool and index.shape != (n_volumes,):
            raise IndexError(
                f"a boolean index must have one value per volume ({n_volumes}), found shape {index.shape}."
            )
    return image.isel(time=index)


def iter_img(imgs) -> Iterator[xr.DataArray]:
    """Iterate over the volumes of a 4D image (or a list of 3D images), one lazy 3D image each.

    Parameters
    ----------
    imgs : 4D image or list of 3D images

    Yields
    ------
    xarray.DataArray
        A lazy 3D image per volume.

    Examples
    --------
    >>> import numpy as np, nibabel as nib
    >>> run = nib.Nifti1Image(np.zeros((2, 2, 2, 3)), np.eye(4))
    >>> [v.shape for v in iter_img(run)]
    [(2, 2, 2), (2, 2, 2), (2, 2, 2)]
    """
    image = as_image(imgs, "imgs", ndim=(4,))
    for volume in range(image.sizes["time"]):
        yield index_img(image, volume)


def concat_imgs(niimgs, dtype=np.float32, ensure_ndim=None, memory=None, memory_level=0,
                auto_resample: bool = False, verbose: int = 0) -> xr.DataArray:
    """Concatenate 3D images (stacked) or 4D images (joined) along time into one lazy 4D image.

    Same parameters as ``nilearn.image.concat_imgs``.

    Parameters
    ----------
    niimgs : list of images, or a glob
        All 3D or all 4D, on the same grid (unless ``auto_resample``).
    dtype : dtype or None, default=numpy.float32
        dtype of the result (``None``: the first image's).
    ensure_ndim : {None, 4}, optional
        The dimensionality the result must have.
    memory, memory_level : optional
        Accepted for compatibility (nothing is cached: nothing is computed).
    auto_resample : bool, default=False
        Resample every image to the first one's grid (continuous interpolation) when grids differ.
    verbose : int, default=0
        Accepted for compatibility; unused.

    Returns
    -------
    xarray.DataArray
        The lazy 4D image, chunked as its parts (whole volumes).

    Examples
    --------
    >>> import numpy as np, nibabel as nib
    >>> vols = [nib.Nifti1Image(np.full((2, 2, 2), v, "int16"), np.eye(4)) for v in range(3)]
    >>> joined = concat_imgs(vols)
    >>> joined.shape, joined.dtype
    ((2, 2, 2, 3), dtype('float32'))
    """
    if isinstance(niimgs, str | bytes) or not hasattr(niimgs, "__iter__"):
        niimgs = open_nifti(niimgs)  # a glob or a single image
        niimgs = [niimgs] if niimgs.ndim == 4 else [niimgs]
    images = [open_nifti(img) for img in niimgs]
    if not images:
        raise ParameterError("concat_imgs got no images; pass a non-empty list of 3D or 4D images.")
    ndim = images[0].ndim
    if ensure_ndim is not None and ensure_ndim != 4:
        raise DimensionError(f"concat_imgs(ensure_ndim={ensure_ndim}): the result is always 4D; pass 4 or None.")
    for position, image in enumerate(images):
        if image.ndim != ndim:
            raise DimensionError(
                f"niimgs[{position}] is {image.ndim}D but niimgs[0] is {ndim}D; concatenate images "
                "of one dimensionality (all 3D volumes or all 4D runs)."
            )
    first_grid = Grid.of(images[0])
    if auto_resample:
        images = [images[0]] + [img if Grid.of(img).same_as(first_grid) else resample_to_img(img, images[0])
                                for img in images[1:]]
    for position, image in enumerate(images[1:], start=1):
        first_grid.check_same("niimgs[0]", Grid.of(image), f"niimgs[{position}]",
                              "pass auto_resample=True or resample the images to one grid first")
    target = images[0].dtype if dtype is None else np.dtype(dtype)
    parts = [img.data if img.ndim == 4 else da.asarray(img.data)[..., None] for img in images]
    parts = [da.asarray(part).astype(target) for part in parts]
    data = da.concatenate(parts, axis=3)
    attrs = {}
    t_r = get_t_r(images[0])
    return image_dataarray(data, get_affine(images[0]), t_r=t_r, attrs=attrs)


def _downcast_int64(data):
    """nilearn's rule: int64 data that fits in int32 becomes int32 (in-memory data only)."""
    if not isinstance(data, np.ndarray) or data.dtype not in (np.int64, np.uint64) or data.size == 0:
        return data
    info = np.iinfo(np.int32)
    if info.min <= data.min() and data.max() <= info.max:
        warnings.warn("Data array used to create a new image contains 64-bit ints; converted to int32 "
                      "(as nilearn does) for compatibility with tools that cannot read int64.",
                      UserWarning, stacklevel=3)
        return data.astype(np.int32)
    return data


def new_img_like(ref_niimg, data, affine=None, copy_header: bool = True) -> xr.DataArray:
    """Wrap ``data`` (numpy or dask, 3D or 4D) as an image on ``ref_niimg``'s grid.

    Same parameters as ``nilearn.image.new_img_like``. Boolean data becomes uint8, in-memory int64
    data that fits becomes int32 (as nilearn does). A 4D result keeps the reference's repetition
    time.

    Parameters
    ----------
    ref_niimg : image or list of images
        The reference (its affine, and its ``t_r``); only its header is read.
    data : numpy.ndarray, dask.array.Array or xarray.DataArray
        The voxels.
    affine : array-like (4, 4), optional
        Default: the reference's.
    copy_header : bool, default=True
        Keep the reference's repetition time (a DataArray has no other header fields).

    Returns
    -------
    xarray.DataArray

    Examples
    --------
    >>> import numpy as np, nibabel as nib
    >>> ref = nib.Nifti1Image(np.zeros((2, 3, 4)), np.diag([2.0, 2, 2, 1]))
    >>> img = new_img_like(ref, np.ones((2, 3, 4), dtype=bool))
    >>> img.dtype, img.nifti.zooms
    (dtype('uint8'), (2.0, 2.0, 2.0))
    """
    if isinstance(ref_niimg, list | tuple):
        ref_niimg = ref_niimg[0]
    reference = open_nifti(ref_niimg)
    if isinstance(data, xr.DataArray):
        data = data.data
    if not isinstance(data, da.Array):
        data = np.asarray(data)
    if data.dtype == bool:
        data = data.astype(np.uint8)
    data = _downcast_int64(data)
    if affine is None:
        affine = get_affine(reference)
    t_r = get_t_r(reference) if copy_header and data.ndim == 4 else None
    return image_dataarray(data, affine, t_r=t_r)
