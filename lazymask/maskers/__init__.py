"""Estimators that turn images into labelled signals, lazily (scikit-learn API, nilearn's parameters).

:class:`NiftiMasker` and :class:`MultiNiftiMasker` return dask-backed DataArrays;
:func:`save_signals` writes them (with the mask, the affine, the parameters and the sources) to a
self-describing zarr group, :func:`open_signals` reads them back, and :func:`load_masker` rebuilds
the fitted masker from the store alone.
"""

from lazymask.maskers._base import BaseMasker
from lazymask.maskers._multi_nifti_masker import MultiNiftiMasker
from lazymask.maskers._nifti_masker import NiftiMasker
from lazymask.maskers._persist import load_masker, open_signals, save_signals

__all__ = ["BaseMasker", "MultiNiftiMasker", "NiftiMasker", "load_masker", "open_signals", "save_signals"]
from lazymask.maskers._labels import MultiNiftiLabelsMasker, NiftiLabelsMasker  # noqa: E402
from lazymask.maskers._maps import MultiNiftiMapsMasker, NiftiMapsMasker  # noqa: E402
from lazymask.maskers._spheres import NiftiSpheresMasker  # noqa: E402

__all__ += ["MultiNiftiLabelsMasker", "MultiNiftiMapsMasker", "NiftiLabelsMasker", "NiftiMapsMasker",
            "NiftiSpheresMasker"]
