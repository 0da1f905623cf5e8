"""A slicer display: cuts of 3D images in world millimetres, with nilearn's layout and annotations.

Contract
--------
* A :class:`Display` holds one matplotlib axes per cut (``display_mode`` ``"ortho"``: sagittal,
  coronal, axial; ``"x"``/``"y"``/``"z"``: several parallel cuts; ``"xz"``, ``"yz"``, ``"yx"``),
  framed by the world extent of its frame (the background, else the image drawn).
* Images are reoriented to RAS (axis swaps and flips only, :class:`lazymask.reporting.Volume`) and
  placed in world millimetres, so images on different grids line up. Views are neurological (left
  on the left) unless ``radiological``; sagittal views have anterior on the right.
* ``annotate`` writes each cut's coordinate (``x=10``) and the orientation letters (``L``/``R``)
  on the coronal and axial views; ``draw_cross`` draws the cut lines in the ortho views.
* Layers only read in-memory numpy arrays: everything lazy is computed before, by the caller.
"""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from matplotlib import colors as mcolors
from matplotlib.cm import ScalarMappable

from lazymask.exceptions import ParameterError
from lazymask.reporting import Volume

# axis the cut is perpendicular to -> the (horizontal, vertical) axes of the view
PLANE_AXES = {0: (1, 2), 1: (0, 2), 2: (0, 1)}
AXIS_OF_LETTER = {"x": 0, "y": 1, "z": 2}
_MODE_LETTERS = {"ortho": "xyz", "x": "x", "y": "y", "z": "z", "xz": "xz", "yz": "yz",
                 "yx": "yx"}
DISPLAY_MODES = tuple(_MODE_LETTERS)
_CUT_HEIGHT_INCHES = 2.6


def display_letters(display_mode: str) -> str:
    """The cut directions of ``display_mode`` (``"xyz"`` for ortho)."""
    if display_mode not in _MODE_LETTERS:
        raise ParameterError(f"display_mode={display_mode!r}: expected one of {list(DISPLAY_MODES)} ('tiled' "
                             "and 'mosaic' are not supported: use 'ortho', or 'x', 'y' or 'z' with several cut_coords).")
    return _MODE_LETTERS[display_mode]


