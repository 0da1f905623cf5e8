"""The masker base class: scikit-learn estimators whose ``transform`` builds a graph.

Contract (shared by every masker; subclasses fill the hooks)
-----------------------------------------------------------
* ``__init__`` of a subclass stores its parameters and nothing else (nilearn 0.14's names and
  defaults); a subclass declares ``_parameter_constraints`` in scikit-learn's format
  (``sklearn.utils._param_validation``: ``StrOptions``, ``Interval``, ``"boolean"``, ``None``,
  types, ``"array-like"``, ...) for its own parameters; the constraints every masker shares
  (:data:`COMMON_CONSTRAINTS`) are added for the parameters the class has when it is defined,
  so ``cls._parameter_constraints`` lists every parameter (scikit-learn's estimator checks
  verify it). scikit-learn validates them in ``fit``; a failure raises
  :class:`InvalidParameterError`, which is both lazymask's ``ParameterError`` and
  scikit-learn's ``InvalidParameterError``, with scikit-learn's message.
* ``fit(imgs=None, y=None)`` validates the parameters, sets ``clean_args_``, calls the hook
  ``_fit(imgs)`` (which sets the fitted attributes, e.g. ``mask_img_``, ``affine_``,
  ``n_elements_``) and sets ``mean_img_`` (the mean of the first fitted image, lazy, unless
  ``_fit`` set it; None without images or with ``reports=False``); it returns ``self``. It may
  compute small things (a mask); nothing else. Everything ``transform``, ``inverse_transform``
  and the report need is a trailing-underscore attribute set here.
* ``transform(imgs, confounds=None, sample_mask=None)`` computes NOTHING and changes nothing on
  ``self``; it opens the images (``as_image``), remembers 3D input, resamples onto
  ``_target_grid()`` when the images are not on it, smooths (``smoothing_fwhm``), extracts with
  the hook ``_extract(img4d)`` (a lazy ``(time, feature)`` DataArray, blockwise over time
  chunks), cleans with :func:`lazymask.signal.clean` (only when an option asks for it), applies
  ``dtype`` and labels the result (time in seconds, attrs: affine, t_r, masker, parameters,
  source). With ``set_output(transform="pandas"|"polars")`` the result is computed into a data
  frame with ``get_feature_names_out()`` as columns (nilearn 0.14's ``set_output``).
* ``inverse_transform(X)`` checks ``X`` and calls the hook ``_inverse(signals)``; it changes
  nothing on ``self`` either.
* ``generate_report()`` delegates to :func:`lazymask.reporting.generate_report` (nilearn's
  warnings: not fitted, ``reports=False``, no image at fit, ...) and
  :func:`lazymask.reporting.report_for`, which reads the fitted masker's public attributes only.
  Fit records what the report needs (``_reporting_data``; nilearn's private ``_report_content``
  state, which ``generate_report`` also updates with its title and warnings).
* Persistence (see :mod:`lazymask.maskers._persist`): the hook ``_spatial_arrays()`` returns the
  named DataArrays a store needs to rebuild the masker, and the classmethod
  ``_from_store(parameters, arrays)`` rebuilds a fitted masker from them.

Hooks a subclass implements: ``_fit``, ``_target_grid``, ``_extract``, ``_inverse``,
``_spatial_arrays``, ``_from_store``; optionally ``_fitted_attribute`` (default
``"n_elements_"``).
"""

from __future__ import annotations

import inspect
import json
import numbers
import os
import warnings
import dataclasses
from dataclasses import dataclass
from functools import wraps
from typing import ClassVar

import dask.array as da
import numpy as np
import pandas as pd
import sklearn
import sklearn.exceptions
import xarray as xr
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils import InputTags
from sklearn.utils._param_validation import HasMethods, Hidden, Interval, StrOptions
from sklearn.utils._param_validation import InvalidParameterError as _SklearnInvalidParameterError

from lazymask import config, exceptions
from lazymask.exceptions import DimensionError, ParameterError, ParameterTypeError
from lazymask.image import as_image, known_time_means, mean_img, resample_img, smooth_img, time_mean_volume
from lazymask.maskers._doc import nilearn_doc
from lazymask.io import Grid, as_dask, get_affine, get_t_r, persist_within_budget
from lazymask.signal import clean, high_variance_confounds

__all__ = [
    "BaseMasker",
    "COMMON_CONSTRAINTS",
    "DTYPE_NAMES",
    "InvalidParameterError",
    "MASKER_CLASSES",
    "NotFittedError",
    "OrderedOptions",
    "jsonable",
    "source_records",
]

#: Every concrete masker class by name, filled as subclasses are defined (for ``load_masker``).
MASKER_CLASSES: dict[str, type] = {}


class NotFittedError(exceptions.NotFittedError, sklearn.exceptions.NotFittedError):
    """A masker is used before ``fit``: lazymask's ``NotFittedError`` and scikit-learn's at once.

    Defined here rather than in :mod:`lazymask.exceptions` so that importing lazymask does not
    import scikit-learn; ``except lazymask.exceptions.NotFittedError`` and
    ``except sklearn.exceptions.NotFittedError`` both catch it.
    """


