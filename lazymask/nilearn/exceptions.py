"""nilearn's exception and warning classes, as lazymask raises them (``nilearn.exceptions``'s names).

Each is lazymask's own class, whose bases include those of nilearn's (``DimensionError`` is a
``TypeError`` as in nilearn, and a ``ValueError`` as in lazymask), so ``except`` clauses and
warning filters written for nilearn catch what lazymask raises.
"""

from lazymask.exceptions import AllVolumesRemovedError, DimensionError, MeshDimensionError
from lazymask.masking import MaskWarning
from lazymask.exceptions import NotImplementedWarning

__all__ = [
    "AllVolumesRemovedError",
    "DimensionError",
    "MaskWarning",
    "MeshDimensionError",
    "NotImplementedWarning",
]
