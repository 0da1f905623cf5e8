"""nilearn's slice plots for lazymask images: ``plot_img``, ``plot_epi``, ``plot_roi``, ``plot_stat_map``.

Every function takes what :func:`lazymask.open_nifti` takes (lazymask DataArrays, paths, nibabel
images); a lazy image is computed here, once (a 3D image is small). Figures are matplotlib's
(pyplot, so that Jupyter shows them inline); with ``output_file`` the figure is saved, closed and
``None`` is returned, as in nilearn.
"""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps

from lazymask.exceptions import DimensionError, ImageFileNotFoundError, ParameterError
from lazymask.io import get_affine, open_nifti
from lazymask.masking import load_template
from lazymask.plotting._cuts import resolve_cuts
from lazymask.plotting._display import Display, display_letters, figure_size
from lazymask.reporting import Volume

__all__ = ["MNI152TEMPLATE", "plot_epi", "plot_img", "plot_roi", "plot_stat_map", "show"]

MNI152TEMPLATE = "MNI152"
"""The default ``bg_img`` of ``plot_roi``/``plot_stat_map``: the MNI152 T1 template (needs nilearn's
package data, see :func:`lazymask.masking.load_template`; without it there is no background)."""


def load_volume(img, name: str) -> Volume:
    """``img`` as an in-memory RAS :class:`Volume` (a 4D image of one volume is taken as 3D)."""
    if img is None:
        raise ParameterError(f"{name} is None; pass an image (a path, a nibabel image or a DataArray).")
    image = open_nifti(img)
    if image.ndim == 4 and image.shape[3] == 1:
        image = image.isel(time=0)
    if image.ndim != 3:
        raise DimensionError(
            f"{name} is a {image.ndim}D image of shape {image.shape}; plotting draws 3D images. Select a "
            "volume (lazymask.image.index_img(img, 0)) or average them (lazymask.image.mean_img)."
        )
    return Volume.from_array(np.asarray(image.values), get_affine(image))


def _background(bg_img) -> Volume | None:
    if bg_img is None or bg_img is False:
        return None
    if isinstance(bg_img, str) and bg_img == MNI152TEMPLATE:
        try:
            values, affine = load_template("whole-brain")
        except ImageFileNotFoundError:
            return None
        return Volume.from_array(values, affine)
    return load_volume(bg_img, "bg_img")


def _value_range(volume: Volume, vmin=None, vmax=None) -> tuple[float, float]:
    values = np.asarray(volume.data, dtype=float)
    values = values[np.isfinite(values)]
    low = float(values.min()) if vmin is None and values.size else (0.0 if vmin is None else float(vmin))
    high = float(values.max()) if vmax is None and values.size else (1.0 if vmax is None else float(vmax))
    return low, high if high > low else low + 1.0


def _dimmed(window: tuple[float, float], dim, black_bg: bool) -> tuple[float, float]:
    """nilearn's ``dim``: a number in [-2, 2] that widens the background's range (dimming it)."""
    if dim == "auto":
        dim = 0.8 if black_bg else 0.0
    dim = float(dim)
    if dim == 0:
        return window
    centre, half = (window[0] + window[1]) / 2, (window[1] - window[0]) / 2
    if black_bg:
        return window[0], centre + (1 + dim) * half
    return centre - (1 + dim) * half, window[1]


def _new_display(frame: Volume, cut_volume: Volume, *, display_mode, cut_coords, threshold, figure, axes,
                 black_bg, annotate, draw_cross, colorbar, cbar_tick_format, radiological) -> Display:
    import matplotlib.pyplot as plt

    letters = display_letters(display_mode)
    cuts, coords = resolve_cuts(letters, cut_coords, cut_volume, threshold)
    if axes is not None:
        figure = axes.figure
        position = axes.get_position()
        axes.remove()
    if figure is None:
        figure = plt.figure(figsize=figure_size(frame, cuts))
    elif isinstance(figure, int | str):
        figure = plt.figure(figure, figsize=figure_size(frame, cuts))
    display = Display(figure, frame, cuts, coords, black_bg=black_bg, radiological=radiological,
                      annotate=annotate, draw_cross=draw_cross, colorbar=colorbar,
                      cbar_tick_format=cbar_tick_format)
    if axes is not None:
        for ax in display.axes:
            box = ax.get_position()
            ax.set_position((position.x0 + box.x0 * position.width, position.y0 + box.y0 * position.height,
                             box.width * position.width, box.height * position.height))
    return display


