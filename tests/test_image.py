"""lazymask.image against nilearn.image on the same inputs; laziness and chunk invariance."""

import warnings

import nibabel as nib
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nilearn import image as nimage

from lazymask.exceptions import DimensionError, ParameterError
from lazymask.image import mean_img, resample_img, resample_to_img, smooth_img
from lazymask.io import get_affine, open_nifti
from lazymask.testing import count_voxel_reads, fake_fmri, raise_if_dask_computes

SHAPE = (12, 14, 11)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A .nii.gz int16 run with a noisy background and a float32 run with NaNs, as paths."""
    folder = tmp_path_factory.mktemp("image")
    paths = {}
    for name, dtype, background in [("int16", "int16", "noisy"), ("nan", "float32", "nan")]:
        path = folder / f"{name}.nii.gz"
        nib.save(fake_fmri(SHAPE, 9, dtype=dtype, background=background, seed=3), path)
        paths[name] = str(path)
    return paths


def _nilearn(function, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asanyarray(function(*args, **kwargs).dataobj)


@pytest.mark.parametrize("kind", ["int16", "nan"])
def test_mean_img_matches_nilearn(runs, kind):
    ours = mean_img(runs[kind])
    assert ours.dtype == _nilearn(nimage.mean_img, runs[kind]).dtype
    np.testing.assert_allclose(ours.values, _nilearn(nimage.mean_img, runs[kind]), rtol=1e-6)


def test_mean_img_of_a_list_weighs_runs_equally(runs):
    short = nib.load(runs["int16"]).slicer[..., :3]
    ours = mean_img([runs["int16"], short]).values
    np.testing.assert_allclose(ours, _nilearn(nimage.mean_img, [runs["int16"], short]), rtol=1e-6)


FWHMS = [None, 5, 0, [3, 0, 6], [3, None, 6], (4.0, 8.0, 2.0), "fast", 30]  # 30 mm: wider than the image


def _smooth_warnings_ignored(function, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fwhm=0 warns on both sides
        return function(*args, **kwargs)


@pytest.mark.parametrize("fwhm", FWHMS)
@pytest.mark.parametrize("kind", ["int16", "nan"])
def test_smooth_img_matches_nilearn(runs, kind, fwhm):
    ours = _smooth_warnings_ignored(smooth_img, open_nifti(runs[kind], chunks=4), fwhm)
    expected = _nilearn(nimage.smooth_img, runs[kind], fwhm)
    assert ours.dtype == expected.dtype
    assert ours.chunks == open_nifti(runs[kind], chunks=4).chunks
    np.testing.assert_allclose(ours.values, expected, rtol=1e-5, atol=1e-3)


@pytest.fixture(scope="module")
def oblique_run():
    """A float32 run with anisotropic, rotated voxels (sizes 2, 3.5, 5 mm) and some NaNs."""
    rng = np.random.default_rng(7)
    data = rng.normal(100, 20, (13, 9, 7, 5)).astype("float32")
    data[2, 3, 1, :2] = np.nan
    data[5, 5, 5, 3] = np.inf
    angle = 0.3
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([2.0, 3.5, 5.0])
    affine[:3, 3] = [-10, 4, 7]
    return nib.Nifti1Image(data, affine)


@pytest.mark.parametrize("fwhm", [6, [4, 7, 10], "fast"])
def test_smooth_img_uses_the_voxel_sizes_of_an_oblique_affine(oblique_run, fwhm):
    ours = smooth_img(oblique_run, fwhm)
    expected = _nilearn(nimage.smooth_img, oblique_run, fwhm)
    assert ours.dtype == expected.dtype == np.float32
    np.testing.assert_allclose(ours.values, expected, rtol=1e-5, atol=1e-4)
    assert np.isfinite(ours.values).all()


@pytest.mark.parametrize("dtype, expected_dtype", [("int16", "float32"), ("uint8", "float32"), ("int64", "float64"),
                                                   ("float32", "float32"), ("float64", "float64")])
@pytest.mark.parametrize("layout", ["F", "C"])
def test_smooth_array_equals_nilearn_in_every_layout_and_dtype(dtype, expected_dtype, layout):
    from nilearn.image.image import smooth_array as nilearn_smooth_array

    from lazymask.image._smooth import smooth_array

    rng = np.random.default_rng(1)
    block = np.array(rng.integers(0, 1000, (60, 11, 53, 3)).astype(dtype), order=layout)
    affine = np.diag([2.0, 3.0, 2.5, 1.0])
    ours = smooth_array(block, affine, 6)
    expected = nilearn_smooth_array(block, affine, 6)
    assert ours.dtype == expected.dtype == np.dtype(expected_dtype)
    assert ours.flags.c_contiguous if layout == "C" else ours.flags.f_contiguous  # no copy needed to mask it
    tolerance = 1e-5 if expected_dtype == "float32" else 1e-12
    np.testing.assert_allclose(ours, expected, rtol=tolerance, atol=tolerance * 1000)


@pytest.mark.parametrize("layout", ["F", "C"])
def test_a_single_volume_is_smoothed_to_nilearns_bits(layout):
    """A 3D volume (a mask's mean at fit) is filtered by scipy as nilearn does: the same bits, in its layout."""
    from nilearn.image.image import smooth_array as nilearn_smooth_array

    from lazymask.image._smooth import smooth_array

    volume = np.array(np.random.default_rng(3).random((31, 17, 23)) * 1000, order=layout)
    for fwhm in (1, 6):
        ours = smooth_array(volume, np.eye(4), fwhm)
        assert ours.flags.c_contiguous if layout == "C" else ours.flags.f_contiguous
        np.testing.assert_array_equal(ours, nilearn_smooth_array(volume, np.eye(4), fwhm))


@pytest.mark.parametrize("rows", [1, 5, 48])
def test_banded_products_equal_the_whole_filter(monkeypatch, rows):
    from scipy.ndimage import gaussian_filter1d

    from lazymask.image import _smooth

    monkeypatch.setattr(_smooth, "BAND_ROWS", rows)
    rng = np.random.default_rng(2)
    volume = rng.normal(size=(50, 17, 3))  # float64: the products are exact to float64 rounding
    for sigma in (0.3, 2.0, 40.0):  # 40: the filter reflects several times off both edges
        expected = volume.copy()
        for axis in range(3):
            gaussian_filter1d(expected, sigma, axis=axis, output=expected)
        ours = _smooth._gaussian_smooth(np.asfortranarray(volume), np.full(3, sigma))
        np.testing.assert_allclose(ours, expected, rtol=1e-12, atol=1e-12)


def test_smooth_array_keeps_nans_where_asked_as_nilearn():
    from nilearn.image.image import smooth_array as nilearn_smooth_array

    from lazymask.image._smooth import smooth_array

    block = np.asfortranarray(np.random.default_rng(3).normal(size=(30, 9, 8, 2)).astype("float32"))
    block[4, 4, 4, 0] = np.nan
    ours = smooth_array(block, np.eye(4), 3, ensure_finite=False)
    expected = nilearn_smooth_array(block, np.eye(4), 3, ensure_finite=False)
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(expected))
    # a NaN spreads over the filter's width only (11 voxels here), in its own volume
    assert not np.isnan(ours[..., 1]).any() and 0 < np.isnan(ours[..., 0]).sum() < ours[..., 0].size / 2
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5)
    assert not np.isnan(smooth_array(block, np.eye(4), 3)).any()


