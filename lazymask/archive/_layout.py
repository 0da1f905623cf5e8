"""What an archive holds, how its root record is merged, and the one place a run's group is verified.

Layout (an icechunk repository; every path below is a zarr node of its snapshots)::

    /                       attrs: lazymask_root, lazymask_archive {format_version, version, masker,
                                   parameters, inputs: {parameter: {path, size, sha256}},
                                   confounds, runs: [index rows]},
                                   lazymask_archive_failures {group: message}
    /sub-01/ses-1/task-rest_run-1/
                            a group written by lazymask.save_signals (signals + the masker's
                            mask/labels/maps/seeds + affine, t_r, parameters, source), whose
                            ``signals`` attrs hold ``archive``: {entities, sources (path, size, version:
                            mtime_ns or ETag), confounds_columns, sample_mask, n_volumes}

The root record is changed only by :func:`merge_record` inside a commit (see ``_repository``):
the index is the union of the tip's rows and this builder's, failures are the tip's updated with
this builder's outcomes, so concurrent builders never drop each other's rows.
"""

from __future__ import annotations

import zarr

from lazymask.archive._inputs import input_differences
from lazymask.exceptions import CorruptStoreError, NotNiftiError, ParameterError, UnsafeTargetError
from lazymask.io import is_complete, verify

ARCHIVE_ATTR = "lazymask_archive"
FAILURES_ATTR = "lazymask_archive_failures"
ROOT_ATTR = "lazymask_root"
FORMAT_VERSION = 2
INPUTS_KEY = "inputs"  # the record's content fingerprints of the masker's images (see _inputs)
ENTITY_COLUMNS = ("subject", "session", "task", "acquisition", "ceagent", "reconstruction", "direction",
                  "run", "echo", "part", "space", "cohort", "res", "density")
INDEX_COLUMNS = ("group", "bold", "confounds", "sidecar", "mask", "t_r")


def _verify_run(store, group: str) -> bool:
    """Whether the run's group is complete and intact: the ONE check every skip and status uses."""
    if not is_complete(store, group):
        return False
    try:
        verify(store, group)
    except CorruptStoreError:
        return False
    return True


def read_root(store, description: str) -> dict | None:
    """The archive's root record in a session's store; None when the snapshot holds nothing yet."""
    try:
        attrs = zarr.open_group(store, mode="r", zarr_format=3).attrs.asdict()
    except (FileNotFoundError, KeyError, zarr.errors.GroupNotFoundError):
        return None
    if ARCHIVE_ATTR not in attrs:
        raise UnsafeTargetError(
            f"store={description!r} is an icechunk repository that holds no lazymask archive; lazymask never "
            "writes into what it did not create: choose a new path (or another repository).")
    record = attrs[ARCHIVE_ATTR]
    if not isinstance(record, dict) or record.get("format_version") != FORMAT_VERSION:
        raise NotNiftiError(f"store={description!r} holds an archive of an unknown format: {str(record)[:80]}.")
    record = dict(record)
    failures = attrs.get(FAILURES_ATTR) or {}
    if not isinstance(failures, dict):
        raise NotNiftiError(f"store={description!r}: its {FAILURES_ATTR} is not a mapping.")
    record["failures"] = {str(k): str(v) for k, v in failures.items()}
    return record


def write_root(store, record: dict) -> None:
    """Write ``record`` (with its ``failures``) as the root's attributes, creating the root if absent."""
    plain = {k: v for k, v in record.items() if k != "failures"}
    attrs = {ROOT_ATTR: {"format_version": 1}, ARCHIVE_ATTR: plain, FAILURES_ATTR: dict(record["failures"])}
    group = zarr.open_group(store, mode="a", zarr_format=3)
    group.attrs.update(attrs)


def same_arguments(old: dict, new: dict) -> list[str]:
    """The differences of masker, parameters and confounds between two records (empty: the same)."""
    lines = []
    if old.get("masker") != new["masker"]:
        lines.append(f"masker: the archive has {old.get('masker')}, this call {new['masker']}")
    old_params, new_params = old.get("parameters") or {}, new["parameters"] or {}
    for key in sorted(set(old_params) | set(new_params)):
        if old_params.get(key) != new_params.get(key):
            lines.append(f"{key}: the archive has {old_params.get(key)!r}, this call {new_params.get(key)!r}")
    if old.get("confounds") != new["confounds"]:
        lines.append(f"confounds: the archive has {old.get('confounds')!r}, this call {new['confounds']!r}")
    return lines


def run_conflicts(old_runs: list[dict], new_runs: list[dict]) -> list[str]:
    """Where ``new_runs`` contradict the index: a group from another file, or a file under another
    group name (another ``space``/``res`` filter, another dataset)."""
    by_group = {row["group"]: row.get("bold") for row in old_runs}
    by_bold = {row.get("bold"): row["group"] for row in old_runs}
    lines = []
    for row in new_runs:
        group, bold = row["group"], row.get("bold")
        if group in by_group and by_group[group] != bold:
            lines.append(f"group {group!r}: the archive has {by_group[group]!r}, this call {bold!r}")
        elif bold in by_bold and by_bold[bold] != group:
            lines.append(f"{bold!r}: the archive holds it as group {by_bold[bold]!r}, this call as {group!r}")
    return lines


def check_compatible(old: dict | None, new: dict, description: str) -> None:
    """Refuse ``new`` (this call's record, with ``runs``) when it contradicts the archive's ``old``:
    other arguments, runs that would replace or duplicate its runs, or inputs (atlas, maps, mask,
    look-up table) whose content changed at the same path."""
    if old is None:
        return
    lines = same_arguments(old, new)
    conflicts = run_conflicts(old.get("runs", []), new["runs"])
    lines += conflicts[:10] + ([f"... and {len(conflicts) - 10} more run(s)"] if len(conflicts) > 10 else [])
    if lines:
        raise ParameterError(
            f"the archive {description!r} was built with other arguments:\n  " + "\n  ".join(lines)
            + "\nResume it with its own arguments, or build the new one into another store."
        )
    changed = input_differences(old.get(INPUTS_KEY), new.get(INPUTS_KEY) or {})
    if changed:
        raise ParameterError(
            f"the archive {description!r} was built from other inputs at the same paths; resuming it would mix "
            "runs extracted with two versions of them:\n  " + "\n  ".join(changed)
            + "\nRestore the file(s) the archive was built with, or build into a new store."
        )


def merge_record(tip: dict | None, new: dict, outcomes: dict, description: str) -> dict:
    """The root record to commit: ``new``'s arguments, the union of the tip's and ``new``'s index, the
    tip's failures updated with ``outcomes`` ({group: error or None}).

    Examples
    --------
    >>> new = {"masker": "M", "parameters": {}, "confounds": None, "runs": [{"group": "b", "bold": "b.nii"}],
    ...        "failures": {}}
    >>> tip = {**new, "runs": [{"group": "a", "bold": "a.nii"}], "failures": {"a": "boom"}}
    >>> merged = merge_record(tip, new, {"b": "oops"}, "archive")
    >>> [row["group"] for row in merged["runs"]], merged["failures"]
    (['a', 'b'], {'a': 'boom', 'b': 'oops'})
    """
    check_compatible(tip, new, description)
    rows = {row["group"]: row for row in (tip or {}).get("runs", [])}
    rows.update({row["group"]: row for row in new["runs"]})
    failures = dict((tip or {}).get("failures", {}))
    for group, error in outcomes.items():
        if error is None:
            failures.pop(group, None)
        else:
            failures[group] = error
    return {**new, "runs": [rows[g] for g in sorted(rows)], "failures": dict(sorted(failures.items()))}
