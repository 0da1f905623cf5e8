"""lazymask.image's nilearn functions: lazy at call time, same results as nilearn 0.14."""

import nibabel as nib
import numpy as np
import pytest
import xarray as xr

from lazymask import image
from lazymask.exceptions import DimensionError, ImageMismatchError, ParameterError
from lazymask.testing import count_voxel_reads, fake_fmri, raise_if_dask_computes

nilearn_image = pytest.importorskip("nilearn.image")
nilearn_masking = pytest.importorskip("nilearn.masking")


@pytest.fixture(scope="module")
def run():
    return fake_fmri(shape=(8, 9, 7), n_volumes=40, dtype="float32", seed=3)


@pytest.fixture(scope="module")
def run_path(run, tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "run.nii.gz"
    run.to_filename(path)
    return str(path)


@pytest.fixture(scope="module")
def stat_map():
    rng = np.random.default_rng(5)
    data = rng.normal(0, 2, (9, 8, 7)).astype(np.float32)
    data[2:5, 2:5, 2:5] += 6
    data[0, 0, 0] = np.nan
    return nib.Nifti1Image(data, np.diag([2.0, 2, 2, 1]))


def assert_image_equal(ours, theirs, rtol=1e-6, atol=0):
    assert isinstance(ours, xr.DataArray)
    theirs = nib.load(theirs) if isinstance(theirs, str) else theirs
    np.testing.assert_allclose(ours.nifti.affine, theirs.affine)
    expected = np.asanyarray(theirs.dataobj)
    computed = ours.values
    assert computed.shape == expected.shape
    assert computed.dtype == expected.dtype, (computed.dtype, expected.dtype)
    np.testing.assert_allclose(computed, expected, rtol=rtol, atol=atol)


@pytest.mark.parametrize("index", [3, -1, slice(2, 10), slice(None, None, 5), [0, 4, 4, 1],
                                   np.arange(40) % 3 == 0])
def test_index_img_equals_nilearn_and_reads_nothing(run_path, index):
    with raise_if_dask_computes(), count_voxel_reads() as reads:
        ours = image.index_img(run_path, index)
    assert reads.calls == 0
    assert_image_equal(ours, nilearn_image.index_img(run_path, index))


def test_index_img_pandas_index_and_errors(run):
    pd = pytest.importorskip("pandas")
    index = pd.Series([1, 2, 5])
    assert_image_equal(image.index_img(run, index), nilearn_image.index_img(run, index))
    with pytest.raises(IndexError, match="out of range for the 40 volumes"):
        image.index_img(run, 40)
    with pytest.raises(DimensionError, match="imgs is a 3D image"):
        image.index_img(image.index_img(run, 0), 0)


def test_iter_img_yields_lazy_volumes(run_path):
    with raise_if_dask_computes():
        volumes = list(image.iter_img(run_path))
    theirs = list(nilearn_image.iter_img(run_path))
    assert len(volumes) == len(theirs) == 40
    for ours, expected in zip(volumes[::7], theirs[::7], strict=True):
        assert_image_equal(ours, expected)


def test_concat_imgs_3d_and_4d_equal_nilearn(run_path, run):
    volumes = list(nilearn_image.iter_img(run))[:5]
    with raise_if_dask_computes():
        stacked = image.concat_imgs(volumes)
        joined = image.concat_imgs([run_path, run_path], dtype=None)
    assert_image_equal(stacked, nilearn_image.concat_imgs(volumes))
    assert_image_equal(joined, nilearn_image.concat_imgs([run_path, run_path], dtype=None))
    assert joined.chunks is not None and joined.sizes["time"] == 80


def test_concat_imgs_refuses_other_grids_unless_auto_resample(run):
    other = nib.Nifti1Image(np.ones((8, 9, 7), np.float32), np.diag([2.5, 2.5, 2.5, 1]))
    first = nilearn_image.index_img(run, 0)
    with pytest.raises(ImageMismatchError, match="auto_resample=True"):
        image.concat_imgs([first, other])
    with pytest.raises(DimensionError, match=r"niimgs\[1\] is 4D but niimgs\[0\] is 3D"):
        image.concat_imgs([first, run])
    ours = image.concat_imgs([first, other], auto_resample=True)
    theirs = nilearn_image.concat_imgs([first, other], auto_resample=True)
    assert_image_equal(ours, theirs, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("dtype", [None, "auto", np.float64])
def test_load_img_dtype_equals_nilearn(dtype):
    img = fake_fmri(shape=(5, 5, 5), n_volumes=4, dtype="int16")
    with raise_if_dask_computes():
        ours = image.load_img(img, dtype=dtype)
    assert_image_equal(ours, nilearn_image.load_img(img, dtype=dtype))


def test_new_img_like_equals_nilearn(run):
    ref = nilearn_image.index_img(run, 0)
    for data in (np.ones((8, 9, 7), bool), np.arange(504).reshape(8, 9, 7), np.zeros((8, 9, 7, 3), np.float32)):
        with pytest.warns(UserWarning) if data.dtype == np.int64 else _no_warning():
            ours = image.new_img_like(ref, data)
        assert_image_equal(ours, nilearn_image.new_img_like(ref, data))
    lazy = image.new_img_like(run, image.load_img(run).data * 2)
    assert lazy.nifti.t_r == 2.0 and lazy.chunks is not None


def _no_warning():
    import contextlib

    return contextlib.nullcontext()


@pytest.mark.parametrize("formula", ["img1 + 2 * img2", "np.mean(img1, axis=-1)", "img1 > 1000",
                                     "np.where(img2 > img1, img2, 0)"])
def test_math_img_is_lazy_and_equals_nilearn(run_path, formula):
    other = fake_fmri(shape=(8, 9, 7), n_volumes=40, dtype="float32", seed=4)
    with raise_if_dask_computes(), count_voxel_reads() as reads:
        ours = image.math_img(formula, img1=run_path, img2=other)
    assert reads.calls == 0
    assert_image_equal(ours, nilearn_image.math_img(formula, img1=run_path, img2=other), rtol=1e-5)


def test_math_img_errors_and_warnings(run, stat_map):
    with pytest.warns(UserWarning, match="not mentioned"):
        image.math_img("a * 2", a=run, b=run)
    with pytest.raises(ImageMismatchError):
        image.math_img("a + b", a=nilearn_image.index_img(run, 0), b=stat_map)
    with pytest.raises(ParameterError, match="copy_header_from='c'"):
        image.math_img("a", a=run, copy_header_from="c")


@pytest.mark.parametrize("kwargs", [
    {"threshold": 2.0},
    {"threshold": 2.0, "two_sided": False},
    {"threshold": -1.5, "two_sided": False},
    {"threshold": "80%"},
    {"threshold": "80%", "two_sided": False},
    {"threshold": 1.0, "cluster_threshold": 5},
    {"threshold": "50%", "cluster_threshold": 3, "use_mask": True},
])
def test_threshold_img_equals_nilearn(stat_map, kwargs):
    kwargs = dict(kwargs)
    if kwargs.pop("use_mask", False):
        mask = np.zeros((9, 8, 7), np.uint8)
        mask[1:7, 1:7, 1:6] = 1
        kwargs["mask_img"] = nib.Nifti1Image(mask, stat_map.affine)
    with raise_if_dask_computes():
        ours = image.threshold_img(stat_map, **kwargs)
    theirs = nilearn_image.threshold_img(stat_map, **kwargs)
    assert_image_equal(ours, theirs)


def test_threshold_img_4d_and_bad_thresholds(run):
    assert_image_equal(image.threshold_img(run, 1000.0), nilearn_image.threshold_img(run, 1000.0))
    with pytest.raises(ParameterError, match="negative value when two_sided=True"):
        image.threshold_img(run, -1.0)
    with pytest.raises(ParameterError, match="percent sign"):
        image.threshold_img(run, "90")


@pytest.mark.parametrize("kwargs", [
    {},
    {"detrend": False, "standardize": "zscore_sample"},
    {"standardize": False, "low_pass": 0.1, "high_pass": 0.01, "t_r": 2.0},
    {"use_mask": True},
    {"confounds": "random", "standardize": "zscore_sample"},
    {"clean__sample_mask": np.flatnonzero(np.arange(40) % 4 != 0), "standardize": False},  # nilearn: indices only
])
def test_clean_img_is_lazy_and_equals_nilearn(run_path, kwargs):
    kwargs = dict(kwargs)
    if isinstance(kwargs.get("confounds"), str):
        kwargs["confounds"] = np.random.default_rng(0).standard_normal((40, 3))
    use_mask = kwargs.pop("use_mask", False)
    if use_mask:
        kwargs["mask_img"] = nilearn_masking.compute_epi_mask(run_path)
    # a given mask (a small 3D image) is read on the user's scheduler when the graph is built (by the
    # masking and the unmasking step); the run's voxels are not (count_voxel_reads)
    with raise_if_dask_computes(max_computes=2 * int(use_mask)), count_voxel_reads() as reads:
        ours = image.clean_img(run_path, **kwargs)
    assert reads.calls == 0
    assert_image_equal(ours, nilearn_image.clean_img(run_path, **kwargs), rtol=1e-4, atol=1e-4)


def test_clean_img_requires_t_r_to_filter(run):
    with pytest.raises(ParameterError, match=r"t_r\) must be specified.*suggest it to be 2.0"):
        image.clean_img(run, low_pass=0.1)


@pytest.mark.parametrize("use_mask", [False, True])
def test_high_variance_confounds_equals_nilearn(run_path, use_mask):
    mask = nilearn_masking.compute_epi_mask(run_path) if use_mask else None
    with raise_if_dask_computes(max_computes=int(use_mask)):  # the given mask is read (small, 3D)
        ours = image.high_variance_confounds(run_path, n_confounds=3, percentile=5.0, mask_img=mask)
    theirs = nilearn_image.high_variance_confounds(run_path, n_confounds=3, percentile=5.0, mask_img=mask)
    computed = np.asarray(ours.compute() if hasattr(ours, "compute") else ours)
    assert computed.shape == theirs.shape
    # singular vectors: equal up to sign
    signs = np.sign((computed * theirs).sum(axis=0))
    np.testing.assert_allclose(computed * signs, theirs, rtol=1e-3, atol=1e-4)


# -- handing lazymask images to nilearn ------------------------------------------------------------
def test_to_nibabel_images_are_accepted_by_nilearn(run_path):
    import matplotlib

    matplotlib.use("Agg")
    import lazymask
    from lazymask.maskers import NiftiMasker

    nilearn_plotting = pytest.importorskip("nilearn.plotting")
    run = lazymask.open_nifti(run_path)
    masker = NiftiMasker(mask_strategy="epi").fit(run)
    mean = image.mean_img(run)
    mask_nib, mean_nib, run_nib = (lazymask.to_nibabel(x) for x in (masker.mask_img_, mean, run))
    assert isinstance(mask_nib, nib.Nifti1Image) and mask_nib.get_data_dtype() in (np.int8, np.uint8)
    display = nilearn_plotting.plot_roi(mask_nib, mean_nib, title="lazymask mask in nilearn")
    display.close()
    first = nilearn_image.index_img(run_nib, slice(0, 20))
    assert first.shape == (8, 9, 7, 20) and first.header.get_zooms()[3] == 2.0
    np.testing.assert_allclose(nilearn_image.mean_img(run_nib).get_fdata(), mean.values, rtol=1e-5)
    np.testing.assert_array_equal(masker.mask_img_.nifti.to_nibabel().get_fdata(), mask_nib.get_fdata())
    np.testing.assert_array_equal(nilearn_masking.compute_epi_mask(run_nib).get_fdata(), mask_nib.get_fdata())


def test_image_imports_no_higher_layer_and_lazymask_stays_light():
    import subprocess
    import sys

    code = ("import sys, lazymask, lazymask.image; "
            "loaded = [m for m in ('lazymask.signal', 'lazymask.masking', 'lazymask.maskers', 'sklearn', "
            "'matplotlib', 'lazymask.plotting') if m in sys.modules]; print(loaded)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("chunks", [1, 7, -1])
def test_results_do_not_depend_on_chunking(run_path, chunks):
    import lazymask

    run = lazymask.open_nifti(run_path, chunks=chunks)
    reference = lazymask.open_nifti(run_path)
    for function in (lambda img: image.clean_img(img, standardize="zscore_sample"),
                     lambda img: image.threshold_img(img, "90%", cluster_threshold=2),
                     lambda img: image.math_img("img - np.mean(img, axis=-1, keepdims=True)", img=img),
                     lambda img: image.concat_imgs([image.index_img(img, slice(0, 5)), img])):
        # float32 sums in another order: atol 1e-3 on values of ~1000
        np.testing.assert_allclose(function(run).values, function(reference).values, rtol=1e-5, atol=1e-3)


def test_clean_img_boolean_sample_mask_keeps_the_kept_volumes(run_path):
    """nilearn 0.14 crashes on a boolean ``clean__sample_mask`` (it reshapes to the mask's length)."""
    keep = np.arange(40) % 4 != 0
    ours = image.clean_img(run_path, standardize=False, clean__sample_mask=keep)
    theirs = nilearn_image.clean_img(run_path, standardize=False, clean__sample_mask=np.flatnonzero(keep))
    assert ours.shape == (8, 9, 7, 30)
    np.testing.assert_allclose(ours.values, theirs.get_fdata(), rtol=1e-4, atol=1e-4)
