"""Spatial metadata of image DataArrays, in one place.

Conventions (see STYLE.md): a 3D image has dims ``("i", "j", "k")``, a 4D image
``("i", "j", "k", "time")``; the voxel-to-world affine is stored in ``attrs["affine"]`` as a nested
list of floats (so that it survives netCDF/zarr attribute round trips); ``attrs["t_r"]`` holds the
repetition time in seconds when it is known. Always read and write them through these helpers.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from lazymask.exceptions import ParameterError

SPATIAL_DIMS = ("i", "j", "k")
IMAGE_DIMS_3D = SPATIAL_DIMS
IMAGE_DIMS_4D = (*SPATIAL_DIMS, "time")


def get_affine(img: xr.DataArray) -> np.ndarray:
    """Return the 4x4 voxel-to-world affine of an image DataArray as a float64 array.

    Parameters
    ----------
    img : xarray.DataArray
        An image with ``attrs["affine"]``.

    Returns
    -------
    numpy.ndarray
        The affine, shape ``(4, 4)``.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> img = xr.DataArray(np.zeros((2, 2, 2)), dims=("i", "j", "k"), attrs={"affine": np.eye(4).tolist()})
    >>> float(get_affine(img)[0, 0])
    1.0
    """
    try:
        affine = img.attrs["affine"]
    except KeyError:
        raise ParameterError(
            f"DataArray {img.name!r} has no 'affine' attribute, so its position in space is unknown; "
            "open images with lazymask.open_nifti or set attrs['affine'] to a 4x4 matrix."
        ) from None
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise ParameterError(f"attrs['affine'] must be a 4x4 matrix, found shape {affine.shape}.")
    return affine


def affine_attr(affine) -> list[list[float]]:
    """Convert an affine to the nested-list form stored in ``attrs["affine"]``.

    Parameters
    ----------
    affine : array-like
        A 4x4 matrix.

    Returns
    -------
    list of list of float
        The same matrix as nested lists (JSON-able, so it survives zarr and netCDF attributes).

    Examples
    --------
    >>> affine_attr(np.eye(4))[0]
    [1.0, 0.0, 0.0, 0.0]
    """
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise ParameterError(f"an affine must be a 4x4 matrix, found shape {affine.shape}.")
    return affine.tolist()


def get_zooms(img: xr.DataArray) -> tuple[float, ...]:
    """Voxel sizes in millimetres (the column norms of the affine's 3x3 part).

    Parameters
    ----------
    img : xarray.DataArray
        An image with ``attrs["affine"]``.

    Returns
    -------
    tuple of float
        The sizes along ``i``, ``j``, ``k``.

    Examples
    --------
    >>> img = xr.DataArray(np.zeros((2, 2, 2)), dims=("i", "j", "k"), attrs={"affine": np.diag([2, 2, 3, 1.0]).tolist()})
    >>> get_zooms(img)
    (2.0, 2.0, 3.0)
    """
    affine = get_affine(img)
    return tuple(float(z) for z in np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))


def get_t_r(img: xr.DataArray) -> float | None:
    """Repetition time in seconds, or ``None`` when unknown.

    Parameters
    ----------
    img : xarray.DataArray
        An image (``attrs["t_r"]`` holds the repetition time when the header knew it).

    Returns
    -------
    float or None

    Examples
    --------
    >>> get_t_r(xr.DataArray(np.zeros((1, 1, 1, 3)), attrs={"t_r": 2}))
    2.0
    """
    t_r = img.attrs.get("t_r")
    return None if t_r is None else float(t_r)


def image_dataarray(data, affine, *, t_r=None, name=None, attrs=None) -> xr.DataArray:
    """Wrap a 3D or 4D (numpy or dask) array as an image DataArray with the standard dims and attrs.

    Parameters
    ----------
    data : array-like
        3D ``(i, j, k)`` or 4D ``(i, j, k, time)`` data.
    affine : array-like
        The 4x4 voxel-to-world affine.
    t_r : float, optional
        Repetition time in seconds; gives the ``time`` coordinate in seconds.
    name : str, optional
        Name of the DataArray.
    attrs : dict, optional
        Further attributes.

    Returns
    -------
    xarray.DataArray

    Examples
    --------
    >>> img = image_dataarray(np.zeros((4, 5, 6, 10)), np.eye(4), t_r=2.0)
    >>> img.dims, float(img["time"][-1])
    (('i', 'j', 'k', 'time'), 18.0)
    """
    if data.ndim not in (3, 4):
        raise ParameterError(f"an image must be 3D or 4D, found {data.ndim}D data of shape {data.shape}.")
    dims = IMAGE_DIMS_3D if data.ndim == 3 else IMAGE_DIMS_4D
    all_attrs = dict(attrs or {})
    all_attrs["affine"] = affine_attr(affine)
    coords = {}
    if data.ndim == 4:
        if t_r:
            all_attrs["t_r"] = float(t_r)
            coords["time"] = ("time", np.arange(data.shape[3]) * float(t_r), {"units": "s"})
    image = xr.DataArray(data, dims=dims, coords=coords, attrs=all_attrs)
    image.name = name  # xarray would otherwise take the dask array's graph name
    return image
