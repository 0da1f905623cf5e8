"""Small files wherever they live: list a tree, test and read a file (BIDS trees, sidecars, tables).

Contract
--------
* ``files_at(target, storage_options)`` gives a :class:`Files` for a local directory or an object
  store prefix, and the target's name in it. Names are what the user would write: local paths
  (``/data/ds/sub-01/func/x.tsv``) or URLs (``s3://bucket/ds/sub-01/func/x.tsv``); the storage
  options travel with the :class:`Files`, never inside a name.
* ``glob`` lists names matching a pattern (sorted); ``is_file``, ``is_dir``, ``read_bytes`` (with
  a size limit: these are metadata files, not data) do what they say; ``with_name`` names a sibling.
  A missing file is :class:`~lazymask.exceptions.ImageFileNotFoundError` naming it.
* Bulk data never goes through here: images are read by range through their source identity.
"""

from __future__ import annotations

import posixpath
from pathlib import Path

from lazymask.exceptions import ImageFileNotFoundError, ParameterError
from lazymask.storage._location import LocalLocation, ObjectLocation, StorageOptions, resolve

__all__ = ["Files", "files_at"]

_READ_LIMIT = 256 * 2**20


class Files:
    """Listing and reading small files under one storage kind (local, or one fsspec protocol + options).

    Examples
    --------
    >>> import fsspec
    >>> fsspec.filesystem("memory").pipe("/files-doc/sub-01/a.json", b'{"RepetitionTime": 2}')
    >>> files, root = files_at("memory://files-doc")
    >>> files.glob(files.join(root, "sub-*/*.json"))
    ['memory://files-doc/sub-01/a.json']
    """

    def __init__(self, protocol: str | None = None, options: StorageOptions | None = None):
        self.protocol = protocol  # None: the local file system
        self.options = options or StorageOptions()

    def _location(self, name: str) -> ObjectLocation:
        return ObjectLocation(name, self.options)

    @property
    def _fs(self):
        return ObjectLocation(f"{self.protocol}://", self.options).filesystem

    def _fs_path(self, name: str) -> str:
        return self._location(name).fs_path

    def _name(self, fs_path: str) -> str:
        return f"{self.protocol}://{fs_path.lstrip('/')}"

    def join(self, base: str, *parts: str) -> str:
        """``base`` / ``parts`` (a path or a URL)."""
        if self.protocol is None:
            return str(Path(base, *parts))
        return posixpath.join(base.rstrip("/"), *parts)

    def with_name(self, name: str, new: str) -> str:
        """The sibling ``new`` of ``name``."""
        if self.protocol is None:
            return str(Path(name).with_name(new))
        return f"{name.rsplit('/', 1)[0]}/{new}"

    def glob(self, pattern: str) -> list[str]:
        """The names matching ``pattern`` (``*`` within one level), sorted."""
        if self.protocol is None:
            anchor = Path(pattern).anchor or "."
            return sorted(str(p) for p in Path(anchor).glob(str(Path(pattern).relative_to(anchor))))
        return sorted(self._name(p) for p in self._fs.glob(self._fs_path(pattern)))

    def is_file(self, name: str) -> bool:
        """Whether ``name`` is a file (an object)."""
        if self.protocol is None:
            return Path(name).is_file()
        return bool(self._fs.isfile(self._fs_path(name)))

    def is_dir(self, name: str) -> bool:
        """Whether ``name`` is a directory (a prefix holding objects)."""
        if self.protocol is None:
            return Path(name).is_dir()
        fs, path = self._fs, self._fs_path(name)
        return bool(fs.isdir(path)) or bool(fs.find(path, maxdepth=1))

    def read_bytes(self, name: str, limit: int = _READ_LIMIT) -> bytes:
        """The content of the small file ``name`` (at most ``limit`` bytes, else an error)."""
        try:
            if self.protocol is None:
                with open(name, "rb") as f:
                    data = f.read(limit + 1)
            else:
                with self._fs.open(self._fs_path(name), "rb") as f:
                    data = f.read(limit + 1)
        except FileNotFoundError:
            raise ImageFileNotFoundError(f"{name}: no such file.") from None
        except PermissionError as exc:
            raise ImageFileNotFoundError(
                f"{name}: access denied ({exc}). Check the credentials, or pass "
                "storage_options={'anon': True} for a public bucket."
            ) from None
        except IsADirectoryError:
            raise ImageFileNotFoundError(f"{name}: a directory, not a file.") from None
        if len(data) > limit:
            raise ParameterError(f"{name}: larger than {limit} bytes; this is read as a small metadata file.")
        return data

    def read_text(self, name: str, limit: int = _READ_LIMIT) -> str:
        """``read_bytes`` decoded as UTF-8."""
        return self.read_bytes(name, limit).decode("utf-8")


def files_at(target, storage_options=None) -> tuple[Files, str]:
    """The :class:`Files` that reach ``target`` (a path or URL) and ``target``'s name in it.

    Examples
    --------
    >>> files, name = files_at("/data/ds")
    >>> files.protocol is None, name
    (True, '/data/ds')
    """
    location = resolve(target, storage_options)
    if isinstance(location, LocalLocation):
        return Files(), str(location.path)
    if isinstance(location, ObjectLocation):
        return Files(location.protocol, location.options), location.url.rstrip("/")
    raise ParameterError(f"{location.describe()}: expected a directory path or a URL.")
