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
    if not isinstance(values, list | tuple) or len(values) != n_runs:
        found = f"has {len(values)} entries" if isinstance(values, list | tuple) else f"is a {type(values).__name__}"
        raise ParameterError(f"{name} {found} but imgs has {n_runs} runs; pass a list with one entry per run.")
    return list(values)
