"""Moved to :mod:`lazymask._blas` (the image layer uses it too); this name stays for old imports."""

from lazymask._blas import single_threaded_blas

__all__ = ["single_threaded_blas"]
