"""Masks computed from the data: EPI (histogram gap) and background masks, and their intersection.

Each function takes nilearn 0.14's parameters. The only pass over the data is the lazy mean over
time; the thresholds and the morphology then run on the mean volume (numpy/scipy).
"""

from __future__ import annotations

from functools import partial

import dask
import numpy as np
import xarray as xr

from lazymask.exceptions import ImageMismatchError, InputTypeError, ParameterError
from lazymask.image import as_image, check_same_grid, is_image_list
from lazymask.io import get_affine
from lazymask.masking._compute import (
    background_mask_from_mean,
    check_binary_mask,
    check_cutoffs,
    check_intersection_threshold,
    epi_mask_from_mean,
    intersect_arrays,
)
from lazymask.masking._runs import run_masks
from lazymask.masking._volumes import mask_dataarray


def _check_opening(opening) -> None:
    if opening is not False and opening is not None and (not isinstance(opening, int | np.integer) or opening < 0):
        raise ParameterError(f"opening={opening!r}: expected False or a number of iterations (int >= 0).")


def _check_border_size(border_size) -> None:
    if not isinstance(border_size, int | np.integer) or border_size < 1:
        raise ParameterError(f"border_size={border_size!r}: expected a number of voxels (int >= 1).")


def _epi_masks(epi_imgs, name, lower_cutoff, upper_cutoff, connected, opening, exclude_zeros,
               ensure_finite, target_affine, target_shape, memory):
    check_cutoffs(lower_cutoff, upper_cutoff)
    _check_opening(opening)
    params = dict(lower_cutoff=lower_cutoff, upper_cutoff=upper_cutoff, connected=connected,
                  opening=opening, exclude_zeros=exclude_zeros, ensure_finite=ensure_finite)
    return run_masks(
        epi_imgs, "epi", partial(epi_mask_from_mean, **params),
        target_affine=target_affine, target_shape=target_shape, smooth=1 if opening else False,
        memory=memory, params=params, name=name,
    )


def _background_masks(data_imgs, name, border_size, connected, opening, target_affine, target_shape, memory):
    _check_border_size(border_size)
    _check_opening(opening)
    params = dict(border_size=border_size, connected=connected, opening=opening)
    return run_masks(
        data_imgs, "background", partial(background_mask_from_mean, **params),
        target_affine=target_affine, target_shape=target_shape, smooth=False,
        memory=memory, params=params, name=name,
    )


def compute_epi_mask(
    epi_img,
    lower_cutoff=0.2,
    upper_cutoff=0.85,
    connected=True,
    opening=2,
    exclude_zeros=False,
    ensure_finite=True,
    target_affine=None,
    target_shape=None,
    memory=None,
    verbose=0,
) -> xr.DataArray:
    """Brain mask of an EPI run: threshold its mean at the widest gap of its histogram.

    Same parameters, defaults and result as :func:`nilearn.masking.compute_epi_mask`. The mean
    over time is one lazy pass over the data (one ``dask.compute``); the threshold search, the
    opening and the largest connected component run on the mean volume.

    Parameters
    ----------
    epi_img : image
        A 3D or 4D image: anything :func:`lazymask.io.open_nifti` accepts.
    lower_cutoff, upper_cutoff : float, default=0.2, 0.85
        The fractions of the sorted mean intensities between which the threshold is sought.
    connected : bool, default=True
        Keep only the largest connected component.
    opening : int or False, default=2
        Iterations of the morphological opening (and the mean is smoothed by 1 voxel FWHM
        first when it is non-zero).
    exclude_zeros : bool, default=False
        Leave zeros out of the histogram (images padded with zeros).
    ensure_finite : bool, default=True
        Treat NaNs and infinities of the mean as 0.
    target_affine, target_shape : optional
        Resample the mean onto this grid first (see :func:`lazymask.image.resample_img`).
    memory : None, str, pathlib.Path or joblib.Memory, default=None
        Cache directory: the mask is stored keyed on the input's identity (paths, sizes,
        modification times) and the parameters.
    verbose : int, default=0
        Accepted for compatibility; unused.

    Returns
    -------
    xarray.DataArray
        The mask: 3D, int8 (0/1), with the affine in ``attrs["affine"]``.

    Examples
    --------
    >>> mask = compute_epi_mask("bold.nii.gz")    # reads the file once  # doctest: +SKIP
    >>> int(mask.sum())                            # doctest: +SKIP
    """
    [(mask, affine)] = _epi_masks([epi_img], "epi_img", lower_cutoff, upper_cutoff, connected, opening,
                                  exclude_zeros, ensure_finite, target_affine, target_shape, memory)
    return mask_dataarray(mask, affine)


