"""The ``lazy`` mode's replacements: lazymask's lazy API with each result computed, nothing else.

Results are what a method or function returns and a fitted masker's images (``mask_img_``, ...),
computed when the test reads them.

Measures how far the core alone is from nilearn: no nilearn-specific behaviour of the drop-in face,
only results turned into numpy arrays / nibabel images (as a user would with ``.values`` and
``lazymask.to_nibabel``).
"""

from __future__ import annotations

import contextvars
import functools
import importlib
import inspect
import weakref

import xarray as xr

from lazymask.nilearn._eager import eager, eager_function

# lazymask.nilearn module -> the lazy module its names come from.
LAZY_SOURCE = {
    "lazymask.nilearn.exceptions": "lazymask.nilearn.exceptions",
    "lazymask.nilearn.masking": "lazymask.masking",
    "lazymask.nilearn.signal": "lazymask.signal",
    "lazymask.nilearn.regions": "lazymask.regions",
    "lazymask.nilearn.maskers": "lazymask.maskers",
    "lazymask.nilearn.interfaces.fmriprep": "lazymask.interfaces.fmriprep",
    "lazymask.nilearn.reporting": "lazymask.reporting",
}

_CLASSES: dict = {}
_EAGER_IMAGES: dict = {}  # id of a fitted DataArray -> (weak reference to it, its computed image)
_METHODS = ("fit", "transform", "fit_transform", "inverse_transform", "transform_imgs",
            "transform_single_imgs", "generate_report")
_IMAGES = frozenset({"mask_img_", "labels_img_", "maps_img_", "mean_img_", "mask_img_before_resampling_",
                     "region_atlas_"})
_SINGLE = ("NiftiMasker", "NiftiLabelsMasker", "NiftiMapsMasker")  # the classes nilearn's Multi maskers extend
_inside = contextvars.ContextVar("lazy_api_inside", default=False)


def _computing(method):
    @functools.wraps(method)
    def wrapped(self, *args, **kwargs):
        if _inside.get():  # called from lazymask's own methods (a Multi masker's super()): stays lazy
            return method(self, *args, **kwargs)
        token = _inside.set(True)
        try:
            result = method(self, *args, **kwargs)
        finally:
            _inside.reset(token)
        return result if result is self else eager(result)

    return wrapped


def _eager_image(value: xr.DataArray):
    """The computed image of a fitted DataArray: one per DataArray, so that reading it twice gives one object."""
    known = _EAGER_IMAGES.get(id(value))
    if known is None or known[0]() is not value:
        known = _EAGER_IMAGES[id(value)] = (weakref.ref(value), eager(value))
        weakref.finalize(value, _EAGER_IMAGES.pop, id(value), None)
    return known[1]


def _computed_class(lazy_class):
    """The lazy class whose method results and fitted images are computed when the test reads them."""
    if lazy_class not in _CLASSES:
        def __getattribute__(self, name):
            value = object.__getattribute__(self, name)
            if name in _IMAGES and isinstance(value, xr.DataArray) and not _inside.get():
                return _eager_image(value)
            return value

        namespace = {name: _computing(getattr(lazy_class, name)) for name in _METHODS if hasattr(lazy_class, name)}
        # defined in this module under its name, so that pickle finds it (as it finds lazymask's own)
        namespace.update(__getattribute__=__getattribute__, __module__=__name__, __doc__=lazy_class.__doc__)
        # a computed Multi masker is also a computed single one (nilearn's checks tell them by isinstance)
        parents = tuple(_computed_class(base) for base in lazy_class.__bases__
                        if base.__name__ in _SINGLE and base.__module__.startswith("lazymask.maskers"))
        _CLASSES[lazy_class] = globals()[lazy_class.__name__] = type(lazy_class.__name__, (lazy_class, *parents),
                                                                     namespace)
    return _CLASSES[lazy_class]


def replacements(face_module: str) -> dict:
    face = importlib.import_module(face_module)
    lazy = importlib.import_module(LAZY_SOURCE[face_module])
    out = {}
    for name in face.__all__:
        value = getattr(lazy, name, None)
        if value is None:
            continue
        if inspect.isclass(value) and hasattr(value, "transform"):
            out[name] = _computed_class(value)
        elif inspect.isfunction(value) and face_module != "lazymask.nilearn.interfaces.fmriprep":
            out[name] = eager_function(value, value.__module__)
        else:
            out[name] = value
    return out
