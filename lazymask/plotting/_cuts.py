"""Where to cut: nilearn's default cut coordinates, computed on an in-memory RAS volume.

* Ortho-like modes: the centre of mass of the largest connected region of the strongest values
  (``|value|`` above ``threshold``, else above the 80th percentile of the non-zero values), moved
  to the nearest voxel of that region when it falls outside it (a ring, a crescent).
* Single-direction modes: ``n`` cuts evenly spread over the extent of the non-zero voxels.
"""

from __future__ import annotations

import numbers

import numpy as np
from scipy import ndimage

from lazymask.exceptions import ParameterError
from lazymask.reporting import Volume

_DEFAULT_N_CUTS = 7


def _strong_region(volume: Volume, threshold) -> np.ndarray:
    values = np.nan_to_num(np.abs(np.asarray(volume.data, dtype=float)), nan=0.0, posinf=0.0, neginf=0.0)
    nonzero = values[values > 0]
    if nonzero.size == 0:
        return np.zeros(values.shape, bool)
    cutoff = float(threshold) if threshold is not None else float(np.percentile(nonzero, 80))
    strong = values > cutoff if (values > cutoff).any() else values > 0
    labels, n_labels = ndimage.label(strong)
    if n_labels > 1:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        strong = labels == np.argmax(sizes)
    return strong


def xyz_cut_coords(volume: Volume, threshold=None) -> tuple[float, float, float]:
    """The ortho cut through the strong region's centre of mass (world mm)."""
    region = _strong_region(volume, threshold)
    if not region.any():
        return tuple(float(c) for c in volume.centre())
    weights = np.where(region, np.abs(np.nan_to_num(np.asarray(volume.data, dtype=float))), 0.0)
    if weights.sum() <= 0:
        weights = region.astype(float)
    centre = np.array(ndimage.center_of_mass(weights))
    voxel = np.round(centre).astype(int)
    if not region[tuple(np.clip(voxel, 0, np.array(region.shape) - 1))]:
        inside = np.argwhere(region)
        centre = inside[np.argmin(((inside - centre) ** 2).sum(axis=1))].astype(float)
    return tuple(float(c) for c in volume.to_world(centre))


def cut_slices(volume: Volume, axis: int, n_cuts: int) -> list[float]:
    """``n_cuts`` positions along ``axis`` spread evenly inside the non-zero voxels' extent."""
    values = np.nan_to_num(np.asarray(volume.data, dtype=float))
    occupied = np.flatnonzero(np.abs(values).sum(axis=tuple(a for a in range(3) if a != axis)) > 0)
    low, high = (occupied[0], occupied[-1]) if occupied.size else (0, volume.shape[axis] - 1)
    indices = np.linspace(low, high, n_cuts + 2)[1:-1]
    return [float(volume.origin[axis] + volume.zooms[axis] * i) for i in np.round(indices)]


def resolve_cuts(letters: str, cut_coords, volume: Volume, threshold=None) -> tuple[list, object]:
    """The (letter, position) of each axes, and the ``cut_coords`` the display reports."""
    if len(letters) == 1:
        axis = "xyz".index(letters)
        if cut_coords is None or isinstance(cut_coords, numbers.Integral):
            n_cuts = _DEFAULT_N_CUTS if cut_coords is None else int(cut_coords)
            if n_cuts < 1:
                raise ParameterError(f"cut_coords={cut_coords}: the number of cuts must be at least 1.")
            positions = cut_slices(volume, axis, n_cuts)
        else:
            positions = [float(c) for c in np.atleast_1d(cut_coords)]
        return [(letters, p) for p in positions], positions
    if cut_coords is None:
        xyz = xyz_cut_coords(volume, threshold)
        coords = tuple(xyz["xyz".index(letter)] for letter in letters)
    else:
        coords = tuple(float(c) for c in np.atleast_1d(cut_coords))
        if len(coords) == 3 and len(letters) == 2:
            coords = tuple(coords["xyz".index(letter)] for letter in letters)
        if len(coords) != len(letters):
            raise ParameterError(
                f"cut_coords={cut_coords!r}: display_mode with cuts {tuple(letters)} needs {len(letters)} "
                "coordinates (world mm), one per cut."
            )
    return list(zip(letters, coords, strict=True)), coords
