"""Region signals: labels, maps and spheres as operators applied lazily to every time chunk.

nilearn's :mod:`nilearn.regions` functions (:func:`img_to_signals_labels`,
:func:`signals_to_img_labels`, :func:`img_to_signals_maps`, :func:`signals_to_img_maps`) with its
parameters and numbers, dask-backed; and the building blocks the region maskers compose (an
operator built once from the spatial definition, :func:`region_signals` to apply it,
an expansion and :func:`signals_to_image` for the way back).
"""

from lazymask.regions._labels import (
    label_values,
    labels_expansion,
    labels_operator,
    mask_labels,
    warn_keep_masked_labels,
)
from lazymask.regions._maps import (
    maps_expansion,
    maps_matrix,
    maps_voxel_transform,
    masked_maps_operator,
    resample_map,
    resample_maps,
    warn_keep_masked_maps,
)
from lazymask.regions._operators import STRATEGIES, Expansion, LabelOperator, LinearOperator
from lazymask.regions._signals import (
    img_to_signals_labels,
    img_to_signals_maps,
    region_signals,
    signals_dataarray,
    signals_to_image,
    signals_to_img_labels,
    signals_to_img_maps,
)
from lazymask.regions._spheres import sphere_expansion, sphere_membership, sphere_operator

__all__ = [
    "STRATEGIES",
    "Expansion",
    "LabelOperator",
    "LinearOperator",
    "img_to_signals_labels",
    "img_to_signals_maps",
    "label_values",
    "labels_expansion",
    "labels_operator",
    "maps_expansion",
    "maps_matrix",
    "maps_voxel_transform",
    "mask_labels",
    "masked_maps_operator",
    "region_signals",
    "resample_map",
    "resample_maps",
    "signals_dataarray",
    "signals_to_image",
    "signals_to_img_labels",
    "signals_to_img_maps",
    "sphere_expansion",
    "sphere_membership",
    "sphere_operator",
    "warn_keep_masked_labels",
    "warn_keep_masked_maps",
]