def test_smooth_img_of_float16_gives_float16():
    from lazymask.io import image_dataarray

    values = np.random.default_rng(4).normal(size=(8, 7, 6, 2)).astype("float16")
    ours = smooth_img(image_dataarray(values, np.eye(4)), 3)
    expected = nimage.smooth_img(nib.Nifti1Image(values.astype("float32"), np.eye(4)), 3).get_fdata()
    assert ours.dtype == np.float16  # nilearn fails here (scipy does not filter float16)
    np.testing.assert_allclose(ours.values.astype("float32"), expected, rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("fwhm", [6, [3, 0, 6], "fast"])
def test_smoothing_does_not_depend_on_chunks(runs, fwhm):
    import dask.array as da
    from dask.array.utils import assert_eq

    reference = smooth_img(open_nifti(runs["int16"], chunks=-1), fwhm).values
    for chunks in (1, 2, 5):
        smoothed = smooth_img(open_nifti(runs["int16"], chunks=chunks), fwhm)
        assert_eq(smoothed.data, reference, check_graph=False)  # declared chunks, dtype, meta and values
        np.testing.assert_array_equal(smoothed.values, reference)
    # a DataArray split in space too: blocks are joined in space, the time chunks stay
    image = open_nifti(runs["int16"], chunks=-1)
    split = image.copy(data=da.from_array(image.values, chunks=(5, 7, 4, 3)))
    smoothed = smooth_img(split, fwhm)
    assert smoothed.chunks[3] == (3, 3, 3)
    np.testing.assert_array_equal(smoothed.values, reference)


def test_smooth_img_builds_a_graph_and_reads_one_chunk_per_task(runs):
    with raise_if_dask_computes(), count_voxel_reads() as reads:
        smoothed = smooth_img(open_nifti(runs["int16"], chunks=3), 6)
        listed = smooth_img([runs["int16"], runs["nan"]], "fast")
    assert reads.calls == 0
    assert len(listed) == 2
    with count_voxel_reads() as reads:
        smoothed.isel(time=slice(0, 3)).compute()
    assert reads.volumes == 3  # the first chunk only


RESAMPLINGS = [
    dict(target_affine=np.diag([4.0, 4.0, 4.0])),
    dict(target_affine=np.diag([2.5, 3.5, 4.0, 1.0]), target_shape=(9, 8, 10)),
    dict(target_affine=np.diag([4.0, 4.0, 4.0]), interpolation="nearest"),
    dict(target_affine=np.diag([4.0, 4.0, 4.0]), interpolation="linear", clip=False, fill_value=-1.0),
]


@pytest.mark.parametrize("params", RESAMPLINGS)
@pytest.mark.parametrize("kind", ["int16", "nan"])
def test_resample_img_matches_nilearn(runs, kind, params):
    ours = resample_img(open_nifti(runs[kind], chunks=2), **params)
    expected = nib.load(runs[kind])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = nimage.resample_img(expected, **params)
    np.testing.assert_allclose(get_affine(ours), expected.affine)
    assert ours.dtype == expected.get_data_dtype() or ours.dtype == np.asanyarray(expected.dataobj).dtype
    np.testing.assert_allclose(ours.values, np.asanyarray(expected.dataobj), rtol=1e-5, atol=1e-3)


def test_resample_to_img_uses_the_target_grid(runs):
    target = nib.Nifti1Image(np.zeros((7, 8, 6), "int8"), np.diag([5.0, 5.0, 5.0, 1.0]))
    ours = resample_to_img(runs["int16"], target, interpolation="nearest")
    expected = _nilearn(nimage.resample_to_img, runs["int16"], target, interpolation="nearest")
    assert ours.shape == (7, 8, 6, 9)
    np.testing.assert_array_equal(ours.values, expected)


def test_force_resample_false_gives_nilearn_numbers_for_an_integer_shift(runs):
    shifted = nib.load(runs["int16"]).affine.copy()
    shifted[:3, 3] -= 2 * 3.0  # two voxels
    ours = resample_img(runs["int16"], shifted, target_shape=SHAPE, force_resample=False, copy_header=True)
    expected = _nilearn(nimage.resample_img, runs["int16"], shifted, target_shape=SHAPE, force_resample=False)
    np.testing.assert_allclose(ours.values, expected, rtol=1e-5, atol=1e-3)


def test_resample_img_without_target_returns_the_image(runs):
    image = open_nifti(runs["int16"])
    assert resample_img(image) is image


def test_building_computes_and_reads_nothing(runs):
    with raise_if_dask_computes(), count_voxel_reads() as reads:
        smooth_img(runs["int16"], 6)
        resample_img(runs["int16"], target_affine=np.diag([4.0, 4.0, 4.0]))
        mean_img(runs["int16"])
    assert reads.calls == 0


@pytest.mark.parametrize("chunks", [1, 4, -1])
def test_results_do_not_depend_on_chunks(runs, chunks):
    image = open_nifti(runs["nan"], chunks=chunks)
    reference = open_nifti(runs["nan"], chunks=3)
    for function in (lambda i: smooth_img(i, 4), lambda i: resample_img(i, np.diag([4.0, 4.0, 4.0])), mean_img):
        np.testing.assert_allclose(function(image).values, function(reference).values, rtol=1e-6)


def test_bad_parameters_name_the_parameter(runs):
    with pytest.raises(ParameterError, match="target_shape.*without target_affine"):
        resample_img(runs["int16"], target_shape=(3, 3, 3))
    with pytest.raises(ParameterError, match="interpolation='cubic'"):
        resample_img(runs["int16"], np.eye(4), interpolation="cubic")
    with pytest.raises(ParameterError, match="3x3 target_affine"):
        resample_img(runs["int16"], np.eye(3), target_shape=(3, 3, 3))
    with pytest.raises(ParameterError, match="fwhm='slow'"):
        smooth_img(runs["int16"], "slow")
    with pytest.raises(ParameterError, match=r"fwhm=-2: expected one or three non-negative numbers"):
        smooth_img(runs["int16"], -2)
    with pytest.raises(ParameterError, match=r"fwhm=\[1, 2\]: expected one or three"):
        smooth_img(runs["int16"], [1, 2])
    with pytest.raises(ParameterError, match=r"fwhm=\[1, 'a', 2\]: expected a number"):
        smooth_img(runs["int16"], [1, "a", 2])
    with pytest.warns(UserWarning, match="no smoothing is done"):
        smooth_img(runs["int16"], 0)


def test_five_dimensional_input_is_refused():
    image = nib.Nifti1Image(np.zeros((4, 4, 4, 2, 2), "float32"), np.eye(4))
    with pytest.raises(DimensionError, match="5D"):
        mean_img(image)


@settings(max_examples=25, deadline=None)
@given(
    n_volumes=st.integers(1, 12),
    chunk=st.integers(1, 12),
    dtype=st.sampled_from(["int16", "uint8", "float32", "float64"]),
    seed=st.integers(0, 2**16),
)
def test_lazy_mean_equals_numpy_mean_bit_for_bit(n_volumes, chunk, dtype, seed):
    import dask.array as da

    from lazymask.image._mean import lazy_time_mean

    rng = np.random.default_rng(seed)
    values = np.asfortranarray((rng.normal(100, 50, (3, 4, 5, n_volumes))).astype(dtype))
    ours = lazy_time_mean(da.from_array(values, chunks=(3, 4, 5, chunk))).compute()
    expected = values.mean(axis=-1)
    assert ours.dtype == expected.dtype
    np.testing.assert_array_equal(ours, expected)