def _overlay_display(img, name: str, bg_img, **display) -> tuple[Volume, Volume | None, Display]:
    """``img`` as a volume, its background (None without one) and a display framed by the background.

    The cuts are chosen on ``img`` (``display`` holds :func:`_new_display`'s keywords).
    """
    volume = img if isinstance(img, Volume) else load_volume(img, name)
    background = _background(bg_img)
    frame = background if background is not None else volume
    return volume, background, _new_display(frame, volume, **display)


def _finish(display: Display, title, output_file):
    if title:
        display.title(title)
    if output_file is not None:
        display.savefig(output_file)
        display.close()
        return None
    return display


def plot_img(img, cut_coords=None, output_file=None, display_mode="ortho", figure=None, axes=None, title=None,
             threshold=None, annotate=True, draw_cross=True, black_bg=False, colorbar=True,
             cbar_tick_format="%.2g", resampling_interpolation="continuous", bg_img=None, vmin=None, vmax=None,
             radiological=False, decimals=False, cmap="gray", transparency=None, transparency_range=None,
             **kwargs):
    """Cuts of a 3D image (nilearn's ``plotting.plot_img``), with an optional background.

    Parameters
    ----------
    img : 3D image
        A lazymask DataArray, a path or a nibabel image (computed here if lazy).
    cut_coords : None, sequence of float, or int
        World coordinates (mm) of the cuts: ``(x, y, z)`` for ``"ortho"``; for ``"x"``, ``"y"``,
        ``"z"`` a list of positions or the number of cuts. Default: through the image's strongest
        region (ortho), or 7 cuts spread over the image.
    output_file : str or path, optional
        Save the figure there (format from the extension), close it and return ``None``.
    display_mode : {"ortho", "x", "y", "z", "xz", "yz", "yx"}, default="ortho"
    figure : matplotlib Figure or int, optional
    axes : matplotlib Axes, optional
        Draw in the rectangle of these axes.
    title : str, optional
    threshold : float, optional
        Values with ``|value| <= threshold`` are not drawn.
    annotate, draw_cross : bool, default=True
        Cut coordinates and L/R letters; cut lines.
    black_bg : bool, default=False
    colorbar : bool, default=True
    cbar_tick_format : str, default="%.2g"
    resampling_interpolation, decimals, transparency, transparency_range, **kwargs
        Accepted for compatibility (cuts are drawn voxel by voxel, nearest).
    bg_img : 3D image, optional
        Drawn below ``img`` in gray.
    vmin, vmax : float, optional
        Colour range (default: the image's range).
    radiological : bool, default=False
        Left on the right.
    cmap : str or Colormap, default="gray"

    Returns
    -------
    Display or None
        The display (``None`` with ``output_file``).

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> from lazymask.testing import fake_fmri
    >>> display = plot_img(fake_fmri(n_volumes=1), title="volume 0")
    >>> [letter for letter, _ in display.cuts]
    ['x', 'y', 'z']
    >>> display.close()
    """
    volume, background, display = _overlay_display(
        img, "img", bg_img, display_mode=display_mode, cut_coords=cut_coords, threshold=threshold, figure=figure,
        axes=axes, black_bg=black_bg, annotate=annotate, draw_cross=draw_cross, colorbar=colorbar,
        cbar_tick_format=cbar_tick_format, radiological=radiological)
    if background is not None:
        display.add_image(background, cmap="gray", vmin=_value_range(background)[0],
                          vmax=_value_range(background)[1])
    low, high = _value_range(volume, vmin, vmax)
    display.add_image(volume, cmap=cmap, vmin=low, vmax=high, threshold=threshold, colorbar=True)
    return _finish(display, title, output_file)


