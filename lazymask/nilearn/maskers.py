"""nilearn's ``nilearn.maskers``, eager: lazymask's maskers returning numpy arrays and nibabel images.

Each class is the lazy masker of :mod:`lazymask.maskers` (same parameters, same computation)
whose results are computed: ``transform`` gives a numpy array (or a data frame under
``set_output``), ``inverse_transform`` a ``nibabel.Nifti1Image``.

Examples
--------
>>> import numpy as np, nibabel as nib
>>> from lazymask.nilearn.maskers import NiftiMasker
>>> img = nib.Nifti1Image(np.random.default_rng(0).random((5, 5, 5, 4)), np.eye(4))
>>> type(NiftiMasker().fit_transform(img)).__name__
'ndarray'
"""

from __future__ import annotations

from lazymask import maskers as _lazy
from lazymask.nilearn._eager import eager

__all__ = [
    "BaseMasker",
    "MultiNiftiLabelsMasker",
    "MultiNiftiMapsMasker",
    "MultiNiftiMasker",
    "NiftiLabelsMasker",
    "NiftiMapsMasker",
    "NiftiMasker",
    "NiftiSpheresMasker",
]

BaseMasker = _lazy.BaseMasker


class _Eager:
    """Computes what the lazy masker returns (mixed in before the lazy class)."""

    def transform(self, imgs, confounds=None, sample_mask=None):
        return eager(super().transform(imgs, confounds=confounds, sample_mask=sample_mask))

    def fit_transform(self, imgs, y=None, confounds=None, sample_mask=None, **fit_params):
        return eager(super().fit_transform(imgs, y, confounds=confounds, sample_mask=sample_mask, **fit_params))

    def inverse_transform(self, X):
        return eager(super().inverse_transform(X))


def _eager_class(lazy_class):
    doc = (
        f"nilearn's ``{lazy_class.__name__}``: :class:`lazymask.maskers.{lazy_class.__name__}` "
        "with computed results (numpy arrays, nibabel images).\n\n" + (lazy_class.__doc__ or "")
    )
    return type(lazy_class.__name__, (_Eager, lazy_class), {"__doc__": doc, "__module__": __name__})


NiftiMasker = _eager_class(_lazy.NiftiMasker)
MultiNiftiMasker = _eager_class(_lazy.MultiNiftiMasker)
NiftiLabelsMasker = _eager_class(_lazy.NiftiLabelsMasker)
MultiNiftiLabelsMasker = _eager_class(_lazy.MultiNiftiLabelsMasker)
NiftiMapsMasker = _eager_class(_lazy.NiftiMapsMasker)
MultiNiftiMapsMasker = _eager_class(_lazy.MultiNiftiMapsMasker)
NiftiSpheresMasker = _eager_class(_lazy.NiftiSpheresMasker)
