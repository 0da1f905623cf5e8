"""Report builders for each kind of masker: plain arrays and dicts in, a :class:`Report` out.

The maskers call these with what they fitted (the mean image, the mask or atlas, the affine,
their parameters); nothing here knows about the maskers themselves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lazymask.exceptions import DimensionError, ImageMismatchError, ParameterError
from lazymask.reporting import _figures
from lazymask.reporting._report import Report

__all__ = ["labels_report", "maps_report", "mask_report", "spheres_report"]

NO_IMAGE_SENTENCE = (
    "No image was given at fit time: the overlay is drawn on a blank background."
)


def _spatial_array(name: str, value: Any, ndim: int) -> np.ndarray:
    """``value`` as a numpy array with ``ndim`` dimensions, or a DimensionError naming it."""
    array = np.asarray(value)
    if array.ndim != ndim:
        raise DimensionError(
            f"{name} has {array.ndim} dimensions (shape {array.shape}) but a {ndim}D array is "
            f"expected; pass a {ndim}D numpy array on the grid of `affine`."
        )
    return array


def _affine(name: str, value: Any) -> np.ndarray:
    """``value`` as a finite, invertible 4x4 float array, or a ParameterError naming it."""
    affine = np.asarray(value, dtype=float)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise ParameterError(f"{name} must be a finite 4x4 array; got shape {affine.shape}.")
    if abs(np.linalg.det(affine[:3, :3])) == 0:
        raise ParameterError(f"{name} is singular (its 3x3 part has determinant 0): {affine.tolist()}.")
    return affine


def _mean_image(mean_img: Any, overlay_name: str, overlay_shape: tuple[int, ...]) -> np.ndarray | None:
    """Check the optional mean image: 3D, on the overlay's grid."""
    if mean_img is None:
        return None
    mean = _spatial_array("mean_img", mean_img, 3)
    if mean.shape != tuple(overlay_shape[:3]):
        raise ImageMismatchError(
            f"mean_img has shape {mean.shape} but {overlay_name} has spatial shape "
            f"{tuple(overlay_shape[:3])}; both must lie on the grid of `affine`. Resample one "
            "onto the other (or pass mean_img=None)."
        )
    return mean


def _new_report(title: str, parameters: Mapping[str, Any] | None, mean_img: Any) -> Report:
    report = Report(title, parameters=parameters)
    if mean_img is None:
        report.add_warning(NO_IMAGE_SENTENCE)
    return report


def mask_report(
    mean_img: Any,
    mask: Any,
    affine: Any,
    *,
    original_mask: Any = None,
    original_affine: Any = None,
    parameters: Mapping[str, Any] | None = None,
    title: str = "NiftiMasker",
) -> Report:
    """Report of a mask: its outline over the mean image, its size, the parameters.

    Parameters
    ----------
    mean_img : array (3D) or None
        The mean of the fitted images, on the mask's grid; None when fit had no image.
    mask : array (3D)
        The fitted mask (non-zero = in the mask).
    affine : array (4, 4)
        Voxel-to-world affine shared by ``mean_img`` and ``mask``.
    original_mask : array (3D), optional
        The mask before resampling (``target_affine``/``target_shape``); adds a second figure
        with both outlines.
    original_affine : array (4, 4), optional
        Affine of ``original_mask`` (default: ``affine``).
    parameters : mapping, optional
        The masker's parameters, shown as a table.
    title : str
        The report's title.

    Returns
    -------
    Report

    Examples
    --------
    >>> import numpy as np
    >>> mask = np.zeros((10, 10, 10), dtype=bool)
    >>> mask[2:7, 2:7, 2:7] = True
    >>> report = mask_report(None, mask, np.eye(4), parameters={"smoothing_fwhm": None})
    >>> report.sentences[0]
    'The mask includes 125 voxels (12.5 %) of the image.'
    """
    affine = _affine("affine", affine)
    mask = _spatial_array("mask", mask, 3).astype(bool)
    mean = _mean_image(mean_img, "mask", mask.shape)
    report = _new_report(title, parameters, mean_img)
    report.add_figure(_figures.plot_mask(mean, mask, affine),
                      caption="Mask outline (red) over the mean image.")
    if original_mask is not None:
        original = _spatial_array("original_mask", original_mask, 3).astype(bool)
        original_affine = affine if original_affine is None else _affine("original_affine",
                                                                       original_affine)
        report.add_figure(
            _figures.plot_mask(mean, mask, affine, second_mask=original,
                               second_affine=original_affine),
            caption="Mask after resampling (red) and before resampling (blue) over the mean image.",
            overlay=True,
        )
    n_voxels = int(np.count_nonzero(mask))
    coverage = 100 * n_voxels / mask.size
    report.add_sentence(f"The mask includes {n_voxels} voxels ({coverage:0.1f} %) of the image.")
    return report


