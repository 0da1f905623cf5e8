"""The xarray backend: ``xr.open_dataarray(path, engine="lazymask", chunks={})``.

Registered as the ``lazymask`` engine (``[project.entry-points."xarray.backends"]`` in
``pyproject.toml``). It opens what :func:`lazymask.open_nifti` opens — a NIfTI file (plain or gzip,
recognised by content; a URL with ``storage_options``, read by ranged requests) or a lazymask
image store — with the same dims, attrs (``affine``, ``t_r``,
``source``), ``time`` coordinate and lazy reads, as a Dataset of one variable (so
``open_dataarray`` gives the image, named ``None`` like ``open_nifti``'s). ``chunks={}`` (or
``chunks=None``) keeps lazymask's chunks along time ("auto": whole volumes, at most 30 MiB);
other ``chunks`` are applied by xarray as it does for any backend. Nothing is read but headers.
"""

from __future__ import annotations

import os

import xarray as xr
from xarray.backends import BackendEntrypoint

from lazymask.io._codecs import codec_for
from lazymask.io._nifti import open_nifti
from lazymask.storage import is_url

_VARIABLE = "__xarray_dataarray_variable__"  # xarray's name for "the DataArray of this Dataset"


class LazymaskBackendEntrypoint(BackendEntrypoint):
    """Open NIfTI images and lazymask image stores with ``xarray.open_dataset(..., engine="lazymask")``.

    Examples
    --------
    >>> import numpy as np, nibabel as nib, tempfile, os, xarray as xr
    >>> path = os.path.join(tempfile.mkdtemp(), "bold.nii.gz")
    >>> nib.save(nib.Nifti1Image(np.ones((2, 3, 4, 5), np.float32), np.eye(4)), path)
    >>> img = xr.open_dataarray(path, engine=LazymaskBackendEntrypoint, chunks={})
    >>> img.dims, img.chunks is not None, float(img.mean())
    (('i', 'j', 'k', 'time'), True, 1.0)
    """

    description = "NIfTI images (.nii, .nii.gz, recognised by content) and lazymask image stores, read lazily"
    url = "https://github.com/lazymask/lazymask"
    open_dataset_parameters = ("filename_or_obj", "drop_variables", "storage_options")

    def open_dataset(self, filename_or_obj, *, drop_variables=None, storage_options=None) -> xr.Dataset:
        image = open_nifti(os.fspath(filename_or_obj), storage_options=storage_options)
        preferred = dict(zip(image.dims, image.data.chunks, strict=True))
        image.encoding["preferred_chunks"] = preferred  # xarray's chunks={} keeps these
        dataset = image.to_dataset(name=_VARIABLE)
        dataset[_VARIABLE].encoding["preferred_chunks"] = preferred
        dataset.attrs = dict(image.attrs)
        if drop_variables:
            dataset = dataset.drop_vars([v for v in drop_variables if v in dataset.variables])
        return dataset

    def guess_can_open(self, filename_or_obj) -> bool:
        try:
            path = os.fspath(filename_or_obj)
        except TypeError:
            return False
        if os.path.isdir(path):
            return False  # stores: zarr's own engine claims them; name engine="lazymask" to use this one
        lower = path.lower()
        if lower.endswith((".nii", ".nii.gz")):
            return True
        if is_url(path):
            return False  # an object without a NIfTI suffix: name engine="lazymask" (no request here)
        try:
            with open(path, "rb") as f:
                head = f.read(348)
        except OSError:
            return False
        if codec_for(head).name == "gzip":
            return False  # a gzip of unknown content: let the user name the engine
        return len(head) >= 348 and head[344:347] == b"n+1"
