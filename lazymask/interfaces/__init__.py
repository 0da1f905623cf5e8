"""Neuroimaging file conventions: BIDS discovery and fMRIPrep confounds, as plain data.

This package sits beside :mod:`lazymask.io` (it reads tables and JSON, never voxels):
:func:`find_runs` lists the preprocessed runs of an fMRIPrep derivatives tree, and
:mod:`lazymask.interfaces.fmriprep` selects confounds the way nilearn's
``nilearn.interfaces.fmriprep`` does.
"""

from lazymask.interfaces import fmriprep
from lazymask.interfaces.bids import find_runs, group_name, parse_bids_filename

__all__ = ["find_runs", "fmriprep", "group_name", "parse_bids_filename"]
