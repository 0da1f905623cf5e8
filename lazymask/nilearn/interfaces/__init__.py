"""nilearn's ``nilearn.interfaces`` (fMRIPrep confounds)."""
