"""The ``lazy`` mode's replacements: lazymask's lazy API with each result computed, nothing else.

Measures how far the core alone is from nilearn: no nilearn-specific behaviour of the drop-in face,
only results turned into numpy arrays / nibabel images (as a user would with ``.values`` and
``lazymask.to_nibabel``).
"""

from __future__ import annotations

import importlib
import inspect

from lazymask.nilearn._eager import eager, eager_function

# lazymask.nilearn module -> the lazy module its names come from.
LAZY_SOURCE = {
    "lazymask.nilearn.exceptions": "lazymask.nilearn.exceptions",
    "lazymask.nilearn.masking": "lazymask.masking",
    "lazymask.nilearn.signal": "lazymask.signal",
    "lazymask.nilearn.regions": "lazymask.regions",
    "lazymask.nilearn.maskers": "lazymask.maskers",
    "lazymask.nilearn.interfaces.fmriprep": "lazymask.interfaces.fmriprep",
}

_CLASSES: dict = {}


def _computed_class(lazy_class):
    if lazy_class not in _CLASSES:
        def transform(self, imgs, confounds=None, sample_mask=None):
            return eager(lazy_class.transform(self, imgs, confounds=confounds, sample_mask=sample_mask))

        def fit_transform(self, imgs, y=None, confounds=None, sample_mask=None, **fit_params):
            return eager(lazy_class.fit_transform(self, imgs, y, confounds=confounds,
                                                  sample_mask=sample_mask, **fit_params))

        def inverse_transform(self, X):
            return eager(lazy_class.inverse_transform(self, X))

        namespace = {"transform": transform, "fit_transform": fit_transform,
                     "inverse_transform": inverse_transform, "__module__": lazy_class.__module__}
        _CLASSES[lazy_class] = type(lazy_class.__name__, (lazy_class,), namespace)
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
