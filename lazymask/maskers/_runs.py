"""Per-run arguments of the Multi maskers (one entry per run)."""

from __future__ import annotations

from lazymask.exceptions import ParameterError


def per_run(values, n_runs: int, name: str) -> list:
    """``values`` as a list of one entry per run (``None`` for each run when ``values`` is None).

    Examples
    --------
    >>> per_run(None, 2, "confounds")
    [None, None]
    >>> per_run(["a.tsv", "b.tsv"], 2, "confounds")
    ['a.tsv', 'b.tsv']
    """
    if values is None:
        return [None] * n_runs
    check_per_run_type(values, name)
    if len(values) != n_runs:
        found = len(values)
        # nilearn's words first (callers match on them)
        raise ParameterError(f"number of {name} ({found}) unequal to number of images ({n_runs}): "
                             "pass a list with one entry per run.")
    return list(values)


def check_per_run_type(values, name: str) -> None:
    """Refuse a per-run parameter (``confounds``, ``sample_mask``) that is neither None nor a list.

    Examples
    --------
    >>> check_per_run_type([None], "confounds")
    >>> check_per_run_type(1, "confounds")
    Traceback (most recent call last):
    ...
    lazymask.maskers._base.InvalidParameterError: 'confounds' must be a None or a list. Got int: ...
    """
    if values is None or isinstance(values, list | tuple):
        return
    from lazymask.maskers._base import InvalidParameterError  # a TypeError too, as nilearn's

    # nilearn's words first (callers match on them)
    raise InvalidParameterError(f"'{name}' must be a None or a list. Got {type(values).__name__}: pass one "
                                "entry per run.")
