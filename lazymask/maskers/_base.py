"""The masker base class: scikit-learn estimators whose ``transform`` builds a graph.

Contract (shared by every masker; subclasses fill the hooks)
-----------------------------------------------------------
* ``__init__`` of a subclass stores its parameters and nothing else (nilearn 0.14's names and
  defaults); a subclass declares ``_parameter_constraints`` (name -> tuple of allowed values
  and/or types, or a callable returning an error message or ``None``).
* ``fit(imgs=None, y=None)`` validates the parameters, sets ``clean_args_``, calls the hook
  ``_fit(imgs)`` (which sets the fitted attributes, e.g. ``mask_img_``, ``affine_``,
  ``n_elements_``) and returns ``self``. It may compute small things (a mask); nothing else.
* ``transform(imgs, confounds=None, sample_mask=None)`` computes NOTHING; it opens the images
  (``as_image``), remembers 3D input, resamples onto ``_target_grid()`` when the images are not
  on it, smooths (``smoothing_fwhm``), extracts with the hook ``_extract(img4d)`` (a lazy
  ``(time, feature)`` DataArray, blockwise over time chunks), cleans with
  :func:`lazymask.signal.clean` (only when an option asks for it), applies ``dtype`` and labels
  the result (time in seconds, attrs: affine, t_r, masker, parameters, source).
* ``inverse_transform(X)`` checks ``X`` and calls the hook ``_inverse(signals)``.
* ``generate_report()`` calls the hook ``_report()``.
* Persistence (see :mod:`lazymask.maskers._persist`): the hook ``_spatial_arrays()`` returns the
  named DataArrays a store needs to rebuild the masker, and the classmethod
  ``_from_store(parameters, arrays)`` rebuilds a fitted masker from them.

Hooks a subclass implements: ``_fit``, ``_target_grid``, ``_extract``, ``_inverse``,
``_feature_dim``, ``_report``, ``_spatial_arrays``, ``_from_store``; optionally
``_fitted_attribute`` (default ``"n_elements_"``).
"""

from __future__ import annotations

import json
import numbers
import os
import warnings
from typing import ClassVar

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
from sklearn.base import BaseEstimator, TransformerMixin

from lazymask.exceptions import DimensionError, NotFittedError, ParameterError
from lazymask.image._inputs import as_image
from lazymask.image._resample import resample_img
from lazymask.image._smooth import smooth_img
from lazymask.io import get_affine, get_t_r
from lazymask.signal import clean, high_variance_confounds

__all__ = ["BaseMasker", "MASKER_CLASSES", "jsonable", "source_records"]

#: Every concrete masker class by name, filled as subclasses are defined (for ``load_masker``).
MASKER_CLASSES: dict[str, type] = {}

STANDARDIZE_VALUES = ("zscore_sample", "zscore", "psc", True, False, None)

#: Constraints shared by every masker; a subclass adds its own in ``_parameter_constraints``.
COMMON_CONSTRAINTS: dict[str, tuple] = {
    "standardize": STANDARDIZE_VALUES,
    "standardize_confounds": (bool, np.bool_),
    "detrend": (bool, np.bool_),
    "high_variance_confounds": (bool, np.bool_),
    "low_pass": (None, numbers.Real),
    "high_pass": (None, numbers.Real),
    "t_r": (None, numbers.Real),
    "smoothing_fwhm": (None, numbers.Real, list, tuple, np.ndarray),
    "memory_level": (numbers.Integral,),
    "verbose": (numbers.Integral, bool),
    "reports": (bool, np.bool_),
    "clean_args": (None, dict),
}


