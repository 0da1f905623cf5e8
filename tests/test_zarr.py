"""Tests of lazymask.io._zarr: NIfTI-Zarr images and labelled signals round trips."""

import io
import json
import shutil

import dask
import dask.array as da
import nibabel as nib
import numpy as np
import pytest
import xarray as xr
import zarr

import lazymask
from lazymask.exceptions import (
    CorruptImageError,
    ImageFileNotFoundError,
    NotNiftiError,
    ParameterError,
    UnsafeTargetError,
)
from lazymask.io._zarr import (
    CHUNK_BYTES,
    array_chunks,
    image_time_chunk,
    is_complete,
    open_zarr,
    staged_group,
    to_zarr,
)
from lazymask.testing import chunk_scheduler_cases, fake_fmri, raise_if_dask_computes

SHAPE = (20, 24, 20)
N_VOLUMES = 30


@pytest.fixture(scope="module")
def nifti_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("nifti") / "bold.nii.gz"
    fake_fmri(SHAPE, N_VOLUMES, t_r=1.5, voxel_size=2.5, seed=1).to_filename(path)
    return path


def _image(nifti_path, chunks=7):
    img = lazymask.open_nifti(nifti_path, chunks=chunks)
    img.name = "bold"
    img.attrs["task"] = {"name": "rest", "runs": [1, 2]}
    return img


def _voxel_signals(chunks=(10, 50)):
    rng = np.random.default_rng(0)
    n_time, n_voxels = 30, 120
    ijk = rng.integers(0, 20, size=(3, n_voxels))
    return xr.DataArray(
        da.from_array(rng.normal(size=(n_time, n_voxels)).astype("float32"), chunks=chunks),
        dims=("time", "voxel"),
        coords={"time": ("time", np.arange(n_time) * 2.0, {"units": "s"}),
                "i": ("voxel", ijk[0]), "j": ("voxel", ijk[1]), "k": ("voxel", ijk[2])},
        name="voxel_signals",
        attrs={"affine": np.diag([3.0, 3.0, 3.0, 1.0]).tolist(), "t_r": 2.0, "units": "BOLD",
               "parameters": {"standardize": "zscore_sample", "detrend": True, "high_pass": None}},
    )


def _region_signals():
    values = np.arange(60, dtype="float64").reshape(20, 3) / 7
    return xr.DataArray(
        values, dims=("time", "region"),
        coords={"region": [1, 4, 17], "region_name": ("region", ["Left Amygdala", "Right-V1", "ü"])},
        attrs={"t_r": 0.72},
    )


# -- images ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["int16", "float32", "uint8"])
@pytest.mark.parametrize("ndim", [3, 4])
def test_image_round_trip_is_exact(tmp_path, nifti_path, dtype, ndim):
    img = _image(nifti_path).astype(dtype, keep_attrs=True)
    if ndim == 3:
        img = img.isel(time=slice(3, 4)).squeeze("time", drop=True)
    to_zarr(img, tmp_path / "img.nii.zarr")
    back = open_zarr(tmp_path / "img.nii.zarr")
    assert back.dims == img.dims and back.dtype == img.dtype
    assert back.chunks[:3] == tuple((n,) for n in SHAPE)  # whole volumes per chunk
    xr.testing.assert_identical(back.compute(), img.compute())
    assert back.nifti.affine.tolist() == img.nifti.affine.tolist()


