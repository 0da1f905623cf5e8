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
    {"mask_img_", "labels_img_", "maps_img_", "mean_img_", "mask_img_before_resampling_"}
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


# Fitted attributes every masker's fit sets (BaseMasker.fit), for the classes whose doc omits them.
_COMMON_ATTRIBUTES = {
    "clean_args_": ("dict", ["The ``clean_args`` used by ``transform`` (an empty dict for None)."]),
    "mean_img_": ("nibabel image or None",
                  ["The mean of the first fitted image, drawn in the report (None without images or "
                   "with ``reports=False``)."]),
}


def _doc_sections(doc: str) -> tuple[str, dict[str, list[str]]]:
    """The text before the first numpydoc section, and each section's lines (dedented)."""
    lines = inspect.cleandoc(doc or "").splitlines()
    intro, sections, current = [], {}, None
    for i, line in enumerate(lines):
        if i + 1 < len(lines) and line.strip() and set(lines[i + 1].strip()) == {"-"} and not line.startswith(" "):
            current = line.strip()
            sections[current] = []
            continue
        if current is not None and sections[current] == [] and set(line.strip()) == {"-"}:
            continue
        (intro if current is None else sections[current]).append(line)
    return "\n".join(intro).strip(), sections


def _doc_entries(lines: list[str]) -> dict[str, tuple[str, list[str]]]:
    """``name -> (type, description lines)`` of a Parameters/Attributes section; grouped names split."""
    entries, names = {}, []
    for line in lines:
        if line and not line.startswith(" "):
            head, _, kind = line.partition(" : ")
            names = [name.strip() for name in head.split(",") if name.strip()]
            for name in names:
                entries[name] = (kind.strip(), [])
        elif names:
            for name in names:
                entries[name][1].append(line)
    return entries


def _render(entries) -> list[str]:
    lines = []
    for name, (kind, description) in entries:
        lines.append(f"{name} : {kind}" if kind else name)
        while description and not description[-1].strip():
            description = description[:-1]
        lines.extend(description)
    return lines


def _nilearn_doc(lazy_class, face_parent=None) -> str:
    """nilearn's layout of the class doc: every parameter on its own, in ``__init__``'s order,
    and every fitted attribute (from lazymask's docs; a Multi masker's from its single-run one)."""
    intro, sections = _doc_sections(lazy_class.__doc__)
    lazy_parent = None if face_parent is None else next(
        klass for klass in face_parent.__mro__ if klass.__module__.startswith("lazymask.maskers"))
    parent = {} if lazy_parent is None else _doc_sections(lazy_parent.__doc__)[1]
    parameters = {**_doc_entries(parent.get("Parameters", [])), **_doc_entries(sections.get("Parameters", []))}
    attributes = {**_doc_entries(parent.get("Attributes", [])), **_doc_entries(sections.get("Attributes", []))}
    signature = inspect.signature(lazy_class.__init__).parameters
    ordered = []
    for name, parameter in list(signature.items())[1:]:
        kind, description = parameters.get(name, ("", [f"    See :class:`lazymask.maskers.{lazy_class.__name__}`."]))
        if parameter.default is not inspect.Parameter.empty and "default=" not in kind:
            kind = f"{kind}, default={parameter.default!r}" if kind else f"default={parameter.default!r}"
        ordered.append((name, (kind, description)))
    for name, entry in _COMMON_ATTRIBUTES.items():
        attributes.setdefault(name, (entry[0], ["    " + line for line in entry[1]]))
    text = [
        f"nilearn's ``{lazy_class.__name__}``: :class:`lazymask.maskers.{lazy_class.__name__}` "
        "with computed results (numpy arrays, nibabel images).", "", intro, "",
        "Parameters", "----------", *_render(ordered), "",
        "Attributes", "----------", *_render(sorted(attributes.items())), "",
    ]
    for title, lines in sections.items():
        if title not in ("Parameters", "Attributes"):
            text += [title, "-" * len(title), *lines, ""]
    return "\n".join(text)


def _eager_class(lazy_class, face_parent=None):
    """The face class of ``lazy_class``; a Multi masker also subclasses the face of its single-run
    masker (``face_parent``), as nilearn's ``MultiNiftiMasker`` is a ``NiftiMasker``."""
    doc = _nilearn_doc(lazy_class, face_parent)
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
