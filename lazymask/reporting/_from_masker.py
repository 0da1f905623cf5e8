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
