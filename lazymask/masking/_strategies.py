"""The mask strategies of the maskers' ``mask_strategy``: one registry, one entry per strategy.

Contract
--------
* :data:`MASK_STRATEGIES` maps a ``mask_strategy`` name to a :class:`MaskStrategy`: the function
  computing the mask of one run, the function computing the common mask of several runs, and
  ``uses_mean`` (True when the mask is a function of the runs' mean volumes only, so a masker
  may compute the means once and hand them over in place of the runs).
* Both functions take the image(s) first and ``memory=`` as a keyword; other keywords come from
  the masker's ``mask_args`` (see :func:`mask_strategy_arguments`).
* Adding a strategy is one function (in this package) and one line in :data:`MASK_STRATEGIES`;
  the maskers, their parameter validation, their documentation and the command line read the
  names from here.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from functools import partial
from typing import NamedTuple

from lazymask.exceptions import ParameterError
from lazymask.masking._masks import (
    compute_background_mask,
    compute_epi_mask,
    compute_multi_background_mask,
    compute_multi_epi_mask,
)
from lazymask.masking._templates import compute_brain_mask, compute_multi_brain_mask

__all__ = ["MASK_STRATEGIES", "MaskStrategy", "mask_strategy", "mask_strategy_arguments"]


class MaskStrategy(NamedTuple):
    """One ``mask_strategy``: its single-run function, its multi-run function, whether it uses the mean."""

    single: Callable
    multi: Callable
    uses_mean: bool


#: ``mask_strategy`` name -> :class:`MaskStrategy` (nilearn 0.14's names).
MASK_STRATEGIES: dict[str, MaskStrategy] = {
    "background": MaskStrategy(compute_background_mask, compute_multi_background_mask, uses_mean=True),
    "epi": MaskStrategy(compute_epi_mask, compute_multi_epi_mask, uses_mean=True),
    "whole-brain-template": MaskStrategy(partial(compute_brain_mask, mask_type="whole-brain"),
                                         partial(compute_multi_brain_mask, mask_type="whole-brain"), False),
    "gm-template": MaskStrategy(partial(compute_brain_mask, mask_type="gm"),
                                partial(compute_multi_brain_mask, mask_type="gm"), False),
    "wm-template": MaskStrategy(partial(compute_brain_mask, mask_type="wm"),
                                partial(compute_multi_brain_mask, mask_type="wm"), False),
}


def mask_strategy(name: str) -> MaskStrategy:
    """The registered :class:`MaskStrategy` called ``name``, or a ParameterError listing the names.

    Examples
    --------
    >>> mask_strategy("epi").uses_mean
    True
    >>> mask_strategy("whole-brain-template").single.keywords
    {'mask_type': 'whole-brain'}
    """
    if not isinstance(name, str) or name not in MASK_STRATEGIES:
        accepted = ", ".join(repr(known) for known in MASK_STRATEGIES)
        raise ParameterError(
            f"Unknown value of mask_strategy {name!r}. Acceptable values are {accepted} "
            "(or pass a mask in mask_img)."
        )
    return MASK_STRATEGIES[name]


def accepted_arguments(function: Callable) -> set[str]:
    """Names of the keyword arguments ``function`` (or the function behind a partial) accepts."""
    target = function.func if isinstance(function, partial) else function
    return set(inspect.signature(target).parameters)


def mask_strategy_arguments(function: Callable, mask_args: dict | None, strategy: str,
                            excluded=("imgs",)) -> dict:
    """The entries of ``mask_args`` ``function`` accepts; warns about the others (as nilearn does).

    Examples
    --------
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     kept = mask_strategy_arguments(compute_epi_mask, {"opening": 1, "fancy": 2}, "epi")
    >>> kept, len(caught)
    ({'opening': 1}, 1)
    """
    accepted = accepted_arguments(function) - set(excluded)
    kept = {k: v for k, v in (mask_args or {}).items() if k in accepted}
    skipped = [k for k in (mask_args or {}) if k not in accepted]
    if skipped:
        target = function.func if isinstance(function, partial) else function
        warnings.warn(
            f"The following arguments are not supported by the masking strategy {strategy!r} "
            f"({target.__name__}), they are ignored: {skipped}", UserWarning, stacklevel=4,
        )
    return kept
