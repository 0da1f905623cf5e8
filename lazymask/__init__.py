"""lazymask: nilearn's masking stack as a lazy, out-of-core dataflow on dask and xarray.

Images open lazily (:func:`open_nifti`, :func:`open_zarr`) as xarray DataArrays backed by dask;
:mod:`lazymask.masking`, :mod:`lazymask.signal` and :mod:`lazymask.maskers` compute what nilearn
computes, chunk by chunk, and results persist to zarr (:func:`to_zarr`).
"""

from lazymask.exceptions import LazymaskError
from lazymask.io import open_nifti, open_zarr, to_nifti, to_zarr
from lazymask.maskers import open_signals, save_signals

__version__ = "0.1.0.dev0"

__all__ = [
    "LazymaskError",
    "__version__",
    "open_nifti",
    "open_signals",
    "open_zarr",
    "save_signals",
    "to_nifti",
    "to_zarr",
]
