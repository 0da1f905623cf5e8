"""nilearn's ``nilearn.masking``, eager: :mod:`lazymask.masking` computed into nilearn's types.

Examples
--------
>>> import numpy as np, nibabel as nib
>>> from lazymask.nilearn.masking import compute_background_mask
>>> img = nib.Nifti1Image(np.pad(np.ones((4, 4, 4, 3)), ((2, 2), (2, 2), (2, 2), (0, 0))), np.eye(4))
>>> type(compute_background_mask(img)).__name__
'Nifti1Image'
"""

import nibabel as nib
import numpy as np

from lazymask import masking as _lazy
from lazymask.nilearn._eager import eager_function

__all__ = [
    "apply_mask",
    "compute_background_mask",
    "compute_brain_mask",
    "compute_epi_mask",
    "compute_multi_background_mask",
    "compute_multi_brain_mask",
    "compute_multi_epi_mask",
    "intersect_masks",
    "unmask",
]

apply_mask = eager_function(_lazy.apply_mask, __name__)
compute_background_mask = eager_function(_lazy.compute_background_mask, __name__)
compute_brain_mask = eager_function(_lazy.compute_brain_mask, __name__)
compute_epi_mask = eager_function(_lazy.compute_epi_mask, __name__)
compute_multi_background_mask = eager_function(_lazy.compute_multi_background_mask, __name__)
compute_multi_brain_mask = eager_function(_lazy.compute_multi_brain_mask, __name__)
compute_multi_epi_mask = eager_function(_lazy.compute_multi_epi_mask, __name__)
intersect_masks = eager_function(_lazy.intersect_masks, __name__)
_eager_unmask = eager_function(_lazy.unmask, __name__)


def _in_order(image, order):
    """``image`` with its voxels in ``order`` ("F"/"C") in memory, as nilearn's unmask returns them."""
    data = np.asarray(image.dataobj)
    data = np.asfortranarray(data) if order == "F" else np.ascontiguousarray(data)
    return nib.Nifti1Image(data, image.affine, header=image.header)


def unmask(X, mask_img, order="F"):
    result = _eager_unmask(X, mask_img, order=order)
    if isinstance(result, list):
        return [_in_order(image, order) for image in result]
    return _in_order(result, order)


unmask.__doc__ = _eager_unmask.__doc__
unmask.__wrapped__ = _lazy.unmask
