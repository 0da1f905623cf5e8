"""Signals of the regions of a labels image (an atlas): ``NiftiLabelsMasker`` and its Multi twin.

Per time chunk, every label's statistic is computed in one grouped reduction (see
:class:`lazymask.regions.LabelOperator`); the names come from ``labels``, a BIDS-style
look-up table (``lut``: ``index`` and ``name`` columns) or the label values, as in nilearn 0.14.
"""

from __future__ import annotations

import csv
import numbers
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from lazymask.exceptions import ImageMismatchError, ParameterError
from lazymask.io import Grid, image_dataarray
from lazymask.maskers._base import InvalidParameterError
from lazymask.maskers._region_base import (
    STRATEGIES,
    Extraction,
    MultiMixin,
    RegionMasker,
    check_allowed,
    check_same_grids,
    image_grid,
    load_region_mask,
    load_volume,
    missing_image,
    resample_nearest,
)
from lazymask.masking import mask_dataarray
from lazymask.regions import labels_expansion, labels_operator, signals_to_image, warn_keep_masked_labels

__all__ = ["NiftiLabelsMasker", "MultiNiftiLabelsMasker", "look_up_table"]


# -- labels and look-up tables -----------------------------------------------------------------------
def check_integer_labels(values: np.ndarray, name: str = "labels_img") -> np.ndarray:
    """Labels as found, after checking that every finite value is a whole number (NaN -> 0)."""
    if values.dtype.kind == "f":
        finite = np.isfinite(values)
        fractional = finite & (values != np.round(values))
        if fractional.any():
            examples = np.unique(values[fractional])[:5].tolist()
            raise ParameterError(
                f"{name} holds non-integer values (e.g. {examples}): a labels image holds one integer "
                "label per voxel. For probabilistic maps use NiftiMapsMasker; otherwise round the "
                "image or resample it with interpolation='nearest'."
            )
        if not finite.all():
            values = np.where(finite, values, 0)
    elif values.dtype.kind not in "iub":
        raise ParameterError(f"{name} has dtype {values.dtype}; expected integer labels.")
    return values


def _read_lut(lut) -> pd.DataFrame:
    if isinstance(lut, str | Path):
        try:
            lut = pd.read_table(lut, sep=None, engine="python")
        except (OSError, csv.Error, pd.errors.EmptyDataError, pd.errors.ParserError) as exc:
            raise ParameterError(f"lut={str(lut)!r}: cannot read a look-up table ({type(exc).__name__}: {exc}); "
                                 "pass a TSV with columns 'index' and 'name', or a DataFrame.") from exc
    if not isinstance(lut, pd.DataFrame):
        raise ParameterError(f"lut: expected a DataFrame or the path of a TSV file, got {type(lut).__name__}.")
    missing = [column for column in ("index", "name") if column not in lut.columns]
    if missing:
        raise ParameterError(
            f"lut has columns {list(lut.columns)} but no {missing}: a look-up table (BIDS dseg.tsv) "
            "needs an 'index' column (the label values) and a 'name' column."
        )
    if lut["index"].duplicated().any():
        duplicated = lut.loc[lut["index"].duplicated(), "index"].tolist()
        raise ParameterError(f"lut lists the label values {duplicated} more than once; keep one row per label.")
    return lut.copy()


def _names_from_labels(labels: list, present: np.ndarray, background_label) -> list[str]:
    """nilearn's pairing of a list of names with the sorted label values (padded or cut with a warning)."""
    names = ["Background" if name == "background" else name for name in labels]
    if background_label in present and "Background" not in names:
        names.insert(int(np.flatnonzero(present == background_label)[0]), "Background")
    if len(names) < len(present):
        warnings.warn("Too many indices for the names. Padding 'names' with 'unknown': labels has too few "
                      "names for the label values, the last regions are named 'unknown'.", stacklevel=4)
        names += ["unknown"] * (len(present) - len(names))
    elif len(names) > len(present):
        warnings.warn("Too many names for the indices. Dropping excess names values: labels has more names "
                      "than label values.", stacklevel=4)
        names = names[: len(present)]
    return names


