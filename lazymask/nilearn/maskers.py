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

import contextvars
import inspect
import functools
import warnings

import numpy as np

import xarray as xr

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


# Fitted images are lazy DataArrays inside lazymask; nilearn's users read nibabel images.
_IMAGE_ATTRIBUTES = frozenset(
    {"mask_img_", "labels_img_", "maps_img_", "mean_img_", "mask_img_before_resampling_", "region_atlas_"}
)
# Methods that run lazymask's code (fitted images stay lazy inside them) and return eager results.
_EAGER_METHODS = ("fit", "transform", "fit_transform", "inverse_transform", "transform_imgs",
                  "transform_single_imgs", "generate_report")
_inside = contextvars.ContextVar("lazymask_nilearn_inside", default=False)


_SIGNAL_METHODS = ("transform", "fit_transform", "transform_imgs", "transform_single_imgs")


def _as_nilearn_1d(signals):
    """nilearn squeezes the signals of a 3D image: one feature gives a 0-d array (lazymask keeps (1,))."""
    if isinstance(signals, xr.DataArray) and signals.ndim == 1 and "time" not in signals.dims and signals.size == 1:
        return signals.squeeze()
    return signals


def _eager_method(method):
    @functools.wraps(method)
    def wrapped(self, *args, **kwargs):
        token = _inside.set(True)
        try:
            result = method(self, *args, **kwargs)
        finally:
            _inside.reset(token)
        if result is self:
            return self
        if method.__name__ in _SIGNAL_METHODS:
            result = [_as_nilearn_1d(r) for r in result] if isinstance(result, list) else _as_nilearn_1d(result)
        return eager(result)

    if method.__name__ == "inverse_transform":
        eager_inverse = wrapped

        @functools.wraps(method)
        def wrapped(self, *args, **kwargs):
            signals = args[0] if args else next(iter(kwargs.values()), None)
            if getattr(signals, "dtype", None) == np.int64 and not isinstance(
                    self, _lazy.NiftiMapsMasker | _lazy.NiftiSpheresMasker):
                # nilearn builds its image from the int64 signals first, whatever ``dtype`` asks
                warnings.warn("The signals are 64-bit integers, which tools such as FSL and SPM cannot "
                              "read from NIfTI files: the data has been converted to int32 before the "
                              "image gets the dtype asked for.", UserWarning, stacklevel=2)
            return eager_inverse(self, *args, **kwargs)

    return wrapped


class _Eager:
    """nilearn's types on a lazy masker (mixed in before the lazy class).

    The methods of ``_EAGER_METHODS`` return computed results; the fitted images
    (``mask_img_``, ``labels_img_``, ...) read from outside lazymask are ``nibabel`` images
    (computed once and kept), while lazymask's own code keeps reading the lazy DataArrays.
    """

    # scikit-learn's HTML repr links to the documentation: nilearn's page of the class
    _doc_link_module = "lazymask"
    _doc_link_template = "https://nilearn.github.io/stable/modules/generated/nilearn.maskers.{estimator_name}.html"

    def __getattribute__(self, name):
        value = object.__getattribute__(self, name)
        if name in _IMAGE_ATTRIBUTES and isinstance(value, xr.DataArray) and not _inside.get():
            cache = object.__getattribute__(self, "__dict__").setdefault("_nilearn_images", {})
            cached = cache.get(name)
            if cached is None or cached[0] is not value:
                cached = cache[name] = (value, eager(value))
            return cached[1]
        return value

    def __getstate__(self):
        state = super().__getstate__()
        state = dict(state) if isinstance(state, dict) else state
        if isinstance(state, dict):
            state.pop("_nilearn_images", None)
        return state


def _eager_class(lazy_class, face_parent=None):
    """The face class of ``lazy_class``; a Multi masker also subclasses the face of its single-run
    masker (``face_parent``), as nilearn's ``MultiNiftiMasker`` is a ``NiftiMasker``."""
    doc = (f"nilearn's ``{lazy_class.__name__}``: :class:`lazymask.maskers.{lazy_class.__name__}` "
           "with computed results (numpy arrays, nibabel images).\n\n" + inspect.cleandoc(lazy_class.__doc__ or ""))
    namespace = {"__doc__": doc, "__module__": __name__}
    for name in _EAGER_METHODS:
        if hasattr(lazy_class, name):
            namespace[name] = _eager_method(getattr(lazy_class, name))
    bases = (_Eager, lazy_class) if face_parent is None else (lazy_class, face_parent)
    return type(lazy_class.__name__, bases, namespace)


NiftiMasker = _eager_class(_lazy.NiftiMasker)
MultiNiftiMasker = _eager_class(_lazy.MultiNiftiMasker, NiftiMasker)
NiftiLabelsMasker = _eager_class(_lazy.NiftiLabelsMasker)
MultiNiftiLabelsMasker = _eager_class(_lazy.MultiNiftiLabelsMasker, NiftiLabelsMasker)
NiftiMapsMasker = _eager_class(_lazy.NiftiMapsMasker)
MultiNiftiMapsMasker = _eager_class(_lazy.MultiNiftiMapsMasker, NiftiMapsMasker)
NiftiSpheresMasker = _eager_class(_lazy.NiftiSpheresMasker)