def compute_multi_epi_mask(
    epi_imgs,
    lower_cutoff=0.2,
    upper_cutoff=0.85,
    connected=True,
    opening=2,
    threshold=0.5,
    target_affine=None,
    target_shape=None,
    exclude_zeros=False,
    n_jobs=1,
    memory=None,
    verbose=0,
) -> xr.DataArray:
    """Common EPI mask of several runs: each run's EPI mask, then their ``threshold`` intersection.

    Same parameters, defaults and result as :func:`nilearn.masking.compute_multi_epi_mask`. The
    means of all runs are computed in one ``dask.compute`` call, so the dask scheduler reads the
    runs concurrently on all its workers; ``n_jobs`` is accepted for compatibility and unused
    (choose the parallelism with the dask scheduler, e.g. a ``distributed.Client``).

    Parameters
    ----------
    epi_imgs : list of images
        3D or 4D images (anything :func:`lazymask.io.open_nifti` accepts).
    threshold : float, default=0.5
        Fraction of the runs a voxel must be in to be kept (0: union, 1: intersection).
    lower_cutoff, upper_cutoff, connected, opening, exclude_zeros, target_affine, target_shape, memory, verbose
        As in :func:`compute_epi_mask`.
    n_jobs : int, default=1
        Ignored: parallelism comes from the dask scheduler.

    Returns
    -------
    xarray.DataArray
        The common mask: 3D, int8, with the affine.

    Examples
    --------
    >>> mask = compute_multi_epi_mask(["run-1.nii.gz", "run-2.nii.gz"])   # doctest: +SKIP
    """
    imgs = _image_list(epi_imgs, "epi_imgs")
    check_intersection_threshold(threshold)
    masks = _epi_masks(imgs, "epi_imgs", lower_cutoff, upper_cutoff, connected, opening, exclude_zeros,
                       True, target_affine, target_shape, memory)
    return _intersect_computed(masks, threshold, connected)


def compute_background_mask(
    data_imgs,
    border_size=2,
    connected=False,
    opening=False,
    target_affine=None,
    target_shape=None,
    memory=None,
    verbose=0,
) -> xr.DataArray:
    """Mask of the voxels whose mean differs from the background value found on the border.

    Same parameters, defaults and result as :func:`nilearn.masking.compute_background_mask`:
    the background is NaN when the border of the mean holds NaNs, else the median of the border.

    Parameters
    ----------
    data_imgs : image
        A 3D or 4D image (anything :func:`lazymask.io.open_nifti` accepts).
    border_size : int, default=2
        Thickness in voxels of the border faces.
    connected : bool, default=False
        Keep only the largest connected component.
    opening : int or False, default=False
        Iterations of the morphological opening.
    target_affine, target_shape, memory, verbose
        As in :func:`compute_epi_mask`.

    Returns
    -------
    xarray.DataArray
        The mask: 3D, int8, with the affine.

    Examples
    --------
    >>> mask = compute_background_mask("preprocessed_bold.nii.gz")   # doctest: +SKIP
    """
    [(mask, affine)] = _background_masks([data_imgs], "data_imgs", border_size, connected, opening,
                                         target_affine, target_shape, memory)
    return mask_dataarray(mask, affine)


