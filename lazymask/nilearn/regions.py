"""nilearn's signal extraction functions of ``nilearn.regions``, eager (numpy arrays, nibabel images).

Examples
--------
>>> import numpy as np, nibabel as nib
>>> from lazymask.nilearn.regions import img_to_signals_labels
>>> labels = nib.Nifti1Image(np.repeat([[[1, 2]]], 2, axis=0).astype("int8"), np.eye(4))
>>> img = nib.Nifti1Image(np.arange(12.0).reshape(2, 1, 2, 3), np.eye(4))
>>> signals, label_ids, masked_atlas = img_to_signals_labels(img, labels)
>>> signals
array([[3., 6.],
       [4., 7.],
       [5., 8.]])
"""

from lazymask import regions as _lazy
from lazymask.nilearn._eager import eager_function

__all__ = ["img_to_signals_labels", "img_to_signals_maps", "signals_to_img_labels", "signals_to_img_maps"]

img_to_signals_labels = eager_function(_lazy.img_to_signals_labels, __name__)
img_to_signals_maps = eager_function(_lazy.img_to_signals_maps, __name__)
signals_to_img_labels = eager_function(_lazy.signals_to_img_labels, __name__)
signals_to_img_maps = eager_function(_lazy.signals_to_img_maps, __name__)
