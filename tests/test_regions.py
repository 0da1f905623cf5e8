"""lazymask.regions against nilearn.regions 0.14 on generated data: numbers, dtypes, warnings, laziness."""

from __future__ import annotations

import warnings

import nibabel as nib
import nilearn.regions as nr
import numpy as np
import pytest
import xarray as xr

from lazymask import regions
from lazymask.exceptions import ImageMismatchError, ParameterError
from lazymask.testing import count_voxel_reads, fake_fmri, raise_if_dask_computes

SHAPE = (12, 14, 10)
RTOL, ATOL = 2e-5, 1e-4


@pytest.fixture(scope="module")
def run():
    return fake_fmri(SHAPE, 9, dtype="float32", seed=4)


@pytest.fixture(scope="module")
def labels_img(run):
    """Blocks of 4x4x4 voxels with labels 0-5 (0 is the background)."""
    blocks = np.random.default_rng(8).integers(0, 6, (3, 4, 3)).astype(np.int16)
    return nib.Nifti1Image(blocks.repeat(4, 0).repeat(4, 1).repeat(4, 2)[:12, :14, :10], run.affine)


@pytest.fixture(scope="module")
def mask_img(labels_img):
    values = np.asarray(labels_img.dataobj)
    mask = np.ones(SHAPE, np.int8)
    mask[values == 3] = 0  # label 3 is removed by the mask
    mask[:2] = 0
    return nib.Nifti1Image(mask, labels_img.affine)


@pytest.fixture(scope="module")
def maps_img(run):
    """4 overlapping Gaussian blobs (truncated at 10 % of their peak) and a map where the mask is 0."""
    centres = np.random.default_rng(2).integers(3, 9, (4, 3))
    voxels = np.stack(np.indices(SHAPE), axis=-1)[..., None, :]  # (i, j, k, 1, 3)
    blobs = np.exp(-((voxels - centres) ** 2).sum(axis=-1) / (2 * 1.5**2))
    blobs[blobs < 0.1] = 0
    outside = np.zeros((*SHAPE, 1))
    outside[:2] = 1.0  # map 4 lies where the mask is 0
    return nib.Nifti1Image(np.concatenate([blobs, outside], axis=-1).astype(np.float32), run.affine)


def close(ours, reference):
    np.testing.assert_allclose(np.asarray(ours), np.asarray(reference), rtol=RTOL, atol=ATOL)


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*zscore_sample.*")
        yield


# -- labels ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", regions.STRATEGIES)
def test_img_to_signals_labels_matches_nilearn(run, labels_img, strategy):
    signals, labels, atlas = regions.img_to_signals_labels(run, labels_img, strategy=strategy)
    expected, expected_labels, expected_atlas = nr.img_to_signals_labels(run, labels_img, strategy=strategy)
    assert isinstance(signals, xr.DataArray) and signals.dims == ("time", "region")
    assert signals.dtype == expected.dtype
    close(signals.values, expected)
    assert labels == [int(v) for v in expected_labels]
    assert signals["region"].values.tolist() == labels
    np.testing.assert_array_equal(atlas.values, expected_atlas.get_fdata())


def test_img_to_signals_labels_mask_warns_and_matches(run, labels_img, mask_img):
    with pytest.warns(UserWarning, match=r"the following labels were removed: \{3\}"):
        signals, labels, atlas = regions.img_to_signals_labels(run, labels_img, mask_img=mask_img)
    with pytest.warns(UserWarning):
        expected, expected_labels, expected_atlas = nr.img_to_signals_labels(run, labels_img, mask_img=mask_img)
    close(signals.values, expected)
    assert labels == [int(v) for v in expected_labels] and 3 not in labels
    np.testing.assert_array_equal(atlas.values, expected_atlas.get_fdata())


def test_img_to_signals_labels_keep_masked_labels(run, labels_img, mask_img):
    with pytest.warns(FutureWarning, match="keep_masked_labels"):
        signals, labels, _ = regions.img_to_signals_labels(run, labels_img, mask_img=mask_img,
                                                           keep_masked_labels=True)
    with pytest.warns(FutureWarning, match="keep_masked_labels"):
        expected, expected_labels, _ = nr.img_to_signals_labels(run, labels_img, mask_img=mask_img,
                                                                keep_masked_labels=True)
    assert labels == [int(v) for v in expected_labels] and 3 in labels
    close(signals.values, expected)
    assert np.all(signals.values[:, labels.index(3)] == 0)


def test_img_to_signals_labels_without_masked_atlas_warns(run, labels_img):
    with pytest.warns(FutureWarning, match="return_masked_atlas"):
        result = regions.img_to_signals_labels(run, labels_img, return_masked_atlas=False)
    with pytest.warns(FutureWarning, match="return_masked_atlas"):
        expected = nr.img_to_signals_labels(run, labels_img, return_masked_atlas=False)
    assert len(result) == len(expected) == 2
    close(result[0].values, expected[0])


