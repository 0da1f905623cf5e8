"""nilearn's signal extraction functions of ``nilearn.regions``, eager (numpy arrays, nibabel images)."""

from lazymask import regions as _lazy
from lazymask.nilearn._eager import eager_function

__all__ = ["img_to_signals_labels", "img_to_signals_maps", "signals_to_img_labels", "signals_to_img_maps"]

img_to_signals_labels = eager_function(_lazy.img_to_signals_labels, __name__)
img_to_signals_maps = eager_function(_lazy.img_to_signals_maps, __name__)
signals_to_img_labels = eager_function(_lazy.signals_to_img_labels, __name__)
signals_to_img_maps = eager_function(_lazy.signals_to_img_maps, __name__)
