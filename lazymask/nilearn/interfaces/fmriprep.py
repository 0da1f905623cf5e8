"""nilearn's ``nilearn.interfaces.fmriprep``: :mod:`lazymask.interfaces.fmriprep`'s confound loaders."""

from lazymask.interfaces.fmriprep import load_confounds, load_confounds_strategy

__all__ = ["load_confounds", "load_confounds_strategy"]
