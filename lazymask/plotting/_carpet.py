"""The carpet plot of a 4D run (nilearn's ``plot_carpet``), computed in one pass over the data.

Contract
--------
* One dask computation reads the run once. It yields the voxel time series drawn (the mask's
  voxels, at most ``max_rows`` of them: every n-th voxel in nilearn's (C) order when there
  are more — a figure has a few hundred pixel rows, so this changes nothing visible and bounds
  memory), and, when no ``mask_img`` is given, the mean volume from which the EPI mask is computed
  (nilearn's default) — both from the same read tasks.
* The series are then cleaned as nilearn does (``detrend`` with ``standardize``; nothing when
  ``detrend=False``), the colour range is nilearn's (mean ± 2 × the mean of the voxels' standard
  deviations), and runs longer than 800 volumes are decimated in time by a power of two.
"""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np

from lazymask.exceptions import DimensionError
from lazymask.io import Grid, get_affine, get_t_r, image_dataarray, open_nifti
from lazymask.masking import compute_epi_mask
from lazymask.signal import clean

__all__ = ["plot_carpet"]

MAX_ROWS = 20_000
"""Most voxels (rows) a carpet plot reads into memory (20 000 x 1200 volumes x 4 B = 92 MiB)."""

_LONG_CUTOFF = 800


def _fortran_index(c_index: np.ndarray, shape) -> np.ndarray:
    """Fortran-order flat indices (the layout of a NIfTI block) of C-order flat indices (nilearn's
    voxel order: ``data[mask]``)."""
    return np.ravel_multi_index(np.unravel_index(c_index, shape), shape, order="F")


def _sampled_rows(flat_index: np.ndarray, max_rows: int) -> np.ndarray:
    """Every n-th of ``flat_index`` so that at most ``max_rows`` remain."""
    step = max(1, int(np.ceil(len(flat_index) / max_rows)))
    return flat_index[::step]


def _take_voxels(block: np.ndarray, index: np.ndarray) -> np.ndarray:
    return np.asarray(block).reshape(-1, block.shape[3], order="F")[index].T.astype(np.float32)


def _voxel_series(data: da.Array, flat_index: np.ndarray) -> da.Array:
    """``(time, len(flat_index))`` series of the voxels at Fortran-order ``flat_index``, lazily."""
    spatial = data.rechunk({0: -1, 1: -1, 2: -1})
    return da.blockwise(_take_voxels, "tv", spatial, "ijkt", new_axes={"v": len(flat_index)}, concatenate=True,
                        index=flat_index, dtype=np.float32, meta=np.empty((0, 0), np.float32))


