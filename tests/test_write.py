"""Tests of lazymask.io._write: to_nifti (chunk by chunk) and to_nibabel."""

import gzip
import os

import dask
import dask.array as da
import nibabel as nib
import numpy as np
import pytest
import xarray as xr

import lazymask
from lazymask.exceptions import DimensionError, ParameterError
from lazymask.io import _write
from lazymask.io._write import nifti_header, to_nibabel, to_nifti
from lazymask.testing import chunk_scheduler_cases, fake_fmri, raise_if_dask_computes

SHAPE = (20, 24, 20)
N_VOLUMES = 30


def _source(tmp_path, dtype="int16", ndim=4, ext=".nii.gz"):
    image = fake_fmri(SHAPE, N_VOLUMES, dtype=dtype, t_r=1.5, voxel_size=2.5, seed=3)
    if ndim == 3:
        image = image.slicer[..., 4]
    path = tmp_path / f"source_{dtype}_{ndim}d{ext}"
    image.to_filename(path)
    return path


def _assert_same_nifti(written, reference):
    assert written.shape == reference.shape
    assert written.get_data_dtype() == reference.get_data_dtype()
    np.testing.assert_array_equal(np.asanyarray(written.dataobj), np.asanyarray(reference.dataobj))
    np.testing.assert_array_equal(written.affine, reference.affine)
    assert written.header.get_zooms() == reference.header.get_zooms()
    assert written.header.get_xyzt_units() == ("mm", "sec")
    np.testing.assert_array_equal(written.header.get_sform(), reference.affine)
    np.testing.assert_allclose(written.header.get_qform(), reference.affine, atol=1e-5)


@pytest.mark.parametrize("ext", [".nii", ".nii.gz"])
@pytest.mark.parametrize("dtype", ["int16", "float32", "uint8"])
@pytest.mark.parametrize("ndim", [3, 4])
def test_round_trip_is_exact(tmp_path, ext, dtype, ndim):
    source = _source(tmp_path, dtype, ndim)
    img = lazymask.open_nifti(source, chunks=7)
    target = tmp_path / f"out{ext}"
    assert to_nifti(img, target) == target
    _assert_same_nifti(nib.load(target), nib.load(source))
    back = lazymask.open_nifti(target)
    xr.testing.assert_equal(back, img)  # values, dims and coords (names differ: dask tokens)
    assert back.dtype == img.dtype
    assert back.attrs.get("t_r") == img.attrs.get("t_r")
    assert sorted(os.listdir(tmp_path)) == sorted([source.name, target.name])  # no leftovers


def test_gzip_output_is_one_valid_gzip_member(tmp_path):
    img = lazymask.open_nifti(_source(tmp_path), chunks=4)
    target = to_nifti(img, tmp_path / "out.nii.gz")
    raw = gzip.decompress(target.read_bytes())  # checks the CRC-32 and length of the stream
    header = nib.Nifti1Header.from_fileobj(__import__("io").BytesIO(raw))
    assert int(header.get_data_offset()) + img.nbytes == len(raw)
    with open(target, "rb") as f:
        assert f.read(2) == b"\x1f\x8b"


def test_writes_chunk_by_chunk_without_gathering(tmp_path, monkeypatch):
    img = lazymask.open_nifti(_source(tmp_path), chunks=4).astype("float32")
    chunk_nbytes = int(np.prod(SHAPE)) * 4 * 4
    blocks = []
    for writer in (_write._PositionedWriter, _write._DeflatePartWriter):
        original = writer.__setitem__

        def recording(self, key, block, original=original):
            blocks.append(block.nbytes)
            return original(self, key, block)

        monkeypatch.setattr(writer, "__setitem__", recording)
    for name in ("out.nii", "out.nii.gz"):
        blocks.clear()
        with raise_if_dask_computes(max_computes=1) as scheduler:
            to_nifti(img, tmp_path / name)
        assert scheduler.total_computes == 1  # one pass of the graph, not one compute per chunk
        assert len(blocks) == img.data.numblocks[3]  # each chunk written by its own task
        assert max(blocks) <= chunk_nbytes and sum(blocks) == img.nbytes  # never more than a chunk
    np.testing.assert_array_equal(nib.load(tmp_path / "out.nii.gz").get_fdata(), img.values)


@pytest.mark.parametrize("ext", [".nii", ".nii.gz"])
def test_chunk_and_scheduler_invariance(tmp_path, ext):
    source = _source(tmp_path)
    reference = np.asanyarray(nib.load(source).dataobj)
    outputs = {}
    for chunks, scheduler in chunk_scheduler_cases():
        target = tmp_path / f"out_{chunks}_{scheduler}{ext}"
        with dask.config.set(scheduler=scheduler):
            to_nifti(lazymask.open_nifti(source, chunks=chunks), target)
        np.testing.assert_array_equal(np.asanyarray(nib.load(target).dataobj), reference)
        content = target.read_bytes()
        outputs.setdefault(chunks, set()).add(gzip.decompress(content) if ext == ".nii.gz" else content)
    assert all(len(files) == 1 for files in outputs.values())  # the same file content on every scheduler


