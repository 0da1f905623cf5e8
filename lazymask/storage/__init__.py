"""Where data lives: paths, URLs and stores as locations with capabilities, publishers, source identities.

The layer below :mod:`lazymask.io`. What a user gives as a path or a store (a local path, an fsspec
URL with ``storage_options``, a zarr store, an icechunk repository or session) becomes a
:class:`Location` once, in :func:`resolve`; writers publish according to its
:class:`Capabilities`; readers check a source's identity (:func:`source_identity`) before every
read, and read its bytes through :func:`read_into` / :func:`open_sequential` (ranged, held to
that identity). The one write-safety rule (:func:`check_target`) and one publisher per capability
(:func:`publisher_for`: a rename on a local disk, create-only claims on object stores, icechunk
transactions) decide how a write becomes visible.
"""

from lazymask.storage._bytes import (
    BLOCK_BYTES,
    bytes_fetched,
    open_sequential,
    read_head,
    read_into,
    reads_check_identity,
)
from lazymask.storage._files import Files, files_at
from lazymask.storage._icechunk import LOCK_NAME, commit_lock, local_repository_path, storage_error
from lazymask.storage._identity import (
    FileIdentity,
    ObjectIdentity,
    check_unchanged,
    file_identity,
    object_identity,
    source_identity,
)
from lazymask.storage._publish import (
    CLAIM_ATTR,
    InPlacePublisher,
    Publisher,
    RenamePublisher,
    StagedGroup,
    TransactionPublisher,
    delete_prefix,
    is_staging_name,
    list_keys,
    publisher_for,
    read_bounded,
    staged_file,
)
from lazymask.storage._rename import STAGING_TAG, clean_stale_staging, staged_path, staging_name
from lazymask.storage._target import Found, State, check_target, found_unless
from lazymask.storage._location import (
    Capabilities,
    IcechunkLocation,
    LocalLocation,
    Location,
    ObjectLocation,
    StorageOptions,
    StoreLocation,
    default_storage_options,
    is_url,
    parse_storage_option,
    resolve,
    set_storage_options,
)

__all__ = [
    "BLOCK_BYTES",
    "bytes_fetched",
    "open_sequential",
    "read_head",
    "read_into",
    "reads_check_identity",
    "CLAIM_ATTR",
    "LOCK_NAME",
    "commit_lock",
    "local_repository_path",
    "storage_error",
    "Found",
    "InPlacePublisher",
    "Publisher",
    "RenamePublisher",
    "STAGING_TAG",
    "StagedGroup",
    "State",
    "TransactionPublisher",
    "check_target",
    "clean_stale_staging",
    "delete_prefix",
    "found_unless",
    "is_staging_name",
    "list_keys",
    "publisher_for",
    "read_bounded",
    "staged_file",
    "staged_path",
    "staging_name",
    "Capabilities",
    "FileIdentity",
    "Files",
    "IcechunkLocation",
    "LocalLocation",
    "Location",
    "ObjectIdentity",
    "ObjectLocation",
    "StorageOptions",
    "StoreLocation",
    "check_unchanged",
    "default_storage_options",
    "file_identity",
    "files_at",
    "is_url",
    "object_identity",
    "parse_storage_option",
    "resolve",
    "set_storage_options",
    "source_identity",
]
