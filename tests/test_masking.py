"""lazymask.masking's mask computations against nilearn.masking, voxel for voxel."""

import warnings

import nibabel as nib
import numpy as np
import pytest
from nilearn import masking as nmasking

from lazymask.exceptions import DimensionError, ImageFileNotFoundError, ImageMismatchError, ParameterError
from lazymask.io import get_affine, open_nifti
from lazymask.masking import (
    compute_background_mask,
    compute_brain_mask,
    compute_epi_mask,
    compute_multi_background_mask,
    compute_multi_brain_mask,
    compute_multi_epi_mask,
    intersect_masks,
)
from lazymask.testing import count_voxel_reads, fake_fmri, raise_if_dask_computes

SHAPE = (20, 24, 20)
KINDS = {  # name: (dtype, background)
    "int16-noisy": ("int16", "noisy"),
    "float32-noisy": ("float32", "noisy"),
    "float32-zero": ("float32", "zero"),
    "float32-nan": ("float32", "nan"),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One .nii.gz file per kind of run, plus three subjects (different brains) per kind."""
    folder = tmp_path_factory.mktemp("masking")
    paths = {}
    for name, (dtype, background) in KINDS.items():
        for seed in range(3):
            path = folder / f"{name}-{seed}.nii.gz"
            nib.save(fake_fmri(SHAPE, 12, dtype=dtype, background=background, seed=seed), path)
            paths[name, seed] = str(path)
    return paths


def _ref(function, *args, **kwargs) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asanyarray(function(*args, **kwargs).dataobj)


def _same(ours, expected, trivial_ok=False):
    expected = np.asarray(expected)
    assert ours.shape == expected.shape
    assert ours.dtype == np.int8
    mismatches = int((np.asarray(ours) != expected).sum())
    assert mismatches == 0, f"{mismatches} voxels differ from nilearn"
    if not trivial_ok:
        assert 0 < int(ours.sum()) < ours.size  # a real mask, not a trivial one


def _quiet(function, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return function(*args, **kwargs)


EPI_PARAMS = [
    {},
    dict(lower_cutoff=0.1, upper_cutoff=0.95),
    dict(lower_cutoff=0.4, upper_cutoff=0.7),
    dict(opening=0),
    dict(opening=1),
    dict(opening=10),
    dict(opening=False, connected=False),
    dict(exclude_zeros=True),
    dict(ensure_finite=False, opening=False),
    dict(target_affine=np.diag([4.0, 4.0, 4.0])),
    dict(target_affine=np.diag([3.5, 3.5, 3.5, 1.0]), target_shape=(15, 18, 16)),
]


@pytest.mark.parametrize("params", EPI_PARAMS, ids=lambda p: ",".join(p) or "defaults")
@pytest.mark.parametrize("kind", list(KINDS))
def test_compute_epi_mask_matches_nilearn(runs, kind, params):
    path = runs[kind, 0]
    ours = _quiet(compute_epi_mask, path, **params)
    # Empty masks, as nilearn's: opening=10 erodes these small brains away; NaNs kept in the mean
    # (ensure_finite=False) make the histogram's widest gap NaN.
    trivial = params.get("opening") == 10 or (kind == "float32-nan" and params.get("ensure_finite") is False)
    _same(ours, _ref(nmasking.compute_epi_mask, path, **params), trivial_ok=trivial)
    expected_affine = nib.load(path).affine if "target_affine" not in params else None
    if expected_affine is not None:
        np.testing.assert_allclose(get_affine(ours), expected_affine)


BACKGROUND_PARAMS = [
    {},
    dict(border_size=1),
    dict(border_size=4),
    dict(connected=True),
    dict(opening=1),
    dict(opening=2, connected=True),
    dict(target_affine=np.diag([4.0, 4.0, 4.0])),
]


@pytest.mark.parametrize("params", BACKGROUND_PARAMS, ids=lambda p: ",".join(p) or "defaults")
@pytest.mark.parametrize("kind", list(KINDS))
def test_compute_background_mask_matches_nilearn(runs, kind, params):
    path = runs[kind, 0]
    # a noisy background differs from its median almost everywhere: a (nearly) full mask, as nilearn's
    _same(_quiet(compute_background_mask, path, **params), _ref(nmasking.compute_background_mask, path, **params),
          trivial_ok="noisy" in kind)


@pytest.mark.parametrize("params", [{}, dict(threshold=0), dict(threshold=1), dict(opening=1, connected=False),
                                    dict(target_affine=np.diag([4.0, 4.0, 4.0]))],
                         ids=lambda p: ",".join(f"{k}={v}" for k, v in p.items() if k != "target_affine") or str(list(p)))
@pytest.mark.parametrize("kind", ["int16-noisy", "float32-nan"])
def test_multi_masks_match_nilearn_on_subjects_with_different_brains(runs, kind, params):
    paths = [runs[kind, seed] for seed in range(3)]
    _same(_quiet(compute_multi_epi_mask, paths, **params), _ref(nmasking.compute_multi_epi_mask, paths, **params))
    _same(_quiet(compute_multi_background_mask, paths, **params),
          _ref(nmasking.compute_multi_background_mask, paths, **params))


def test_multi_epi_mask_of_in_memory_images_and_n_jobs(runs):
    images = [nib.load(runs["float32-zero", seed]) for seed in range(2)]
    ours = compute_multi_epi_mask(images, n_jobs=2, exclude_zeros=True)
    _same(ours, _ref(nmasking.compute_multi_epi_mask, images, exclude_zeros=True))


@pytest.mark.parametrize("mask_type", ["whole-brain", "gm", "wm"])
def test_compute_brain_mask_matches_nilearn_for_each_template(runs, mask_type):
    path = runs["int16-noisy", 0]
    for params in ({}, dict(threshold=0.3, opening=1)):
        _same(compute_brain_mask(path, mask_type=mask_type, **params),
              _ref(nmasking.compute_brain_mask, path, mask_type=mask_type, **params))


def test_compute_brain_mask_reads_no_voxel_and_multi_matches(runs):
    paths = [runs["float32-noisy", seed] for seed in range(2)]
    with raise_if_dask_computes(), count_voxel_reads() as reads:
        ours = compute_multi_brain_mask(paths, threshold=0.2)
    assert reads.calls == 0
    _same(ours, _ref(nmasking.compute_multi_brain_mask, paths, threshold=0.2))


def test_template_from_a_path_and_missing_nilearn(runs, monkeypatch, tmp_path):
    template = tmp_path / "template.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((20, 24, 20), "float32"), nib.load(runs["int16-noisy", 0]).affine), template)
    assert int(compute_brain_mask(runs["int16-noisy", 0], template=template, opening=False).sum()) == 20 * 24 * 20
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ImageFileNotFoundError, match=r'pip install "lazymask\[templates\]".*template='):
        compute_brain_mask(runs["int16-noisy", 0])
    with pytest.raises(ParameterError, match="mask_type='grey'"):
        compute_brain_mask(runs["int16-noisy", 0], mask_type="grey")


@pytest.mark.parametrize("threshold", [0, 0.5, 1])
@pytest.mark.parametrize("connected", [True, False])
def test_intersect_masks_matches_nilearn(runs, threshold, connected):
    masks = [_quiet(nmasking.compute_epi_mask, runs["int16-noisy", seed], opening=False, connected=False)
             for seed in range(3)]
    _same(intersect_masks(masks, threshold=threshold, connected=connected),
          _ref(nmasking.intersect_masks, masks, threshold=threshold, connected=connected))


def test_compute_epi_mask_computes_once_and_is_chunk_invariant(runs):
    path = runs["float32-nan", 0]
    expected = _ref(nmasking.compute_epi_mask, path)
    for chunks in (1, 5, -1):
        image = open_nifti(path, chunks=chunks)
        with raise_if_dask_computes(max_computes=1) as scheduler:
            mask = compute_epi_mask(image)
        assert scheduler.total_computes == 1
        _same(mask, expected)


def test_multi_mask_computes_every_mean_in_one_compute(runs):
    paths = [runs["int16-noisy", seed] for seed in range(3)]
    with raise_if_dask_computes(max_computes=1), count_voxel_reads() as reads:
        compute_multi_epi_mask(paths)
    assert reads.volumes == 3 * 12  # each volume of each run read once


def test_memory_caches_on_the_input_identity(runs, tmp_path):
    path = runs["int16-noisy", 1]
    first = compute_epi_mask(path, memory=tmp_path)
    with raise_if_dask_computes(max_computes=0):
        again = compute_epi_mask(path, memory=str(tmp_path))
    np.testing.assert_array_equal(first.values, again.values)
    assert len(list((tmp_path / "lazymask_masking").glob("*.npz"))) == 1
    compute_epi_mask(path, memory=tmp_path, opening=1)  # other parameters: another entry
    assert len(list((tmp_path / "lazymask_masking").glob("*.npz"))) == 2


def test_bad_input_errors_name_the_parameter(runs):
    path = runs["int16-noisy", 0]
    affine = nib.load(path).affine
    with pytest.raises(ParameterError, match="target_shape.*without target_affine"):
        compute_epi_mask(path, target_shape=(10, 10, 10))
    with pytest.raises(DimensionError, match="5D"):
        compute_epi_mask(nib.Nifti1Image(np.zeros((4, 4, 4, 2, 2), "float32"), np.eye(4)))
    binary = nib.Nifti1Image(np.ones(SHAPE, "int8"), affine)
    other_shape = nib.Nifti1Image(np.ones((5, 5, 5), "int8"), affine)
    with pytest.raises(ImageMismatchError, match=r"mask_imgs\[1\] has spatial shape"):
        intersect_masks([binary, other_shape])
    with pytest.raises(ParameterError, match=r"Given mask is not made of 2 values: mask_imgs\[0\] holds"):
        intersect_masks([nib.Nifti1Image(np.arange(20 * 24 * 20).reshape(SHAPE).astype("int16"), affine), binary])
    with pytest.raises(ParameterError, match="threshold=1.5"):
        intersect_masks([binary], threshold=1.5)
    with pytest.raises(ParameterError, match="lower_cutoff=0.9, upper_cutoff=0.2"):
        compute_epi_mask(path, lower_cutoff=0.9, upper_cutoff=0.2)
    with pytest.raises(ParameterError, match="epi_imgs is an empty list"):
        compute_multi_epi_mask([])
    with pytest.raises(ParameterError, match="border_size=0"):
        compute_background_mask(path, border_size=0)


def test_empty_mask_warns_like_nilearn():
    flat = nib.Nifti1Image(np.ones((8, 8, 8, 3), "float32"), np.eye(4))
    from lazymask.masking import MaskWarning

    with pytest.warns(MaskWarning, match="empty mask"):
        mask = compute_background_mask(flat)
    assert int(mask.sum()) == 0


@pytest.mark.parametrize("scheduler", ["sync", "threads", "processes"])
def test_masks_do_not_depend_on_the_scheduler(runs, scheduler):
    import dask

    paths = [runs["float32-nan", seed] for seed in range(2)]
    with dask.config.set(scheduler=scheduler):
        ours = compute_multi_epi_mask(paths)
    _same(ours, _ref(nmasking.compute_multi_epi_mask, paths))


@pytest.mark.parametrize("shape", [(12, 9, 7), (1, 8, 6), (5, 2, 9), (6, 7)])
@pytest.mark.parametrize("density", [0.3, 0.7, 0.95])
def test_erosion_and_dilation_are_scipys(shape, density):
    """The masks' morphology (shifted copies of the whole array) is scipy.ndimage's, voxel for voxel:
    face neighbours, nothing outside the volume, any number of iterations, axes of length 1 or 2."""
    from scipy import ndimage

    from lazymask.masking._compute import binary_dilation, binary_erosion

    mask = np.random.default_rng(len(shape) * 10 + int(density * 10)).random(shape) < density
    for iterations in (1, 2, 4):
        np.testing.assert_array_equal(binary_erosion(mask, iterations), ndimage.binary_erosion(mask, iterations=iterations))
        np.testing.assert_array_equal(binary_dilation(mask, iterations), ndimage.binary_dilation(mask, iterations=iterations))
    assert binary_erosion(mask, 1).dtype == bool and binary_erosion(mask, 1) is not mask


@pytest.mark.parametrize("opening", [0, 1, 2, 3])
@pytest.mark.parametrize("seed", range(6))
def test_mask_morphology_on_the_bounding_box_is_the_whole_volumes(opening, seed):
    """post_process_mask works on the mask's grown bounding box: same mask as on the whole volume,
    for blobs in the middle, against an edge and scattered."""
    from lazymask.masking._compute import _post_process, post_process_mask

    rng = np.random.default_rng(seed)
    shape = (30, 34, 28)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"))
    centre = rng.uniform(0, 1, 3) * np.array(shape)
    if seed % 3 == 0:
        centre[seed % 2] = 0  # against an edge of the volume
    radius = rng.uniform(4, 9)
    mask = ((grid - centre[:, None, None, None]) ** 2).sum(0) < radius**2
    mask |= rng.random(shape) < (0.002 if seed % 2 else 0.0)  # a few isolated voxels
    for connected in (True, False):
        np.testing.assert_array_equal(post_process_mask(mask, opening, connected),
                                      _post_process(mask.copy(), opening, connected, ""))
