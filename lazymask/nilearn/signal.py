"""nilearn's ``nilearn.signal``, eager: :mod:`lazymask.signal` computed into numpy arrays."""

from lazymask import signal as _lazy
from lazymask.nilearn._eager import eager_function

__all__ = ["clean", "high_variance_confounds"]

clean = eager_function(_lazy.clean, __name__)
high_variance_confounds = eager_function(_lazy.high_variance_confounds, __name__)
