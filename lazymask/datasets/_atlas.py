"""A small labels atlas of the synthetic brain: 15 parcels (lobes, deep nuclei, cerebellum).

Parcels are defined geometrically on the same world frame as :mod:`lazymask.datasets._synthetic`:
each hemisphere's cerebrum is cut into frontal, parietal, temporal and occipital lobes (grey and
white matter together), plus thalamus, putamen and cerebellum on each side and one brainstem.
CSF and everything outside the brain are 0.
"""

from __future__ import annotations

import numpy as np

from lazymask.datasets._synthetic import GREY, WHITE, Grid, _ellipsoid_radius, tissue_labels, world_coordinates

_STRUCTURES = ("Frontal", "Parietal", "Temporal", "Occipital", "Thalamus", "Putamen", "Cerebellum")
ATLAS_NAMES = tuple(
    f"{side}-{structure}" for structure in _STRUCTURES for side in ("Left", "Right")
) + ("Brainstem",)
"""Name of label ``n`` is ``ATLAS_NAMES[n - 1]``."""


def _label_of(name: str) -> int:
    return ATLAS_NAMES.index(name) + 1


def atlas_labels(grid: Grid) -> np.ndarray:
    """Integer labels ``(i, j, k)`` (int16) of the atlas on ``grid``; 0 is background."""
    x, y, z = np.broadcast_arrays(*world_coordinates(grid))
    tissue = tissue_labels(x, y, z)
    in_brain = (tissue == GREY) | (tissue == WHITE)
    labels = np.zeros(grid.shape, dtype=np.int16)
    lobes = np.select(
        [y < -68.0, (y < -22.0) & (z > 18.0), (z < 4.0) & (y < 12.0) & (np.abs(x) > 22.0)],
        ["Occipital", "Parietal", "Temporal"],
        default="Frontal",
    )
    left = x < 0.0
    side = np.where(left, "Left", "Right")
    for structure in ("Frontal", "Parietal", "Temporal", "Occipital"):
        for hemisphere in ("Left", "Right"):
            labels[in_brain & (lobes == structure) & (side == hemisphere)] = _label_of(f"{hemisphere}-{structure}")
    deep = {
        "Thalamus": ((11.0, -19.0, 5.0), (8.0, 13.0, 8.0)),
        "Putamen": ((25.0, 2.0, 1.0), (6.0, 13.0, 9.0)),
    }
    for structure, (centre, axes) in deep.items():
        for hemisphere, sign in (("Left", -1.0), ("Right", 1.0)):
            inside = _ellipsoid_radius(x, y, z, (sign * centre[0], *centre[1:]), axes) < 1.0
            labels[in_brain & inside] = _label_of(f"{hemisphere}-{structure}")
    cerebellum = _ellipsoid_radius(x, y, z, (0.0, -63.0, -33.0), (50.0, 29.0, 19.0)) < 1.0
    for hemisphere, mask in (("Left", left), ("Right", ~left)):
        labels[in_brain & cerebellum & mask] = _label_of(f"{hemisphere}-Cerebellum")
    brainstem = _ellipsoid_radius(x, y, z, (0.0, -27.0, -30.0), (11.0, 13.0, 26.0)) < 1.0
    labels[in_brain & brainstem] = _label_of("Brainstem")
    return labels
