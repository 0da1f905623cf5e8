"""Three orthogonal views (sagittal, coronal, axial) of a 3D image with an overlay, as SVG text or PNG bytes.

Contract
--------
- Inputs are plain numpy arrays with 4x4 voxel-to-world affines. Every array is first reoriented
  to the closest RAS orientation (the logic of ``nibabel.as_closest_canonical``: axis swaps and
  flips only, no resampling), so a voxel on the subject's left is drawn on the left whatever the
  storage order. Views are neurological: left on the left (axial, coronal), anterior on the right
  (sagittal), superior up.
- Everything is drawn in world millimetres: each array is placed with its own origin and voxel
  sizes, and the axes keep an equal aspect, so anisotropic voxels keep their true shape and images
  on different grids (a mask before and after resampling) line up. Residual rotations of oblique
  affines (what is left after the axis swaps) are not drawn.
- The cut goes through the overlay's centre of mass (computed in voxel space, mapped to world);
  a view whose plane misses an array simply does not draw that array.
- Matplotlib is used without pyplot (``Figure`` + ``FigureCanvasAgg``): no global state, no GUI.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

from typing import TYPE_CHECKING

import numpy as np
from nibabel import orientations

if TYPE_CHECKING:  # matplotlib is imported when a figure is drawn, not when a masker records its report data
    from matplotlib.figure import Figure

__all__ = [
    "plot_labels",
    "plot_maps",
    "plot_mask",
    "plot_spheres",
]

DPI = 80
_FIGURE_HEIGHT_INCHES = 2.6
# (view name, axis the cut is perpendicular to, world letter of that axis)
_VIEWS = (("sagittal", 0, "x"), ("coronal", 1, "y"), ("axial", 2, "z"))
# for a cut perpendicular to axis a: the (horizontal, vertical) axes of the view
_PLANE_AXES = {0: (1, 2), 1: (0, 2), 2: (0, 1)}
# side letters (low end, high end) of the horizontal axis of each view
_SIDE_LETTERS = {0: ("P", "A"), 1: ("L", "R"), 2: ("L", "R")}
MASK_COLOR = "#ff3030"
SECOND_MASK_COLOR = "#30d0ff"


def _palette() -> np.ndarray:
    """A qualitative palette of 60 RGBA colours (tab20, tab20b, tab20c)."""
    from matplotlib import colormaps

    rgb = np.concatenate([colormaps[name].colors for name in ("tab20", "tab20b", "tab20c")])
    return np.column_stack([rgb, np.ones(len(rgb))])


def to_ras(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorient ``data`` (3D or more) to the closest RAS orientation; return it and its affine.

    Only swaps and flips axes (a view of ``data``, no copy, no interpolation).
    """
    ornt = orientations.io_orientation(affine)
    if np.array_equal(ornt, [[0, 1], [1, 1], [2, 1]]):
        return data, affine
    ras_data = orientations.apply_orientation(data, ornt)
    ras_affine = affine @ orientations.inv_ornt_aff(ornt, data.shape[:3])
    return ras_data, ras_affine


@dataclass(frozen=True)
class Volume:
    """An array (3D, or 4D with maps last) in RAS order, placed in world millimetres."""

    data: np.ndarray
    origin: np.ndarray  # world mm of the centre of voxel (0, 0, 0)
    zooms: np.ndarray  # voxel size along each axis, mm

    @classmethod
    def from_array(cls, data: np.ndarray, affine: np.ndarray) -> Volume:
        ras_data, ras_affine = to_ras(np.asarray(data), np.asarray(affine, dtype=float))
        zooms = np.linalg.norm(ras_affine[:3, :3], axis=0)
        return cls(ras_data, ras_affine[:3, 3].copy(), zooms)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.data.shape[:3]

    def voxel_centres(self, axis: int) -> np.ndarray:
        return self.origin[axis] + self.zooms[axis] * np.arange(self.shape[axis])

    def extent(self, axis: int) -> tuple[float, float]:
        half = self.zooms[axis] / 2
        return self.origin[axis] - half, self.origin[axis] + (self.shape[axis] - 0.5) * self.zooms[axis]

    def to_world(self, ijk: np.ndarray) -> np.ndarray:
        return self.origin + self.zooms * np.asarray(ijk, dtype=float)

    def centre(self) -> np.ndarray:
        return self.to_world((np.array(self.shape) - 1) / 2)

    def plane(self, axis: int, position: float) -> np.ndarray | None:
        """The slice through world ``position`` along ``axis``, or None when it misses the array.

        The result is indexed ``[horizontal, vertical, ...]`` (see ``_PLANE_AXES``).
        """
        index = int(np.floor((position - self.origin[axis]) / self.zooms[axis] + 0.5))
        if not 0 <= index < self.shape[axis]:
            return None
        return np.take(self.data, index, axis=axis)

    def plane_extent(self, axis: int) -> tuple[float, float, float, float]:
        horizontal, vertical = _PLANE_AXES[axis]
        return (*self.extent(horizontal), *self.extent(vertical))


