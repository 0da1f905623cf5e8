"""Labels (an atlas) as region operators: the mask applied to the labels, the operator, the way back."""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp

from lazymask.exceptions import ParameterError
from lazymask.regions._operators import Expansion, LabelOperator


def label_values(values: np.ndarray, background_label=0) -> np.ndarray:
    """The sorted label values of a labels volume, without the background and non-finite values.

    Examples
    --------
    >>> import numpy as np
    >>> label_values(np.array([[[0, 3], [1, 3]]])).tolist()
    [1, 3]
    """
    values = np.asarray(values)
    present = np.unique(values[np.isfinite(values)] if values.dtype.kind == "f" else values)
    return present[present != background_label]


def mask_labels(values: np.ndarray, mask: np.ndarray | None, background_label=0, *, warn_removed: bool = True,
                stacklevel: int = 3) -> np.ndarray:
    """Labels with the voxels outside ``mask`` set to ``background_label`` (nilearn's masked atlas).

    Warns about labels the mask removed (unless ``warn_removed=False``, nilearn's
    ``keep_masked_labels=True``) and raises :class:`ParameterError` when it removes them all.

    Examples
    --------
    >>> import numpy as np
    >>> mask_labels(np.array([[[1, 2]]]), np.array([[[True, True]]])).tolist()
    [[[1, 2]]]
    """
    if mask is None:
        return values
    before = set(np.unique(values).tolist())
    values = np.where(np.asarray(mask, dtype=bool), values, np.asarray(background_label, dtype=values.dtype))
    after = set(np.unique(values).tolist())
    if (lost := before - after) and warn_removed:
        if not after - {background_label}:
            raise ParameterError("No label left after applying mask to the labels image; "
                                 "check that mask_img and labels_img overlap.")
        # nilearn's wording (callers match on it)
        lost = {int(value) if float(value).is_integer() else value for value in lost}
        warnings.warn(f"After applying mask to the labels image, the following labels were removed: {lost}. "
                      f"Out of {len(before)} labels, the masked labels image only contains {len(after)} labels "
                      "(including background).", stacklevel=stacklevel)
    return values


def labels_operator(values: np.ndarray, mask: np.ndarray | None, background_label=0, strategy: str = "mean",
                    keep_masked_labels: bool = False, stacklevel: int = 4) -> LabelOperator:
    """The :class:`LabelOperator` of a labels volume restricted to ``mask``.

    With ``keep_masked_labels`` the columns are the labels found before masking, those the
    mask removed giving signals of 0 (nilearn's deprecated behaviour).

    Examples
    --------
    >>> import numpy as np
    >>> op = labels_operator(np.array([[[1, 2]]]), np.array([[[True, False]]]), keep_masked_labels=True)
    >>> op.ids.tolist(), op.present.tolist()
    ([1, 2], [1])
    """
    ids = label_values(values, background_label) if keep_masked_labels else None
    masked = mask_labels(values, mask, background_label, warn_removed=not keep_masked_labels,
                         stacklevel=stacklevel)
    return LabelOperator(masked, background_label, strategy, ids=ids)


def labels_expansion(operator: LabelOperator) -> Expansion:
    """The way back of a labels operator: each region's signal on each of its voxels.

    Examples
    --------
    >>> import numpy as np
    >>> exp = labels_expansion(LabelOperator(np.array([[[1, 2]]]), 0, "sum"))
    >>> exp(np.array([[5.0, 7.0]]), (1, 1, 2))[..., 0].tolist()
    [[[5.0, 7.0]]]
    """
    n_voxels = operator.voxels.size
    columns = operator.codes if operator.columns is None else operator.columns[operator.codes]
    indicator = sp.csr_matrix((np.ones(n_voxels), (np.arange(n_voxels), columns)),
                              shape=(n_voxels, operator.n_regions))
    return Expansion(operator.voxels, indicator)


def warn_keep_masked_labels(stacklevel: int = 3) -> None:
    """nilearn 0.14's FutureWarning for ``keep_masked_labels=True`` (removed in nilearn 0.15)."""
    warnings.warn('In version 0.15.0, "keep_masked_labels" parameter will be removed.', FutureWarning,
                  stacklevel=stacklevel)