def plot_epi(epi_img=None, cut_coords=None, output_file=None, display_mode="ortho", figure=None, axes=None,
             title=None, annotate=True, draw_cross=True, black_bg=True, colorbar=True, cbar_tick_format="%.2g",
             cmap="gray", vmin=None, vmax=None, radiological=False, **kwargs):
    """Cuts of an EPI volume on a black background (nilearn's ``plotting.plot_epi``).

    Same parameters as :func:`plot_img`, with nilearn's defaults for EPI images
    (``black_bg=True``, ``cmap="gray"``).

    Returns
    -------
    Display or None

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> from lazymask import image
    >>> from lazymask.testing import fake_fmri
    >>> display = plot_epi(image.mean_img(fake_fmri()), title="Mean EPI image")
    >>> display.black_bg
    True
    >>> display.close()
    """
    return plot_img(epi_img, cut_coords=cut_coords, output_file=output_file, display_mode=display_mode,
                    figure=figure, axes=axes, title=title, annotate=annotate, draw_cross=draw_cross,
                    black_bg=black_bg, colorbar=colorbar, cbar_tick_format=cbar_tick_format, cmap=cmap,
                    vmin=vmin, vmax=vmax, radiological=radiological, **kwargs)


def _draw_background(display: Display, background: Volume | None, dim) -> None:
    if background is None:
        return
    window = _dimmed(_value_range(background), dim, display.black_bg)
    display.add_image(background, cmap="gray", vmin=window[0], vmax=window[1])


def plot_roi(roi_img, bg_img=MNI152TEMPLATE, cut_coords=None, output_file=None, display_mode="ortho",
             figure=None, axes=None, title=None, annotate=True, draw_cross=True, black_bg="auto", threshold=0.5,
             alpha=0.7, cmap="gist_ncar", dim="auto", colorbar=True, cbar_tick_format="%.2g", vmin=None,
             vmax=None, resampling_interpolation="nearest", view_type="continuous", linewidths=2.5,
             radiological=False, **kwargs):
    """A region (a mask or a labels image) over a background (nilearn's ``plotting.plot_roi``).

    Values above ``threshold`` are drawn with ``cmap`` (filled, ``view_type="continuous"``) and
    outlined; ``view_type="contours"`` draws the outlines only.

    Parameters
    ----------
    roi_img : 3D image
        A mask (for example ``masker.mask_img_``) or a labels image.
    bg_img : 3D image, default: the MNI152 template
        For example the mean EPI image. ``None`` or ``False``: no background.
    black_bg : bool or "auto", default="auto"
        ``"auto"``: black.
    threshold : float, default=0.5
    alpha : float, default=0.7
    cmap : str or Colormap, default="gist_ncar"
    dim : float or "auto", default="auto"
        Dim the background (-2 to 2).
    view_type : {"continuous", "contours"}, default="continuous"
    linewidths : float, default=2.5
        Width of the outlines in ``"contours"`` mode.
    cut_coords, output_file, display_mode, figure, axes, title, annotate, draw_cross, colorbar,
    cbar_tick_format, vmin, vmax, radiological
        As in :func:`plot_img`.

    Returns
    -------
    Display or None

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> import numpy as np, nibabel as nib
    >>> mask = np.zeros((10, 10, 10), "uint8"); mask[3:7, 3:7, 3:7] = 1
    >>> display = plot_roi(nib.Nifti1Image(mask, np.eye(4)), bg_img=None, title="mask")
    >>> np.round(display.cut_coords, 1).tolist()
    [4.5, 4.5, 4.5]
    >>> display.close()
    """
    if view_type not in ("continuous", "contours"):
        raise ParameterError(f"view_type={view_type!r}: expected 'continuous' or 'contours'.")
    roi = load_volume(roi_img, "roi_img")
    roi, background, display = _overlay_display(
        roi, "roi_img", bg_img, display_mode=display_mode, cut_coords=cut_coords, threshold=threshold,
        figure=figure, axes=axes, black_bg=True if black_bg == "auto" else bool(black_bg), annotate=annotate,
        draw_cross=draw_cross, colorbar=colorbar and _is_labels(roi), cbar_tick_format=cbar_tick_format,
        radiological=radiological)
    _draw_background(display, background, dim)
    values = np.asarray(roi.data, dtype=float)
    shown = values[np.isfinite(values) & (values > threshold)]
    high = float(shown.max()) if shown.size else 1.0
    low = float(vmin) if vmin is not None else 0.0
    # a binary mask takes the colour near the top of the map, as in nilearn's figures
    high = float(vmax) if vmax is not None else (high / 0.9 if not _is_labels(roi) else high)
    if view_type == "continuous":
        display.add_image(roi, cmap=cmap, vmin=low, vmax=high, threshold=threshold, alpha=alpha,
                          colorbar=_is_labels(roi))
    colour_map = colormaps[cmap] if isinstance(cmap, str) else cmap
    outline = colour_map((max(threshold, 1.0) - low) / (high - low) if high > low else 1.0)
    display.add_contours(_binary(roi, threshold), levels=(0.5,), colors=[outline],
                         linewidths=linewidths if view_type == "contours" else 1.0)
    return _finish(display, title, output_file)


