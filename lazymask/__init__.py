"""lazymask: nilearn's masking stack as a lazy, out-of-core dataflow on dask and xarray."""

from lazymask.exceptions import LazymaskError
from lazymask.io import open_nifti

__version__ = "0.1.0.dev0"

__all__ = ["LazymaskError", "open_nifti", "__version__"]