def labels_report(
    mean_img: Any,
    labels: Any,
    affine: Any,
    *,
    region_ids: Sequence[Any] | None = None,
    region_names: Sequence[str] | None = None,
    background_label: float = 0,
    parameters: Mapping[str, Any] | None = None,
    title: str = "NiftiLabelsMasker",
) -> Report:
    """Report of an atlas of labels: the atlas over the mean image and a table of regions.

    Parameters
    ----------
    mean_img : array (3D) or None
        The mean of the fitted images, on the atlas's grid; None when fit had no image.
    labels : array (3D, integer values)
        The atlas: one integer value per region, ``background_label`` outside.
    affine : array (4, 4)
        Voxel-to-world affine shared by ``mean_img`` and ``labels``.
    region_ids : sequence, optional
        Label values of the regions (default: the non-background values present, sorted).
    region_names : sequence of str, optional
        One name per region id (default: the ids as text).
    background_label : number
        The value that is not a region.
    parameters : mapping, optional
        The masker's parameters, shown as a table.
    title : str
        The report's title.

    Returns
    -------
    Report
        The table "Regions summary" has the label value, the name, the size in voxels and in
        mm³, and the size relative to all labelled voxels (%).

    Examples
    --------
    >>> import numpy as np
    >>> atlas = np.zeros((8, 8, 8), dtype=int)
    >>> atlas[:4], atlas[4:] = 1, 2
    >>> labels_report(None, atlas, np.diag([2, 2, 2, 1]), region_names=["left", "right"]).tables[
    ...     "Regions summary"]["size (in mm^3)"]
    [2048.0, 2048.0]
    """
    affine = _affine("affine", affine)
    labels = _spatial_array("labels", labels, 3)
    mean = _mean_image(mean_img, "labels", labels.shape)
    values, counts = np.unique(labels, return_counts=True)
    if region_ids is None:
        region_ids = values[values != background_label].tolist()
    region_ids = list(region_ids)
    region_names = [str(i) for i in region_ids] if region_names is None else list(region_names)
    if len(region_names) != len(region_ids):
        raise ParameterError(
            f"region_names has {len(region_names)} names but there are {len(region_ids)} region "
            "ids; give one name per region id."
        )
    report = _new_report(title, parameters, mean_img)
    report.add_figure(_figures.plot_labels(mean, labels, affine, background_label=background_label),
                      caption="Regions of the atlas over the mean image.")
    report.add_sentence(f"The masker has {len(region_ids)} different non-overlapping regions.")
    report.add_table("Regions summary", _regions_table(values, counts, region_ids, region_names,
                                               background_label, affine))
    return report


def _regions_table(values: np.ndarray, counts: np.ndarray, region_ids: list, region_names: list,
                   background_label: float, affine: np.ndarray) -> dict[str, list]:
    """Sizes of the regions from ``np.unique``'s values and counts (0 for an absent id)."""
    size_of = dict(zip(values.tolist(), counts.tolist(), strict=True))
    sizes = [size_of.get(region_id, 0) for region_id in region_ids]
    labelled = int(counts[values != background_label].sum())
    voxel_volume = abs(np.linalg.det(affine[:3, :3]))
    return {
        "label value": region_ids,
        "region name": region_names,
        "size (voxels)": sizes,
        "size (in mm^3)": [round(float(size * voxel_volume), 6) for size in sizes],
        "relative size (in %)": [round(100 * size / labelled, 2) if labelled else 0.0
                                 for size in sizes],
    }


