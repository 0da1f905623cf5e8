"""What an archive store holds, and the one place a run's group is verified.

Layout::

    <store>/                attrs: lazymask_archive {format_version, version, masker, parameters,
                                   confounds, runs: [index rows]}, lazymask_archive_failures
                                   {group: message}; consolidated metadata once every run is complete
    <store>/sub-01/ses-1/task-rest_run-1/
                            a group written by lazymask.save_signals (signals + the masker's
                            mask/labels/maps/seeds + affine, t_r, parameters, source), whose
                            ``signals`` attrs hold ``archive``: {entities, sources (path, size,
                            mtime_ns), confounds_columns, sample_mask, n_volumes}
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import zarr

from lazymask.exceptions import NotNiftiError, UnsafeTargetError
from lazymask.exceptions import CorruptStoreError
from lazymask.io import is_complete, require_root, verify

ARCHIVE_ATTR = "lazymask_archive"
FAILURES_ATTR = "lazymask_archive_failures"
FORMAT_VERSION = 1
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


def describe(store) -> str:
    return str(store) if isinstance(store, str | os.PathLike) else type(store).__name__


def read_root(store) -> dict | None:
    """The archive's root record, None when the store does not exist (yet)."""
    path = Path(store)
    if not path.exists():
        return None
    try:
        attrs = zarr.open_group(str(path), mode="r", zarr_format=3).attrs.asdict()
    except (FileNotFoundError, ValueError, TypeError, zarr.errors.GroupNotFoundError):
        attrs = None
    if not attrs or ARCHIVE_ATTR not in attrs:
        if path.is_dir() and not any(path.iterdir()):
            return None
        raise UnsafeTargetError(
            f"store={describe(store)!r} exists and is not a lazymask archive; lazymask never writes into "
            "what it did not create: choose a new path (or remove it yourself)."
        )
    record = attrs[ARCHIVE_ATTR]
    if not isinstance(record, dict) or record.get("format_version") != FORMAT_VERSION:
        raise NotNiftiError(f"store={describe(store)!r} holds an archive of an unknown format: {str(record)[:80]}.")
    record = dict(record)
    record["failures"] = dict(attrs.get(FAILURES_ATTR) or {})
    return record


def write_root(store, record: dict, failures: dict) -> None:
    require_root(store)  # a new root marked as lazymask's; refuses a store lazymask did not create
    group = zarr.open_group(str(store), mode="a", zarr_format=3)
    group.attrs.update({ARCHIVE_ATTR: record, FAILURES_ATTR: failures})


def drop_consolidated(store) -> None:
    """Forget consolidated metadata (it would hide groups written from now on) until rebuilt."""
    meta = Path(store) / "zarr.json"
    if not meta.is_file():
        return
    content = json.loads(meta.read_text())
    if content.pop("consolidated_metadata", None) is not None:
        partial = meta.with_name(f".zarr.json.{os.getpid()}")
        partial.write_text(json.dumps(content, indent=2))
        os.replace(partial, meta)


def consolidate(store) -> None:
    with warnings.catch_warnings():  # "not part of the zarr v3 specification (yet)": xarray reads it
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        zarr.consolidate_metadata(str(store))
