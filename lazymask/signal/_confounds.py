"""Loading and validating confounds for :func:`lazymask.signal.clean`.

Contract: :func:`load_confounds` turns whatever the user passed (numpy arrays, pandas DataFrames,
CSV/TSV paths with or without a header, dask arrays, DataArrays, or a list of these) into one
``(n_time, n_confounds)`` float array: numpy when every piece is in memory, dask (one chunk) when
any piece is lazy. Row counts are checked when the graph is built.

fMRIPrep writes ``n/a`` in the first row(s) of derivative columns (``*_derivative1``, ...). These
leading missing values are filled with the column's first available value, which is what nilearn's
``load_confounds`` does before calling ``clean`` (``nilearn.signal.clean`` itself fails on them).
Any other non-finite value is an error.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr

from lazymask.exceptions import ImageFileNotFoundError, ParameterError
from lazymask.storage import files_at

__all__ = ["load_confounds", "fill_leading_nan"]


class ConfoundsFileMissingError(ImageFileNotFoundError, ParameterError):
    """A confounds path that names no file: a ``FileNotFoundError`` (as nilearn's) and a ``ValueError``."""


class ConfoundsTypeError(ParameterError, TypeError):
    """``confounds`` (or one of its entries) of a type ``clean`` cannot read; a ``TypeError`` too, as nilearn's."""


def load_confounds(confounds, n_time: int):
    """Return ``confounds`` as one float ``(n_time, k)`` array (numpy or one-chunk dask), or None.

    Examples
    --------
    >>> load_confounds(np.arange(4.0), n_time=4).shape
    (4, 1)
    """
    if confounds is None:
        return None
    if not isinstance(confounds, (list, tuple, str, Path, np.ndarray, pd.DataFrame, da.Array, xr.DataArray)):
        raise ConfoundsTypeError(
            f"'confounds' must be of type(s): list, tuple, str, pathlib.Path, numpy.ndarray, pandas.DataFrame, "
            f"dask array or DataArray. Got: {type(confounds).__name__!r}"
        )
    pieces = confounds if isinstance(confounds, (list, tuple)) else [confounds]
    if len(pieces) == 0:
        return None
    arrays = [_as_2d(piece, n_time, _describe(piece, i, len(pieces))) for i, piece in enumerate(pieces)]
    if any(isinstance(a, da.Array) for a in arrays):
        stacked = da.concatenate([da.asarray(a) for a in arrays], axis=1).rechunk(-1)
        return stacked.map_blocks(fill_leading_nan, dtype=stacked.dtype, meta=np.empty((0, 0), stacked.dtype))
    return fill_leading_nan(np.hstack(arrays))


def fill_leading_nan(confounds: np.ndarray) -> np.ndarray:
    """Fill each column's leading NaNs with its first finite value; fail on any other non-finite."""
    confounds = np.array(confounds, dtype=_float_dtype(confounds.dtype))
    finite = np.isfinite(confounds)
    first = np.argmax(finite, axis=0)
    for column in np.flatnonzero(first > 0):
        confounds[: first[column], column] = confounds[first[column], column]
        finite[: first[column], column] = True
    if not finite.all():
        rows, columns = np.nonzero(~finite)
        raise ParameterError(
            f"confounds hold {rows.size} non-finite value(s) (NaN or inf), first at row {rows[0]}, "
            f"column {columns[0]}; only leading missing values (fMRIPrep's 'n/a' in the first rows "
            "of derivative columns) are filled. Fill or drop the others before cleaning."
        )
    return confounds


def _as_2d(piece, n_time: int, name: str):
    if isinstance(piece, (str, Path)):
        array = _read_table(os.fspath(piece))
    elif isinstance(piece, pd.DataFrame):
        array = _numeric(piece, name)
    elif isinstance(piece, xr.DataArray):
        array = piece.data
    elif isinstance(piece, (np.ndarray, da.Array)):
        array = piece
    else:
        raise ConfoundsTypeError(
            f"confound has an unhandled type: {type(piece)}. "
            f"{name} has type {type(piece).__name__}; confounds must be numpy arrays, pandas "
            "DataFrames, paths to CSV/TSV files, dask arrays, DataArrays, or a list of these."
        )
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise ParameterError(
            f"confound array has an incorrect number of dimensions: {array.ndim}. "
            f"{name} has {array.ndim} dimensions; confounds must be 1D (n_time,) or 2D "
            "(n_time, n_confounds)."
        )
    if array.dtype.kind not in "fiub":
        raise ParameterError(f"{name} has dtype {array.dtype}; confounds must be numeric.")
    if array.shape[0] != n_time:
        raise ParameterError(
            f"Confound signal has an incorrect length. Signal length: {n_time}; confound length: "
            f"{array.shape[0]}. {name} has {array.shape[0]} rows but the signals have {n_time} time points; "
            "confounds need one row per time point (the same length as the signals)."
        )
    return array.astype(_float_dtype(array.dtype))


def _float_dtype(dtype) -> np.dtype:
    return np.dtype(dtype) if np.dtype(dtype).kind == "f" else np.dtype(np.float64)


def _numeric(frame: pd.DataFrame, name: str) -> np.ndarray:
    try:
        return frame.to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ParameterError(f"{name} holds non-numeric columns: {error}") from error


def _read_table(path: str) -> np.ndarray:
    """Read a CSV/TSV of confounds (a path or a URL): delimiter sniffed, header detected, ``n/a`` read as NaN."""
    files, name = files_at(path)  # a URL: the storage options of set_storage_options
    if not files.is_file(name):
        raise ConfoundsFileMissingError(f"confounds file {str(path)!r} does not exist.")
    content = files.read_bytes(name)
    # the first non-blank line, its leading tabs kept: DataFrame.to_csv(sep="\t") starts the header with a
    # tab (the index column's empty name)
    first_line = next(
        (line.strip(" \r\n") for line in content.decode("utf-8", "replace").splitlines() if line.strip()), ""
    )
    if not first_line:
        raise ParameterError(
            f"confounds file {str(path)!r} is empty (no header, no values); pass a CSV/TSV file with "
            "one row per time point (fMRIPrep's *_desc-confounds_timeseries.tsv), or confounds=None."
        )
    separator = next((s for s in "\t,;" if s in first_line), r"\s+")
    fields = first_line.split() if separator == r"\s+" else first_line.split(separator)
    tokens = [field.strip().strip('"') for field in fields]
    # a header: a text field, or an empty first field (DataFrame.to_csv's index column, as nilearn reads it)
    header = None if all(_is_number(t) for t in tokens) and tokens[0] != "" else 0
    if not first_line:
        raise ParameterError(
            f"confounds file {str(path)!r} is empty (its first line holds no column); pass a "
            "CSV/TSV with one row per volume, or confounds=None."
        )
    frame = pd.read_csv(io.BytesIO(content), sep=separator, header=header, na_values=["n/a"], engine="python")
    return _numeric(frame, f"confounds file {str(path)!r}")


def _is_number(token: str) -> bool:
    if token.lower() in ("n/a", "nan", ""):
        return True
    try:
        float(token)
    except ValueError:
        return False
    return True


def _describe(piece, i: int, n: int) -> str:
    where = f"confounds[{i}]" if n > 1 else "confounds"
    return f"{where} (file {str(piece)!r})" if isinstance(piece, (str, Path)) else where
