"""lazymask.masking."""
