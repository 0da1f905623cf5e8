"""The xarray backend: ``xr.open_dataarray(path, engine="lazymask")`` is ``lazymask.open_nifti``."""

import importlib
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import xarray as xr

from lazymask import config
from lazymask.io import open_nifti, to_zarr
from lazymask.io._backend import LazymaskBackendEntrypoint
from lazymask.testing import count_voxel_reads, fake_fmri, raise_if_dask_computes

ENGINE = LazymaskBackendEntrypoint


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("backend")
    img = fake_fmri(shape=(10, 12, 9), n_volumes=20, seed=4)
    img.header.set_xyzt_units("mm", "sec")
    img.header["pixdim"][4] = 2.0
    path = folder / "bold.nii.gz"
    nib.save(img, path)
    return path, img


def test_entry_point_is_declared_and_names_the_backend():
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    target = pyproject["project"]["entry-points"]["xarray.backends"]["lazymask"]
    module, name = target.split(":")
    assert getattr(importlib.import_module(module), name) is LazymaskBackendEntrypoint


def test_engine_name_resolves_through_the_entry_point(run, tmp_path):
    """With the entry point installed (a dist-info on the path, as ``pip install`` makes), the name works."""
    path, img = run
    target = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    target = target["project"]["entry-points"]["xarray.backends"]["lazymask"]
    dist = tmp_path / "site" / "lazymask_entry-0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: lazymask-entry\nVersion: 0\n")
    (dist / "entry_points.txt").write_text(f"[xarray.backends]\nlazymask = {target}\n")
    code = ("import sys, xarray as xr; img = xr.open_dataarray(sys.argv[1], engine='lazymask', chunks={}); "
            "print(img.dims, float(img.sum()))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), str(Path(__file__).parents[1])])}
    out = subprocess.run([sys.executable, "-c", code, str(path)], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"('i', 'j', 'k', 'time') {float(np.asanyarray(img.dataobj).sum())}"


def test_open_dataarray_equals_open_nifti_and_is_lazy(run):
    path, img = run
    with config.set(auto_chunk_bytes=4 * 10 * 12 * 9 * 2), raise_if_dask_computes(), count_voxel_reads() as reads:
        opened = xr.open_dataarray(path, engine=ENGINE, chunks={})
        expected = open_nifti(path)
    assert reads.calls == 0
    assert opened.dims == ("i", "j", "k", "time") and opened.name is None
    assert opened.chunks == expected.chunks == ((10,), (12,), (9,), (4,) * 5)  # lazymask's chunks kept
    assert opened.attrs == expected.attrs and opened.attrs["t_r"] == 2.0
    np.testing.assert_array_equal(opened["time"], expected["time"])
    np.testing.assert_array_equal(opened.values, np.asanyarray(img.dataobj))


@pytest.mark.filterwarnings("ignore:The specified chunks separate")
def test_other_chunks_and_no_chunks(run):
    path, img = run
    rechunked = xr.open_dataarray(path, engine=ENGINE, chunks={"time": 5})
    assert rechunked.chunks[3] == (5, 5, 5, 5)
    with count_voxel_reads() as reads:
        unchunked = xr.open_dataarray(path, engine=ENGINE)
    assert reads.calls == 0
    np.testing.assert_array_equal(unchunked.mean("time"), np.asanyarray(img.dataobj).mean(axis=3))


def test_dataset_and_upper_case_suffix(run, tmp_path):
    path, img = run
    upper = tmp_path / "BOLD.NII.GZ"
    shutil.copy(path, upper)
    dataset = xr.open_dataset(upper, engine=ENGINE, chunks={})
    assert list(dataset.data_vars) == ["__xarray_dataarray_variable__"]
    assert dataset.attrs["affine"] == open_nifti(path).attrs["affine"]
    np.testing.assert_array_equal(dataset["__xarray_dataarray_variable__"].values, np.asanyarray(img.dataobj))


def test_image_store(run, tmp_path):
    path, img = run
    store = tmp_path / "bold.zarr"
    to_zarr(open_nifti(path), store)
    opened = xr.open_dataarray(store, engine=ENGINE, chunks={})
    np.testing.assert_array_equal(opened.values, np.asanyarray(img.dataobj))
    assert opened.attrs["affine"] == open_nifti(path).attrs["affine"]


def test_guess_can_open(run, tmp_path):
    path, _ = run
    backend = LazymaskBackendEntrypoint()
    assert backend.guess_can_open(path) and backend.guess_can_open("x.NII")
    plain = tmp_path / "noext"
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4)), tmp_path / "a.nii")
    shutil.copy(tmp_path / "a.nii", plain)
    assert backend.guess_can_open(plain)  # a plain NIfTI-1 is recognised by its magic
    (tmp_path / "notes.txt").write_text("hello")
    assert not backend.guess_can_open(tmp_path / "notes.txt")
    assert not backend.guess_can_open(tmp_path)