def test_image_store_follows_nifti_zarr(tmp_path, nifti_path):
    img = _image(nifti_path)
    to_zarr(img, tmp_path / "img.nii.zarr")
    group = zarr.open_group(tmp_path / "img.nii.zarr", mode="r")
    assert group.metadata.zarr_format == 3
    ome = group.attrs["ome"]
    assert ome["version"] == "0.5"
    (multiscale,) = ome["multiscales"]
    assert [a["name"] for a in multiscale["axes"]] == ["t", "z", "y", "x"]
    assert [a.get("unit") for a in multiscale["axes"]] == ["second"] + ["millimeter"] * 3
    assert [a["type"] for a in multiscale["axes"]] == ["time", "space", "space", "space"]
    (dataset,) = multiscale["datasets"]
    assert dataset["path"] == "0"
    assert dataset["coordinateTransformations"] == [{"type": "scale", "scale": [1.0, 2.5, 2.5, 2.5]}]
    assert multiscale["coordinateTransformations"] == [{"type": "scale", "scale": [1.5, 1.0, 1.0, 1.0]}]
    # level 0 is the C-ordered (t, k, j, i) array: NIfTI's Fortran-ordered (i, j, k, t)
    level0 = group["0"]
    assert level0.shape == (N_VOLUMES, *SHAPE[::-1])
    assert level0.metadata.dimension_names == ("t", "z", "y", "x")
    np.testing.assert_array_equal(level0[:], np.asanyarray(nib.load(nifti_path).dataobj).transpose())
    codec, checksum = level0.metadata.to_dict()["codecs"][-2:]
    assert checksum["name"] == "crc32c"  # a checksum per chunk, after the compressor
    assert codec["name"] == "blosc" and codec["configuration"]["cname"] == "zstd"
    assert codec["configuration"]["clevel"] == 1 and codec["configuration"]["shuffle"] == "shuffle"
    # the binary NIfTI header, as uint8 bytes, parses to the same grid
    header_bytes = group["nifti"]
    assert header_bytes.dtype == np.uint8 and header_bytes.shape == (348,)
    header = nib.Nifti1Header.from_fileobj(io.BytesIO(header_bytes[:].tobytes()))
    reference = nib.load(nifti_path)
    assert header.get_data_shape() == reference.shape
    assert header.get_data_dtype() == reference.get_data_dtype()
    np.testing.assert_array_equal(header.get_best_affine(), reference.affine)
    assert header.get_zooms() == reference.header.get_zooms()
    assert group.attrs["lazymask_complete"] is True