class InvalidParameterError(ParameterError, _SklearnInvalidParameterError):
    """A parameter fails its ``_parameter_constraints``: lazymask's ``ParameterError`` and scikit-learn's error."""


class OrderedOptions(set):
    """A set that iterates in the order given: ``StrOptions(OrderedOptions(...))`` lists its
    options in that order in scikit-learn's error message (a plain set's order varies)."""

    def __init__(self, options):
        self._order = tuple(dict.fromkeys(options))
        super().__init__(self._order)

    def __iter__(self):
        return iter(self._order)


@dataclass
class MaskerInputTags(InputTags):
    """scikit-learn's input tags plus nilearn's: a masker takes NIfTI-like images, not surfaces."""

    niimg_like: bool = True
    surf_img: bool = False


def _dtype_names() -> frozenset[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # numpy's deprecated aliases ("a")
        names = {name for name in np.sctypeDict if isinstance(name, str)}
        # and the type codes numpy also reads: "i4", "<f8", "=u2", ...
        for name in list(names):
            code = np.dtype(name).str
            names.update({code, code[1:], "=" + code[1:]})
        return frozenset(name for name in names if np.dtype(name) != np.dtype(bool)
                         and np.dtype(name).kind not in "OVSUMm")


#: The dtype names numpy knows ("float32", "f4", "int16", ...), booleans excluded.
DTYPE_NAMES = _dtype_names()

_POSITIVE = Interval(numbers.Real, 0, None, closed="neither")

#: Constraints shared by every masker (scikit-learn's format); each class gets those of its parameters.
COMMON_CONSTRAINTS: dict[str, list] = {
    "standardize": [StrOptions(OrderedOptions(["zscore_sample", "zscore", "psc"])), "boolean", None],
    "standardize_confounds": ["boolean"],
    "detrend": ["boolean"],
    "high_variance_confounds": ["boolean"],
    "low_pass": [None, _POSITIVE],
    "high_pass": [None, _POSITIVE],
    "t_r": [None, _POSITIVE],
    "smoothing_fwhm": [None, Interval(numbers.Real, 0, None, closed="left"), "array-like"],
    "memory": [None, str, os.PathLike, HasMethods(["cache"])],
    "memory_level": [Interval(numbers.Integral, 0, None, closed="left")],
    "verbose": ["verbose"],
    "reports": ["boolean"],
    "clean_args": [None, dict],
    # a dtype: numpy types and dtypes, their names (hidden from the message: there are many)
    "dtype": [None, StrOptions({"auto"}), Hidden(StrOptions(set(DTYPE_NAMES))), type, np.dtype],
    "mask_img": "no_validation",  # an image: a path, a nibabel image, a DataArray, ...
    "n_jobs": [numbers.Integral, None],
}


class BaseMasker(TransformerMixin, BaseEstimator, auto_wrap_output_keys=None):
    """Base of lazymask's maskers (see the module's contract). Not used directly."""

    _parameter_constraints: ClassVar[dict] = {}

    def __init_subclass__(cls, **kwargs):
        # lazymask wraps ``transform`` itself (below): scikit-learn's wrapper would compute the
        # lazy result into numpy at every call, whatever the output configuration.
        kwargs.setdefault("auto_wrap_output_keys", None)
        super().__init_subclass__(**kwargs)
        if not cls.__name__.startswith("_"):
            # the first class of a name is lazymask's own: lazymask.nilearn's eager classes of the
            # same name (defined later) do not replace it for load_masker
            MASKER_CLASSES.setdefault(cls.__name__, cls)
        cls._parameter_constraints = _complete_constraints(cls)
        if not cls.__name__.startswith("_") and cls.__doc__:
            cls.__doc__ = nilearn_doc(cls)
        if "transform" in cls.__dict__ or not getattr(cls.transform, "_lazymask_output", False):
            cls.transform = _with_output_container(cls.transform)
        if "fit_transform" in cls.__dict__:
            cls.fit_transform = _x_as_imgs(cls.__dict__["fit_transform"])

    def __sklearn_tags__(self):
        """scikit-learn's tags with nilearn's: estimator type ``"masker"``, NIfTI-like input."""
        tags = super().__sklearn_tags__()
        tags.estimator_type = "masker"
        tags.input_tags = MaskerInputTags(**dataclasses.asdict(tags.input_tags))
        return tags

    # -- fitting ----------------------------------------------------------------------------------
    def fit(self, imgs=None, y=None):
        """Validate the parameters and fit (compute or load the spatial definition).

        Parameters
        ----------
        imgs : image or list of images, optional
            Data to compute a mask from, when the masker needs one.
        y : None
            Unused (scikit-learn compatibility).

        Returns
        -------
        self
        """
        del y
        self._validate_parameters()
        self.clean_args_ = dict(self.clean_args or {})
        self.__dict__.pop("mean_img_", None)
        if getattr(self, "mask_img", None) is not None:
            self._log("fit", f"Loading mask from {describe_input(self.mask_img)}")
        if imgs is not None:
            self._log("fit", f"Loading data from {describe_input(imgs)}")
        for name in ("labels_img", "maps_img"):
            if getattr(self, name, None) is not None:
                self._log("fit", f"Loading regions from {describe_input(getattr(self, name))}")
        if hasattr(self, "mask_strategy") and self.mask_img is None and imgs is not None:
            self._log("fit", "Computing mask")
        self._fit(imgs)
        if "mean_img_" not in self.__dict__:
            self.mean_img_ = self._lazy_mean(imgs)
        self._record_report_data(imgs)
        if getattr(self, "verbose", 0):
            self._log_resampling()
        self._log("fit", "Finished fit")
        return self

    def _log_resampling(self) -> None:
        """nilearn's ``verbose`` messages for the spatial images fit put on another grid."""
        for given, fitted, message in (("labels_img", "labels_img_", "Resampling regions"),
                                       ("maps_img", "maps_img_", "Resampling regions"),
                                       ("mask_img", "mask_img_", "Resampling mask")):
            source = getattr(self, given, None)
            result = self.__dict__.get(fitted)
            if source is None or not isinstance(result, xr.DataArray) or given == "mask_img" and (
                    "mask_strategy" in self.get_params(deep=False)):
                continue
            try:
                moved = not Grid.of(as_image(source, given)).same_as(Grid.of(result))
            except Exception:  # noqa: BLE001 - a message only: never fail fit for it
                continue
            if moved:
                self._log("fit", message)

    def _log_extraction(self) -> None:
        """The ``verbose`` messages of a transform (once per call, whatever the number of runs)."""
        self._log("transform", "Extracting region signals")
        self._log("transform", "Cleaning extracted signals")

    def _log(self, method: str, message: str) -> None:
        """Print ``[Class.method] message`` when ``verbose`` is on (nilearn's progress messages)."""
        if getattr(self, "verbose", 0):
            print(f"[{type(self).__name__}.{method}] {message}")

    def _lazy_mean(self, imgs) -> xr.DataArray | None:
        """The lazy mean of the first fitted image (for the report), or None (no image, reports=False)."""
        if imgs is None or not getattr(self, "reports", True):
            return None
        first = imgs[0] if isinstance(imgs, list | tuple) else imgs
        return mean_img(first)

    def _validate_parameters(self) -> None:
        """scikit-learn's validation of ``_parameter_constraints``, raising :class:`InvalidParameterError`."""
        try:
            self._validate_params()
        except _SklearnInvalidParameterError as error:
            raise InvalidParameterError(str(error)) from None
        dtype = self.get_params(deep=False).get("dtype")
        if dtype is not None and not (isinstance(dtype, str) and dtype == "auto") and _is_bool_dtype(dtype):
            raise InvalidParameterError(
                f"'dtype' cannot be bool: the 'dtype' parameter of {type(self).__name__} must be a "
                f"non-boolean dtype, None or 'auto'. Got {dtype!r} instead."
            )

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, self._fitted_attribute)

    _fitted_attribute = "n_elements_"

    def _check_fitted(self) -> None:
        if not self.__sklearn_is_fitted__():
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with appropriate "
                "arguments before using this estimator."
            )

    # -- output containers ------------------------------------------------------------------------
    def set_output(self, *, transform=None):
        """Choose what ``transform`` returns, as nilearn 0.14 (scikit-learn's ``set_output`` API).

        Parameters
        ----------
        transform : {"default", "pandas", "polars"}, optional
            ``"default"``: lazymask's lazy DataArray(s); ``"pandas"`` / ``"polars"``: the signals
            computed into a data frame (one row per volume, columns ``get_feature_names_out()``;
            a 3D image gives one row). None leaves the choice unchanged; without a call,
            ``sklearn.set_config(transform_output=...)`` decides.

        Returns
        -------
        self

        Examples
        --------
        >>> from lazymask.maskers import NiftiMasker
        >>> NiftiMasker().set_output(transform="pandas")._sklearn_output_config
        {'transform': 'pandas'}
        """
        if transform is None:
            return self
        if transform not in ("default", "pandas", "polars"):
            raise ParameterError(
                f"set_output(transform={transform!r}): expected 'default', 'pandas' or 'polars'."
            )
        self._sklearn_output_config = {**getattr(self, "_sklearn_output_config", {}), "transform": transform}
        return self

    def _output_container(self) -> str:
        chosen = getattr(self, "_sklearn_output_config", {}).get("transform")
        return chosen if chosen is not None else sklearn.get_config()["transform_output"]

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """``<classname><i>`` for each output column (scikit-learn's convention, as nilearn)."""
        self._check_fitted()
        prefix = type(self).__name__.lower()
        return np.asarray([f"{prefix}{i}" for i in range(self.n_elements_)], dtype=object)

    # -- transforming -----------------------------------------------------------------------------
    def transform(self, imgs, confounds=None, sample_mask=None) -> xr.DataArray:
        """Extract (and clean) signals, lazily: builds a dask graph and computes nothing.

        Parameters
        ----------
        imgs : image
            A 4D run or a 3D image (anything :func:`lazymask.io.open_nifti` accepts).
        confounds : array-like, DataFrame, path, or list of these, optional
            Confounds regressed out of the signals (see :func:`lazymask.signal.clean`).
        sample_mask : array-like, optional
            Volumes to keep (boolean mask or indices).

        Returns
        -------
        xarray.DataArray
            Dask-backed ``(time, feature)`` signals (``(feature,)`` for a 3D image).
        """
        self._check_fitted()
        self._log_extraction()
        return self._transform_one(imgs, confounds, sample_mask, add_hv_first=True, cast=True)

    def transform_single_imgs(self, imgs, confounds=None, sample_mask=None, copy=True) -> xr.DataArray:
        """Signals of one image, lazily (nilearn's name for :meth:`transform` of a single image).

        Parameters
        ----------
        imgs : image
            A 4D run or a 3D image.
        confounds : array-like, DataFrame, path, or list of these, optional
            Confounds regressed out of the signals.
        sample_mask : array-like, optional
            Volumes to keep (boolean mask or indices).
        copy : bool, default=True
            Accepted for nilearn compatibility: lazymask never modifies its input.

        Returns
        -------
        xarray.DataArray
            Dask-backed ``(time, feature)`` signals (``(feature,)`` for a 3D image).

        Examples
        --------
        >>> import numpy as np, nibabel as nib
        >>> from lazymask.maskers import NiftiMasker
        >>> img = nib.Nifti1Image(np.random.default_rng(0).random((5, 5, 5, 3)), np.eye(4))
        >>> NiftiMasker(mask_img=nib.Nifti1Image(np.ones((5, 5, 5), "i1"), np.eye(4))).fit().transform_single_imgs(img).shape
        (3, 125)
        """
        del copy
        self._check_fitted()
        self._log_extraction()
        return self._transform_one(imgs, confounds, sample_mask, add_hv_first=True, cast=True)

    def _more_tags(self):
        """The estimator's tags (scikit-learn < 1.6's method, kept for the libraries that call it)."""
        return self.__sklearn_tags__()

    def fit_transform(self, imgs, y=None, confounds=None, sample_mask=None, **fit_params):
        """``fit(imgs)`` then ``transform(imgs, ...)``: the mask is computed, signals stay lazy.

        The images are opened once for both steps (headers only). When ``fit`` reads the data
        (a mask computed from the mean) and the run fits in ``config.get("memory_budget")``, the
        run is decoded once, kept (persisted on the active scheduler) and both the mean and the
        extraction use it: one decompression. Otherwise the extraction reads the data again (from
        the run cache when it is on, see :mod:`lazymask.io._runcache`).
        """
        self._validate_parameters()
        image = imgs if imgs is None else self._open(imgs)
        known = []
        if image is not None and self._fit_reads_data():
            known = persist_within_budget([image], derived=time_mean_volume)  # decoded run + its mean
            image = known[0][0]
        with warnings.catch_warnings(), known_time_means(known):
            warnings.filterwarnings("ignore", message=r".*Generation of a mask.*")
            self.fit(image, y, **fit_params)
        return self.transform(image, confounds=confounds, sample_mask=sample_mask)

    def _open(self, imgs):
        return as_image(imgs, "imgs", ndim=(3, 4))

    def _fit_reads_data(self) -> bool:
        """Hook: whether ``fit`` reads the images' voxels (then ``fit_transform`` keeps them within budget)."""
        return False

    def _transform_one(self, imgs, confounds, sample_mask, *, add_hv_first: bool, cast: bool) -> xr.DataArray:
        image = self._open(imgs)
        is_3d = image.ndim == 3
        img4d = image.expand_dims("time", axis=3) if is_3d else image
        prepared = self._prepare_image(img4d)
        all_confounds = self._all_confounds(image, img4d, confounds, add_hv_first)
        signals = self._extract_whole_time(prepared) if self._needs_cleaning(all_confounds, sample_mask) else None
        signals = self._extract(prepared) if signals is None else signals
        signals = self._set_time(signals, img4d)
        signals = self._clean(signals, all_confounds, sample_mask)
        signals = self._cast(signals, image.dtype) if cast else signals
        signals = signals.assign_attrs(self._signal_attrs(image, signals))
        signals.name = "signals"
        return signals.isel(time=0, drop=True) if is_3d else signals

    def _prepare_image(self, img4d: xr.DataArray) -> xr.DataArray:
        """Resample onto the masker's grid when needed (continuous), then smooth."""
        target_affine, target_shape = self._target_grid()
        if target_affine is not None and not _on_grid(img4d, target_affine, target_shape):
            self._check_resamplable(img4d, target_affine, target_shape)
            img4d = resample_img(img4d, target_affine=target_affine, target_shape=target_shape,
                                 interpolation="continuous")
        if self.smoothing_fwhm is not None:
            img4d = smooth_img(img4d, self.smoothing_fwhm)
        return img4d

    def _check_resamplable(self, image, target_affine, target_shape) -> None:
        """Hook: raise when images may not be resampled onto the masker's grid (default: allowed)."""

    def _set_time(self, signals: xr.DataArray, img4d: xr.DataArray) -> xr.DataArray:
        t_r = self._t_r(img4d)
        if t_r is not None:
            signals = signals.assign_coords(time=np.arange(signals.sizes["time"]) * float(t_r))
            signals["time"].attrs["units"] = "s"
        return signals

    def _t_r(self, image) -> float | None:
        return float(self.t_r) if self.t_r is not None else get_t_r(image)

    def _all_confounds(self, image, img4d, confounds, add_hv_first: bool):
        """The user's confounds plus, with ``high_variance_confounds``, those of the whole image."""
        if not self.high_variance_confounds:
            return confounds
        series = whole_image_series(img4d)
        if series.nbytes <= config.get("memory_budget"):
            # a run that fits in memory: nilearn's computation on the whole series at once (voxels in C order,
            # each voxel's series contiguous), so that the confounds are nilearn's to the bit -- also the
            # arbitrary null-space ones when fewer voxels than confounds are kept
            n_time = series.shape[0]
            hv = series.rechunk(-1).map_blocks(
                _high_variance_in_memory, dtype=series.dtype, meta=np.empty((0, 0), series.dtype),
                chunks=((n_time,), (min(5, n_time),)))
        else:
            hv = high_variance_confounds(series)
        user = [] if confounds is None else (list(confounds) if isinstance(confounds, list) else [confounds])
        return [hv, *user] if add_hv_first else [*user, hv]

    def _needs_cleaning(self, confounds, sample_mask) -> bool:
        return bool(
            self.detrend or self.standardize not in (False, None) or confounds is not None
            or sample_mask is not None or self.low_pass is not None or self.high_pass is not None
            or self.clean_args_
        )

    def _clean(self, signals: xr.DataArray, confounds, sample_mask) -> xr.DataArray:
        """:func:`lazymask.signal.clean` with the masker's options; skipped when it would not change a value.

        With every option off nilearn's ``clean`` returns its float input unchanged, so the
        extraction stays a pure blockwise map over time chunks.
        """
        if not self._needs_cleaning(confounds, sample_mask):
            return signals
        t_r = self.t_r
        if t_r is None and (self.low_pass is not None or self.high_pass is not None) and (
                self.clean_args_.get("filter", "butterworth") is not False):
            header = signals.attrs.get("t_r")
            kind = self.clean_args_.get("filter", "butterworth")
            raise ParameterError(
                f"Repetition time (t_r) must be specified for {kind} filtering (low_pass={self.low_pass!r}, "
                f"high_pass={self.high_pass!r}). Got: 't_r=None'. Pass t_r in seconds"
                + (f" (the images' header says {header:g} s)" if header else "")
                + ": as nilearn, the masker does not filter with the header's value."
            )
        return clean(
            signals, runs=self.runs if hasattr(self, "runs") else None, detrend=self.detrend,
            standardize=self.standardize, standardize_confounds=self.standardize_confounds,
            t_r=t_r, low_pass=self.low_pass, high_pass=self.high_pass, confounds=confounds,
            sample_mask=sample_mask, **self.clean_args_,
        )

    def _cast(self, signals: xr.DataArray, source_dtype) -> xr.DataArray:
        """nilearn's ``dtype`` rule: None keeps the pipeline's dtype; "auto": int32 for integer images, else float32."""
        target = target_dtype(self.dtype, source_dtype)
        return signals if target is None or signals.dtype == target else signals.astype(target)

    def _signal_attrs(self, image: xr.DataArray, signals: xr.DataArray) -> dict:
        target_affine, _ = self._target_grid()
        affine = get_affine(image) if target_affine is None else np.asarray(target_affine)
        attrs = {
            "affine": np.asarray(affine, dtype=float).tolist(),
            "masker": type(self).__name__,
            "parameters": self.json_parameters(),
            "source": source_records(image.attrs.get("source")),
        }
        t_r = self._t_r(image)
        if t_r is not None:
            attrs["t_r"] = float(t_r)
        return attrs

    def json_parameters(self) -> dict:
        """The masker's parameters as JSON-able values (images given as DataArrays/arrays are summarised)."""
        return {name: jsonable(value) for name, value in self.get_params(deep=False).items()}

    # -- inverse ----------------------------------------------------------------------------------
    def inverse_transform(self, X) -> xr.DataArray:
        """Signals back to a lazy 3D (one row / 1D) or 4D image on the masker's grid.

        Parameters
        ----------
        X : numpy.ndarray, xarray.DataArray, dask array or pandas.DataFrame
            ``(time, feature)`` or ``(feature,)``.

        Returns
        -------
        xarray.DataArray
            A lazy image with the masker's affine.
        """
        self._check_fitted()
        signals = self._check_signals(X)
        self._log("inverse_transform", "Computing image from signals")
        image = self._inverse(signals)
        # nilearn's rule: the image has the signals' dtype, or the one ``dtype`` asks for.
        target = target_dtype(self.dtype, signals.dtype) or np.dtype(signals.dtype)
        return image if image.dtype == target else image.astype(target)

    def _check_signals(self, X):
        """``X`` as an array or DataArray of shape ``(feature,)`` or ``(time, feature)``; clear errors."""
        if isinstance(X, pd.DataFrame | pd.Series):
            X = X.to_numpy()
        elif hasattr(X, "to_numpy") and not isinstance(X, xr.DataArray | da.Array):  # polars
            X = X.to_numpy()
        if not isinstance(X, xr.DataArray | da.Array):
            X = np.atleast_1d(np.asarray(X))  # a 0-d array: the one feature of a 3D image (nilearn's squeeze)
        elif X.ndim == 0:
            X = X.expand_dims("feature") if isinstance(X, xr.DataArray) else X.reshape(1)
        expected = (self.n_elements_,) if X.ndim == 1 else (X.shape[0] if X.ndim else 0, self.n_elements_)
        if X.ndim not in (1, 2) or tuple(X.shape) != expected:
            raise (DimensionError if X.ndim not in (1, 2) else ParameterError)(
                "Input to 'inverse_transform' has wrong shape.\n"
                f"Expected {expected} (n_elements_={self.n_elements_} features per row, this "
                f"{type(self).__name__} extracted them).\nGot {tuple(X.shape)}."
            )
        if X.dtype == bool:
            target = np.dtype(np.int32 if self.dtype is None or self.dtype == "auto" else self.dtype)
            warnings.warn(f"Casting boolean input to {target}", UserWarning, stacklevel=3)
            X = X.astype(target)
        return X

    # -- reports ----------------------------------------------------------------------------------
    def generate_report(self, engine="matplotlib", title=None, **kwargs):
        """An HTML report of the fitted masker (renders in Jupyter; ``.save_as_html(path)``).

        Built by :func:`lazymask.reporting.report_for` from the fitted attributes
        (``mask_img_``, ``mean_img_``, ...); a lazy ``mean_img_`` is computed for the report and
        not kept.

        Parameters
        ----------
        engine : {"matplotlib"}, default="matplotlib"
            How figures are drawn (lazymask draws them with matplotlib).
        title : str or None, default=None
            The report's title (None: the class name).
        **kwargs
            ``displayed_maps`` (maps maskers) or ``displayed_spheres`` (spheres masker): the
            maps / spheres drawn, as nilearn: an int ``n`` (the first ``n``, default 10),
            ``"all"`` or a list/array of indices.

        Returns
        -------
        lazymask.reporting.HTMLReport
            Before fit, with ``reports=False`` or when reports were off at fit: a report with the
            reason (also raised as a UserWarning) and no figure, as nilearn's.

        Examples
        --------
        >>> import numpy as np, nibabel as nib
        >>> from lazymask.maskers import NiftiMasker
        >>> mask = nib.Nifti1Image(np.pad(np.ones((3, 3, 3), "i1"), 2), np.eye(4))
        >>> NiftiMasker(mask_img=mask).fit().generate_report(title="My mask").title
        'My mask'
        """
        from lazymask.reporting import generate_report

        if engine != "matplotlib":
            raise ParameterError(f"generate_report(engine={engine!r}): lazymask draws with 'matplotlib' only.")
        kind = "map" if "maps_img" in self.get_params(deep=False) else (
            "sphere" if "seeds" in self.get_params(deep=False) else None)
        accepted = {} if kind is None else {f"displayed_{kind}s": 10}
        unknown = sorted(set(kwargs) - set(accepted))
        if unknown:
            raise ParameterError(
                f"generate_report() of {type(self).__name__} got unexpected argument(s) {unknown}; "
                f"it takes engine, title{''.join(', ' + name for name in accepted)}."
            )
        displayed_of = None
        if kind is not None:
            def displayed_of():
                return displayed_items(kwargs.get(f"displayed_{kind}s", 10), int(self.n_elements_), kind)
        return generate_report(self, engine, title, displayed_of)

    # nilearn's report state (private in nilearn too; its tests and reports read it)
    @property
    def _report_content(self) -> dict:
        """The state of the last report: title, warnings, description, summary (nilearn's keys)."""
        if "_report_state" not in self.__dict__:
            from lazymask.reporting import new_report_content

            self.__dict__["_report_state"] = new_report_content(self)
        return self.__dict__["_report_state"]

    @property
    def _report_warnings(self) -> list[str]:
        """The warnings of the last report, sorted, without duplicates."""
        return sorted(set(self._report_content["warning_messages"]))

    def _has_report_data(self) -> bool:
        """Whether fit kept what the report draws (it was fitted with ``reports=True``)."""
        return "_reporting_data" in self.__dict__

    def _record_report_data(self, imgs) -> None:
        """At fit: remember whether reports were on, and what the report needs to say about the input."""
        from lazymask.reporting import fit_report_data, new_report_content

        reports = bool(getattr(self, "reports", True))
        self.__dict__["_report_state"] = content = new_report_content(self)
        content["reports_at_fit_time"] = reports
        self.__dict__.pop("_reporting_data", None)
        if reports:
            self._reporting_data = fit_report_data(self, imgs)

    def __repr__(self, N_CHAR_MAX=700) -> str:
        """The class and the parameters that differ from their defaults; arrays and images summarised."""
        defaults = {name: p.default for name, p in inspect.signature(type(self).__init__).parameters.items()
                    if name != "self"}
        shown = []
        for name, value in self.get_params(deep=False).items():
            if name in defaults and _same_default(value, defaults[name]):
                continue
            shown.append(f"{name}={short_repr(value)}")
        text = f"{type(self).__name__}({', '.join(shown)})"
        return text if len(text) <= N_CHAR_MAX else text[: N_CHAR_MAX - 4] + "...)"

    # -- hooks --------------------------------------------------------------------------------------
    def _fit(self, imgs):  # pragma: no cover - abstract
        raise NotImplementedError

    def _target_grid(self) -> tuple[np.ndarray | None, tuple | None]:
        """The ``(affine, shape)`` every image is resampled onto before extraction (None: no resampling)."""
        return None, None

    def _extract_whole_time(self, img4d: xr.DataArray) -> xr.DataArray | None:
        """Hook: the signals as whole-time blocks, when that is cheaper than regrouping time chunks, else None."""
        return None

    def _extract(self, img4d: xr.DataArray) -> xr.DataArray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _inverse(self, signals):  # pragma: no cover - abstract
        raise NotImplementedError

    def _spatial_arrays(self) -> dict[str, xr.DataArray]:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def _from_store(cls, parameters: dict, arrays: dict[str, xr.DataArray]):  # pragma: no cover - abstract
        raise NotImplementedError


