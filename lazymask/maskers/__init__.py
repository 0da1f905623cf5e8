"""Estimators that turn images into labelled signals, lazily (scikit-learn API, nilearn's parameters).

:class:`NiftiMasker` and :class:`MultiNiftiMasker` give voxel signals ``(time, voxel)``; the region
maskers (:class:`NiftiLabelsMasker`, :class:`NiftiMapsMasker`, :class:`NiftiSpheresMasker` and the
Multi forms) give ``(time, region)`` signals. All return dask-backed DataArrays;
:func:`save_signals` writes them (with the mask or atlas, the affine, the parameters and the
sources) to a self-describing zarr group, :func:`open_signals` reads them back, and
:func:`load_masker` rebuilds the fitted masker from the store alone. ``MASK_STRATEGIES`` (from
:mod:`lazymask.masking`) names the ``mask_strategy`` values.
"""

from lazymask.masking import MASK_STRATEGIES
from lazymask.maskers._base import BaseMasker
from lazymask.maskers._labels import MultiNiftiLabelsMasker, NiftiLabelsMasker
from lazymask.maskers._maps import MultiNiftiMapsMasker, NiftiMapsMasker
from lazymask.maskers._multi_nifti_masker import MultiNiftiMasker
from lazymask.maskers._nifti_masker import NiftiMasker
from lazymask.maskers._persist import load_masker, open_signals, save_signals
from lazymask.maskers._spheres import NiftiSpheresMasker

__all__ = [
    "MASK_STRATEGIES",
    "BaseMasker",
    "MultiNiftiLabelsMasker",
    "MultiNiftiMapsMasker",
    "MultiNiftiMasker",
    "NiftiLabelsMasker",
    "NiftiMapsMasker",
    "NiftiMasker",
    "NiftiSpheresMasker",
    "load_masker",
    "open_signals",
    "save_signals",
]