def centre_of_mass(weights: np.ndarray, volume: Volume) -> np.ndarray:
    """World coordinates of the centre of mass of non-negative ``weights`` on ``volume``'s grid.

    Falls back to the centre of the grid when the weights are all zero.
    """
    weights = np.nan_to_num(np.asarray(weights, dtype=float), nan=0.0, posinf=0.0, neginf=0.0)
    weights = np.clip(weights, 0, None)
    total = weights.sum()
    if total <= 0:
        return volume.centre()
    ijk = [
        (weights.sum(axis=tuple(a for a in range(3) if a != axis)) * np.arange(n)).sum() / total
        for axis, n in enumerate(weights.shape)
    ]
    return volume.to_world(ijk)


# -- layers: each draws itself on one view ---------------------------------------------------------
@dataclass(frozen=True)
class _Background:
    volume: Volume
    window: tuple[float, float]  # display range (vmin, vmax)

    def draw(self, ax, axis: int, position: float) -> None:
        plane = self.volume.plane(axis, position)
        if plane is None:
            return
        values = np.nan_to_num(np.asarray(plane, dtype=float))
        ax.imshow(values.T, origin="lower", extent=self.volume.plane_extent(axis), cmap="gray",
                  vmin=self.window[0], vmax=self.window[1], interpolation="nearest")


def _intensity_window(data: np.ndarray) -> tuple[float, float]:
    """Display range of a background: 2nd and 99.5th percentiles of its finite non-zero values."""
    values = np.asarray(data, dtype=float)
    values = values[np.isfinite(values) & (values != 0)]
    if values.size == 0:
        return 0.0, 1.0
    vmin, vmax = np.percentile(values, [2, 99.5])
    return float(vmin), float(vmax if vmax > vmin else vmin + 1)


@dataclass(frozen=True)
class _Outline:
    volume: Volume
    color: str
    linewidth: float = 1.2

    def draw(self, ax, axis: int, position: float) -> None:
        plane = self.volume.plane(axis, position)
        if plane is None or not np.any(plane):
            return
        # pad with background so that a mask touching the grid's edge still gets a closed outline
        padded = np.pad(np.asarray(plane, dtype=bool), 1).astype(np.float32)
        horizontal, vertical = (
            _padded_centres(self.volume, a) for a in _PLANE_AXES[axis]
        )
        ax.contour(horizontal, vertical, padded.T, levels=[0.5], colors=[self.color],
                   linewidths=self.linewidth)


def _padded_centres(volume: Volume, axis: int) -> np.ndarray:
    centres = volume.voxel_centres(axis)
    step = volume.zooms[axis]
    return np.concatenate([[centres[0] - step], centres, [centres[-1] + step]])


@dataclass(frozen=True)
class _Labels:
    volume: Volume
    label_values: np.ndarray  # sorted non-background labels present in the image
    background_label: float = 0
    alpha: float = 0.6

    def draw(self, ax, axis: int, position: float) -> None:
        plane = self.volume.plane(axis, position)
        if plane is None:
            return
        palette = _palette()
        rank = np.searchsorted(self.label_values, plane)
        rgba = palette[rank % len(palette)].copy()
        rgba[..., 3] = np.where(plane == self.background_label, 0.0, self.alpha)
        ax.imshow(np.swapaxes(rgba, 0, 1), origin="lower", extent=self.volume.plane_extent(axis),
                  interpolation="nearest")


@dataclass(frozen=True)
class _Maps:
    """A 4D stack of maps drawn as one image: colour of the strongest map, opacity from its value."""

    volume: Volume  # 4D, maps last
    vmax: float
    alpha: float = 0.85

    def draw(self, ax, axis: int, position: float) -> None:
        plane = self.volume.plane(axis, position)
        if plane is None:
            return
        plane = np.nan_to_num(np.asarray(plane, dtype=float), nan=-np.inf)
        strongest = np.argmax(plane, axis=-1)
        peak = np.take_along_axis(plane, strongest[..., None], axis=-1)[..., 0]
        palette = _palette()
        rgba = palette[strongest % len(palette)].copy()
        rgba[..., 3] = self.alpha * np.clip(peak / self.vmax, 0.0, 1.0)
        ax.imshow(np.swapaxes(rgba, 0, 1), origin="lower", extent=self.volume.plane_extent(axis),
                  interpolation="nearest")


