"""open_nifti: the same numbers as nibabel, lazily, for every input kind; clear errors otherwise."""

import gzip
import pickle
import time

import dask
import nibabel as nib
import numpy as np
import pytest

from lazymask.exceptions import (
    CorruptImageError,
    DimensionError,
    ImageFileNotFoundError,
    ImageMismatchError,
    ImageTooLargeError,
    LazymaskError,
    NotNiftiError,
    ParameterError,
)
from lazymask.io import get_affine, open_nifti
from lazymask.testing import count_voxel_reads, fake_fmri, raise_if_dask_computes

SHAPE = (7, 8, 6)
AFFINE = np.array([[-2.0, 0, 0, 30], [0, 2.5, 0, -20], [0, 0, 3, -10], [0, 0, 0, 1]])


def make_image(dtype, n_volumes=11, scaling=None, nifti2=False, seed=0):
    rng = np.random.default_rng(seed)
    squeeze = n_volumes == 0
    n_volumes = max(n_volumes, 1)
    if np.dtype(dtype).kind == "f":
        data = rng.normal(100, 20, (*SHAPE, n_volumes)).astype(dtype)
    else:
        info = np.iinfo(dtype)
        data = rng.integers(max(info.min, -2000), min(info.max, 2000), (*SHAPE, n_volumes), endpoint=True)
        data = data.astype(dtype)
    if squeeze:
        data = data[..., 0]
    cls = nib.Nifti2Image if nifti2 else nib.Nifti1Image
    img = cls(data, AFFINE)
    img.header.set_data_dtype(dtype)
    if scaling is not None:
        img.header.set_slope_inter(*scaling)
    if data.ndim == 4:
        img.header.set_zooms((2.0, 2.5, 3.0, 1.5))
    return img


def save(img, path):
    nib.save(img, path)
    return path


# -- equality with nibabel -------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["int16", "uint8", "float32", "float64"])
@pytest.mark.parametrize("scaling", [None, (0.5, 3.0), (2.0, -7.0)])
@pytest.mark.parametrize("ext", [".nii", ".nii.gz"])
def test_same_numbers_and_dtype_as_nibabel(tmp_path, dtype, scaling, ext):
    path = save(make_image(dtype, scaling=scaling), tmp_path / f"img{ext}")
    reference = nib.load(path)
    expected = np.asanyarray(reference.dataobj)
    for chunks in ("auto", 1, 3, -1, (4, 7)):
        img = open_nifti(path, chunks=chunks)
        assert img.dtype == expected.dtype  # the declared dtype is the computed dtype
        values = img.values
        assert values.dtype == expected.dtype
        np.testing.assert_array_equal(values, expected)
        np.testing.assert_allclose(values, reference.get_fdata(), rtol=1e-6)


@pytest.mark.parametrize("ext", [".nii", ".nii.gz"])
def test_3d_image_and_nifti2(tmp_path, ext):
    path3d = save(make_image("int16", n_volumes=0), tmp_path / f"vol{ext}")
    img = open_nifti(path3d)
    assert img.dims == ("i", "j", "k")
    np.testing.assert_array_equal(img.values, nib.load(path3d).get_fdata())
    path2 = save(make_image("float32", nifti2=True), tmp_path / f"two{ext}")
    assert isinstance(nib.load(path2), nib.Nifti2Image)
    np.testing.assert_array_equal(open_nifti(path2).values, nib.load(path2).get_fdata())


def test_big_endian_data_comes_back_native(tmp_path):
    img = make_image("int16")
    be = nib.Nifti1Image(np.asanyarray(img.dataobj).astype(">i2"), AFFINE)
    path = save(be, tmp_path / "be.nii")
    opened = open_nifti(path)
    assert opened.dtype == np.dtype("int16") and opened.dtype.isnative
    np.testing.assert_array_equal(opened.values, nib.load(path).get_fdata())