def maps_report(
    mean_img: Any,
    maps: Any,
    affine: Any,
    *,
    parameters: Mapping[str, Any] | None = None,
    title: str = "NiftiMapsMasker",
    displayed: Sequence[int] | None = None,
) -> Report:
    """Report of a stack of (probabilistic) maps: how many, and their projection over the mean image.

    Parameters
    ----------
    mean_img : array (3D) or None
        The mean of the fitted images, on the maps' grid; None when fit had no image.
    maps : array (4D, maps last)
        The maps.
    affine : array (4, 4)
        Voxel-to-world affine shared by ``mean_img`` and ``maps``.
    parameters : mapping, optional
        The masker's parameters, shown as a table.
    title : str
        The report's title.
    displayed : sequence of int, optional
        The maps drawn, one figure each (indices along the last axis); None: all of them.

    Returns
    -------
    Report

    Examples
    --------
    >>> import numpy as np
    >>> maps = np.random.default_rng(0).random((8, 8, 8, 3))
    >>> maps_report(None, maps, np.eye(4)).sentences[0]
    'The masker has 3 spatial maps in total.'
    """
    affine = _affine("affine", affine)
    maps = _spatial_array("maps", maps, 4)
    mean = _mean_image(mean_img, "maps", maps.shape)
    report = _new_report(title, parameters, mean_img)
    shown = list(range(maps.shape[3])) if displayed is None else [int(i) for i in displayed]
    for index in shown:  # one figure per map, as nilearn's carousel
        report.add_figure(_figures.plot_maps(mean, maps[..., [index]], affine),
                          caption=f"Map {index} over the mean image, more opaque where the map is higher.")
    report.add_sentence(f"The masker has {maps.shape[3]} spatial maps in total.")
    return report


def spheres_report(
    mean_img: Any,
    affine: Any,
    *,
    seeds: Sequence[Sequence[float]],
    radius: float | None = None,
    parameters: Mapping[str, Any] | None = None,
    title: str = "NiftiSpheresMasker",
    displayed: Sequence[int] | None = None,
) -> Report:
    """Report of spheres around seeds: the spheres over the mean image and a table of seeds.

    Parameters
    ----------
    mean_img : array (3D) or None
        The mean of the fitted images; None when fit had no image (the spheres are then drawn
        on a blank grid around the seeds, with the voxel sizes of ``affine``).
    affine : array (4, 4)
        Voxel-to-world affine of ``mean_img``.
    seeds : sequence of (x, y, z)
        Sphere centres in world millimetres.
    radius : float or None
        Sphere radius in mm (None: one voxel per seed).
    parameters : mapping, optional
        The masker's parameters, shown as a table.
    title : str
        The report's title.
    displayed : sequence of int, optional
        The spheres drawn: one figure of them all, then one per sphere; None: all of them (the
        table lists every seed).

    Returns
    -------
    Report

    Examples
    --------
    >>> import numpy as np
    >>> report = spheres_report(None, np.eye(4), seeds=[(0, 0, 0), (10, -5, 3)], radius=4)
    >>> report.sentences[0]
    'The masker has 2 spheres in total.'
    """
    affine = _affine("affine", affine)
    mean = None if mean_img is None else _spatial_array("mean_img", mean_img, 3)
    seeds = np.asarray(seeds, dtype=float)
    if seeds.size and (seeds.ndim != 2 or seeds.shape[1] != 3):
        raise ParameterError(
            f"seeds has shape {seeds.shape}; expected a list of (x, y, z) world coordinates."
        )
    seeds = seeds.reshape(-1, 3)
    if radius is not None and not radius >= 0:
        raise ParameterError(f"radius must be None or a non-negative number of mm; got {radius!r}.")
    report = _new_report(title, parameters, mean_img)
    shown = list(range(len(seeds))) if displayed is None else [int(i) for i in displayed]
    if shown:  # all the spheres drawn, then each one (as nilearn's carousel)
        report.add_figure(_figures.plot_spheres(mean, affine, seeds=seeds[shown], radius=radius),
                          caption="Spheres over the mean image (circles where a cut crosses them)"
                                  + ("." if len(shown) == len(seeds) else f" (spheres {shown} are drawn)."))
        for index in shown:
            report.add_figure(_figures.plot_spheres(mean, affine, seeds=seeds[[index]], radius=radius),
                              caption=f"Sphere {index} over the mean image.")
    report.add_sentence(f"The masker has {len(seeds)} spheres in total.")
    volume = "one voxel" if radius is None else round(4 / 3 * np.pi * radius**3, 2)
    report.add_table("Seeds", {
        "seed number": list(range(len(seeds))),
        "x (mm)": seeds[:, 0].tolist(),
        "y (mm)": seeds[:, 1].tolist(),
        "z (mm)": seeds[:, 2].tolist(),
        "radius (mm)": [radius] * len(seeds),
        "size (mm³)": [volume] * len(seeds),
    })
    return report