def look_up_table(values: np.ndarray, background_label=0, labels=None, lut=None) -> pd.DataFrame:
    """The look-up table (``index``, ``name``, ...) of a labels volume, as nilearn 0.14 builds ``lut_``.

    Rows: the label values found in ``values`` (the background first, named "Background"),
    sorted by value; names from ``lut``, from ``labels`` (in the order of the sorted values) or
    the values themselves; values missing from ``lut`` are named "unknown".

    Examples
    --------
    >>> import numpy as np
    >>> look_up_table(np.array([[[0, 1], [2, 2]]]), labels=["Background", "left", "right"])["name"].tolist()
    ['Background', 'left', 'right']
    """
    present = np.unique(values[np.isfinite(values)] if values.dtype.kind == "f" else values)
    if lut is not None:
        table = _read_lut(lut)
        _check_lut_matches(table, present, background_label)
    else:
        names = (_names_from_labels(list(labels), present, background_label) if labels
                 else ["Background" if v == background_label else str(v) for v in present])
        table = pd.DataFrame({"index": present, "name": names})
    table = _background_first(table, background_label)
    table = table[table["index"].isin(present)]
    unknown = sorted(set(present.tolist()) - set(table["index"].tolist()))
    if unknown:
        table = pd.concat([table, pd.DataFrame({"name": ["unknown"] * len(unknown), "index": unknown})],
                          ignore_index=True)
    return table.sort_values("index").reset_index(drop=True)


def _background_first(table: pd.DataFrame, background_label) -> pd.DataFrame:
    is_background = table["index"] == background_label
    if is_background.any():
        table = pd.concat([table[is_background], table[~is_background]], ignore_index=True)
        table.loc[0, "name"] = "Background"
        return table
    row = {column: np.nan for column in table.columns}
    row.update({"name": "Background", "index": background_label})
    if "color" in table.columns:
        row["color"] = "FFFFFF"
    return pd.concat([pd.DataFrame([row]), table], ignore_index=True)


def _check_lut_matches(table: pd.DataFrame, present: np.ndarray, background_label) -> None:
    regions = set(present.tolist()) - {background_label}
    listed = set(table["index"].tolist())
    if not regions & listed:
        raise ParameterError(
            f"lut does not match labels_img: none of the image's {len(regions)} label values "
            f"(e.g. {sorted(regions)[:5]}) is in the table's 'index' column (e.g. {sorted(listed)[:5]}). "
            "Pass the look-up table of this atlas."
        )
    missing = sorted(regions - listed)
    if missing:
        warnings.warn(f"lut: the label values {missing[:20]} of labels_img are not in the look-up table; "
                      "they are named 'unknown'.", stacklevel=4)