# -- helpers ------------------------------------------------------------------------------------------
def _complete_constraints(cls) -> dict:
    """The constraints of every parameter of ``cls``: its own, then its bases', then the common ones."""
    names = cls._get_param_names()
    merged: dict = {}
    for klass in reversed(cls.__mro__):
        merged.update(vars(klass).get("_parameter_constraints", {}))
    return {name: merged.get(name, COMMON_CONSTRAINTS.get(name)) for name in names
            if name in merged or name in COMMON_CONSTRAINTS}


def _x_as_imgs(method):
    """``method`` also taking its images as ``X=`` (scikit-learn's name, which nilearn's maskers accept)."""
    if getattr(method, "_accepts_x", False):
        return method

    @wraps(method)
    def wrapped(self, *args, **kwargs):
        if not args and "X" in kwargs and "imgs" not in kwargs:
            args = (kwargs.pop("X"),)
        return method(self, *args, **kwargs)

    wrapped._accepts_x = True
    return wrapped


def _with_output_container(transform):
    """Wrap a ``transform`` so that ``set_output(transform="pandas"|"polars")`` is honoured."""

    @wraps(transform)
    def wrapped(self, *args, **kwargs):
        if not args and "X" in kwargs and "imgs" not in kwargs:  # scikit-learn's name for the images
            args = (kwargs.pop("X"),)
        result = transform(self, *args, **kwargs)
        container = self._output_container()
        if container == "default":
            return result
        if isinstance(result, list):
            return [as_container(item, container, self.get_feature_names_out()) for item in result]
        return as_container(result, container, self.get_feature_names_out())

    wrapped._lazymask_output = True
    return wrapped


