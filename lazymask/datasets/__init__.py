"""lazymask.datasets."""