# -- the estimator --------------------------------------------------------------------------------------
class NiftiLabelsMasker(RegionMasker):
    """Signals of the regions of a labels image, lazily (nilearn's ``NiftiLabelsMasker``).

    Same parameters, defaults, fitted attributes and numbers as nilearn 0.14. ``transform``
    builds a dask graph: one task per time chunk computes the statistic of every region at once.

    Parameters
    ----------
    labels_img : image
        3D image of integer labels (the atlas).
    labels : list of str, optional
        Region names in the order of the sorted label values ("Background" may be included).
    lut : DataFrame or path, optional
        BIDS-style look-up table with ``index`` and ``name`` columns (exclusive with ``labels``).
    background_label : number, default=0
        Label of "no region".
    mask_img : image, optional
        Voxels outside it are background.
    smoothing_fwhm, standardize, standardize_confounds, high_variance_confounds, detrend, low_pass, high_pass, t_r, dtype, clean_args
        Preprocessing and cleaning, as in :class:`lazymask.maskers.NiftiMasker`.
    resampling_target : {"data", "labels", None}, default="data"
        Which grid extraction happens on; ``None`` requires every image on one grid.
    memory, memory_level, verbose, reports
        Accepted for compatibility (``reports`` keeps what the report needs).
    strategy : str, default="mean"
        One of "mean", "median", "sum", "minimum", "maximum", "variance", "standard_deviation".
    keep_masked_labels : bool, default=False
        Deprecated in nilearn 0.14 (a FutureWarning at transform, as there): keep the labels that
        ``mask_img`` removes, with signals of 0.

    Attributes
    ----------
    labels_img_, mask_img_ : xarray.DataArray
        The atlas and mask on the grid of extraction.
    region_atlas_ : xarray.DataArray or None
        The labels after ``mask_img`` (int32) on the grid of extraction; None until that grid
        is known (``resampling_target="data"`` fitted without images).
    lut_ : pandas.DataFrame
        The look-up table of the atlas; ``labels_``, ``region_names_``, ``region_ids_``,
        ``n_elements_`` describe the regions extracted (after the mask), fixed at fit.
    mean_img_ : xarray.DataArray or None
        Lazy mean of the fitted images, for the report.

    Examples
    --------
    >>> masker = NiftiLabelsMasker("atlas.nii.gz", strategy="median")   # doctest: +SKIP
    >>> signals = masker.fit_transform("bold.nii.gz")                   # doctest: +SKIP
    >>> signals.to_zarr("signals.zarr")                                 # doctest: +SKIP
    """

    _parameter_constraints = {
        "labels_img": "no_validation",  # an image
        "labels": "no_validation",  # checked at fit, with nilearn's messages
        "lut": "no_validation",  # a DataFrame or a path
        "background_label": [numbers.Real],
        "strategy": "no_validation",  # checked at fit, with nilearn's messages
        "resampling_target": "no_validation",  # checked at fit, with nilearn's messages
        "keep_masked_labels": ["boolean"],
    }

    def __init__(self, labels_img=None, labels=None, lut=None, background_label=0, mask_img=None,
                 smoothing_fwhm=None, standardize=False, standardize_confounds=True,
                 high_variance_confounds=False, detrend=False, low_pass=None, high_pass=None, t_r=None,
                 dtype=None, resampling_target="data", memory=None, memory_level=1, verbose=0,
                 strategy="mean", keep_masked_labels=False, reports=True, clean_args=None):
        self.labels_img = labels_img
        self.labels = labels
        self.lut = lut
        self.background_label = background_label
        self.mask_img = mask_img
        self.smoothing_fwhm = smoothing_fwhm
        self.standardize = standardize
        self.standardize_confounds = standardize_confounds
        self.high_variance_confounds = high_variance_confounds
        self.detrend = detrend
        self.low_pass = low_pass
        self.high_pass = high_pass
        self.t_r = t_r
        self.dtype = dtype
        self.resampling_target = resampling_target
        self.memory = memory
        self.memory_level = memory_level
        self.verbose = verbose
        self.strategy = strategy
        self.keep_masked_labels = keep_masked_labels
        self.reports = reports
        self.clean_args = clean_args

    _fitted_attribute = "lut_"
    _spatial_params = ("labels_img", "mask_img")
    _spatial_word = "labels"

    # -- fit ------------------------------------------------------------------------------------------
    def _fit(self, imgs):
        check_allowed(self.strategy, set(STRATEGIES), "strategy")
        check_allowed(self.resampling_target, ("labels", "data", None), "resampling_target")
        if self.labels_img is None:
            raise missing_image("labels_img", "the atlas (a 3D image of integer labels)")
        values, affine = load_volume(self.labels_img, "labels_img")
        if self.labels:
            if self.lut is not None:
                raise ParameterError("Pass either labels or a lookup table (lut) to the masker, not both.")
            if not isinstance(self.labels, list):
                raise InvalidParameterError(f"'labels' must be a list. Got: {type(self.labels).__name__}")
            if not all(isinstance(name, str) for name in self.labels):
                raise InvalidParameterError(f"All elements of 'labels' must be a string; got a list of "
                                            f"{sorted({type(n).__name__ for n in self.labels})}.")
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            warnings.warn("Non-finite values detected in labels_img. These values will be replaced with zeros.",
                          stacklevel=4)
        values = check_integer_labels(values)
        if np.all(values == self.background_label):
            raise ParameterError(f"Image has no label: every voxel of labels_img is background_label="
                                 f"{self.background_label!r}. Check labels_img and background_label.")
        self.lut_ = look_up_table(values, self.background_label, self.labels, self.lut)
        mask = load_region_mask(self.mask_img) if self.mask_img is not None else None
        data = image_grid(imgs)
        labels_grid = Grid(values.shape, affine)
        mask_grid = None if mask is None else Grid(mask[0].shape, mask[1])
        if self.resampling_target is None:
            check_same_grids(labels_img=labels_grid, mask_img=mask_grid, imgs=data)
        if self.resampling_target == "data" and data is not None and not data.same_as(labels_grid):
            values = self._resample_labels(values, affine, data)
            labels_grid = data
        reference = {"data": data, "labels": labels_grid, None: labels_grid}[self.resampling_target]
        if mask is not None and reference is not None and not mask_grid.same_as(reference):
            mask = (resample_nearest(mask[0].astype(np.int8), mask[1], reference).astype(bool), reference.affine)
        if mask is not None and reference is not None and np.all(values[mask[0]] == self.background_label):
            raise ParameterError("No label left after applying mask to the labels image; "
                                 "check that mask_img and labels_img overlap.")
        self.labels_img_ = image_dataarray(values, labels_grid.affine, name="labels_img")
        self.mask_img_ = None if mask is None else mask_dataarray(mask[0], mask[1], name="mask_img")
        self._fit_extraction(imgs, reference)
        self._lut_ = self._effective_lut(None if self._extraction_ is None else self._extraction_.ids)
        self.region_atlas_ = None if self._extraction_ is None else self._region_atlas(self._extraction_)

    def _resample_labels(self, values, affine, grid: Grid, when="fit"):
        before = set(np.unique(values).tolist())
        resampled = resample_nearest(values, affine, grid)
        after = set(np.unique(resampled).tolist())
        if len(after - {self.background_label}) == 0:
            raise ImageMismatchError("No label left after resampling the labels image onto the data's grid; "
                                     "check that labels_img and the images cover the same space.")
        if lost := before - after:
            lost = {int(value) if float(value).is_integer() else value for value in lost}
            warnings.warn(f"After resampling the label image to the data image, the following labels were "
                          f"removed: {lost}. Label image only contains {len(after)} labels (including "
                          f"background) (resampled at {when} time).", stacklevel=4)
        return resampled

    def _resample_spatial(self, image: xr.DataArray, grid: Grid, when: str) -> xr.DataArray:
        values = self._resample_labels(np.asarray(image.values), Grid.of(image).affine, grid, when=when)
        return image_dataarray(values, grid.affine, name="labels_img")

    def _target_grid(self):
        if self.resampling_target == "labels":
            return np.asarray(self.labels_img_.attrs["affine"]), tuple(self.labels_img_.shape)
        return None, None

    # -- extraction -----------------------------------------------------------------------------------
    def _build_extraction(self, grid: Grid) -> Extraction:
        labels, mask = self._spatial_on(grid)
        operator = labels_operator(np.asarray(labels.values), mask, self.background_label, self.strategy,
                                   keep_masked_labels=bool(self.keep_masked_labels), stacklevel=8)
        return Extraction(grid, operator, operator.ids, self._names_of(operator.ids))

    def _extract(self, img4d: xr.DataArray) -> xr.DataArray:
        if self.keep_masked_labels:
            warn_keep_masked_labels(stacklevel=5)
        return super()._extract(img4d)

    def _region_atlas(self, extraction: Extraction) -> xr.DataArray:
        """nilearn's ``region_atlas_``: the labels after the mask (int32) on the grid of extraction."""
        operator, grid = extraction.operator, extraction.grid
        flat = np.full(int(np.prod(grid.shape)), self.background_label, dtype=np.int32)
        flat[operator.voxels] = operator.present[operator.codes]
        return image_dataarray(flat.reshape(grid.shape, order="F"), grid.affine, name="region_atlas")

    def _effective_lut(self, ids) -> pd.DataFrame:
        """nilearn's ``_lut_``: the fitted table restricted to the regions extracted (all when unknown)."""
        if ids is None:
            return self.lut_
        order = list(ids)
        if np.any(np.asarray(self.labels_img_.values) == self.background_label):
            order = [self.background_label, *order]
        table = self.lut_.set_index("index")
        return table.loc[[value for value in order if value in table.index]].reset_index()

    def _names_of(self, ids) -> list[str]:
        names = dict(zip(self.lut_["index"].tolist(), self.lut_["name"].tolist(), strict=True))
        return [str(names.get(value, "unknown")) for value in np.asarray(ids).tolist()]

    # -- fitted attributes (nilearn's properties) ------------------------------------------------------
    def _table(self) -> pd.DataFrame:
        self._check_fitted()
        return self._lut_

    @property
    def labels_(self) -> list:
        """Label values of the regions (with the background when the image holds it)."""
        return self._table()["index"].tolist()

    @property
    def n_elements_(self) -> int:
        """Number of regions (labels other than the background)."""
        table = self._table()
        return int((table["index"] != self.background_label).sum())

    @property
    def region_ids_(self) -> dict:
        """Column number -> label value (and ``"background"`` -> background label when present)."""
        ids = self.labels_
        out = {}
        if self.background_label in ids:
            ids.remove(self.background_label)
            out["background"] = self.background_label
        out.update(dict(enumerate(ids)))
        return out

    @property
    def region_names_(self) -> dict:
        """Column number -> region name."""
        valid = [value for value in self.labels_ if value != self.background_label]
        rows = self.lut_[self.lut_["index"].isin(valid)]
        return dict(enumerate(rows["name"].tolist()))

    def get_feature_names_out(self, input_features=None) -> list[str]:
        """The region names, one per output column."""
        return list(self.region_names_.values())

    # -- inverse, report, persistence -------------------------------------------------------------------
    def _inverse(self, signals):
        grid = Grid.of(self.labels_img_)
        if self.mask_img_ is not None and tuple(self.mask_img_.shape) != grid.shape:
            raise ImageMismatchError(f"mask_img_ has shape {tuple(self.mask_img_.shape)} but labels_img_ has "
                                     f"{grid.shape}; fit with resampling_target='labels' or on the images' grid "
                                     "to invert.")
        extraction = self._extraction_on(grid)
        image = signals_to_image(signals, grid.shape, grid.affine, labels_expansion(extraction.operator))
        return self._as_inverse_dtype(image, signals.dtype)

    def _spatial_arrays(self) -> dict[str, xr.DataArray]:
        arrays = super()._spatial_arrays()
        lut = self.lut_
        arrays["lut"] = xr.DataArray(lut["index"].to_numpy(), dims=("label",), name="lut",
                                     coords={"name": ("label", np.array(lut["name"].astype(str).tolist(), dtype=str))})
        return arrays

    @classmethod
    def _parameters_from_arrays(cls, arrays: dict[str, xr.DataArray]) -> dict:
        """The names as fitted: ``lut`` from its stored array, never a path read from the store's attributes."""
        if "lut" not in arrays:
            return {"lut": None}
        stored = arrays["lut"]
        lut = pd.DataFrame({"index": np.asarray(stored.values), "name": np.asarray(stored["name"].values)})
        return {"lut": lut, "labels": None}


