"""lazymask.signal: cleaning of ``(time, features)`` signals, eager on numpy, lazy on dask/xarray.

:func:`clean` computes what ``nilearn.signal.clean`` computes (detrend, Butterworth or cosine
filtering, scrubbing, confound regression, standardization), block by block;
:func:`high_variance_confounds` extracts CompCor-like regressors as an explicit reduction.
"""

from lazymask.signal._api import clean
from lazymask.signal._lazy import feature_chunks
from lazymask.signal._params import SampleMaskError
from lazymask.signal._variance import high_variance_confounds

__all__ = [
    "clean",
    "high_variance_confounds",
    "SampleMaskError",
    # building blocks for the layers above
    "feature_chunks",
]
