"""lazymask with nilearn's face: nilearn's module layout, types, exceptions and warnings.

For code that must not change beyond its imports::

    from lazymask.nilearn.maskers import NiftiMasker      # was: from nilearn.maskers import ...
    from lazymask.nilearn import masking, signal           # was: from nilearn import ...

Every function and class here is lazymask's lazy implementation with its results computed into
what nilearn returns (numpy arrays, ``nibabel.Nifti1Image``, data frames under ``set_output``).
The lazy API (:mod:`lazymask.maskers`, :mod:`lazymask.masking`, ...) is the documented default:
it returns dask-backed DataArrays and scales out of core; both share every line of computation.
"""
