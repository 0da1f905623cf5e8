"""The dask array behind an image DataArray, whatever backs it."""

from __future__ import annotations

import dask.array as da
import numpy as np


def as_dask(image) -> da.Array:
    """The data of ``image`` (a DataArray, dask or numpy array) as a dask array, never computed.

    Parameters
    ----------
    image : xarray.DataArray or dask.array.Array or numpy.ndarray

    Returns
    -------
    dask.array.Array
        The DataArray's own dask array when it has one; in-memory data wrapped in one chunk.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> as_dask(xr.DataArray(np.zeros((2, 3)))).chunks
    ((2,), (3,))
    """
    data = getattr(image, "data", image)
    if isinstance(data, da.Array):
        return data
    return da.from_array(np.asarray(data))
