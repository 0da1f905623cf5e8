"""The staged-write protocol, as io's writers name it (it lives in :mod:`lazymask.storage`).

The write-safety rule (:func:`check_target`) and the rename protocol of local directories
(:func:`staged_path`) are the storage layer's; io re-exports them for the writers built on io
(caches, the command line).
"""

from lazymask.storage import (
    STAGING_TAG,
    Found,
    State,
    check_target,
    clean_stale_staging,
    found_unless,
    staged_path,
    staging_name,
)

__all__ = ["Found", "State", "found_unless", "check_target", "staged_path", "staging_name",
           "clean_stale_staging", "STAGING_TAG"]
