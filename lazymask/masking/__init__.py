"""Brain masks, computed lazily (one pass over the data), and voxel signals in and out of masks."""

from lazymask.masking._apply import apply_mask, in_memory_signals, map_gathered, output_dtype, unmask
from lazymask.masking._compute import MaskWarning
from lazymask.masking._masks import (
    compute_background_mask,
    compute_epi_mask,
    compute_multi_background_mask,
    compute_multi_epi_mask,
    intersect_masks,
)
from lazymask.masking._strategies import (
    MASK_STRATEGIES,
    MaskStrategy,
    accepted_arguments,
    mask_strategy,
    mask_strategy_arguments,
)
from lazymask.masking._templates import compute_brain_mask, compute_multi_brain_mask, load_template
from lazymask.masking._volumes import load_mask, mask_dataarray, read_small

__all__ = [
    "MASK_STRATEGIES",
    "MaskStrategy",
    "MaskWarning",
    "apply_mask",
    "compute_background_mask",
    "compute_brain_mask",
    "compute_epi_mask",
    "compute_multi_background_mask",
    "compute_multi_brain_mask",
    "compute_multi_epi_mask",
    "intersect_masks",
    "load_template",
    "mask_strategy",
    "mask_strategy_arguments",
    "unmask",
    # building blocks for the layers above
    "accepted_arguments",
    "in_memory_signals",
    "load_mask",
    "map_gathered",
    "mask_dataarray",
    "output_dtype",
    "read_small",
]