def as_container(signals, container: str, columns) -> object:
    """Computed signals as a pandas or polars data frame (a 1D result gives one row), as nilearn."""
    if not isinstance(signals, xr.DataArray):
        return signals
    values = np.atleast_2d(np.asarray(signals.values))
    if container == "pandas":
        return pd.DataFrame(values, columns=list(columns))
    try:
        import polars
    except ImportError:
        raise ImportError("Setting output container to 'polars' requires polars to be installed") from None
    return polars.DataFrame(values, schema=[str(c) for c in columns], orient="row")


def displayed_items(displayed, n_items: int, kind: str) -> list[int]:
    """nilearn's ``displayed_maps`` / ``displayed_spheres`` as a list of indices, with its warnings.

    ``"all"``, an int ``n`` (the first ``n``; more than there are: all, with a warning) or a
    list/array of ints (indices beyond the last: left out, with a warning).
    """
    name = f"displayed_{kind}s"
    def is_int(value) -> bool:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)

    if isinstance(displayed, np.ndarray):
        valid = displayed.ndim == 1 and displayed.dtype.kind in "iu"
    elif isinstance(displayed, list | tuple):
        valid = all(is_int(i) for i in displayed)
    else:
        valid = is_int(displayed) or (isinstance(displayed, str) and displayed == "all")
    if not valid:
        raise ParameterTypeError(
            f"Parameter '{name}' of ``generate_report()`` should be either 'all' or a positive 'int', "
            f"or a list/array of ints. Got {displayed!r} ({type(displayed).__name__})."
        )
    if isinstance(displayed, str):
        return list(range(n_items))
    if isinstance(displayed, numbers.Integral):
        if displayed > n_items:
            warnings.warn(
                f"`generate_report()` received '{name}={displayed}' but the masker has {n_items} "
                f"{kind}(s): '{name}' was set to {n_items}.", UserWarning, stacklevel=3)
            displayed = n_items
        return list(range(int(displayed)))
    requested = [int(i) for i in np.asarray(displayed).tolist()]
    kept = [i for i in requested if 0 <= i < n_items]
    missing = [i for i in requested if not 0 <= i < n_items]
    if missing:
        warnings.warn(
            f"`generate_report()` received '{name}={requested}'. Report cannot display the following "
            f"{kind}(s) {missing} because the masker has {n_items} {kind}(s).", UserWarning, stacklevel=3)
    return kept


