"""The content of the inputs that define an archive's result: the masker's images, fingerprinted.

Contract
--------
* A masker's parameters name its atlas, maps, mask and look-up table by path (``labels_img=
  "atlas.nii.gz"``); the root record holds those paths, and a path says nothing of what is there
  at the next resume. :func:`input_fingerprints` records, for each of :data:`IMAGE_PARAMETERS`
  the masker has and was given, what it holds: a file or object its path, size and the sha256 of
  its bytes (read through :mod:`lazymask.storage`, so URLs work, one block at a time); an image or
  table in memory the sha256 of its values (and affine), under the path ``None``.
* :func:`input_differences` lists, in words, the parameters whose content is not the archive's:
  the parameter, the path and what changed (size and hash). An archive that recorded no
  fingerprints (made before they were recorded) has nothing to compare: it is not refused.
"""

from __future__ import annotations

import hashlib

import numpy as np

from lazymask.storage import open_sequential, source_identity

IMAGE_PARAMETERS = ("labels_img", "maps_img", "mask_img", "lut")
"""The masker parameters whose content (not only their name) defines an archive's result."""

_BLOCK = 1 << 20


def _file_fingerprint(path: str) -> dict:
    identity = source_identity(path)
    digest = hashlib.sha256()
    with open_sequential(identity) as stream:
        while block := stream.read(_BLOCK):
            digest.update(block)
    return {"path": path, "size": int(identity.size), "sha256": digest.hexdigest()}


def _memory_fingerprint(value, name: str) -> dict:
    import pandas as pd
    import xarray as xr

    from lazymask.image import as_image
    from lazymask.io import get_affine

    digest = hashlib.sha256()
    if isinstance(value, pd.DataFrame):
        digest.update(value.to_csv(index=False).encode())
    elif isinstance(value, np.ndarray) and not isinstance(value, xr.DataArray):
        digest.update(f"{value.dtype.str}{value.shape}".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    else:
        image = as_image(value, name, ndim=(3, 4))
        digest.update(f"{image.dtype.str}{tuple(image.shape)}".encode())
        for volumes in _time_slabs(image):  # a lazy 4D image: one time chunk in memory at a time
            digest.update(volumes.tobytes())
        digest.update(np.asarray(get_affine(image), dtype=np.float64).tobytes())
    return {"path": None, "sha256": digest.hexdigest()}


def _time_slabs(image):
    """The image's values time-first in C order, one time chunk at a time (the same bytes whatever
    the chunking); a 3D image in one piece."""
    data = image.data
    if image.ndim == 3 or not hasattr(data, "blocks"):
        values = np.asarray(image.values)
        yield np.ascontiguousarray(np.moveaxis(values, -1, 0) if values.ndim == 4 else values)
        return
    for index in range(data.numblocks[-1]):
        block = np.asarray(data.blocks[..., index].compute())
        yield np.ascontiguousarray(np.moveaxis(block, -1, 0))


def input_fingerprints(masker) -> dict:
    """The content fingerprint of each image parameter the masker was given (see the contract).

    Examples
    --------
    >>> import os, tempfile
    >>> from lazymask.maskers import NiftiMasker
    >>> path = os.path.join(tempfile.mkdtemp(), "mask.nii")
    >>> with open(path, "wb") as f:
    ...     _ = f.write(b"not read as an image here")
    >>> record = input_fingerprints(NiftiMasker(mask_img=path))["mask_img"]
    >>> record["size"], record["sha256"][:12]
    (25, '44539e0bf56e')
    """
    import os

    params = masker.get_params(deep=False)
    fingerprints = {}
    for name in IMAGE_PARAMETERS:
        value = params.get(name)
        if value is None:
            continue
        if isinstance(value, str | os.PathLike):
            fingerprints[name] = _file_fingerprint(os.fspath(value))
        else:
            fingerprints[name] = _memory_fingerprint(value, name)
    return fingerprints


def _describe(record: dict | None) -> str:
    if record is None:
        return "nothing"
    size = f", {record['size']} bytes" if record.get("size") is not None else ""
    return f"sha256 {record['sha256'][:16]}{size}"


def input_differences(old: dict | None, new: dict) -> list[str]:
    """What changed in the content of the masker's inputs since ``old`` was recorded (empty: nothing).

    Examples
    --------
    >>> old = {"labels_img": {"path": "atlas.nii.gz", "size": 10, "sha256": "a" * 64}}
    >>> new = {"labels_img": {"path": "atlas.nii.gz", "size": 10, "sha256": "b" * 64}}
    >>> input_differences(old, new)  # doctest: +NORMALIZE_WHITESPACE
    ["labels_img: 'atlas.nii.gz' held sha256 aaaaaaaaaaaaaaaa, 10 bytes when the archive was built;
    it now holds sha256 bbbbbbbbbbbbbbbb, 10 bytes (its content changed)"]
    >>> input_differences(None, new)  # an archive that recorded no fingerprints
    []
    """
    if old is None:
        return []
    lines = []
    for name in sorted(set(old) | set(new)):
        before, after = old.get(name), new.get(name)
        if before == after or (before and after and before.get("path") != after.get("path")):
            continue  # the same content, or another path (a change of parameters, said as such)
        where = repr((after or before).get("path")) if (after or before).get("path") else "the image in memory"
        lines.append(f"{name}: {where} held {_describe(before)} when the archive was built; it now holds "
                     f"{_describe(after)} (its content changed)")
    return lines
