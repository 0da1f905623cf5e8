"""Where data lives: paths, URLs and stores as locations with capabilities, and source identities.

The layer below :mod:`lazymask.io`. What a user gives as a path or a store (a local path, an fsspec
URL with ``storage_options``, a zarr store, an icechunk repository or session) becomes a
:class:`Location` once, in :func:`resolve`; writers publish according to its
:class:`Capabilities`; readers check a source's identity (:func:`source_identity`) before every
read.
"""

from lazymask.storage._files import Files, files_at
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
    parse_storage_option,
    resolve,
    set_storage_options,
)

__all__ = [
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