class Display:
    """The figure of a ``plot_*`` call: its axes (one per cut), the cut coordinates, the layers.

    Returned by :func:`lazymask.plotting.plot_img` and friends, as nilearn returns its slicers:
    draw more on it (``add_overlay``, ``add_contours``), then ``savefig`` or ``close``.

    Attributes
    ----------
    figure : matplotlib.figure.Figure
    axes : list of matplotlib.axes.Axes
        One per cut, in the order of ``cuts``.
    cuts : list of (str, float)
        Each axes' direction (``"x"``, ``"y"``, ``"z"``) and world coordinate (mm).
    cut_coords : tuple or list of float
        ``(x, y, z)`` for ortho-like modes, else the list of cut positions.
    """

    def __init__(self, figure, background: Volume, cuts, cut_coords, *, black_bg: bool, radiological: bool,
                 annotate: bool, draw_cross: bool, colorbar: bool, cbar_tick_format: str = "%.2g"):
        self.figure = figure
        self.cuts = list(cuts)
        self.cut_coords = cut_coords
        self.frame = background
        self.black_bg = black_bg
        self.radiological = radiological
        self._colorbar = colorbar
        self._cbar_tick_format = cbar_tick_format
        self._mappable = None
        self._text_color = "white" if black_bg else "black"
        figure.set_facecolor("black" if black_bg else "white")
        widths = [np.ptp(background.extent(PLANE_AXES[AXIS_OF_LETTER[letter]][0])) for letter, _ in self.cuts]
        right = 0.87 if colorbar else 1.0
        grid = figure.add_gridspec(1, len(self.cuts), width_ratios=widths, left=0.0, right=right, bottom=0.0,
                                   top=1.0, wspace=0.02)
        self.axes = [figure.add_subplot(grid[0, n]) for n in range(len(self.cuts))]
        for ax, (letter, position) in zip(self.axes, self.cuts, strict=True):
            self._frame_axes(ax, letter)
            if annotate:
                self._annotate(ax, letter, position)
        if draw_cross and len(self.cuts) > 1 and len({letter for letter, _ in self.cuts}) == len(self.cuts):
            self._draw_cross()

    # -- frame and annotations ----------------------------------------------------------------------
    def _frame_axes(self, ax, letter: str) -> None:
        axis = AXIS_OF_LETTER[letter]
        extent = self.frame.plane_extent(axis)
        horizontal = (extent[1], extent[0]) if self.radiological and axis != 0 else (extent[0], extent[1])
        ax.set_xlim(*horizontal)
        ax.set_ylim(extent[2], extent[3])
        ax.set_aspect("equal")
        ax.set_axis_off()
        ax.set_facecolor("black" if self.black_bg else "white")
        ax.set_label(f"cut {letter}")

    def _annotate(self, ax, letter: str, position: float) -> None:
        style = {"color": self._text_color, "transform": ax.transAxes}
        ax.text(0.02, 0.02, f"{letter}={round(position) + 0:d}", ha="left", va="bottom", fontsize=10, **style)
        if letter in "yz":
            left, right = ("R", "L") if self.radiological else ("L", "R")
            ax.text(0.02, 0.55, left, ha="left", va="center", fontsize=12, **style)
            ax.text(0.98, 0.55, right, ha="right", va="center", fontsize=12, **style)

    def _draw_cross(self) -> None:
        coords = dict(self.cuts)
        for ax, (letter, _) in zip(self.axes, self.cuts, strict=True):
            horizontal, vertical = ("xyz"[a] for a in PLANE_AXES[AXIS_OF_LETTER[letter]])
            line = {"color": "white" if self.black_bg else "black", "linewidth": 0.6, "alpha": 0.8}
            if horizontal in coords:
                ax.axvline(coords[horizontal], **line)
            if vertical in coords:
                ax.axhline(coords[vertical], **line)

    def title(self, text: str, color=None, bgcolor=None, size: float = 15, **kwargs) -> None:
        """Write ``text`` in the upper-left corner of the figure (as nilearn's displays do)."""
        color = self._text_color if color is None else color
        bgcolor = ("black" if self.black_bg else "white") if bgcolor is None else bgcolor
        self.figure.text(0.01, 0.99, text, ha="left", va="top", color=color, fontsize=size,
                         bbox={"facecolor": bgcolor, "edgecolor": bgcolor, "alpha": 0.9}, **kwargs)

    # -- layers -------------------------------------------------------------------------------------
    def _planes(self, volume: Volume):
        for ax, (letter, position) in zip(self.axes, self.cuts, strict=True):
            axis = AXIS_OF_LETTER[letter]
            plane = volume.plane(axis, position)
            if plane is not None:
                yield ax, axis, np.asarray(plane)

    def add_image(self, volume: Volume, *, cmap="gray", vmin=None, vmax=None, threshold=None, alpha=1.0,
                  colorbar: bool = False):
        """Draw ``volume`` with ``cmap``; values with ``|value| <= threshold`` are transparent."""
        cmap = colormaps[cmap] if isinstance(cmap, str) else cmap
        norm = mcolors.Normalize(vmin=vmin, vmax=vmax)
        image = None
        for ax, axis, plane in self._planes(volume):
            values = np.asarray(plane, dtype=float)
            hidden = ~np.isfinite(values)
            if threshold is not None:
                hidden |= np.abs(values) <= threshold
            image = ax.imshow(np.ma.masked_array(values, hidden).T, origin="lower", cmap=cmap, norm=norm,
                              extent=volume.plane_extent(axis), interpolation="nearest", alpha=alpha,
                              zorder=1)
        if colorbar and self._colorbar:
            self._mappable = (cmap, norm, threshold)
            self._draw_colorbar()
        return image

    add_overlay = add_image

    def add_contours(self, volume: Volume, levels=(0.5,), colors="r", linewidths=1.5, filled=False, alpha=1.0):
        """Draw iso-contours of ``volume`` (``filled`` fills between levels)."""
        for ax, axis, plane in self._planes(volume):
            values = np.nan_to_num(np.asarray(plane, dtype=float))
            if not np.any(values > min(levels)):
                continue
            padded = np.pad(values, 1)  # a region touching the edge gets a closed contour
            horizontal, vertical = (_padded_centres(volume, a) for a in PLANE_AXES[axis])
            if filled:
                ax.contourf(horizontal, vertical, padded.T, levels=[*levels, np.inf], colors=colors, alpha=alpha,
                            zorder=2)
            ax.contour(horizontal, vertical, padded.T, levels=list(levels), colors=colors, linewidths=linewidths,
                       alpha=alpha, zorder=3)

    def _draw_colorbar(self) -> None:
        cmap, norm, threshold = self._mappable
        bar = self.figure.add_axes((0.885, 0.08, 0.018, 0.84))
        bar.set_label("colorbar")
        colorbar = self.figure.colorbar(ScalarMappable(norm=norm, cmap=cmap), cax=bar,
                                        format=self._cbar_tick_format)
        colorbar.outline.set_edgecolor(self._text_color)
        bar.tick_params(colors=self._text_color, labelsize=8)
        if threshold:
            low, high = max(-threshold, norm.vmin), min(threshold, norm.vmax)
            if high > low:
                bar.axhspan(low, high, color="gray", alpha=0.6)
        self.colorbar = colorbar

    # -- output -------------------------------------------------------------------------------------
    def savefig(self, filename, dpi=None) -> None:
        """Save the figure (the format from the file name's extension)."""
        self.figure.savefig(filename, dpi=dpi, facecolor=self.figure.get_facecolor())

    def close(self) -> None:
        """Close the figure (free its memory)."""
        import matplotlib.pyplot as plt

        plt.close(self.figure)


def _padded_centres(volume: Volume, axis: int) -> np.ndarray:
    centres = volume.voxel_centres(axis)
    step = volume.zooms[axis]
    return np.concatenate([[centres[0] - step], centres, [centres[-1] + step]])


def figure_size(frame: Volume, letters_and_positions) -> tuple[float, float]:
    """A figure as tall as nilearn's (2.6 in), as wide as the cuts' world aspect asks."""
    widths = [np.ptp(frame.extent(PLANE_AXES[AXIS_OF_LETTER[letter]][0])) for letter, _ in letters_and_positions]
    heights = [np.ptp(frame.extent(PLANE_AXES[AXIS_OF_LETTER[letter]][1])) for letter, _ in letters_and_positions]
    return _CUT_HEIGHT_INCHES * sum(widths) / max(heights) * 1.08, _CUT_HEIGHT_INCHES
