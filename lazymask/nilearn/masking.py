"""nilearn's ``nilearn.masking``, eager: :mod:`lazymask.masking` computed into nilearn's types.

Examples
--------
>>> import numpy as np, nibabel as nib
>>> from lazymask.nilearn.masking import compute_background_mask
>>> img = nib.Nifti1Image(np.pad(np.ones((4, 4, 4, 3)), ((2, 2), (2, 2), (2, 2), (0, 0))), np.eye(4))
>>> type(compute_background_mask(img)).__name__
'Nifti1Image'
"""

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
unmask = eager_function(_lazy.unmask, __name__)