def _is_labels(volume: Volume) -> bool:
    values = np.unique(np.asarray(volume.data)[np.isfinite(volume.data)])
    return values.size > 2


def _binary(volume: Volume, threshold: float) -> Volume:
    data = np.nan_to_num(np.asarray(volume.data, dtype=float)) > threshold
    return Volume(data.astype(np.float32), volume.origin, volume.zooms)


def plot_stat_map(stat_map_img, bg_img=MNI152TEMPLATE, cut_coords=None, output_file=None, display_mode="ortho",
                  colorbar=True, cbar_tick_format="%.2g", figure=None, axes=None, title=None, threshold=1e-6,
                  annotate=True, draw_cross=True, black_bg="auto", cmap="RdBu_r", symmetric_cbar="auto",
                  dim="auto", vmin=None, vmax=None, radiological=False, resampling_interpolation="continuous",
                  transparency=None, transparency_range=None, **kwargs):
    """A statistical map over a background (nilearn's ``plotting.plot_stat_map``).

    Values with ``|value| <= threshold`` are transparent; the colours are symmetric around 0
    (``-vmax`` to ``vmax``, ``vmax`` the largest absolute value by default).

    Parameters
    ----------
    stat_map_img : 3D image
    bg_img : 3D image, default: the MNI152 template
    threshold : float, default=1e-6
    cmap : str or Colormap, default="RdBu_r"
    symmetric_cbar : bool or "auto", default="auto"
        ``"auto"``: symmetric when the map has negative values, else the colour bar starts at 0.
    dim : float or "auto"
    cut_coords, output_file, display_mode, colorbar, cbar_tick_format, figure, axes, title, annotate,
    draw_cross, black_bg, vmin, vmax, radiological
        As in :func:`plot_img` (``black_bg="auto"``: black).
    resampling_interpolation, transparency, transparency_range, **kwargs
        Accepted for compatibility.

    Returns
    -------
    Display or None

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> import numpy as np, nibabel as nib
    >>> stat = np.zeros((10, 10, 10)); stat[2:5, 2:5, 2:5] = 4.0
    >>> display = plot_stat_map(nib.Nifti1Image(stat, np.eye(4)), bg_img=None, threshold=1.0)
    >>> np.round(display.cut_coords, 1).tolist()
    [3.0, 3.0, 3.0]
    >>> display.close()
    """
    stat, background, display = _overlay_display(
        stat_map_img, "stat_map_img", bg_img, display_mode=display_mode, cut_coords=cut_coords,
        threshold=threshold, figure=figure, axes=axes, black_bg=True if black_bg == "auto" else bool(black_bg),
        annotate=annotate, draw_cross=draw_cross, colorbar=colorbar, cbar_tick_format=cbar_tick_format,
        radiological=radiological)
    _draw_background(display, background, dim)
    values = np.asarray(stat.data, dtype=float)
    values = values[np.isfinite(values)]
    largest = float(np.abs(values).max()) if values.size else 1.0
    top = float(vmax) if vmax is not None else (largest if largest > 0 else 1.0)
    symmetric = bool(values.size and values.min() < 0) if symmetric_cbar == "auto" else bool(symmetric_cbar)
    bottom = float(vmin) if vmin is not None else (-top if symmetric else -top)
    display.add_image(stat, cmap=cmap, vmin=bottom, vmax=top, threshold=threshold, colorbar=True)
    if colorbar and not symmetric and vmin is None and getattr(display, "colorbar", None) is not None:
        display.colorbar.ax.set_ylim(0, top)
    return _finish(display, title, output_file)


def show() -> None:
    """Show the figures drawn so far (``matplotlib.pyplot.show``), as ``nilearn.plotting.show``.

    Examples
    --------
    >>> show()   # doctest: +SKIP
    """
    import matplotlib.pyplot as plt

    plt.show()
