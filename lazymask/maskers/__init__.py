"""lazymask.maskers."""
