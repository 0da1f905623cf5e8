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
    if not isinstance(values, list | tuple):
        from lazymask.maskers._base import InvalidParameterError  # a TypeError too, as nilearn's

        raise InvalidParameterError(f"'{name}' must be a None or a list (one entry per run); got a "
                                    f"{type(values).__name__}.")
    if len(values) != n_runs:
        found = len(values)
        # nilearn's words first (callers match on them)
        raise ParameterError(f"number of {name} ({found}) unequal to number of images ({n_runs}): "
                             "pass a list with one entry per run.")
    return list(values)