def describe_input(imgs) -> str:
    """A short description of images given to a masker (for its ``verbose`` messages)."""
    if isinstance(imgs, str | os.PathLike):
        return os.fspath(imgs)
    if isinstance(imgs, list | tuple):
        return f"a list of {len(imgs)} images" if len(imgs) != 1 else describe_input(imgs[0])
    return short_repr(imgs)


def short_repr(value) -> str:
    """A one-line stand-in for a parameter value: arrays and images by type, shape and dtype."""
    if isinstance(value, xr.DataArray):
        name = f" {value.name!r}" if value.name is not None else ""
        return f"<xarray.DataArray{name} {tuple(value.shape)} {value.dtype}>"
    if isinstance(value, np.ndarray | da.Array) and value.size > 16:
        return f"<{type(value).__module__.split('.')[0]}.{type(value).__name__} {tuple(value.shape)} {value.dtype}>"
    if hasattr(value, "shape") and hasattr(value, "affine"):  # a nibabel image
        return f"<{type(value).__name__} {tuple(value.shape)}>"
    text = repr(value)
    text = " ".join(text.split())
    return text if len(text) <= 120 else text[:117] + "..."


def _same_default(value, default) -> bool:
    if value is default:
        return True
    if isinstance(value, np.ndarray | da.Array | xr.DataArray | pd.DataFrame) or hasattr(value, "affine"):
        return False
    try:
        return bool(type(value) is type(default) and value == default)
    except (TypeError, ValueError):
        return False