def test_metadata_dims_affine_time(fmri_paths):
    img = open_nifti(fmri_paths[".nii.gz"])
    assert img.dims == ("i", "j", "k", "time")
    assert img.nifti.t_r == 2.0
    np.testing.assert_array_equal(img["time"].values, np.arange(17) * 2.0)
    np.testing.assert_array_equal(get_affine(img), nib.load(fmri_paths[".nii"]).affine)
    assert img.nifti.zooms == (3.0, 3.0, 3.0)
    assert all(len(c) == 1 for c in img.chunks[:3])  # whole volumes per chunk
    assert img.attrs["source"] == [str(fmri_paths[".nii.gz"])]


def test_tr_in_milliseconds_is_converted(tmp_path):
    img = make_image("int16")
    img.header.set_xyzt_units("mm", "msec")
    img.header.set_zooms((2.0, 2.5, 3.0, 1500.0))
    assert open_nifti(save(img, tmp_path / "ms.nii")).nifti.t_r == pytest.approx(1.5)


def test_every_input_kind_gives_the_same_numbers(tmp_path, fmri_paths):
    expected = nib.load(fmri_paths[".nii"]).get_fdata()
    from_path = open_nifti(str(fmri_paths[".nii"]))
    from_pathlib = open_nifti(fmri_paths[".nii.gz"])
    from_image = open_nifti(nib.load(fmri_paths[".nii.gz"]))
    in_memory = nib.Nifti1Image(expected.astype("float32"), nib.load(fmri_paths[".nii"]).affine)
    from_memory = open_nifti(in_memory)
    for img in (from_path, from_pathlib, from_image, from_memory):
        np.testing.assert_array_equal(img.values, expected)
    assert open_nifti(from_path) is from_path  # a DataArray is returned as is
    # a list of 3D files is stacked along time, a list of 4D runs concatenated
    volumes = [save(nib.Nifti1Image(expected[..., t], in_memory.affine), tmp_path / f"v{t:02d}.nii.gz")
               for t in range(5)]
    stacked = open_nifti(volumes, chunks=2)
    assert stacked.dims == ("i", "j", "k", "time") and stacked.chunks[3] == (2, 2, 1)
    np.testing.assert_array_equal(stacked.values, expected[..., :5])
    np.testing.assert_array_equal(open_nifti(str(tmp_path / "v*.nii.gz")).values, expected[..., :5])
    runs = open_nifti([fmri_paths[".nii"], fmri_paths[".nii.gz"]], chunks=5)
    np.testing.assert_array_equal(runs.values, np.concatenate([expected, expected], axis=3))
    mixed = open_nifti([fmri_paths[".nii"], in_memory])
    np.testing.assert_array_equal(mixed.values, np.concatenate([expected, expected], axis=3))


def test_reductions_match_numpy_for_several_chunkings(fmri_paths):
    expected = nib.load(fmri_paths[".nii"]).get_fdata().mean(axis=3)
    for chunks in (1, 4, 16, -1):
        for path in fmri_paths.values():
            np.testing.assert_allclose(open_nifti(path, chunks=chunks).mean("time").values, expected)


# -- laziness --------------------------------------------------------------------------------------
def test_opening_and_slicing_compute_and_read_nothing(fmri_paths):
    with raise_if_dask_computes(), count_voxel_reads() as reads:
        img = open_nifti(fmri_paths[".nii.gz"], chunks=3)
        sliced = img.isel(time=slice(2, 9), i=slice(1, 5))
        mean = sliced.mean("time")
        _ = repr(img), img.nifti.affine, img.nifti.t_r
    assert reads.calls == 0
    with count_voxel_reads() as reads:
        values = mean.values
    assert reads.calls >= 1
    np.testing.assert_allclose(values, nib.load(fmri_paths[".nii"]).get_fdata()[1:5, ..., 2:9].mean(-1))


