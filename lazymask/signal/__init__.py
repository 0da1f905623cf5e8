"""lazymask.signal."""
