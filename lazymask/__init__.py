"""lazymask: nilearn's masking stack as a lazy, out-of-core dataflow on dask and xarray.

Images open lazily (:func:`open_nifti`, :func:`open_zarr`) as xarray DataArrays backed by dask;
:mod:`lazymask.masking`, :mod:`lazymask.signal` and :mod:`lazymask.maskers` compute what nilearn
computes, chunk by chunk, and results persist to zarr (:func:`to_zarr`). :func:`to_nibabel` hands
an image (a mean, a mask, a run) to nibabel and nilearn.
"""

from lazymask.exceptions import LazymaskError
from lazymask.io import open_nifti, open_zarr, to_nibabel, to_nifti, to_zarr

__version__ = "0.1.0.dev0"

_FROM_MASKERS = ("open_signals", "save_signals")


def __getattr__(name: str):
    # The maskers import scikit-learn (half a second): load them when first asked for.
    if name in _FROM_MASKERS:
        from lazymask import maskers

        return getattr(maskers, name)
    if name in ("build_archive", "open_archive"):  # lazymask.open_archive(store), as the issue names it
        from lazymask import archive
        return getattr(archive, name)
    raise AttributeError(f"module 'lazymask' has no attribute {name!r}")

__all__ = [
    "LazymaskError",
    "__version__",
    "open_nifti",
    "open_signals",
    "open_zarr",
    "save_signals",
    "to_nibabel",
    "to_nifti",
    "to_zarr",
]
