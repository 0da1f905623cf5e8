"""Which reader opens a path: image formats recognised by content, behind one protocol.

Contract
--------
An image format has a ``name``, ``claims(path, head)`` — ``head`` is the file's first
:data:`~lazymask.io._codecs.SNIFF_BYTES` bytes, or ``None`` for a directory — and
``open_many(sources, chunks, stack_3d)``, which opens a list of sources it claimed as one lazy image
DataArray (concatenated along time; 3D volumes stacked when ``stack_3d``), reading metadata only.
:func:`format_for` returns the first format of :data:`FORMATS` that claims a source, or raises a
:class:`~lazymask.exceptions.LazymaskError` naming it: a path that does not exist, a broken symbolic
link (or a loop), an unreadable file, a directory that is no store. Suffixes are never trusted: a
gzip-compressed NIfTI named ``.nii`` or ``.NII.GZ`` is read as what its bytes are (the byte layer is
:mod:`lazymask.io._codecs`).

Adding a format is one class here, appended to :data:`FORMATS` (its reading code in its own module).
"""

from __future__ import annotations

import os

import nibabel as nib

from lazymask.exceptions import ImageFileNotFoundError, NotNiftiError
from lazymask.storage import ObjectLocation


class ZarrImageFormat:
    """An image store written by :func:`lazymask.to_zarr` (a directory holding ``zarr.json``)."""

    name = "zarr image store"

    def claims(self, path: str, head: bytes | None) -> bool:
        return head is None and os.path.isfile(os.path.join(path, "zarr.json"))

    def open_many(self, sources: list, chunks, stack_3d: bool):
        from lazymask.io._nifti import open_zarr_images

        return open_zarr_images(sources, chunks)


class NiftiFormat:
    """A single-file NIfTI-1/NIfTI-2 image, plain or gzip-compressed (any file: its header decides)."""

    name = "NIfTI file"

    def claims(self, path: str, head: bytes | None) -> bool:
        return head is not None

    def open_many(self, sources: list, chunks, stack_3d: bool):
        from lazymask.io._nifti import open_nifti_files

        return open_nifti_files(sources, chunks, stack_3d)


FORMATS = (ZarrImageFormat(), NiftiFormat())
"""The image formats, tried in order by :func:`format_for`."""


def format_for(source):
    """The format that opens ``source``: a path by its content; a nibabel image or an object URL's
    location: NIfTI (its header decides), except a URL ending in ``.zarr``: an image store there."""
    if isinstance(source, ObjectLocation) and source.url.rstrip("/").lower().endswith(".zarr"):
        return next(f for f in FORMATS if isinstance(f, ZarrImageFormat))  # a prefix holding a store
    if isinstance(source, nib.spatialimages.SpatialImage | ObjectLocation):
        return next(f for f in FORMATS if isinstance(f, NiftiFormat))  # an object: its header decides
    path = os.fspath(source)
    if not os.path.exists(path):
        if os.path.lexists(path):
            raise ImageFileNotFoundError(
                f"{path}: a symbolic link whose target does not exist (or a loop of links). Point it "
                "at the image file, or pass the file's own path."
            )
        raise ImageFileNotFoundError(f"{path}: no such file. Check the path (and the working directory).")
    head = None
    if not os.path.isdir(path) and not os.path.isfile(path):
        raise NotNiftiError(
            f"{path} is not a regular file (a pipe, socket or device), so it cannot be read as an "
            "image; pass the path of a NIfTI file or image store."
        )
    if not os.path.isdir(path):
        from lazymask.io._nifti import _first_bytes

        head = _first_bytes(path)
    for image_format in FORMATS:
        if image_format.claims(path, head):
            return image_format
    raise NotNiftiError(
        f"{path} is a directory, not a NIfTI file nor an image store (no zarr.json in it); pass a "
        ".nii/.nii.gz file, or a store written by lazymask.to_zarr (other stores: lazymask.open_zarr)."
    )