@pytest.mark.parametrize("one_row", [False, True])
def test_signals_to_img_labels_matches_nilearn(labels_img, mask_img, one_row):
    n_regions = len(np.unique(np.asarray(labels_img.dataobj))) - 1
    signals = np.random.default_rng(0).standard_normal((4, n_regions)).astype(np.float32)
    signals = signals[0] if one_row else signals
    image = regions.signals_to_img_labels(signals, labels_img)
    expected = nr.signals_to_img_labels(signals, labels_img)
    assert image.dtype == np.asarray(expected.dataobj).dtype and image.shape == expected.shape
    close(image.values, expected.get_fdata())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        n_masked = n_regions - 1
        masked = regions.signals_to_img_labels(signals[..., :n_masked], labels_img, mask_img=mask_img)
        expected = nr.signals_to_img_labels(signals[..., :n_masked], labels_img, mask_img=mask_img)
    close(masked.values, expected.get_fdata())


# -- maps ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("use_mask", [False, True])
def test_img_to_signals_maps_matches_nilearn(run, maps_img, mask_img, use_mask):
    kwargs = {"mask_img": mask_img} if use_mask else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        signals, labels = regions.img_to_signals_maps(run, maps_img, **kwargs)
        expected, expected_labels = nr.img_to_signals_maps(run, maps_img, **kwargs)
    assert signals.dtype == expected.dtype and labels == list(expected_labels)
    assert (4 in labels) is not use_mask
    close(signals.values, expected)


def test_img_to_signals_maps_mask_warnings(run, maps_img, mask_img):
    with pytest.warns(UserWarning, match=r"maps with the following indices were removed: \{4\}"):
        regions.img_to_signals_maps(run, maps_img, mask_img=mask_img)
    with pytest.warns(FutureWarning, match="keep_masked_maps"):
        signals, labels = regions.img_to_signals_maps(run, maps_img, mask_img=mask_img, keep_masked_maps=True)
    with pytest.warns(FutureWarning, match="keep_masked_maps"):
        expected, expected_labels = nr.img_to_signals_maps(run, maps_img, mask_img=mask_img, keep_masked_maps=True)
    assert labels == list(expected_labels) == [0, 1, 2, 3, 4]
    close(signals.values, expected)


@pytest.mark.parametrize("use_mask", [False, True])
def test_signals_to_img_maps_matches_nilearn(maps_img, mask_img, use_mask):
    kwargs = {"mask_img": mask_img} if use_mask else {}
    signals = np.random.default_rng(1).standard_normal((3, 5))
    image = regions.signals_to_img_maps(signals, maps_img, **kwargs)
    expected = nr.signals_to_img_maps(signals, maps_img, **kwargs)
    assert image.dtype == np.asarray(expected.dataobj).dtype
    close(image.values, expected.get_fdata())


# -- laziness, grids, bad input ---------------------------------------------------------------------------
def test_results_are_lazy_and_read_no_voxel_of_imgs(tmp_path, run, labels_img, maps_img):
    path = tmp_path / "run.nii.gz"
    nib.save(run, path)
    # the spatial definitions (atlas, maps: small images) are read on the user's scheduler when the
    # functions are called, at most one compute per call; no voxel of imgs is read (counter)
    with count_voxel_reads() as counter, raise_if_dask_computes(max_computes=3):
        signals, _, _ = regions.img_to_signals_labels(str(path), labels_img, strategy="median")
        maps_signals, _ = regions.img_to_signals_maps(str(path), nib.Nifti1Image(maps_img.get_fdata(), run.affine))
        image = regions.signals_to_img_labels(signals, labels_img)
    assert counter.calls == 0
    assert all(hasattr(x.data, "dask") for x in (signals, maps_signals, image))
    close(image.values, nr.signals_to_img_labels(nr.img_to_signals_labels(run, labels_img, strategy="median")[0],
                                                 labels_img).get_fdata())


def test_grids_must_match_and_bad_input(run, labels_img, maps_img):
    shifted = nib.Nifti1Image(np.asarray(labels_img.dataobj), labels_img.affine @ np.diag([2, 2, 2, 1]))
    with pytest.raises(ImageMismatchError, match="labels_img has spatial shape .* but imgs has"):
        regions.img_to_signals_labels(run, shifted)
    with pytest.raises(ImageMismatchError, match="maps_img has spatial shape"):
        regions.img_to_signals_maps(run, nib.Nifti1Image(maps_img.get_fdata()[1:], run.affine))
    with pytest.raises(ParameterError, match="'strategy' must be one of .*\n'mode' was provided"):
        regions.img_to_signals_labels(run, labels_img, strategy="mode")
    with pytest.raises(ParameterError, match=r"signals has shape \(3, 2\): expected \(5,\)"):
        regions.signals_to_img_labels(np.zeros((3, 2)), labels_img)


