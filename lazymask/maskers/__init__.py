"""lazymask.maskers."""
from lazymask.maskers._labels import MultiNiftiLabelsMasker, NiftiLabelsMasker  # noqa: E402
from lazymask.maskers._maps import MultiNiftiMapsMasker, NiftiMapsMasker  # noqa: E402
from lazymask.maskers._spheres import NiftiSpheresMasker  # noqa: E402