def test_image_chunks_hold_whole_volumes_of_about_chunk_bytes():
    volume = 91 * 109 * 91 * 2
    assert image_time_chunk(volume, 1200) == CHUNK_BYTES // volume
    assert 16 * 2**20 <= image_time_chunk(volume, 1200) * volume <= 64 * 2**20
    assert image_time_chunk(volume, 5) == 5
    assert image_time_chunk(10 * CHUNK_BYTES, 5) == 1
    assert array_chunks((1200, 200_000), 4, (100,)) == (100, CHUNK_BYTES // 400)
    assert array_chunks((150, 3), 8, ()) == (150, 3)
    # the data's own regular feature chunks are kept when a chunk holds between half the budget and the budget
    even = CHUNK_BYTES // 400 - 10
    assert array_chunks((1200, 200_000), 4, (100,), (even,) * 3) == (100, even)
    assert array_chunks((1200, 200_000), 4, (100,), (even, even - 1, even)) == (100, CHUNK_BYTES // 400)  # not regular
    assert array_chunks((1200, 200_000), 4, (100,), (1000,) * 200) == (100, CHUNK_BYTES // 400)  # too small
    assert array_chunks((1200, 200_000), 4, (100,), (2 * even,) * 2) == (100, CHUNK_BYTES // 400)  # too large


def test_large_image_is_stored_in_several_time_chunks(tmp_path):
    with lazymask.config.set(zarr_chunk_bytes=8 * int(np.prod(SHAPE)) * 2):
        to_zarr(lazymask.open_nifti(lazymask.io.image_dataarray(
            np.zeros((*SHAPE, 30), "int16"), np.eye(4))), tmp_path / "s.zarr")
    assert zarr.open_array(tmp_path / "s.zarr", path="0", mode="r").chunks == (8, *SHAPE[::-1])
    assert open_zarr(tmp_path / "s.zarr").chunks[3] == (8, 8, 8, 6)


# -- signals --------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [_voxel_signals, _region_signals])
def test_signals_round_trip_is_exact(tmp_path, make):
    signals = make()
    to_zarr(signals, tmp_path / "signals.zarr", group="sub-01/run-1")
    back = open_zarr(tmp_path / "signals.zarr", group="sub-01/run-1")
    xr.testing.assert_identical(back.compute(), signals.compute())
    for name, coord in signals.coords.items():
        assert back.coords[name].dtype == coord.dtype
        assert back.coords[name].attrs == coord.attrs


def test_voxel_signals_keep_time_chunks(tmp_path):
    to_zarr(_voxel_signals(chunks=(10, 50)), tmp_path / "s.zarr")
    assert open_zarr(tmp_path / "s.zarr").chunks == ((10, 10, 10), (120,))


def test_string_coordinate_is_a_portable_zarr_type(tmp_path):
    to_zarr(_region_signals(), tmp_path / "r.zarr")
    group = zarr.open_group(tmp_path / "r.zarr", mode="r")
    assert group["region_name"].metadata.to_dict()["data_type"] == "string"


# -- laziness -------------------------------------------------------------------------------------
class _CountingStore(zarr.storage.WrapperStore):
    """Records the keys read through it (in a list shared by the copies zarr makes of it)."""

    keys_read: list = []

    async def get(self, key, prototype, byte_range=None):
        self.keys_read.append(key)
        return await super().get(key, prototype, byte_range)


@pytest.mark.parametrize("kind", ["image", "signals"])
def test_open_is_lazy(nifti_path, kind):
    obj = _image(nifti_path) if kind == "image" else _voxel_signals()
    data_prefix = "0/c/" if kind == "image" else "data/c/"
    memory = zarr.storage.MemoryStore()
    to_zarr(obj, memory)
    store = _CountingStore(memory)
    store.keys_read.clear()
    with raise_if_dask_computes():
        lazy = open_zarr(store)
    assert not [key for key in store.keys_read if key.startswith(data_prefix)]  # metadata only
    index_chunks = ("time/c/",)  # xarray loads index coordinates (a few numbers) into pandas
    assert all(key.endswith("zarr.json") or key.startswith(index_chunks) for key in store.keys_read)
    np.testing.assert_array_equal(lazy.values, obj.values)
    assert [key for key in store.keys_read if key.startswith(data_prefix)]  # read when computed


def test_open_reads_no_pickle(tmp_path):
    img = lazymask.io.image_dataarray(np.zeros((2, 3, 4), "float32"), np.eye(4))
    to_zarr(img, tmp_path / "s.zarr")
    meta = json.loads((tmp_path / "s.zarr" / "zarr.json").read_text())
    assert meta["attributes"]["lazymask"]["attrs"]["affine"] == np.eye(4).tolist()  # plain JSON


# -- staging, completeness, errors ----------------------------------------------------------------
def _broken(obj, dim_axis):
    def fail_on_second(block, block_info=None):
        if block_info[0]["chunk-location"][dim_axis] == 1:
            raise RuntimeError("worker lost")
        return block

    data = obj.data.map_blocks(fail_on_second, dtype=obj.dtype, meta=np.empty((0,) * obj.ndim, obj.dtype))
    return obj.copy(data=data)


@pytest.mark.parametrize("kind", ["image", "signals"])
def test_interrupted_write_leaves_nothing_open_zarr_accepts(tmp_path, nifti_path, kind):
    obj, axis = (_image(nifti_path), 3) if kind == "image" else (_voxel_signals(), 0)
    with pytest.raises(RuntimeError, match="worker lost"):
        to_zarr(_broken(obj, axis), tmp_path / "s.zarr", group="run-1")
    assert not is_complete(tmp_path / "s.zarr", "run-1")
    with pytest.raises(ImageFileNotFoundError, match="no such store or group"):
        open_zarr(tmp_path / "s.zarr", group="run-1")
    assert [p.name for p in (tmp_path / "s.zarr").iterdir()] == ["zarr.json"]  # no staging left
    memory = zarr.storage.MemoryStore()  # a store without renames: written in place, unmarked
    with pytest.raises(RuntimeError, match="worker lost"):
        to_zarr(_broken(obj, axis), memory, group="run-1")
    assert not is_complete(memory, "run-1")
    with pytest.raises(ImageFileNotFoundError, match="no such store or group"):
        open_zarr(memory, group="run-1")  # staged under another name: nothing published
    to_zarr(obj, memory, group="run-1")
    assert is_complete(memory, "run-1")


def test_interrupted_overwrite_keeps_the_complete_group(tmp_path, nifti_path):
    img = _image(nifti_path)
    to_zarr(img, tmp_path / "s.zarr")
    with pytest.raises(RuntimeError, match="worker lost"):
        to_zarr(_broken(img.astype("float32", keep_attrs=True), 3), tmp_path / "s.zarr", overwrite=True)
    back = open_zarr(tmp_path / "s.zarr")
    assert back.dtype == np.int16
    xr.testing.assert_identical(back.compute(), img.compute())


def test_killed_write_is_refused_and_cleaned_up(tmp_path):
    to_zarr(_region_signals(), tmp_path / "s.zarr")
    with staged_group(tmp_path / "s.zarr", overwrite=True) as staged:  # what a killed process leaves
        killed = tmp_path / ".s.zarr.lazymask-tmp-killed"
        shutil.copytree(staged.store, killed)
        staged.open().attrs.update({"lazymask": json.loads((tmp_path / "s.zarr" / "zarr.json").read_text())[
            "attributes"]["lazymask"]})
    with pytest.raises(CorruptImageError, match="did not finish|not complete"):
        open_zarr(killed)
    assert not is_complete(killed)
    to_zarr(_region_signals(), tmp_path / "s.zarr", overwrite=True)
    assert is_complete(tmp_path / "s.zarr")
    assert not killed.exists()  # the next write of the same target removes stale staging


def test_one_group_per_run_skips_complete_groups(tmp_path):
    signals = _region_signals()
    for run in ("run-1", "run-2"):
        to_zarr(signals, tmp_path / "archive.zarr", group=f"sub-01/{run}")
    assert is_complete(tmp_path / "archive.zarr", "sub-01/run-1")
    assert not is_complete(tmp_path / "archive.zarr", "sub-01/run-3")
    assert sorted(zarr.open_group(tmp_path / "archive.zarr", path="sub-01", mode="r").group_keys()) == [
        "run-1", "run-2"]
    with pytest.raises(UnsafeTargetError, match="already holds a complete lazymask.*overwrite=True"):
        to_zarr(signals, tmp_path / "archive.zarr", group="sub-01/run-1")
    to_zarr(signals * 2, tmp_path / "archive.zarr", group="sub-01/run-1", overwrite=True)
    np.testing.assert_array_equal(open_zarr(tmp_path / "archive.zarr", group="sub-01/run-1"), signals * 2)
    np.testing.assert_array_equal(open_zarr(tmp_path / "archive.zarr", group="sub-01/run-2"), signals)


def test_foreign_and_missing_stores(tmp_path):
    zarr.create_array(tmp_path / "plain.zarr", shape=(3,), dtype="f4")
    zarr.open_group(tmp_path / "group.zarr", mode="w").create_array("x", shape=(3,), dtype="f4")
    with pytest.raises(NotNiftiError, match="not written by lazymask"):
        open_zarr(tmp_path / "group.zarr")
    with pytest.raises(NotNiftiError, match="not a zarr group"):
        open_zarr(tmp_path / "plain.zarr")
    with pytest.raises(ImageFileNotFoundError, match="no such store"):
        open_zarr(tmp_path / "missing.zarr")
    with pytest.raises(ParameterError, match="may not be"):
        open_zarr(tmp_path / "group.zarr", group="../x")


def test_attrs_must_be_json(tmp_path):
    signals = _region_signals()
    signals.attrs["fit"] = object()
    with pytest.raises(ParameterError, match="attribute 'fit' cannot be stored"):
        to_zarr(signals, tmp_path / "s.zarr")
    signals.attrs["fit"] = {"threshold": np.float32(0.5), "ids": np.arange(3)}  # numpy: converted
    to_zarr(signals, tmp_path / "s.zarr")
    assert open_zarr(tmp_path / "s.zarr").attrs["fit"] == {"threshold": 0.5, "ids": [0, 1, 2]}


# -- invariance -----------------------------------------------------------------------------------
def test_chunk_and_scheduler_invariance(tmp_path, nifti_path):
    reference = np.asanyarray(nib.load(nifti_path).dataobj)
    for chunks, scheduler in chunk_scheduler_cases():
        store = tmp_path / f"s_{chunks}_{scheduler}.zarr"
        with dask.config.set(scheduler=scheduler):
            to_zarr(_image(nifti_path, chunks), store)
            to_zarr(_voxel_signals(chunks=(chunks if chunks > 0 else 30, 40)), store, group="signals")
            back = open_zarr(store).values
            signals = open_zarr(store, group="signals").values
        np.testing.assert_array_equal(back, reference)
        np.testing.assert_array_equal(signals, _voxel_signals().values)


# -- NIfTI-Zarr stores from other tools (niizarr) -------------------------------------------------
@pytest.mark.parametrize("ndim", [3, 4])
def test_reads_nifti_zarr_written_by_niizarr(tmp_path, ndim):
    niizarr = pytest.importorskip("niizarr")
    rng = np.random.default_rng(5)
    shape = (9, 10, 11, 6)[:ndim]
    affine = np.array([[2.0, 0, 0, -10], [0, 2.5, 0, 4], [0, 0, 3.0, 7], [0, 0, 0, 1]])
    image = nib.Nifti1Image(rng.integers(0, 500, size=shape).astype("int16"), affine)
    image.header.set_slope_inter(0.5, 3.0)  # scaling comes from the header
    if ndim == 4:
        image.header.set_zooms((2.0, 2.5, 3.0, 1.25))
        image.header.set_xyzt_units("mm", "sec")
    nib.save(image, tmp_path / "a.nii.gz")
    niizarr.nii2zarr(str(tmp_path / "a.nii.gz"), str(tmp_path / "a.nii.zarr"))
    before = sorted((p.relative_to(tmp_path), p.stat().st_mtime_ns) for p in (tmp_path / "a.nii.zarr").rglob("*"))
    with raise_if_dask_computes():
        img = open_zarr(tmp_path / "a.nii.zarr")
        via_open_nifti = lazymask.open_nifti(tmp_path / "a.nii.zarr")
    expected = np.asanyarray(nib.load(tmp_path / "a.nii.gz").dataobj)  # scaled as nibabel scales
    assert img.dims == (IMAGE_DIMS := ("i", "j", "k", "time")[:ndim]) and via_open_nifti.dims == IMAGE_DIMS
    assert img.dtype == expected.dtype
    np.testing.assert_array_equal(img.values, expected)
    np.testing.assert_array_equal(via_open_nifti.values, expected)
    np.testing.assert_array_equal(img.nifti.affine, affine)
    if ndim == 4:
        assert img.attrs["t_r"] == 1.25
        assert img.chunks[:3] == tuple((n,) for n in shape[:3])  # whole volumes per chunk
    assert lazymask.io.verify(tmp_path / "a.nii.zarr")["groups"] == 1
    after = sorted((p.relative_to(tmp_path), p.stat().st_mtime_ns) for p in (tmp_path / "a.nii.zarr").rglob("*"))
    assert after == before  # a foreign store is opened read-only: nothing written, nothing touched
    with pytest.raises(UnsafeTargetError, match="lazymask did not write"):
        to_zarr(img, tmp_path / "a.nii.zarr", overwrite=True)  # and never replaced


def test_niizarr_reads_lazymask_images_and_round_trips(tmp_path, nifti_path):
    niizarr = pytest.importorskip("niizarr")
    img = _image(nifti_path)
    to_zarr(img, tmp_path / "ours.nii.zarr")
    theirs = niizarr.zarr2nii(str(tmp_path / "ours.nii.zarr"))
    reference = nib.load(nifti_path)
    np.testing.assert_array_equal(np.asanyarray(theirs.dataobj), np.asanyarray(reference.dataobj))
    np.testing.assert_array_equal(theirs.header.get_best_affine(), reference.affine)  # their affine: the header
    # theirs -> ours -> theirs: their writer on our image, read back by us
    nib.save(theirs, tmp_path / "theirs.nii.gz")
    niizarr.nii2zarr(str(tmp_path / "theirs.nii.gz"), str(tmp_path / "theirs.nii.zarr"))
    back = open_zarr(tmp_path / "theirs.nii.zarr")
    np.testing.assert_array_equal(back.values, img.values)
    np.testing.assert_array_equal(back.nifti.affine, img.nifti.affine)


def test_memory_store_refuses_to_replace_a_complete_group_and_keeps_it(nifti_path):
    # a zarr store object has no rename and no transaction: replacing a complete group would leave a
    # window with neither result, so it is refused (docs/guarantees.md, "Object storage and icechunk")
    memory = zarr.storage.MemoryStore()
    signals = _region_signals()
    to_zarr(signals, memory, group="sub-01/run-1")
    with pytest.raises(UnsafeTargetError, match="neither an atomic rename nor transactions.*icechunk"):
        to_zarr(signals * 3, memory, group="sub-01/run-1", overwrite=True)
    xr.testing.assert_identical(open_zarr(memory, group="sub-01/run-1").compute(), signals)
    with pytest.raises(RuntimeError, match="worker lost"):  # a failed new group leaves nothing behind
        to_zarr(_broken(_voxel_signals(chunks=(10, 50)), 0), memory, group="sub-01/run-2")
    assert not lazymask.io.is_complete(memory, "sub-01/run-2")

    async def keys():
        return [key async for key in memory.list()]
    assert not [key for key in zarr.core.sync.sync(keys()) if key.startswith("sub-01/run-2")]


def test_verify_walks_every_group_of_a_store(tmp_path, nifti_path):
    store = tmp_path / "archive.zarr"
    for run in ("run-1", "run-2"):
        to_zarr(_region_signals(), store, group=f"sub-01/{run}")
    to_zarr(_image(nifti_path), store, group="sub-02/anat")
    counts = lazymask.io.verify(store)
    assert counts["groups"] == 3 and counts["chunks"] >= 3 * 2
    assert lazymask.io.verify(store, "sub-01")["groups"] == 2
    assert open_zarr(store, group="sub-02/anat", verify=True).shape == (*SHAPE, N_VOLUMES)


def test_cleaned_blocks_are_stored_as_they_are(tmp_path):
    """Whole-time blocks cut by cleaning (even, regular, within the chunk budget) become the stored
    chunks: writing them needs no rechunk, and each chunk is written from one block."""
    from lazymask.signal import clean

    n_time, n_voxels = 20, 1000
    values = np.random.default_rng(4).standard_normal((n_time, n_voxels)).astype("float32")
    block_bytes = n_time * 4 * 150
    with lazymask.config.set(clean_max_block_bytes=block_bytes, clean_target_block_bytes=block_bytes,
                             zarr_chunk_bytes=block_bytes):
        cleaned = clean(xr.DataArray(da.from_array(values, chunks=(n_time, n_voxels)),
                                dims=("time", "voxel")), detrend=True, standardize=None)
        assert cleaned.data.chunks[1] == (143,) * 6 + (142,)  # 7 blocks as 150-wide ones would be, even
        to_zarr(cleaned, tmp_path / "cleaned.zarr")
    stored = zarr.open_group(str(tmp_path / "cleaned.zarr"), mode="r")
    arrays = [stored[name] for name in stored.array_keys() if stored[name].ndim == 2]
    assert [a.chunks for a in arrays] == [(n_time, 143)]
    np.testing.assert_allclose(arrays[0][:], cleaned.values, rtol=1e-6)