def test_gzip_full_pass_decompresses_about_once(tmp_path, monkeypatch):
    """A pass over a .nii.gz, in dask's order (not the file's), decompresses each byte about once."""
    from lazymask.io import _gzip

    monkeypatch.setattr(_gzip, "_STEP", 64 * 1024)  # checkpoints every 64 kB for this small file
    img = fake_fmri(shape=(40, 40, 30), n_volumes=24, seed=3)
    path = save(img, tmp_path / "run.nii.gz")
    total = np.asanyarray(img.dataobj).nbytes
    produced = []
    original = _gzip.GzipStream._produce
    monkeypatch.setattr(_gzip.GzipStream, "_produce",
                        lambda self, n: (lambda c: (produced.append(len(c)), c)[1])(original(self, n)))
    lazy = open_nifti(path, chunks=1)  # 24 chunks, read in reverse order by dask
    expected = np.asanyarray(img.dataobj).sum(axis=3)
    for scheduler in ("sync", "threads"):
        _gzip._streams.clear()
        produced.clear()
        np.testing.assert_array_equal(lazy.sum("time").compute(scheduler=scheduler), expected)
        assert sum(produced) < 1.5 * total, f"{sum(produced) / total:.1f} decompressions ({scheduler})"


def test_graph_is_small_and_picklable(fmri_paths):
    img = open_nifti(fmri_paths[".nii.gz"], chunks=2)
    graph = dict(img.data.__dask_graph__())
    assert len(pickle.dumps(graph)) < 50_000  # readers, not data
    reloaded = pickle.loads(pickle.dumps(img))
    np.testing.assert_array_equal(reloaded.values, img.values)


def test_same_result_on_processes_and_distributed(fmri_paths):
    distributed = pytest.importorskip("distributed")
    img = open_nifti(fmri_paths[".nii.gz"], chunks=4)
    expected = nib.load(fmri_paths[".nii"]).get_fdata().mean(axis=3)
    np.testing.assert_allclose(img.mean("time").compute(scheduler="processes"), expected)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster):
        np.testing.assert_allclose(img.mean("time").compute(), expected)
        np.testing.assert_allclose(open_nifti(fmri_paths[".nii"], chunks=3).mean("time").compute(), expected)


# -- bad input -------------------------------------------------------------------------------------
def test_missing_file(tmp_path):
    with pytest.raises(ImageFileNotFoundError, match=r"nope\.nii\.gz: no such file"):
        open_nifti(tmp_path / "nope.nii.gz")
    with pytest.raises(ImageFileNotFoundError, match="no file matches the pattern"):
        open_nifti(str(tmp_path / "sub-*.nii.gz"))


def test_not_a_nifti_file(tmp_path):
    path = tmp_path / "notes.nii"
    path.write_text("this is not an image\n" * 50)
    with pytest.raises(NotNiftiError, match=r"notes\.nii: not a readable NIfTI image"):
        open_nifti(path)
    with pytest.raises(ParameterError, match="cannot open 'int'"):
        open_nifti(42)


def test_truncated_nii_is_caught_at_open(tmp_path, fmri_paths):
    data = fmri_paths[".nii"].read_bytes()
    path = tmp_path / "cut.nii"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptImageError, match=r"cut\.nii: .*the file is truncated"):
        open_nifti(path)


