"""Template masks: the MNI152 ICBM 2009a templates resampled onto the target's grid.

The templates are the 1 mm files nilearn ships in its package data
(``nilearn/datasets/data/mni_icbm152_*``): installed with ``pip install "lazymask[templates]"``,
found without importing nilearn. A template file of one's own can be passed instead.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import xarray as xr

from lazymask.exceptions import ImageFileNotFoundError, ParameterError
from lazymask.image import as_image, check_same_grid, is_image_list, resample_array
from lazymask.io import file_identity, get_affine
from lazymask.masking._cache import cache_key, cache_location, load_entry, store_entry
from lazymask.masking._compute import post_process_mask
from lazymask.masking._volumes import mask_dataarray

TEMPLATE_FILES = {
    "whole-brain": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}


def template_path(mask_type: str = "whole-brain", template=None) -> str:
    """The path of the MNI152 template for ``mask_type`` (or ``template`` when given).

    Raises
    ------
    ParameterError
        For an unknown ``mask_type``.
    ImageFileNotFoundError
        When nilearn (which ships the templates) is not installed and no ``template`` is given.
    """
    if mask_type not in TEMPLATE_FILES:
        raise ParameterError(
            f"Unknown mask type {mask_type}. mask_type={mask_type!r}: expected one of {sorted(TEMPLATE_FILES)}."
        )
    if template is not None:
        path = os.fspath(template)
        if not os.path.exists(path):
            raise ImageFileNotFoundError(f"template={path!r}: no such file.")
        return path
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise ImageFileNotFoundError(
            f"the MNI152 {mask_type} template comes with nilearn's package data, and nilearn is not "
            'installed: run  pip install "lazymask[templates]"  (or pip install "nilearn==0.14.*"), '
            f"or pass template= the path of a template image ({TEMPLATE_FILES[mask_type]})."
        )
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / TEMPLATE_FILES[mask_type]
    if not path.exists():
        raise ImageFileNotFoundError(
            f"{path} is missing from the installed nilearn; reinstall it "
            '(pip install --force-reinstall "nilearn==0.14.*") or pass template= a template path.'
        )
    return str(path)


def load_template(mask_type: str = "whole-brain", template=None) -> tuple[np.ndarray, np.ndarray]:
    """The template's values as float32 scaled to a maximum of 1, and its affine.

    Parameters
    ----------
    mask_type : {"whole-brain", "gm", "wm"}
        Which MNI152 template: the T1 brain, grey matter or white matter.
    template : str or pathlib.Path, optional
        A template file of your own instead of the one in nilearn's package data.

    Returns
    -------
    values : numpy.ndarray
        The template's values (float32, maximum 1).
    affine : numpy.ndarray
        Its 4x4 affine.

    Examples
    --------
    >>> values, affine = load_template("gm")    # doctest: +SKIP"""
    image = nib.load(template_path(mask_type, template))
    values = np.asanyarray(image.dataobj).astype(np.float32)
    values /= values.max()
    return values, image.affine


def compute_brain_mask(
    target_img,
    threshold=0.5,
    connected=True,
    opening=2,
    memory=None,
    verbose=0,
    mask_type="whole-brain",
    template=None,
) -> xr.DataArray:
    """Brain mask on the grid of ``target_img`` from an MNI152 template.

    Same parameters, defaults and result as :func:`nilearn.masking.compute_brain_mask`: the
    1 mm template (whole brain, grey or white matter) is resampled onto the target's grid
    (continuous interpolation), thresholded at ``threshold``, then opened and reduced to its
    largest component. Only the target's header is read, never its voxels.

    Parameters
    ----------
    target_img : image
        Gives the grid (shape and affine): anything :func:`lazymask.io.open_nifti` accepts.
    threshold : float, default=0.5
        Template values (scaled to [0, 1]) at or above it are in the mask.
    connected : bool, default=True
        Keep only the largest connected component.
    opening : int or False, default=2
        Iterations of the morphological opening.
    memory : None, str, pathlib.Path or joblib.Memory, default=None
        Cache directory.
    verbose : int, default=0
        Accepted for compatibility; unused.
    mask_type : {"whole-brain", "gm", "wm"}, default="whole-brain"
        Which template.
    template : str or pathlib.Path, optional
        A template file to use instead of nilearn's (lazymask only).

    Returns
    -------
    xarray.DataArray
        3D int8 mask with the target's affine.

    Raises
    ------
    ImageFileNotFoundError
        When nilearn is not installed and ``template`` is not given (says what to install).

    Examples
    --------
    >>> mask = compute_brain_mask("bold.nii.gz", mask_type="gm")   # doctest: +SKIP
    """
    path = template_path(mask_type, template)
    target = as_image(target_img, "target_img")
    shape, affine = tuple(target.shape[:3]), get_affine(target)
    location = cache_location(memory)
    key = cache_key("brain", str(tuple(file_identity(path))), shape=shape, affine=affine.tolist(),
                    threshold=threshold, connected=connected, opening=opening)
    cached = load_entry(location, key)
    if cached is not None:
        return mask_dataarray(cached[0], cached[1])
    values, template_affine = load_template(mask_type, path)
    resampled, _ = resample_array(values, template_affine, affine, shape, clip=False)
    mask = post_process_mask(resampled >= threshold, opening, connected,
                             f"{mask_type} mask is empty, lower the threshold or check your input FOV.")
    store_entry(location, key, mask, affine)
    return mask_dataarray(mask, affine)


def compute_multi_brain_mask(
    target_imgs,
    threshold=0.5,
    connected=True,
    opening=2,
    memory=None,
    verbose=0,
    mask_type="whole-brain",
    template=None,
) -> xr.DataArray:
    """Template brain mask for a list of images sharing one grid.

    Same parameters and result as :func:`nilearn.masking.compute_multi_brain_mask`: checks that
    all images share shape and affine (headers only), then :func:`compute_brain_mask` on the first.

    Parameters
    ----------
    target_imgs : list of images
        Images sharing one grid (only their headers are read).
    threshold, connected, opening, memory, verbose, mask_type, template
        As in :func:`compute_brain_mask`.

    Returns
    -------
    xarray.DataArray
        The 3D mask (int8, 0/1) on the images' grid.

    Examples
    --------
    >>> mask = compute_multi_brain_mask(["run-1.nii.gz", "run-2.nii.gz"])   # doctest: +SKIP
    """
    if not is_image_list(target_imgs) or len(target_imgs) == 0:
        raise ParameterError(f"target_imgs must be a non-empty list of images, got {target_imgs!r}.")
    images = [as_image(img, f"target_imgs[{i}]") for i, img in enumerate(target_imgs)]
    check_same_grid(images, "target_imgs")
    return compute_brain_mask(images[0], threshold=threshold, connected=connected, opening=opening,
                              memory=memory, verbose=verbose, mask_type=mask_type, template=template)