def plot_carpet(img, mask_img=None, mask_labels=None, t_r=None, detrend=True, output_file=None, figure=None,
                axes=None, vmin=None, vmax=None, title=None, cmap="gray", cmap_labels="gist_ncar",
                standardize=True, max_rows=MAX_ROWS):
    """Plot every voxel's time series of a 4D run as one image (voxels x time), in one pass.

    nilearn's ``plotting.plot_carpet``: voxels inside ``mask_img`` (default: the EPI mask of the
    run), detrended and standardized, drawn as rows; time in seconds along the x axis.

    Parameters
    ----------
    img : 4D image
    mask_img : 3D image, optional
        A mask, or a labels image (rows are then sorted by label and a label strip is drawn).
        Default: :func:`lazymask.masking.compute_epi_mask` of the run, computed in the same pass.
    mask_labels : dict, optional
        ``{name: label value}`` for the label strip's ticks.
    t_r : float, optional
        Repetition time (default: the header's).
    detrend : bool, default=True
        Detrend (and standardize) the series first; ``False`` draws them raw, as nilearn.
    standardize : {True, False, "zscore_sample", "zscore", "psc"}, default=True
    output_file : str or path, optional
        Save, close and return ``None``.
    figure, axes : optional
        Where to draw.
    vmin, vmax : float, optional
    title : str, optional
    cmap, cmap_labels : str, default="gray", "gist_ncar"
    max_rows : int, default=20000
        Most voxels read (a regular subsample of the mask when it has more).

    Returns
    -------
    matplotlib.figure.Figure or None

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> from lazymask.testing import fake_fmri
    >>> figure = plot_carpet(fake_fmri(n_volumes=20), title="carpet")
    >>> figure.axes[0].get_xlabel()
    'time (s)'
    """
    import matplotlib.pyplot as plt

    image = open_nifti(img)
    if image.ndim != 4:
        raise DimensionError(f"img is a {image.ndim}D image of shape {image.shape}; plot_carpet draws a 4D run.")
    t_r = float(t_r or get_t_r(image) or 1.0)
    data = da.asarray(image.data)
    labels_volume = None
    if mask_img is None:
        n_grid = int(np.prod(image.shape[:3]))
        candidates = _sampled_rows(np.arange(n_grid), 4 * max_rows)
        series_graph = _voxel_series(data, _fortran_index(candidates, image.shape[:3]))
        mean, series = dask.compute(data.mean(axis=3, dtype=np.float64), series_graph)
        mask = np.asarray(compute_epi_mask(image_dataarray(mean, get_affine(image))).values, dtype=bool)
        keep = mask.ravel()[candidates]
        rows = candidates[keep]
        series = series[:, keep]
        if len(rows) > max_rows:
            chosen = _sampled_rows(np.arange(len(rows)), max_rows)
            series = series[:, chosen]
    else:
        mask_image = open_nifti(mask_img)
        Grid.of(image).check_same("img", Grid.of(mask_image), "mask_img", "resample the mask to the run first "
                                  "(lazymask.image.resample_to_img(mask_img, img, interpolation='nearest'))")
        values = np.asarray(mask_image.values)
        if np.unique(values).size > 2:
            labels_volume = values
        rows = _sampled_rows(np.flatnonzero(values.ravel() != 0), max_rows)
        series = _voxel_series(data, _fortran_index(rows, image.shape[:3])).compute()
    labels = None
    if labels_volume is not None:
        labels = labels_volume.ravel()[rows]
        order = np.argsort(labels, kind="stable")
        labels, series = labels[order], series[:, order]
    if detrend:
        standardize = "zscore_sample" if standardize is True else (None if standardize is False else standardize)
        series = clean(series, t_r=t_r, detrend=True, standardize=standardize)
    std = float(np.mean(series.std(axis=0))) if series.size else 1.0
    mean_value = float(series.mean()) if series.size else 0.0
    n_volumes = series.shape[0]
    decimation = 2 ** int(np.ceil(np.log2(np.ceil(n_volumes / _LONG_CUTOFF)))) if n_volumes else 1
    series = series[::decimation]

    if figure is None:
        figure = axes.figure if axes is not None else plt.figure(figsize=(10, 5))
    if axes is None:
        axes = figure.add_subplot(1, 1, 1)
    if labels is not None:
        grid = axes.get_subplotspec().subgridspec(1, 2, width_ratios=[2, 100], wspace=0.0)
        axes.remove()
        strip = figure.add_subplot(grid[0])
        axes = figure.add_subplot(grid[1])
        strip.imshow(labels[:, None], interpolation="none", aspect="auto", cmap=cmap_labels)
        strip.set_xticks([])
        if mask_labels:
            names = {value: name for name, value in mask_labels.items()}
            values = np.unique(labels)
            strip.set_yticks([np.mean(np.flatnonzero(labels == v)) for v in values])
            strip.set_yticklabels([names.get(v, str(v)) for v in values])
        else:
            strip.set_yticks([])
    axes.imshow(series.T, interpolation="nearest", aspect="auto", cmap=cmap,
                vmin=vmin if vmin is not None else mean_value - 2 * std,
                vmax=vmax if vmax is not None else mean_value + 2 * std)
    axes.grid(False)
    axes.set_yticks([])
    interval = max((series.shape[0] + 1) // 10, (series.shape[0] + 1) // 5, 1)
    ticks = list(range(series.shape[0]))[::interval]
    axes.set_xticks(ticks)
    axes.set_xticklabels([f"{t * t_r * decimation:.02f}" for t in ticks])
    axes.set_xlabel("time (s)")
    axes.set_ylabel("voxels")
    for side in ("top", "right"):
        axes.spines[side].set_visible(False)
    axes.spines["bottom"].set_position(("outward", 10))
    axes.spines["left"].set_position(("outward", 10))
    if title:
        axes.set_title(title)
    if output_file is not None:
        figure.savefig(output_file)
        plt.close(figure)
        return None
    return figure