def test_failure_leaves_no_file(tmp_path):
    img = lazymask.open_nifti(_source(tmp_path), chunks=5)

    def fail_on_third(block, block_info=None):
        if block_info[0]["chunk-location"][3] == 2:
            raise RuntimeError("disk on fire")
        return block

    broken = img.copy(data=img.data.map_blocks(fail_on_third, dtype=img.dtype, meta=np.empty((0,) * 4, img.dtype)))
    for name in ("out.nii", "out.nii.gz"):
        with pytest.raises(RuntimeError, match="disk on fire"):
            to_nifti(broken, tmp_path / name)
        assert not (tmp_path / name).exists()
    assert [p.name for p in tmp_path.iterdir()] == ["source_int16_4d.nii.gz"]


def test_failure_keeps_the_previous_file(tmp_path):
    img = lazymask.open_nifti(_source(tmp_path), chunks=5)
    target = to_nifti(img, tmp_path / "out.nii")
    before = target.read_bytes()
    broken = img.copy(data=img.data.map_blocks(lambda b: 1 // 0, dtype=img.dtype, meta=np.empty((0,) * 4, img.dtype)))
    with pytest.raises(ZeroDivisionError):
        to_nifti(broken, target, overwrite=True)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.nii", "source_int16_4d.nii.gz"]


def test_numpy_backed_bool_and_unknown_t_r(tmp_path):
    mask = lazymask.io.image_dataarray(np.arange(24).reshape(2, 3, 4) % 3 == 0, np.diag([2.0, 2.0, 2.0, 1.0]))
    written = nib.load(to_nifti(mask, tmp_path / "mask.nii.gz"))
    assert written.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asanyarray(written.dataobj), mask.values.astype(np.uint8))
    run = lazymask.io.image_dataarray(np.zeros((2, 3, 4, 5), np.float32), np.eye(4))
    assert nib.load(to_nifti(run, tmp_path / "run.nii")).header.get_zooms()[3] == 0.0
    assert lazymask.open_nifti(tmp_path / "run.nii").attrs.get("t_r") is None


def test_to_nibabel_matches_header(tmp_path):
    source = _source(tmp_path)
    img = lazymask.open_nifti(source)
    mean = img.mean("time").astype("float32")
    mean.attrs = dict(img.attrs)
    with raise_if_dask_computes(max_computes=1):
        image = to_nibabel(mean)
    expected = np.asanyarray(nib.load(source).dataobj).mean(axis=3, dtype=np.float64).astype(np.float32)
    np.testing.assert_allclose(image.get_fdata(dtype=np.float32), expected, rtol=1e-6)
    np.testing.assert_array_equal(image.affine, nib.load(source).affine)
    assert image.header.get_zooms() == (2.5, 2.5, 2.5)
    round_trip = nib.Nifti1Image.from_bytes(image.to_bytes())
    np.testing.assert_array_equal(round_trip.affine, image.affine)
    assert img.nifti.to_nibabel().header.get_zooms() == (2.5, 2.5, 2.5, 1.5)  # accessor


def test_header_has_t_r_and_units():
    img = lazymask.io.image_dataarray(da.zeros((4, 5, 6, 7), dtype="int16"), np.diag([1.0, 2.0, 3.0, 1.0]), t_r=0.8)
    header = nifti_header(img)
    assert header.get_zooms() == (1.0, 2.0, 3.0, np.float32(0.8))
    assert header.get_data_shape() == (4, 5, 6, 7)
    assert header["sform_code"] == 2 and header["qform_code"] == 2


def test_bad_inputs(tmp_path):
    img = lazymask.io.image_dataarray(np.zeros((2, 3, 4)), np.eye(4))
    with pytest.raises(ParameterError, match=r"\.nii or \.nii\.gz"):
        to_nifti(img, tmp_path / "out.zarr")
    with pytest.raises(ParameterError, match="does not exist"):
        to_nifti(img, tmp_path / "missing" / "out.nii")
    with pytest.raises(DimensionError, match="transpose it"):
        to_nifti(img.transpose("k", "j", "i"), tmp_path / "out.nii")
    with pytest.raises(ParameterError, match="compresslevel"):
        to_nifti(img, tmp_path / "out.nii.gz", compresslevel=9)
    with pytest.raises(ParameterError, match="affine"):
        to_nifti(img.drop_attrs(), tmp_path / "out.nii")
    with pytest.raises(ParameterError, match="cast it"):
        to_nifti(img.astype("complex256"), tmp_path / "out.nii")
    assert list(tmp_path.iterdir()) == []
