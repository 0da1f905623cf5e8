"""Where data lives: paths, URLs and stores as locations with capabilities, and source identities.

The layer below :mod:`lazymask.io`. What a user gives as a path or a store (a local path, an fsspec
URL with ``storage_options``, a zarr store, an icechunk repository or session) becomes a
:class:`Location` once, in :func:`resolve`; writers publish according to its
:class:`Capabilities`; readers check a source's identity (:func:`source_identity`) before every
read, and read its bytes through :func:`read_into` / :func:`open_sequential` (ranged,
held to that identity).
"""

from lazymask.storage._bytes import (
    BLOCK_BYTES,
    bytes_fetched,
    open_sequential,
    read_head,
    read_into,
    reads_check_identity,
)
from lazymask.storage._identity import (
    FileIdentity,
    ObjectIdentity,
    check_unchanged,
    file_identity,
    object_identity,
    source_identity,
)
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
    "Capabilities",
    "FileIdentity",
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
    "is_url",
    "object_identity",
    "resolve",
    "set_storage_options",
    "source_identity",
]
