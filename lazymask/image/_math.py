"""Voxel-wise arithmetic on images, lazily: ``math_img`` and ``threshold_img`` (nilearn's).

Contract
--------
* ``math_img`` evaluates its formula on the images' dask arrays (numpy functions dispatch to
  dask), so the result is a lazy image; nothing is read at call time.
* ``threshold_img`` with a number builds an element-wise graph; with a percentile (``"90%"``) the
  cutoff is a dask reduction over the (masked) voxels, computed with the result, never at call
  time; cluster-size thresholding labels each volume in its own task (chunks are whole volumes).
* Numbers equal nilearn 0.14's on the same inputs.
"""

from __future__ import annotations

import numbers
import warnings

import dask
import dask.array as da
import numpy as np
import xarray as xr
from scipy import ndimage

from lazymask.exceptions import ParameterError
from lazymask.image._inputs import as_image
from lazymask.image._resample import resample_img
from lazymask.io import Grid, get_affine, get_t_r, image_dataarray

__all__ = ["math_img", "threshold_img"]


def math_img(formula: str, copy_header_from: str | None = None, **imgs) -> xr.DataArray:
    """Evaluate a numpy expression of images, voxel by voxel, as a lazy image.

    Same as ``nilearn.image.math_img``: the images are named by keyword, ``np`` is numpy, and all
    images must share a grid. The formula runs on dask arrays shaped as the images (``axis=-1`` is
    time for a 4D image), so it builds a graph and computes nothing.

    Parameters
    ----------
    formula : str
        For example ``"img1 + img2"``, ``"np.mean(img, axis=-1)"``, ``"img > 0"``.
    copy_header_from : str, optional
        The name of the image whose header the result takes (it must have as many dimensions).
    **imgs : images
        What :func:`lazymask.open_nifti` accepts.

    Returns
    -------
    xarray.DataArray
        A lazy image on the images' grid.

    Examples
    --------
    >>> import numpy as np, nibabel as nib
    >>> a = nib.Nifti1Image(np.ones((2, 2, 2)), np.eye(4))
    >>> float(math_img("a * 2 + 1", a=a).sum())
    24.0
    """
    missing = [name for name in imgs if name not in formula and name != copy_header_from]
    if missing:
        warnings.warn(f"Some images ({missing}) are not mentioned in the formula={formula!r}.",
                      UserWarning, stacklevel=2)
    if not imgs:
        raise ParameterError(f"math_img({formula!r}) got no images; pass them by name, e.g. img=...")
    images = {name: as_image(img, name) for name, img in imgs.items()}
    names = list(images)
    first = Grid.of(images[names[0]])
    for name in names[1:]:
        first.check_same(names[0], Grid.of(images[name]), name,
                         "resample the images to one grid first (lazymask.image.resample_to_img)",
                         check_shape=True)
    if copy_header_from is not None and copy_header_from not in images:
        raise ParameterError(f"copy_header_from={copy_header_from!r} but {copy_header_from!r} is missing "
                             f"from the images, which are {names}.")
    namespace = {name: da.asarray(image.data) for name, image in images.items()}
    namespace["np"] = np
    try:
        result = eval(formula, namespace)  # noqa: S307 - the user's formula, as in nilearn
    except Exception as exc:
        exc.args = (f"Input formula couldn't be processed, you provided {formula!r},", *exc.args)
        raise
    reference = images[copy_header_from if copy_header_from is not None else names[-1]]
    if copy_header_from is not None and np.ndim(result) != reference.ndim:
        raise ParameterError("Cannot copy the header: the result of the formula has "
                             f"{np.ndim(result)} dimensions, {copy_header_from!r} has {reference.ndim}.")
    if isinstance(result, da.Array) and result.dtype == bool:
        result = result.astype(np.uint8)
    elif np.asarray(result).dtype == bool if not isinstance(result, da.Array) else False:
        result = np.asarray(result).astype(np.uint8)
    t_r = get_t_r(reference) if np.ndim(result) == 4 and copy_header_from is not None else None
    return image_dataarray(result, get_affine(reference), t_r=t_r)


def _parse_threshold(threshold, two_sided: bool) -> tuple[float, bool]:
    """(value, is_percentile) from nilearn's threshold forms: a number or ``"25.3%"``."""
    percentile = False
    if isinstance(threshold, str):
        message = ('If "threshold" is given as string it should be a number followed by the percent '
                   'sign, e.g. "25.3%"')
        if not threshold.endswith("%"):
            raise ParameterError(f"{message}; found {threshold!r}.")
        try:
            threshold = float(threshold[:-1])
        except ValueError:
            raise ParameterError(f"{message}; found {threshold!r}.") from None
        percentile = True
    elif not isinstance(threshold, numbers.Real):
        raise TypeError(f"threshold should be either a number or a string finishing with a percent sign; "
                        f"found {type(threshold).__name__}.")
    threshold = float(threshold)
    if threshold < 0 and two_sided:
        raise ParameterError('"threshold" should not be a negative value when two_sided=True; '
                             "pass two_sided=False to keep values below a negative threshold.")
    if threshold < 0 and percentile:
        raise ParameterError('"threshold" should not be a negative percentile value.')
    return threshold, percentile