def _is_bool_dtype(dtype) -> bool:
    try:
        return np.dtype(dtype) == np.dtype(bool)
    except TypeError:
        return False


def target_dtype(dtype, source_dtype) -> np.dtype | None:
    """The dtype signals are cast to (nilearn's ``_get_target_dtype``), or None to keep theirs."""
    if dtype is None:
        return None
    source_dtype = np.dtype(source_dtype)
    if isinstance(dtype, str) and dtype == "auto":
        return np.dtype(np.int32 if source_dtype.kind == "i" else np.float32)
    return np.dtype(dtype)


def _on_grid(image: xr.DataArray, affine, shape) -> bool:
    """True when ``image`` lies on the grid ``(affine, shape)`` (shape None: any shape)."""
    target = Grid(tuple(image.shape[:3]) if shape is None else shape, affine)
    return Grid.of(image).same_as(target)


def whole_image_series(img4d: xr.DataArray) -> da.Array:
    """Every voxel's time series as a lazy ``(time, voxel)`` array, blockwise.

    The voxels in C order (the last spatial axis fastest), as nilearn's image-level
    ``high_variance_confounds`` reads them: when fewer high-variance voxels than confounds are
    kept, the extra confounds span a null space whose basis depends on the voxels' order.
    """
    data = as_dask(img4d).rechunk({0: -1, 1: -1, 2: -1})
    n_voxels = int(np.prod(data.shape[:3]))
    return da.blockwise(_volumes_as_rows, "tv", data, "ijkt", new_axes={"v": n_voxels}, concatenate=False,
                        dtype=data.dtype, meta=np.empty((0, 0), dtype=data.dtype))


