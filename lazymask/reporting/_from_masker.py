"""The report of a fitted masker, read from its public fitted attributes (no masker is imported).

Contract
--------
* :func:`report_for` reads only public attributes of the masker: ``get_params()`` /
  ``json_parameters()`` and the fitted, trailing-underscore attributes (``mask_img_``,
  ``mean_img_``, ``mask_img_before_resampling_``, ``labels_img_``, ``region_ids_``,
  ``region_names_``, ``maps_img_``, ``seeds_``). It changes nothing on the masker: a lazy
  ``mean_img_`` is computed for the figure and dropped.
* The kind of report is chosen by duck typing on what the masker fitted: ``maps_img_`` ->
  :func:`maps_report`, ``seeds_`` -> :func:`spheres_report`, ``labels_img_`` ->
  :func:`labels_report`, otherwise ``mask_img_`` -> :func:`mask_report`.
* The mean image is drawn on the grid of the overlay: resampled (continuous) when the masker
  fitted it on another grid.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from lazymask.image import resample_img
from lazymask.io import Grid, get_affine
from lazymask.reporting._builders import labels_report, maps_report, mask_report, spheres_report
from lazymask.reporting._report import Report

__all__ = ["report_for"]


def report_for(masker: Any, title: str | None = None, displayed: list[int] | None = None) -> Report:
    """The HTML report of a fitted masker, built from its public fitted attributes.

    ``masker.generate_report()`` calls this; any object with the attributes below works.

    Parameters
    ----------
    masker : fitted masker
        Reads ``maps_img_`` (maps report), ``seeds_`` (spheres report), ``labels_img_`` with
        ``region_ids_``/``region_names_`` (labels report) or ``mask_img_`` (mask report), plus
        ``mean_img_`` (the background, optional), ``mask_img_`` and the parameters.

    title : str or None, default=None
        The report's title (None: the masker's class name).
    displayed : list of int or None, default=None
        The maps (maps report) or spheres (spheres report) drawn; None: all of them.

    Returns
    -------
    Report

    Examples
    --------
    >>> import numpy as np
    >>> from lazymask.io import image_dataarray
    >>> class Fitted:                       # any object with a masker's fitted attributes
    ...     mask_img_ = image_dataarray(np.pad(np.ones((4, 4, 4), "int8"), 2), np.eye(4))
    ...     mean_img_ = None
    ...     def get_params(self, deep=False):
    ...         return {"smoothing_fwhm": None}
    >>> report_for(Fitted()).sentences[0]
    'The mask includes 64 voxels (12.5 %) of the image.'
    """
    title = type(masker).__name__ if title is None else str(title)
    parameters = _parameters(masker)
    if getattr(masker, "maps_img_", None) is not None:
        return _maps(masker, title, parameters, displayed)
    if getattr(masker, "seeds_", None) is not None:
        return _spheres(masker, title, parameters, displayed)
    if getattr(masker, "labels_img_", None) is not None:
        return _labels(masker, title, parameters)
    return _mask(masker, title, parameters)


def _parameters(masker) -> dict:
    if hasattr(masker, "json_parameters"):
        return masker.json_parameters()
    return dict(masker.get_params(deep=False))


def _mean_on(masker, grid: Grid | None) -> np.ndarray | None:
    """``mean_img_`` (computed now if lazy, not kept) as float64 values on ``grid``, or None."""
    mean = getattr(masker, "mean_img_", None)
    if mean is None:
        return None
    if grid is not None and not Grid.of(mean).same_as(grid):
        mean = resample_img(mean.astype(np.float64), target_affine=grid.affine, target_shape=grid.shape)
    return np.asarray(mean.values, dtype=np.float64)


def _mask(masker, title: str, parameters: dict) -> Report:
    mask_img = masker.mask_img_
    grid = Grid.of(mask_img)
    original = getattr(masker, "mask_img_before_resampling_", None)
    params = masker.get_params(deep=False)
    if original is None and (params.get("target_affine") is not None or params.get("target_shape") is not None):
        original = mask_img  # resampling was asked for and left the mask as it was: both outlines shown
    return mask_report(
        _mean_on(masker, grid), np.asarray(mask_img.values, dtype=bool), grid.affine,
        original_mask=None if original is None else np.asarray(original.values, dtype=bool),
        original_affine=None if original is None else get_affine(original),
        parameters=parameters, title=title,
    )


def _labels(masker, title: str, parameters: dict) -> Report:
    labels_img = masker.labels_img_
    grid = Grid.of(labels_img)
    ids = [value for key, value in masker.region_ids_.items() if key != "background"]
    names = list(masker.region_names_.values())
    return labels_report(_mean_on(masker, grid), np.asarray(labels_img.values), grid.affine,
                         region_ids=ids, region_names=names,
                         background_label=masker.background_label, parameters=parameters, title=title)


def _maps(masker, title: str, parameters: dict, displayed: list[int] | None = None) -> Report:
    maps_img: xr.DataArray = masker.maps_img_
    grid = Grid.of(maps_img)
    return maps_report(_mean_on(masker, grid), np.asarray(maps_img.values), grid.affine,
                       parameters=parameters, title=title, displayed=displayed)


def _spheres(masker, title: str, parameters: dict, displayed: list[int] | None = None) -> Report:
    mean = getattr(masker, "mean_img_", None)
    mask_img = getattr(masker, "mask_img_", None)
    reference = mean if mean is not None else mask_img
    # without any image the spheres are drawn on a 1 mm grid around the seeds
    grid = None if reference is None else Grid.of(reference)
    return spheres_report(None if grid is None else _mean_on(masker, grid),
                          np.eye(4) if grid is None else grid.affine, seeds=masker.seeds_,
                          radius=masker.get_params(deep=False).get("radius"),
                          parameters=parameters, title=title, displayed=displayed)


# -- generate_report: nilearn's report flow (warnings in the report and as UserWarnings) -----------
NOT_ENABLED = "\nReport generation not enabled!\nNo visual outputs created."
NOT_FITTED = "\nThis estimator has not been fit yet.\nMake sure to run `fit` before inspecting reports."
DISABLED_AT_FIT = (
    "\nReport generation was disabled when fit was run. No reporting data is available.\n"
    "Make sure to set self.reports=True before fit."
)
LIST_OF_4D = "A list of 4D subject images were provided to fit. Only first subject is shown in the report."

#: What each kind of report shows (nilearn's ``_report_content["description"]``).
DESCRIPTIONS = {
    "mask": "This report shows the input Nifti image overlaid with the outlines of the mask. "
            "We recommend to inspect the report for the overlap between the mask and the input image. ",
    "labels": "This report shows the regions defined by the labels of the mask.",
    "maps": "This report shows the spatial maps provided to the mask.",
    "spheres": "This report shows the regions defined by the spheres of the masker.",
}


def report_kind(masker: Any) -> str:
    """``"maps"``, ``"spheres"``, ``"labels"`` or ``"mask"``: the report a masker draws (by its parameters)."""
    params = masker.get_params(deep=False)
    for kind, name in (("maps", "maps_img"), ("spheres", "seeds"), ("labels", "labels_img")):
        if name in params:
            return kind
    return "mask"


def new_report_content(masker: Any) -> dict:
    """The report state of a masker before any report (nilearn's ``_report_content`` defaults)."""
    return {"title": "", "page_title": "", "engine": "matplotlib", "description": DESCRIPTIONS[report_kind(masker)],
            "summary": {}, "coverage": "", "n_elements": 0, "displayed_maps": [], "number_of_regions": 0,
            "warning_messages": []}


def fit_report_data(masker: Any, imgs: Any) -> dict:
    """What fit remembers for the report: whether images were given, and whether a list of 4D runs.

    A mask masker's coverage (% of the grid in the mask) goes to its ``_report_content`` now.
    """
    if report_kind(masker) == "mask" and getattr(masker, "mask_img_", None) is not None:
        _record_coverage(masker, masker._report_content)
    first = imgs[0] if isinstance(imgs, list | tuple) and len(imgs) else imgs
    ndim = getattr(first, "ndim", None) if first is not None else None
    if ndim is None and first is not None and hasattr(first, "shape"):
        ndim = len(first.shape)
    listed_4d = isinstance(imgs, list | tuple) and ndim == 4
    return {"images": imgs is not None, "dim": 5 if listed_4d else ndim}


def generate(masker: Any, engine: str, title: str | None, displayed_of=None) -> Report:
    """The report of ``masker`` as nilearn makes it: its warnings (also raised as UserWarnings) on top.

    Before fit, with ``reports=False`` or when ``reports`` was off at fit, the report has the
    warning and no figure. ``displayed_of()`` returns the displayed maps/spheres (or None),
    its warnings recorded for the report.
    """
    import warnings

    content = masker._report_content
    content["warning_messages"] = []
    messages = content["warning_messages"]
    title = type(masker).__name__ if title is None else str(title)
    content.update(title=title, page_title=f"{title} report", engine=engine)
    fitted = masker.__sklearn_is_fitted__()
    if getattr(masker, "reports", True) is False:
        messages.append(NOT_ENABLED)
    if not fitted:
        messages.append(NOT_FITTED)
    elif not content.get("reports_at_fit_time", True):
        messages.append(DISABLED_AT_FIT)
    data = getattr(masker, "_reporting_data", None)
    if data is None and fitted and "reports_at_fit_time" not in content:  # rebuilt, e.g. from a store
        data = {"images": getattr(masker, "mean_img_", None) is not None, "dim": None}
    draw = fitted and bool(getattr(masker, "reports", True)) and data is not None
    displayed = None
    if draw:
        if not data["images"]:
            messages.append(f"No image provided to fit in {type(masker).__name__}. "
                            "Setting image to mask for reporting.")
        elif data["dim"] == 5:
            messages.append(LIST_OF_4D)
        if displayed_of is not None:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                displayed = displayed_of()
            messages.extend(str(w.message) for w in caught)
    for message in sorted(set(messages)):
        warnings.warn(message, UserWarning, stacklevel=3)
    try:
        estimator_html = masker._repr_html_()
    except Exception:  # noqa: BLE001 - scikit-learn's view is optional
        estimator_html = ""
    if draw:
        report = report_for(masker, title=title, displayed=displayed)
        _record_summary(masker, content, report, displayed)
    else:
        report = Report(title, parameters=_parameters(masker))
    report.estimator_html = estimator_html
    report.warnings = sorted(set(messages)) + [w for w in report.warnings if w not in messages]
    return report


def _record_summary(masker: Any, content: dict, report: Report, displayed) -> None:
    """nilearn's summary fields of ``_report_content`` (coverage, regions table, displayed maps)."""
    kind = report_kind(masker)
    if kind == "mask":
        _record_coverage(masker, content)
    elif kind == "labels":
        import pandas as pd

        table = dict(report.tables.get("Regions summary", {}))
        table.pop("size (voxels)", None)
        content["summary"] = pd.DataFrame(table)
        content["number_of_regions"] = len(content["summary"])
    if displayed is not None:  # nilearn's numbering of the figures: spheres come after the one of all
        content["displayed_maps"] = list(displayed) if kind == "maps" else [0, *[i + 1 for i in displayed]]
    content["n_elements"] = int(getattr(masker, "n_elements_", 0))


def _record_coverage(masker: Any, content: dict) -> None:
    mask = np.asarray(masker.mask_img_.values)  # small, and computed by fit
    content["coverage"] = f"{100 * np.count_nonzero(mask) / mask.size:0.1f}"