def compute_multi_background_mask(
    data_imgs,
    border_size=2,
    connected=True,
    opening=2,
    threshold=0.5,
    target_affine=None,
    target_shape=None,
    n_jobs=1,
    memory=None,
    verbose=0,
) -> xr.DataArray:
    """Common background mask of several runs (each run's mask, then their intersection).

    Same parameters, defaults and result as
    :func:`nilearn.masking.compute_multi_background_mask` (note its defaults ``connected=True``,
    ``opening=2``). All means are computed in one ``dask.compute``; ``n_jobs`` is ignored.

    Parameters
    ----------
    data_imgs : list of images
        The runs (anything :func:`lazymask.io.open_nifti` accepts, each 3D or 4D).
    border_size, upper_cutoff, connected, opening, threshold, target_affine, target_shape, exclude_zeros, n_jobs, memory, verbose
        As in nilearn; ``threshold`` is the fraction of runs a voxel must be in
        (see :func:`intersect_masks`).

    Returns
    -------
    xarray.DataArray
        The 3D mask (int8, 0/1) with the runs' affine.

    Examples
    --------
    >>> mask = compute_multi_background_mask(["sub-1.nii.gz", "sub-2.nii.gz"])   # doctest: +SKIP
    """
    imgs = _image_list(data_imgs, "data_imgs")
    check_intersection_threshold(threshold)
    masks = _background_masks(imgs, "data_imgs", border_size, connected, opening, target_affine,
                              target_shape, memory)
    return _intersect_computed(masks, threshold, connected)


def intersect_masks(mask_imgs, threshold=0.5, connected=True) -> xr.DataArray:
    """Voxels that are in more than a fraction ``threshold`` of the masks.

    Same parameters, defaults and result as :func:`nilearn.masking.intersect_masks`.

    Parameters
    ----------
    mask_imgs : list of images
        3D binary masks sharing shape and affine.
    threshold : float, default=0.5
        0 gives the union, 1 the intersection.
    connected : bool, default=True
        Keep only the largest connected component.

    Returns
    -------
    xarray.DataArray
        3D int8 mask with the masks' affine.

    Examples
    --------
    >>> common = intersect_masks([mask_1, mask_2], threshold=1)   # doctest: +SKIP
    """
    check_intersection_threshold(threshold)
    try:
        images = [as_image(img, f"mask_imgs[{i}]", ndim=(3,))
                  for i, img in enumerate(_image_list(mask_imgs, "mask_imgs", "No mask provided for intersection: "))]
    except InputTypeError as error:
        raise InputTypeError(f"All masks must be a 3D Niimg-like object. {error}") from None
    try:
        check_same_grid(images, "mask_imgs")
    except ImageMismatchError as error:
        raise ImageMismatchError(f"Following field of view errors were detected: {error}") from None
    values = dask.compute(*[image.data for image in images])
    masks = [check_binary_mask(v, f"mask_imgs[{i}]", allow_empty=True) for i, v in enumerate(values)]
    return mask_dataarray(intersect_arrays(masks, threshold, connected), get_affine(images[0]))


def _image_list(imgs, name: str, empty: str = "") -> list:
    if not is_image_list(imgs):
        raise ParameterError(f"{name} must be a list of images, got a {type(imgs).__name__}.")
    if len(imgs) == 0:
        raise ParameterError(f"{empty}{name} is an empty list: pass at least one image.")
    return list(imgs)


def _intersect_computed(masks: list[tuple[np.ndarray, np.ndarray]], threshold, connected) -> xr.DataArray:
    affines = [affine for _, affine in masks]
    for index, affine in enumerate(affines[1:], start=1):
        if masks[index][0].shape != masks[0][0].shape or not np.allclose(affine, affines[0]):
            raise ImageMismatchError(
                f"The masks do not have the same shape and affine: "
                f"run {index}'s mask has shape {masks[index][0].shape} and affine "
                f"{np.round(affine, 4).tolist()} but run 0's has {masks[0][0].shape} and "
                f"{np.round(affines[0], 4).tolist()}; pass target_affine and target_shape to put "
                "every run on one grid."
            )
    group = intersect_arrays([mask for mask, _ in masks], threshold, connected)
    return mask_dataarray(group, affines[0])