@dataclass(frozen=True)
class _Spheres:
    seeds: np.ndarray  # (n, 3) world mm
    radius: float
    marker_tolerance: np.ndarray  # per axis, mm: seeds this close to a plane get a marker

    def draw(self, ax, axis: int, position: float) -> None:
        from matplotlib.patches import Circle

        palette = _palette()
        horizontal, vertical = _PLANE_AXES[axis]
        for index, seed in enumerate(self.seeds):
            distance = abs(seed[axis] - position)
            color = palette[index % len(palette)]
            centre = (seed[horizontal], seed[vertical])
            if distance < self.radius:
                ax.add_patch(Circle(centre, np.sqrt(self.radius**2 - distance**2), fill=False,
                                    edgecolor=color, linewidth=1.5))
            if distance <= max(self.radius, self.marker_tolerance[axis]):
                ax.plot(*centre, marker="+", color=color, markersize=6)


# -- figure ----------------------------------------------------------------------------------------
def draw_views(background: Volume, layers: Sequence, cut: np.ndarray) -> Figure:
    """Draw the three views of ``background`` with ``layers`` cut at world ``cut``; a Figure."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    widths = [np.ptp(background.extent(_PLANE_AXES[axis][0])) for _, axis, _ in _VIEWS]
    heights = [np.ptp(background.extent(_PLANE_AXES[axis][1])) for _, axis, _ in _VIEWS]
    aspect = sum(widths) / max(heights)
    figure = Figure(figsize=(_FIGURE_HEIGHT_INCHES * aspect, _FIGURE_HEIGHT_INCHES),
                    facecolor="black")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 3, gridspec_kw={"width_ratios": widths, "wspace": 0.02, "left": 0,
                                              "right": 1, "bottom": 0, "top": 1})
    background_layer = _Background(background, _intensity_window(background.data))
    for ax, (name, axis, letter) in zip(axes, _VIEWS, strict=True):
        for layer in (background_layer, *layers):
            layer.draw(ax, axis, cut[axis])
        _decorate(ax, background, name, axis, f"{letter} = {cut[axis]:.0f}")
    return figure


def _decorate(ax, background: Volume, name: str, axis: int, label: str) -> None:
    extent = background.plane_extent(axis)
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_aspect("equal")
    ax.set_axis_off()
    ax.set_label(name)
    style = {"color": "white", "fontsize": 9, "transform": ax.transAxes}
    ax.text(0.02, 0.02, label, ha="left", va="bottom", **style)
    low, high = _SIDE_LETTERS[axis]
    ax.text(0.02, 0.5, low, ha="left", va="center", **style)
    ax.text(0.98, 0.5, high, ha="right", va="center", **style)


#: How the report figures are rendered: "svg" (text, matplotlib's SVG backend; the images of the
#: views are embedded rasters) or "png" (bytes, Agg). SVG is what nilearn's reports embed.
FIGURE_FORMAT = "svg"


def figure_to_png(figure: Figure, dpi: int = DPI) -> bytes | str:
    """Render ``figure`` in :data:`FIGURE_FORMAT`: SVG text (deterministic) or PNG bytes (Agg)."""
    import matplotlib

    if FIGURE_FORMAT == "svg":
        buffer = io.StringIO()
        with matplotlib.rc_context({"svg.hashsalt": "lazymask", "svg.fonttype": "none"}):
            figure.savefig(buffer, format="svg", dpi=dpi, facecolor=figure.get_facecolor(),
                           metadata={"Date": None})
        return buffer.getvalue()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, facecolor=figure.get_facecolor())
    return buffer.getvalue()


def _background_volume(mean_img: np.ndarray | None, affine: np.ndarray, grid: Volume) -> Volume:
    """The mean image as a Volume, or a blank one on ``grid`` when there is no image."""
    if mean_img is None:
        return Volume(np.zeros(grid.shape, dtype=np.float32), grid.origin, grid.zooms)
    return Volume.from_array(mean_img, affine)


# -- public-facing (package-private) plotting functions --------------------------------------------
def plot_mask(mean_img: np.ndarray | None, mask: np.ndarray, affine: np.ndarray, *,
              second_mask: np.ndarray | None = None, second_affine: np.ndarray | None = None,
              dpi: int = DPI) -> bytes:
    """PNG of ``mask``'s outline over ``mean_img`` (both on ``affine``), optionally a second mask.

    The second mask (for example the mask before resampling) may lie on another grid
    (``second_affine``, default ``affine``) and is outlined in another colour.
    """
    mask_volume = Volume.from_array(np.asarray(mask, dtype=bool), affine)
    layers = [_Outline(mask_volume, MASK_COLOR)]
    if second_mask is not None:
        second_affine = affine if second_affine is None else second_affine
        layers.append(_Outline(Volume.from_array(np.asarray(second_mask, dtype=bool),
                                                 second_affine), SECOND_MASK_COLOR))
    cut = centre_of_mass(mask_volume.data, mask_volume)
    background = _background_volume(mean_img, affine, mask_volume)
    return figure_to_png(draw_views(background, layers, cut), dpi)


def plot_labels(mean_img: np.ndarray | None, labels: np.ndarray, affine: np.ndarray, *,
                background_label: float = 0, dpi: int = DPI) -> bytes:
    """PNG of an integer atlas over ``mean_img``: one semi-transparent colour per label."""
    labels_volume = Volume.from_array(np.asarray(labels), affine)
    values = np.unique(labels_volume.data)
    values = values[values != background_label]
    layers = [_Labels(labels_volume, values, background_label)]
    cut = centre_of_mass(labels_volume.data != background_label, labels_volume)
    background = _background_volume(mean_img, affine, labels_volume)
    return figure_to_png(draw_views(background, layers, cut), dpi)


def plot_maps(mean_img: np.ndarray | None, maps: np.ndarray, affine: np.ndarray, *,
              dpi: int = DPI) -> bytes:
    """PNG of a 4D stack of maps over ``mean_img``.

    Each voxel takes the colour of its strongest map (the argmax over maps) with an opacity that
    grows with that map's value (the max projection); voxels where every map is <= 0 stay clear.
    Only the three cut planes are reduced over maps, so 1000 maps cost three small reductions
    plus one max over the stack for the cut point.
    """
    maps_volume = Volume.from_array(np.asarray(maps), affine)
    projection = np.nan_to_num(np.max(maps_volume.data, axis=-1).astype(float), nan=0.0)
    vmax = float(projection.max()) if projection.size and projection.max() > 0 else 1.0
    layers = [_Maps(maps_volume, vmax)]
    cut = centre_of_mass(projection, maps_volume)
    grid = Volume(maps_volume.data[..., 0], maps_volume.origin, maps_volume.zooms)
    background = _background_volume(mean_img, affine, grid)
    return figure_to_png(draw_views(background, layers, cut), dpi)


def _grid_around(seeds: np.ndarray, radius: float, affine: np.ndarray) -> Volume:
    """A blank grid with ``affine``'s voxel sizes covering the seeds, the spheres and a margin."""
    zooms = np.linalg.norm(np.asarray(affine, dtype=float)[:3, :3], axis=0)
    if len(seeds) == 0:
        seeds = np.zeros((1, 3))
    margin = radius + 10.0
    low = seeds.min(axis=0) - margin
    shape = tuple(int(n) for n in np.ceil((seeds.max(axis=0) + margin - low) / zooms) + 1)
    return Volume(np.zeros(shape, dtype=np.float32), low, zooms)


def plot_spheres(mean_img: np.ndarray | None, affine: np.ndarray, *, seeds: np.ndarray,
                 radius: float | None, dpi: int = DPI) -> bytes:
    """PNG of spheres (seed centres in world mm, one radius) over ``mean_img``.

    The cut goes through the seed nearest to the seeds' centroid; a sphere crossed by a cut
    plane is drawn as its circle of intersection, and a seed close to the plane gets a marker.
    """
    seeds = np.asarray(seeds, dtype=float).reshape(-1, 3)
    radius = 0.0 if radius is None else float(radius)
    if mean_img is None:
        background = _grid_around(seeds, radius, affine)
    else:
        background = Volume.from_array(mean_img, affine)
    if len(seeds):
        centroid = seeds.mean(axis=0)
        cut = seeds[np.argmin(np.linalg.norm(seeds - centroid, axis=1))]
    else:
        cut = background.centre()
    layers = [_Spheres(seeds, radius, background.zooms / 2)]
    return figure_to_png(draw_views(background, layers, cut), dpi)