def test_truncated_nii_gz_fails_at_read_with_the_file_name(tmp_path, fmri_paths):
    raw = gzip.decompress(fmri_paths[".nii.gz"].read_bytes())
    path = tmp_path / "cut.nii.gz"
    path.write_bytes(gzip.compress(raw)[: len(gzip.compress(raw)) * 2 // 3])
    img = open_nifti(path, chunks=2)  # the header is intact: opening works
    with pytest.raises(CorruptImageError, match=r"cut\.nii\.gz: the gzip stream .*truncated"):
        img.values
    assert isinstance(CorruptImageError("x"), LazymaskError)


def test_5d_image(tmp_path):
    path = save(nib.Nifti1Image(np.zeros((4, 4, 4, 3, 2), "float32"), np.eye(4)), tmp_path / "five.nii")
    with pytest.raises(DimensionError, match=r"five\.nii: a 5D image of shape \(4, 4, 4, 3, 2\)"):
        open_nifti(path)
    path = save(nib.Nifti1Image(np.zeros((4, 4), "float32"), np.eye(4)), tmp_path / "two.nii")
    with pytest.raises(DimensionError, match="a 2D image"):
        open_nifti(path)


def test_list_with_different_shapes_or_affines(tmp_path):
    a = save(nib.Nifti1Image(np.zeros((4, 4, 4, 2), "int16"), np.eye(4)), tmp_path / "a.nii")
    b = save(nib.Nifti1Image(np.zeros((4, 5, 4, 2), "int16"), np.eye(4)), tmp_path / "b.nii")
    c = save(nib.Nifti1Image(np.zeros((4, 4, 4, 2), "int16"), np.diag([2, 2, 2, 1])), tmp_path / "c.nii")
    d = save(nib.Nifti1Image(np.zeros((4, 4, 4), "int16"), np.eye(4)), tmp_path / "d.nii")
    with pytest.raises(ImageMismatchError, match=r"b\.nii has spatial shape \(4, 5, 4\) but .*a\.nii has"):
        open_nifti([a, b])
    with pytest.raises(ImageMismatchError, match=r"c\.nii and .*a\.nii have different affines"):
        open_nifti([a, c])
    with pytest.raises(ImageMismatchError, match="cannot combine 3D images and 4D runs"):
        open_nifti([a, d])


def test_absurd_header_dimensions(tmp_path):
    img = nib.Nifti1Image(np.zeros((2, 2, 2, 2), "int16"), np.eye(4))
    path = save(img, tmp_path / "huge.nii.gz")
    raw = bytearray(gzip.decompress(path.read_bytes()))
    header = nib.Nifti1Header.from_fileobj(__import__("io").BytesIO(bytes(raw[:348])))
    header.set_data_shape((30000, 30000, 30000, 100))
    raw[:348] = header.binaryblock
    path.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(ImageTooLargeError, match=r"huge\.nii\.gz: .*TiB of voxels"):
        open_nifti(path)
    header.set_data_shape((300, 300, 300, 100))  # plausible, but more than the file could hold
    raw[:348] = header.binaryblock
    path.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(CorruptImageError, match="more than a gzip file of"):
        open_nifti(path)


def test_bad_chunks(fmri_paths):
    with pytest.raises(ParameterError, match="chunks=0"):
        open_nifti(fmri_paths[".nii"], chunks=0)
    with pytest.raises(ParameterError, match="add up to the 17 volumes"):
        open_nifti(fmri_paths[".nii"], chunks=(5, 5))
    with pytest.raises(ParameterError, match="along 'time' only"):
        open_nifti(fmri_paths[".nii"], chunks={"i": 3})
    assert open_nifti(fmri_paths[".nii"], chunks={"time": 5}).chunks[3] == (5, 5, 5, 2)


def test_zarr_image_stores_open_like_nifti_files(tmp_path, fmri_paths):
    from lazymask.io import to_zarr

    expected = nib.load(fmri_paths[".nii"]).get_fdata()
    store = to_zarr(open_nifti(fmri_paths[".nii.gz"]), tmp_path / "run.zarr")
    with raise_if_dask_computes():
        img = open_nifti(store)
        two = open_nifti([store, str(store)], chunks=5)
    np.testing.assert_array_equal(img.values, expected)
    assert img.nifti.t_r == 2.0 and img.dims == ("i", "j", "k", "time")
    assert two.chunks[3] == (5, 5, 5, 5, 5, 5, 4)
    np.testing.assert_array_equal(two.values, np.concatenate([expected, expected], axis=3))


def test_multi_member_gzip_and_integer_indexing(tmp_path):
    img = fake_fmri(shape=(10, 11, 9), n_volumes=7)
    raw = save(img, tmp_path / "a.nii").read_bytes()
    path = tmp_path / "members.nii.gz"
    path.write_bytes(gzip.compress(raw[:5000]) + gzip.compress(raw[5000:]))  # two gzip members
    opened = open_nifti(path, chunks=2)
    np.testing.assert_array_equal(opened.values, np.asanyarray(img.dataobj))
    np.testing.assert_array_equal(opened.isel(time=3).values, np.asanyarray(img.dataobj)[..., 3])
    assert opened.name is None


def _busy(block):
    time.sleep(0.05)
    return block


def test_one_decompression_per_file_on_a_multi_process_cluster(tmp_path):
    """A pass over .nii.gz files on a 2-process LocalCluster: each process decompresses a file at most once.

    A file's reads are chained in file order, so every process's requests for one file go forward
    and its stream never restarts: at most one decompression per file per worker (measured: one in
    all, usually; 1.5x when the scheduler moved a chain midway, see issue 12 item 3).
    """
    distributed = pytest.importorskip("distributed")
    from lazymask.io import _gzip

    images = [fake_fmri(shape=(24, 24, 20), n_volumes=40, seed=seed) for seed in range(4)]
    paths = [save(img, tmp_path / f"run-{n}.nii.gz") for n, img in enumerate(images)]
    lazy = [open_nifti(p, chunks=2) for p in paths]  # 20 chunks per file: 19 chain steps each
    data_bytes = sum(np.asanyarray(img.dataobj).nbytes for img in images)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        for _ in range(2):
            before = client.run(_gzip.bytes_decompressed)
            # downstream work keeps the reading worker busy: idle workers would take the next reads
            means = dask.compute(*[img.copy(data=img.data.map_blocks(_busy, dtype=img.dtype)).mean("time")
                                   for img in lazy])
            after = client.run(_gzip.bytes_decompressed)
            for mean, img in zip(means, images):
                np.testing.assert_allclose(mean, np.asanyarray(img.dataobj).mean(axis=3), rtol=1e-6)
            per_worker = [after[w] - before[w] for w in after]
            # headers (352 bytes per file) aside: at most one decompression per file and worker
            assert data_bytes <= sum(per_worker) and all(n <= data_bytes + 4 * 4096 for n in per_worker), per_worker


def test_the_next_chunks_buffer_is_faulted_in_while_a_chunk_decompresses(tmp_path, monkeypatch):
    """Each read of a .nii.gz after the first writes into a buffer another task faulted in
    (lazymask._pages.prefault) while the previous chunk decompressed; the values are unchanged."""
    from lazymask import _pages

    if _pages._libc is None:
        pytest.skip("LAZYMASK_HUGEPAGES=1 or not Linux: buffers come from numpy.empty, nothing is prefaulted")
    img = fake_fmri(shape=(64, 64, 40), n_volumes=48, seed=4)  # 16-volume chunks of 5.2 MB
    path = save(img, tmp_path / "run.nii.gz")
    lazy = open_nifti(path, chunks=16)
    graph = dict(lazy.data.__dask_graph__())
    prefaults = sorted(key[1] for key in graph if isinstance(key, tuple) and key[0].startswith("gzip-prefault-"))
    assert prefaults == [1, 2]  # none for the first chunk: its read starts at once
    taken = []
    original = _pages._take_parked
    monkeypatch.setattr(_pages, "_take_parked", lambda n: (lambda a: (taken.append(a is not None), a)[1])(original(n)))
    np.testing.assert_array_equal(lazy.sum("time").compute(scheduler="threads"), np.asanyarray(img.dataobj).sum(3))
    volume = 64 * 64 * 40 * 2
    assert taken.count(True) == 2 and not any(n == 16 * volume for n, _ in _pages._parked)