class MultiNiftiLabelsMasker(MultiMixin, NiftiLabelsMasker):
    """:class:`NiftiLabelsMasker` for lists of runs: ``transform`` returns one lazy DataArray per run.

    Same parameters as nilearn's ``MultiNiftiLabelsMasker`` (``n_jobs`` is accepted; dask schedules).

    Parameters
    ----------
    n_jobs : int, default=1
        Accepted for compatibility with nilearn; the dask scheduler decides the parallelism.
    **parameters
        Every parameter of :class:`NiftiLabelsMasker`, with the same defaults.

    Examples
    --------
    >>> masker = MultiNiftiLabelsMasker("atlas.nii.gz")                       # doctest: +SKIP
    >>> run1, run2 = masker.fit_transform(["run1.nii.gz", "run2.nii.gz"])    # doctest: +SKIP
    """

    def __init__(self, labels_img=None, labels=None, lut=None, background_label=0, mask_img=None,
                 smoothing_fwhm=None, standardize=False, standardize_confounds=True,
                 high_variance_confounds=False, detrend=False, low_pass=None, high_pass=None, t_r=None,
                 dtype=None, resampling_target="data", memory=None, memory_level=1, n_jobs=1, verbose=0,
                 strategy="mean", keep_masked_labels=False, reports=True, clean_args=None):
        super().__init__(labels_img=labels_img, labels=labels, lut=lut, background_label=background_label,
                         mask_img=mask_img, smoothing_fwhm=smoothing_fwhm, standardize=standardize,
                         standardize_confounds=standardize_confounds,
                         high_variance_confounds=high_variance_confounds, detrend=detrend, low_pass=low_pass,
                         high_pass=high_pass, t_r=t_r, dtype=dtype, resampling_target=resampling_target,
                         memory=memory, memory_level=memory_level, verbose=verbose, strategy=strategy,
                         keep_masked_labels=keep_masked_labels, reports=reports, clean_args=clean_args)
        self.n_jobs = n_jobs