def _high_variance_in_memory(series: np.ndarray) -> np.ndarray:
    """``high_variance_confounds`` of an in-memory ``(time, voxel)`` series laid out as nilearn's."""
    return high_variance_confounds(np.asfortranarray(series))


def _volumes_as_rows(block: np.ndarray) -> np.ndarray:
    while isinstance(block, list):  # one chunk per spatial axis: unwrap (dask's concatenation copies to C order)
        (block,) = block
    return block.reshape(-1, block.shape[3]).T


def source_records(sources) -> list[dict]:
    """Path, size and modification time of each source file (in-memory sources: their label)."""
    records = []
    for source in sources or []:
        record = {"path": str(source)}
        if isinstance(source, str) and os.path.exists(source):
            stat = os.stat(source)
            record.update(path=os.path.abspath(source), size=int(stat.st_size), mtime=float(stat.st_mtime))
        records.append(record)
    return records


def jsonable(value):
    """A JSON-able stand-in for a parameter value (arrays as lists, images summarised by name)."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, type):
        return np.dtype(value).name if _is_dtype(value) else value.__name__
    if isinstance(value, np.dtype):
        return value.name
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray) and value.size <= 10_000:
        return jsonable(value.tolist())
    if isinstance(value, xr.DataArray):
        sources = value.attrs.get("source")
        return f"<{type(value).__name__} {tuple(value.shape)}" + (f" from {sources}>" if sources else ">")
    described = f"<{type(value).__name__}>"
    try:
        json.dumps(value)
    except TypeError:
        return described
    return value


def _is_dtype(value) -> bool:
    try:
        np.dtype(value)
    except TypeError:
        return False
    return True


BaseMasker.fit_transform = _x_as_imgs(BaseMasker.fit_transform)  # subclasses' own: in __init_subclass__
