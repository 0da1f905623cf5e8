"""Lazy results turned into what nilearn returns: numpy arrays and in-memory nibabel images."""

from __future__ import annotations

import warnings

import dask.array as da
import numpy as np
import xarray as xr

from lazymask.io import SPATIAL_DIMS, to_nibabel


def eager(result):
    """``result`` computed into nilearn's types (recursively through tuples and lists).

    An image DataArray (dims ``i, j, k[, time]``) becomes a ``nibabel.Nifti1Image``; any other
    DataArray or dask array a numpy array; everything else is returned as it is.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> eager(xr.DataArray(np.ones((2, 3)), dims=("time", "voxel"))).shape
    (2, 3)
    """
    if isinstance(result, xr.DataArray):
        if tuple(result.dims[:3]) == SPATIAL_DIMS:
            image = _int64_as_int32(result) if result.dtype in (np.int64, np.uint64) else to_nibabel(result)
            if getattr(image, "_data_cache", False) is None:
                # nibabel's cache of the in-memory array, filled now (nilearn's get_data fills it on
                # first read): reading the data then leaves the image, and its joblib hash, unchanged.
                image._data_cache = np.asanyarray(image.dataobj)
            return image
        return np.asarray(result.values)
    if isinstance(result, da.Array):
        return result.compute()
    if isinstance(result, tuple):
        return tuple(eager(item) for item in result)
    if isinstance(result, list):
        return [eager(item) for item in result]
    return result


def _int64_as_int32(result: xr.DataArray):
    """nilearn's images of 64-bit integers: int32 voxels when they fit (with its warning), header int64."""
    image = to_nibabel(result)
    data = np.asarray(image.dataobj)
    info = np.iinfo(np.int32)
    if data.size and (data.min() < info.min or data.max() > info.max):
        warnings.warn("The image holds 64-bit integers too large for 32-bit ones: it keeps 64-bit "
                      "integers, which some tools cannot read.", UserWarning, stacklevel=4)
        return image
    warnings.warn("The image's data are 64-bit integers, which tools such as FSL and SPM cannot "
                  "read from NIfTI files: the data has been converted to int32 (the header keeps "
                  "int64).", UserWarning, stacklevel=4)
    converted = type(image)(data.astype(np.int32), image.affine, header=image.header)
    converted.set_data_dtype(result.dtype)
    return converted


def eager_function(function, doc_module: str):
    """A function calling ``function`` and returning :func:`eager` of its result."""

    def wrapped(*args, **kwargs):
        return eager(function(*args, **kwargs))

    wrapped.__name__ = function.__name__
    wrapped.__qualname__ = function.__name__
    wrapped.__module__ = doc_module
    wrapped.__doc__ = (
        f"nilearn's ``{function.__name__}``: :func:`{function.__module__}.{function.__name__}` "
        "computed into nilearn's types (numpy arrays, nibabel images).\n\n"
        + _without_examples(function.__doc__ or "")
        + f"\n\n    The module's docstring (:mod:`{doc_module}`) has an example.\n"
    )
    wrapped.__wrapped__ = function
    return wrapped


def _without_examples(doc: str) -> str:
    """A numpydoc docstring without its Examples section (they show the lazy results)."""
    lines = doc.splitlines()
    for i, line in enumerate(lines[:-1]):
        if line.strip() == "Examples" and set(lines[i + 1].strip()) == {"-"}:
            return "\n".join(lines[:i]).rstrip()
    return doc.rstrip()
