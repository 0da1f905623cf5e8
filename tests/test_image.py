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


@pytest.mark.parametrize("fwhm", [None, 5, [3, 0, 6], "fast"])
@pytest.mark.parametrize("kind", ["int16", "nan"])
def test_smooth_img_matches_nilearn(runs, kind, fwhm):
    ours = smooth_img(open_nifti(runs[kind], chunks=4), fwhm)
    expected = _nilearn(nimage.smooth_img, runs[kind], fwhm)
    assert ours.dtype == expected.dtype
    np.testing.assert_allclose(ours.values, expected, rtol=1e-5, atol=1e-3)


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
