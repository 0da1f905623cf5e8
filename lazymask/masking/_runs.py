"""Per-run masks of several runs with one dask computation of all their means."""

from __future__ import annotations

from collections.abc import Callable

import dask
import numpy as np

from lazymask.image import as_image
from lazymask.io import get_affine
from lazymask.masking._cache import cache_key, cache_location, image_identity, load_entry, store_entry
from lazymask.masking._volumes import finish_mean, lazy_mean


def run_masks(
    imgs: list,
    function: str,
    mask_from_mean: Callable[[np.ndarray], np.ndarray],
    *,
    target_affine,
    target_shape,
    smooth,
    memory,
    params: dict,
    name: str,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The mask of each image in ``imgs``: ``mask_from_mean`` applied to its (resampled) mean.

    Every mean not found in the ``memory`` cache is computed in one ``dask.compute`` call, so the
    scheduler reads the runs concurrently. Returns ``(boolean mask, affine)`` per image.
    """
    images = [as_image(img, f"{name}[{index}]" if len(imgs) > 1 else name) for index, img in enumerate(imgs)]
    location = cache_location(memory)
    keys = [  # an image's identity may hash its values: only with a cache to look in
        None if location is None else cache_key(function, image_identity(image), target_affine=_listed(target_affine),
                                                target_shape=target_shape, **params)
        for image in images
    ]
    results = [load_entry(location, key) for key in keys]
    todo = [index for index, found in enumerate(results) if found is None]
    means = dask.compute(*[lazy_mean(images[index]) for index in todo])
    for index, mean in zip(todo, means, strict=True):
        volume, affine = finish_mean(mean, get_affine(images[index]), target_affine, target_shape, smooth)
        mask = mask_from_mean(volume)
        store_entry(location, keys[index], mask, affine)
        results[index] = (mask, affine)
    return [(np.asarray(mask, dtype=bool), affine) for mask, affine in results]


def _listed(value):
    return None if value is None else np.asarray(value, dtype=np.float64).tolist()
