"""Lazy results turned into what nilearn returns: numpy arrays and in-memory nibabel images."""

from __future__ import annotations

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
            return to_nibabel(result)
        return np.asarray(result.values)
    if isinstance(result, da.Array):
        return result.compute()
    if isinstance(result, tuple):
        return tuple(eager(item) for item in result)
    if isinstance(result, list):
        return [eager(item) for item in result]
    return result


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
