"""The ``memory`` parameter: caching computed masks on disk, keyed on what the input is.

A key is a hash of the function's name, its parameters and the input's identity: for an image
opened from files, the dask name ``open_nifti`` gives it (path, size and modification time of each
file); for in-memory data, a hash of the values. No image object is pickled. An entry is an
``.npz`` file (mask or mean, and the affine) under ``<location>/lazymask_masking/``.
"""

from __future__ import annotations

import os
from pathlib import Path

import dask.array as da
import numpy as np
import xarray as xr
from dask.base import tokenize

from lazymask.exceptions import ParameterError

CACHE_DIR = "lazymask_masking"


def cache_location(memory) -> Path | None:
    """The cache directory for ``memory`` (None, a path, or a ``joblib.Memory``), or None."""
    if memory is None:
        return None
    if isinstance(memory, str | os.PathLike):
        return Path(memory) / CACHE_DIR
    location = getattr(memory, "location", "missing")
    if location == "missing":
        raise ParameterError(
            f"memory={memory!r}: expected None, a directory path or a joblib.Memory."
        )
    return None if location is None else Path(location) / CACHE_DIR


def image_identity(image: xr.DataArray) -> str:
    """What an image is, cheaply: its dask name (file identities) or a hash of its values."""
    data = image.data
    name = data.name if isinstance(data, da.Array) else tokenize(np.asarray(data))
    return tokenize(name, image.attrs.get("affine"), image.shape)


def cache_key(function: str, identity: str, **params) -> str:
    return f"{function}-{tokenize(function, identity, sorted(params.items(), key=str))}"


def load_entry(location: Path | None, key: str) -> tuple[np.ndarray, np.ndarray] | None:
    if location is None:
        return None
    path = location / f"{key}.npz"
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as entry:
        return entry["volume"], entry["affine"]


def store_entry(location: Path | None, key: str, volume: np.ndarray, affine) -> None:
    if location is None:
        return
    location.mkdir(parents=True, exist_ok=True)
    temporary = location / f"{key}.{os.getpid()}.tmp.npz"
    np.savez(temporary, volume=np.asarray(volume), affine=np.asarray(affine, dtype=np.float64))
    os.replace(temporary, location / f"{key}.npz")