def test_sphere_operator_averages_the_sphere():
    from lazymask.io import Grid

    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    membership = regions.sphere_membership([[4.0, 4.0, 4.0]], 2.0, (5, 5, 5), affine)
    operator = regions.sphere_operator([[4.0, 4.0, 4.0]], 2.0, Grid((5, 5, 5), affine))
    volume = np.random.default_rng(0).standard_normal((5, 5, 5, 2))
    members = membership.toarray()[0].reshape((5, 5, 5), order="F")
    assert members.sum() == 7  # the centre and its 6 neighbours at 2 mm
    np.testing.assert_allclose(operator(volume), volume[members].mean(axis=0)[:, None])  # (time, seed)


@pytest.mark.parametrize(("chunks", "scheduler"), [(1, "threads"), (4, "sync"), (9, "processes")])
def test_same_results_for_any_chunking_and_scheduler(run, labels_img, maps_img, chunks, scheduler):
    from lazymask.io import open_nifti

    image = open_nifti(run, chunks={"time": chunks})
    labels, _, _ = regions.img_to_signals_labels(image, labels_img, strategy="median")
    maps, _ = regions.img_to_signals_maps(image, maps_img)
    assert labels.data.chunks[0] == image.data.chunks[3]
    whole_labels, _, _ = regions.img_to_signals_labels(run, labels_img, strategy="median")
    whole_maps, _ = regions.img_to_signals_maps(run, maps_img)
    np.testing.assert_array_equal(labels.compute(scheduler=scheduler).values, whole_labels.values)
    np.testing.assert_array_equal(maps.compute(scheduler=scheduler).values, whole_maps.values)
    close(whole_maps.values, nr.img_to_signals_maps(run, maps_img)[0])


# -- maps on another grid: nilearn's linear resampling, each map on its box ----------------------------
def _blob_maps(shape, seed):
    """Local blobs (one touching a face of the grid), a dense map, an empty map; NaN and inf in one."""
    rng = np.random.default_rng(seed)
    voxels = np.stack(np.indices(shape), axis=-1)[..., None, :]
    centres = np.vstack([rng.uniform(2, np.asarray(shape) - 2, (3, 3)), [[0.0, shape[1] / 2, shape[2] / 2]]])
    blobs = np.exp(-((voxels - centres) ** 2).sum(axis=-1) / (2 * 1.7**2))
    blobs[blobs < 0.05] = 0
    dense = rng.random((*shape, 1))
    maps = np.concatenate([blobs, dense, np.zeros((*shape, 1))], axis=-1).astype(np.float32)
    maps[1, 1, 1, 0], maps[2, 1, 1, 0] = np.nan, np.inf
    return maps


@pytest.mark.parametrize("target", ["stride 2", "zoom 1.7, shifted", "oblique", "flipped axis", "partly outside",
                                    "upsampled 0.6"])
def test_resample_maps_matches_nilearn_linear_resampling(target):
    from nilearn.image import resample_img

    shape, source = (17, 19, 15), np.diag([1.0, 1.0, 1.0, 1.0])
    source[:3, 3] = [-8.0, -9.0, -7.0]
    maps = _blob_maps(shape, seed=12)
    angle = np.deg2rad(11.0)
    rotation = np.array([[np.cos(angle), 0, -np.sin(angle)], [0, 1, 0], [np.sin(angle), 0, np.cos(angle)]])
    linear = {"stride 2": np.diag([2.0, 2.0, 2.0]), "zoom 1.7, shifted": np.diag([1.7, 1.7, 1.7]),
              "oblique": 1.6 * rotation, "flipped axis": np.diag([-2.0, 2.0, 2.0]),
              "partly outside": np.diag([1.5, 1.5, 1.5]), "upsampled 0.6": np.diag([0.6, 0.6, 0.6])}[target]
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = {"stride 2": [-8.0, -9.0, -7.0], "zoom 1.7, shifted": [-8.3, -9.1, -6.6],
                     "oblique": [-9.0, -9.5, -7.5], "flipped axis": [8.0, -9.0, -7.0],
                     "partly outside": [-1.0, -12.0, -4.0], "upsampled 0.6": [-8.1, -9.2, -7.0]}[target]
    target_shape = (28, 31, 25) if target == "upsampled 0.6" else (9, 10, 8)
    cleaned = np.nan_to_num(maps, nan=0.0, posinf=0.0, neginf=0.0)  # nilearn's maskers: clean_img(ensure_finite)
    expected = resample_img(nib.Nifti1Image(cleaned, source), target_affine=affine, target_shape=target_shape,
                            interpolation="linear", force_resample=True, copy_header=True).get_fdata()
    image = xr.DataArray(maps, dims=("i", "j", "k", "time"), attrs={"affine": source.tolist()})
    with raise_if_dask_computes():
        lazy = regions.resample_maps(image.chunk({"time": 2}), affine, target_shape)
    ours = lazy.values
    assert ours.dtype == np.float32 and ours.shape == (*target_shape, maps.shape[3])
    assert np.abs(expected).sum(axis=(0, 1, 2))[-1] == 0 and np.abs(ours[..., -1]).sum() == 0
    np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(regions.resample_maps(image, affine, target_shape).values, ours)  # any chunking