class BaseMasker(TransformerMixin, BaseEstimator):
    """Base of lazymask's maskers (see the module's contract). Not used directly."""

    _parameter_constraints: ClassVar[dict] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if not cls.__name__.startswith("_"):
            MASKER_CLASSES[cls.__name__] = cls

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
        self._fit(imgs)
        return self

    def _validate_parameters(self) -> None:
        params = self.get_params(deep=False)
        constraints = {**COMMON_CONSTRAINTS, **self._parameter_constraints}
        for name, allowed in constraints.items():
            if name in params:
                check_parameter(name, params[name], allowed)
        if params.get("dtype") is bool or (params.get("dtype") is not None and params.get("dtype") != "auto"
                                            and _is_bool_dtype(params.get("dtype"))):
            raise ParameterError("dtype=bool: signals cannot be boolean; pass None, 'auto' or a numeric dtype.")

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, self._fitted_attribute)

    _fitted_attribute = "n_elements_"

    def _check_fitted(self) -> None:
        if not self.__sklearn_is_fitted__():
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with appropriate "
                "arguments before using this estimator."
            )

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
        return self._transform_one(imgs, confounds, sample_mask, add_hv_first=True, cast=True)

    def fit_transform(self, imgs, y=None, confounds=None, sample_mask=None, **fit_params):
        """``fit(imgs)`` then ``transform(imgs, ...)``: the mask is computed, signals stay lazy.

        The images are opened once for both steps (headers only); computing the result then
        reads the data once more for the extraction.
        """
        image = imgs if imgs is None else self._open(imgs)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*mask was given at masker creation.*")
            self.fit(image, y, **fit_params)
        return self.transform(image, confounds=confounds, sample_mask=sample_mask)

    def _open(self, imgs):
        return as_image(imgs, "imgs", ndim=(3, 4))

    def _transform_one(self, imgs, confounds, sample_mask, *, add_hv_first: bool, cast: bool) -> xr.DataArray:
        image = self._open(imgs)
        is_3d = image.ndim == 3
        img4d = image.expand_dims("time", axis=3) if is_3d else image
        prepared = self._prepare_image(img4d)
        signals = self._extract(prepared)
        signals = self._set_time(signals, img4d)
        all_confounds = self._all_confounds(image, img4d, confounds, add_hv_first)
        signals = self._clean(signals, all_confounds, sample_mask)
        signals = self._cast(signals, image.dtype) if cast else signals
        signals = signals.assign_attrs(self._signal_attrs(image, signals))
        signals.name = "signals"
        return signals.isel(time=0, drop=True) if is_3d else signals

    def _prepare_image(self, img4d: xr.DataArray) -> xr.DataArray:
        """Resample onto the masker's grid when needed (continuous), then smooth."""
        target_affine, target_shape = self._target_grid()
        if target_affine is not None and not _same_grid(img4d, target_affine, target_shape):
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
        hv = high_variance_confounds(whole_image_series(img4d))
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
        t_r = signals.attrs.get("t_r") if self.t_r is None else self.t_r
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
        return self._inverse(self._check_signals(X))

    def _check_signals(self, X):
        """``X`` as an array or DataArray of shape ``(feature,)`` or ``(time, feature)``; clear errors."""
        if isinstance(X, pd.DataFrame | pd.Series):
            X = X.to_numpy()
        if not isinstance(X, xr.DataArray | da.Array):
            X = np.asarray(X)
        if X.ndim not in (1, 2):
            raise DimensionError(
                f"X has shape {tuple(X.shape)}: expected ({self.n_elements_},) or (n_time, {self.n_elements_})."
            )
        if X.shape[-1] != self.n_elements_:
            raise ParameterError(
                f"X has {X.shape[-1]} features along its last axis but this {type(self).__name__} has "
                f"n_elements_={self.n_elements_}; pass signals this masker extracted."
            )
        if X.dtype == bool:
            X = X.astype(np.int32 if self.dtype is None or self.dtype == "auto" else self.dtype)
        return X

    # -- reports ----------------------------------------------------------------------------------
    def generate_report(self):
        """An HTML report of the fitted masker (renders in Jupyter; ``.save_as_html(path)``)."""
        self._check_fitted()
        return self._report()

    # -- hooks --------------------------------------------------------------------------------------
    def _fit(self, imgs):  # pragma: no cover - abstract
        raise NotImplementedError

    def _target_grid(self) -> tuple[np.ndarray | None, tuple | None]:
        """The ``(affine, shape)`` every image is resampled onto before extraction (None: no resampling)."""
        return None, None

    def _extract(self, img4d: xr.DataArray) -> xr.DataArray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _inverse(self, signals):  # pragma: no cover - abstract
        raise NotImplementedError

    def _report(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def _spatial_arrays(self) -> dict[str, xr.DataArray]:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def _from_store(cls, parameters: dict, arrays: dict[str, xr.DataArray]):  # pragma: no cover - abstract
        raise NotImplementedError


# -- helpers ------------------------------------------------------------------------------------------
def check_parameter(name: str, value, allowed) -> None:
    """Raise :class:`ParameterError` unless ``value`` matches one of ``allowed`` (values or types)."""
    if callable(allowed) and not isinstance(allowed, tuple):
        message = allowed(value)
        if message:
            raise ParameterError(f"{name}={value!r}: {message}")
        return
    for option in allowed:
        if isinstance(option, type):
            if isinstance(value, option):
                return
        elif option is None:
            if value is None:
                return
        elif not isinstance(value, np.ndarray) and type(value) is type(option) and value == option:
            return
    values = [repr(o) for o in allowed if not isinstance(o, type)]
    types = [o.__name__ for o in allowed if isinstance(o, type)]
    expected = " or ".join(part for part in (", ".join(values), ", ".join(types)) if part)
    raise ParameterError(f"{name}={value!r}: expected {expected}.")


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


def _same_grid(image: xr.DataArray, affine, shape) -> bool:
    same_shape = shape is None or tuple(image.shape[:3]) == tuple(shape)
    return same_shape and np.shape(affine) == (4, 4) and np.allclose(get_affine(image), affine)


def whole_image_series(img4d: xr.DataArray) -> da.Array:
    """Every voxel's time series as a lazy ``(time, voxel)`` array (Fortran voxel order), blockwise."""
    data = img4d.data if isinstance(img4d.data, da.Array) else da.from_array(np.asarray(img4d.data))
    data = data.rechunk({0: -1, 1: -1, 2: -1})
    n_voxels = int(np.prod(data.shape[:3]))
    return da.blockwise(_volumes_as_rows, "tv", data, "ijkt", new_axes={"v": n_voxels}, concatenate=True,
                        dtype=data.dtype, meta=np.empty((0, 0), dtype=data.dtype))


def _volumes_as_rows(block: np.ndarray) -> np.ndarray:
    return block.reshape(-1, block.shape[3], order="F").T


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
