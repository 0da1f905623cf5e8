"""The ``memory`` parameter: caching computed masks on disk, keyed on what the input is.

A key is a hash of the function's name, its parameters and the input's identity: for an image
opened from files, the dask name ``open_nifti`` gives it (each file's :func:`lazymask.io.file_identity`:
path, size, modification and change times, inode); for in-memory data, a hash of the values. No image object is pickled. An entry is an
``.npz`` file (mask or mean, and the affine) under ``<location>/lazymask_masking/``, written through
lazymask's one staged-write protocol (:func:`lazymask.io.staged_path`); an unreadable entry is
recomputed and replaced.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import dask.array as da
import numpy as np
import xarray as xr
from dask.base import tokenize

from lazymask.exceptions import ParameterError, UnsafeTargetError
from lazymask.io import Found, found_unless, staged_path

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
    """The cached ``(volume, affine)`` under ``key``, or None when absent or unreadable (recomputed)."""
    if location is None:
        return None
    path = location / f"{key}.npz"
    if not path.is_file():
        return None
    return _read_entry(path)


def _read_entry(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as entry:
            return entry["volume"], entry["affine"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None


def _inspect_entry(path: Path) -> Found:
    settled = found_unless(path, directory=False)
    if settled is not None:
        return settled
    if _read_entry(path) is None:
        return Found.stale("a damaged lazymask masking cache entry")
    return Found.complete("a lazymask masking cache entry")


def store_entry(location: Path | None, key: str, volume: np.ndarray, affine) -> None:
    """Write a cache entry through lazymask's one staged-write protocol (an entry replaces its twin)."""
    if location is None:
        return
    if os.path.lexists(location) and not location.is_dir():
        raise UnsafeTargetError(f"memory cache {str(location)!r} exists and is not a directory; choose another memory=.")
    location.mkdir(parents=True, exist_ok=True)
    with staged_path(location / f"{key}.npz", kind="lazymask masking cache entry", overwrite=True,
                     inspect=_inspect_entry, directory=False) as staging:
        with open(staging, "wb") as f:
            np.savez(f, volume=np.asarray(volume), affine=np.asarray(affine, dtype=np.float64))
