"""apply_mask and unmask against nilearn; laziness, chunk invariance, bad masks."""

import warnings

import dask.array as da
import nibabel as nib
import numpy as np
import pytest
from nilearn import masking as nmasking

from lazymask.exceptions import ImageMismatchError, ParameterError
from lazymask.io import get_affine, open_nifti
from lazymask.masking import apply_mask, unmask
from lazymask.testing import count_voxel_reads, fake_fmri, raise_if_dask_computes

SHAPE = (14, 16, 13)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("apply")
    paths = {}
    for name, dtype, background in [("int16", "int16", "noisy"), ("nan", "float32", "nan"), ("f64", "float64", "zero")]:
        paths[name] = str(folder / f"{name}.nii.gz")
        nib.save(fake_fmri(SHAPE, 10, dtype=dtype, background=background, seed=1), paths[name])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mask = nmasking.compute_epi_mask(paths["int16"])
    paths["mask"] = str(folder / "mask.nii.gz")
    nib.save(mask, paths["mask"])
    return paths


def _nilearn_apply(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return nmasking.apply_mask(*args, **kwargs)


@pytest.mark.parametrize("params", [{}, dict(dtype="float64"), dict(dtype="float32"), dict(smoothing_fwhm=5),
                                    dict(smoothing_fwhm=2.5, dtype="float64"), dict(ensure_finite=False)],
                         ids=lambda p: ",".join(f"{k}={v}" for k, v in p.items()) or "defaults")
@pytest.mark.parametrize("kind", ["int16", "nan", "f64"])
def test_apply_mask_matches_nilearn(data, kind, params):
    ours = apply_mask(open_nifti(data[kind], chunks=3), data["mask"], **params)
    expected = _nilearn_apply(data[kind], data["mask"], **params)
    assert ours.dims == ("time", "voxel")
    assert ours.dtype == expected.dtype
    np.testing.assert_allclose(ours.values, expected, rtol=1e-6, atol=1e-4 if "smoothing_fwhm" in params else 0)


def test_apply_mask_voxel_coords_follow_nilearn_order(data):
    ours = apply_mask(data["int16"], data["mask"])
    mask = np.asanyarray(nib.load(data["mask"]).dataobj).astype(bool)
    i, j, k = np.nonzero(mask)
    np.testing.assert_array_equal(ours["i"], i)
    np.testing.assert_array_equal(ours["k"], k)
    assert ours.attrs["t_r"] == 2.0


def test_apply_mask_on_3d_images_and_lists(data):
    volume = nib.load(data["nan"]).slicer[..., 4]
    ours = apply_mask(volume, data["mask"])
    assert ours.dims == ("voxel",)
    np.testing.assert_array_equal(ours.values, _nilearn_apply(volume, data["mask"]))
    volumes = [nib.load(data["int16"]).slicer[..., t] for t in range(3)]
    np.testing.assert_array_equal(apply_mask(volumes, data["mask"]).values, _nilearn_apply(volumes, data["mask"]))


@pytest.mark.parametrize("order", ["F", "C"])
def test_unmask_matches_nilearn(data, order):
    signals = _nilearn_apply(data["nan"], data["mask"])
    ours = unmask(signals, data["mask"], order=order)
    expected = nmasking.unmask(signals, data["mask"], order=order)
    np.testing.assert_array_equal(ours.values, expected.get_fdata(dtype=signals.dtype))
    np.testing.assert_allclose(get_affine(ours), expected.affine)
    layouts = ours.data.map_blocks(lambda b: np.full(b.shape, b.flags[f"{order}_CONTIGUOUS"]), dtype=bool)
    assert layouts.all().compute()  # each chunk in the order asked (the computed whole is dask's)
    one = unmask(signals[2], data["mask"], order=order)
    np.testing.assert_array_equal(one.values, nmasking.unmask(signals[2], data["mask"]).get_fdata(dtype=signals.dtype))
    as_list = unmask([signals, signals[0]], data["mask"])
    assert [img.ndim for img in as_list] == [4, 3]


def test_round_trip_of_a_lazy_dataarray(data):
    signals = apply_mask(open_nifti(data["int16"], chunks=4), data["mask"])
    image = unmask(signals, data["mask"])
    assert image.chunks[3] == (4, 4, 2)
    assert image.attrs["t_r"] == 2.0
    np.testing.assert_array_equal(apply_mask(image, data["mask"]).values, signals.values)


def test_building_computes_nothing_and_reads_no_voxel(data):
    mask = nib.load(data["mask"])
    mask = nib.Nifti1Image(np.asanyarray(mask.dataobj), mask.affine)  # in memory: reads count the run only
    # the mask itself is read (a small volume, on the user's scheduler: once per call), never the run
    with raise_if_dask_computes(max_computes=2) as scheduler, count_voxel_reads() as reads:
        signals = apply_mask(data["int16"], mask, smoothing_fwhm=4)
        unmask(signals, mask)
    assert reads.calls == 0
    assert scheduler.total_computes == 2


@pytest.mark.parametrize("chunks", [1, 4, -1])
def test_apply_mask_is_chunk_invariant(data, chunks):
    expected = _nilearn_apply(data["nan"], data["mask"], smoothing_fwhm=3)
    ours = apply_mask(open_nifti(data["nan"], chunks=chunks), data["mask"], smoothing_fwhm=3)
    assert ours.chunks[0] == open_nifti(data["nan"], chunks=chunks).chunks[3]
    np.testing.assert_allclose(ours.values, expected, rtol=1e-6, atol=1e-4)


def test_bad_masks_are_named(data):
    affine = nib.load(data["int16"]).affine
    mask = np.asanyarray(nib.load(data["mask"]).dataobj)
    three_values = mask.astype("int8")
    three_values[tuple(np.argwhere(three_values)[0])] = 2
    with pytest.raises(ParameterError, match="Given mask is not made of 2 values: mask_img holds 3 values"):
        apply_mask(data["int16"], nib.Nifti1Image(three_values, affine))
    with pytest.raises(ParameterError, match="The mask is invalid as it is empty: it masks all data"):
        apply_mask(data["int16"], nib.Nifti1Image(np.zeros(SHAPE, "int8"), affine))
    with pytest.raises(ParameterError, match="Background of the mask must be represented with 0"):
        apply_mask(data["int16"], nib.Nifti1Image(mask + 1, affine))
    shifted = affine.copy()
    shifted[0, 3] += 3
    with pytest.raises(ImageMismatchError, match=r"Mask affine:(.|\n)* is different from img affine"):
        apply_mask(data["int16"], nib.Nifti1Image(mask, shifted))
    with pytest.raises(ImageMismatchError, match=r"Mask shape: \(5, 5, 5\)\n is different from img shape"):
        apply_mask(data["int16"], nib.Nifti1Image(np.ones((5, 5, 5), "int8"), affine))
    with pytest.raises(ParameterError, match="X has 3 voxels .* mask_img has"):
        unmask(np.zeros((4, 3)), data["mask"])
    with pytest.raises(ParameterError, match="X has shape"):
        unmask(np.zeros((2, 2, 2)), data["mask"])


@pytest.mark.parametrize("ensure_finite", [True, False])
@pytest.mark.parametrize("kind", ["int16", "nan", "f64"])
def test_in_memory_signals_are_apply_masks_in_whole_time_blocks(data, kind, ensure_finite):
    import dask

    from lazymask.masking import in_memory_signals

    lazy = open_nifti(data[kind], chunks={"time": 3})
    mask = open_nifti(data["mask"]).compute()
    chosen = []
    assert in_memory_signals(lazy, mask, columns=chosen.append) is None  # still to be read: not gathered
    assert chosen == []  # nor the columns chosen
    (kept,) = dask.persist(lazy)
    expected = apply_mask(lazy, data["mask"], ensure_finite=ensure_finite)
    n_voxels = expected.shape[1]
    columns = (n_voxels // 3, n_voxels // 3, n_voxels - 2 * (n_voxels // 3))
    with count_voxel_reads() as reads, raise_if_dask_computes():
        signals = in_memory_signals(kept, mask, columns, ensure_finite=ensure_finite)
    assert signals.data.chunks == ((10,), columns)
    by_count = in_memory_signals(kept, mask, lambda n: (n - 4, 4), ensure_finite=ensure_finite)
    assert by_count.data.chunks == ((10,), (n_voxels - 4, 4))
    values = signals.values
    assert reads.volumes == 0  # gathered from the persisted chunks
    np.testing.assert_array_equal(values, expected.values)
    assert values.dtype == expected.dtype
    for name in ("i", "j", "k"):
        np.testing.assert_array_equal(signals[name].values, expected[name].values)
    with pytest.raises(ParameterError, match="must add up to the mask's"):
        in_memory_signals(kept, mask, columns=(1, 2))


def test_a_kernel_mapped_where_voxels_are_gathered_may_overwrite_them(data):
    """map_gathered's blocks are its tasks' own: a kernel writing into them changes nobody else's values."""
    import dask

    from lazymask.masking import in_memory_signals, map_gathered

    (kept,) = dask.persist(open_nifti(data["int16"], chunks={"time": 3}))
    mask = open_nifti(data["mask"]).compute()
    n_voxels = int(mask.sum())
    signals = in_memory_signals(kept, mask, (n_voxels - 5, 5))
    offsets = da.from_array(np.arange(10, dtype="float32")[:, np.newaxis])

    def shift(block, offsets, scale):
        block += offsets * scale  # in place: the block the task gathered
        return block

    with raise_if_dask_computes():
        shifted = map_gathered(signals, shift, offsets, scale=2.0, rows=10, dtype=signals.dtype)
    assert shifted.chunks == ((10,), (n_voxels - 5, 5))
    assert not any("gather-voxels" in str(name) for name in shifted.dask.layers)  # gathered in its own tasks
    plain, moved = dask.compute(signals.data, shifted)  # one graph, both read the same kept chunks
    expected = apply_mask(kept, mask).values
    np.testing.assert_array_equal(plain, expected)
    np.testing.assert_array_equal(moved, expected + 2.0 * np.arange(10, dtype="float32")[:, np.newaxis])
    np.testing.assert_array_equal(signals.values, expected)
    assert map_gathered(signals.data[:, :3], shift, offsets, scale=1.0, rows=10, dtype=signals.dtype) is None
    assert map_gathered(apply_mask(kept, mask), shift, offsets, scale=1.0, rows=10, dtype=signals.dtype) is None
    with pytest.raises(ParameterError, match="one chunk each"):
        map_gathered(signals, shift, da.zeros((10, 1), chunks=5), scale=1.0, rows=10, dtype=signals.dtype)
