"""The one check of signals given to :mod:`lazymask.signal`: a 2D ``(time, features)`` array."""

from __future__ import annotations

import dask.array as da
import numpy as np
import xarray as xr

from lazymask.exceptions import DimensionError, ParameterError

__all__ = ["time_feature_data"]


def time_feature_data(signals, name: str = "signals"):
    """The numpy or dask array of ``signals`` (array or DataArray), checked to be 2D, time first.

    Examples
    --------
    >>> time_feature_data(np.zeros((10, 3))).shape
    (10, 3)
    """
    if isinstance(signals, xr.DataArray) and "time" in signals.dims and signals.dims[0] != "time":
        raise DimensionError(
            f"{name} has dims {signals.dims}; time must come first, (time, features). "
            f"Pass {name}.transpose('time', ...)."
        )
    data = signals.data if isinstance(signals, xr.DataArray) else signals
    if not isinstance(data, (np.ndarray, da.Array)):
        data = np.asarray(data)
    if data.ndim != 2:
        raise DimensionError(
            f"{name} must be 2D (time, features); got shape {data.shape}. For a single series, "
            f"pass {name}[:, None]."
        )
    if data.dtype.kind not in "fiub":
        raise ParameterError(f"{name} must be numeric; got dtype {data.dtype}.")
    return data