def _percentile_cutoff(values: np.ndarray, percentile: float, two_sided: bool) -> np.ndarray:
    """nilearn's percentile cutoff (scipy's scoreatpercentile, linear) + 1e-5, of in-mask values."""
    values = np.abs(values) if two_sided else values[values >= 0]
    return np.asarray(np.percentile(values, percentile) + 1e-5, dtype=np.float64)


def _apply_threshold(block: np.ndarray, cutoff, two_sided: bool) -> np.ndarray:
    cutoff = float(cutoff)
    if two_sided:
        below = (-cutoff < block) & (block < cutoff)
    elif cutoff >= 0:
        below = block < cutoff
    else:
        below = block > cutoff
    return np.where(below, np.zeros((), block.dtype), block)


def _cluster_filter(block: np.ndarray, cluster_threshold: int) -> np.ndarray:
    """Zero the clusters (face-connected, of each sign) smaller than ``cluster_threshold`` voxels."""
    out = block.copy()
    for volume in range(out.shape[3]):
        data = out[..., volume]
        for sign_mask in (data > 0, data < 0):
            labels, n_labels = ndimage.label(sign_mask)
            if n_labels == 0:
                continue
            sizes = np.bincount(labels.ravel())
            small = sizes < cluster_threshold
            small[0] = False
            data[small[labels]] = 0
    return out


def threshold_img(img, threshold, cluster_threshold: int = 0, two_sided: bool = True, mask_img=None,
                  copy: bool = True, copy_header: bool = True) -> xr.DataArray:
    """Zero the voxels whose value does not pass ``threshold`` (and small clusters), lazily.

    Same as ``nilearn.image.threshold_img``: non-finite values become 0; with ``two_sided`` voxels
    with ``|value| < threshold`` are zeroed, otherwise values below a positive threshold (or above a
    negative one); a ``"90%"`` threshold is the 90th percentile of the (absolute) in-mask values
    (plus 1e-5); ``cluster_threshold`` removes clusters of each sign smaller than that many voxels
    (face connectivity, volume by volume); voxels outside ``mask_img`` become 0.

    Parameters
    ----------
    img : 3D or 4D image
    threshold : float or str
        A value, or a percentile as ``"25.3%"``.
    cluster_threshold : int, default=0
        Minimum cluster size in voxels.
    two_sided : bool, default=True
        Threshold absolute values.
    mask_img : 3D image, optional
        Voxels outside are zeroed and ignored for a percentile (resampled, nearest, when its grid
        differs).
    copy, copy_header : bool
        Accepted for compatibility (the input is never modified).

    Returns
    -------
    xarray.DataArray
        The lazy thresholded image.

    Examples
    --------
    >>> import numpy as np, nibabel as nib
    >>> img = nib.Nifti1Image(np.arange(-4.0, 4.0).reshape(2, 2, 2), np.eye(4))
    >>> threshold_img(img, 2.5).values.ravel().tolist()
    [-4.0, -3.0, 0.0, 0.0, 0.0, 0.0, 0.0, 3.0]
    """
    value, percentile = _parse_threshold(threshold, two_sided)
    image = as_image(img, "img")
    data = da.asarray(image.data)
    if data.dtype.kind in "fc":
        data = da.where(da.isfinite(data), data, np.zeros((), data.dtype))
    inside = None
    if mask_img is not None:
        mask = as_image(mask_img, "mask_img", ndim=(3,))
        if not Grid.of(mask).same_as(Grid.of(image)):
            mask = resample_img(mask, target_affine=get_affine(image), target_shape=image.shape[:3],
                                interpolation="nearest")
        inside = da.asarray(mask.data) != 0
        data = da.where(inside[..., None] if image.ndim == 4 else inside, data, np.zeros((), data.dtype))
    if percentile:
        selected = data[inside] if inside is not None and image.ndim == 3 else (
            data[inside, :] if inside is not None else data.ravel())
        cutoff = da.from_delayed(
            dask.delayed(_percentile_cutoff)(selected.ravel(), value, two_sided), shape=(), dtype=np.float64)
        result = da.map_blocks(_apply_threshold, data, cutoff, two_sided=two_sided, dtype=data.dtype)
    else:
        result = data.map_blocks(_apply_threshold, value, two_sided=two_sided, dtype=data.dtype)
    if cluster_threshold > 0:
        expanded = result if image.ndim == 4 else result[..., None]
        expanded = expanded.rechunk({0: -1, 1: -1, 2: -1})
        filtered = expanded.map_blocks(_cluster_filter, int(cluster_threshold), dtype=expanded.dtype)
        result = filtered if image.ndim == 4 else filtered[..., 0]
    return image_dataarray(result, get_affine(image), t_r=get_t_r(image))
