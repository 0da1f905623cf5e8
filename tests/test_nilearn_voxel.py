"""Voxel masking where lazymask now does what nilearn does, compared with nilearn on the same inputs.

Images on another grid than the mask are resampled onto it (with nilearn's warning), runs of
different grids go to a MultiNiftiMasker given a mask, a confounds CSV written by
``DataFrame.to_csv()`` is read as nilearn reads it, and inputs nilearn refuses are refused.
"""

from __future__ import annotations

import warnings

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from nilearn import maskers as nilearn_maskers
from nilearn import signal as nilearn_signal

from lazymask import signal
from lazymask.exceptions import DimensionError, ParameterError
from lazymask.maskers import MultiNiftiMasker, NiftiMasker
from lazymask.nilearn import maskers as face_maskers

RESAMPLED = "imgs are being resampled to the mask_img resolution"


@pytest.fixture
def run():
    rng = np.random.default_rng(0)
    return nib.Nifti1Image(rng.random((7, 8, 9, 6)), np.eye(4))


def _nilearn(function):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return function()


@pytest.mark.parametrize("affine", [np.eye(4), np.diag((2.0, 2.0, 2.0, 1.0))])
def test_images_resampled_onto_a_mask_on_another_grid(run, affine):
    mask = np.zeros((12, 12, 12), np.uint8)
    mask[3:-3, 3:-3, 3:-3] = 1
    mask_img = nib.Nifti1Image(mask, affine)
    expected = _nilearn(lambda: nilearn_maskers.NiftiMasker(mask_img=mask_img).fit_transform(run))
    with pytest.warns(UserWarning, match=RESAMPLED):
        lazy = NiftiMasker(mask_img=mask_img).fit_transform(run)  # the graph: nothing computed yet
    np.testing.assert_allclose(lazy.values, expected, rtol=1e-5, atol=1e-6)
    with pytest.warns(UserWarning, match=RESAMPLED):
        eager = face_maskers.NiftiMasker(mask_img=mask_img).fit_transform(run)
    np.testing.assert_allclose(eager, expected, rtol=1e-5, atol=1e-6)


def test_multi_masker_runs_of_different_grids_with_a_mask():
    rng = np.random.default_rng(1)
    mask_img = nib.Nifti1Image(np.ones((2, 2, 2), np.int8), np.diag((4, 4, 4, 1)))
    runs = [nib.Nifti1Image(rng.random((4, 4, 4, 3)), np.diag((2, 2, 2, 1))),
            nib.Nifti1Image(rng.random((3, 3, 3, 3)), np.diag((3, 3, 3, 1)))]
    expected = _nilearn(lambda: nilearn_maskers.MultiNiftiMasker(mask_img=mask_img).fit_transform(runs))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        signals = MultiNiftiMasker(mask_img=mask_img).fit_transform(runs)
    for ours, theirs in zip(signals, expected, strict=True):
        np.testing.assert_allclose(ours.values, theirs, rtol=1e-5, atol=1e-6)


def test_confounds_csv_with_an_index_column(run, tmp_path):
    rng = np.random.default_rng(2)
    path = tmp_path / "confounds.csv"
    pd.DataFrame(rng.random((6, 2)), columns=["a", "b"]).to_csv(path)  # header ",a,b" and the index
    series = rng.random((6, 4))
    expected = nilearn_signal.clean(series, confounds=str(path), standardize="zscore_sample")
    np.testing.assert_allclose(signal.clean(series, confounds=str(path)), expected, rtol=1e-6, atol=1e-8)
    pd.DataFrame(rng.random((6, 2))).to_csv(path)  # header ",0,1": numbers after an empty field
    expected = nilearn_signal.clean(series, confounds=str(path), standardize="zscore_sample")
    np.testing.assert_allclose(signal.clean(series, confounds=str(path)), expected, rtol=1e-6, atol=1e-8)


def test_inputs_nilearn_refuses(run):
    mask_img = nib.Nifti1Image(np.ones((7, 8, 9), np.int8), np.eye(4))
    with pytest.raises(DimensionError, match="you provided a list of 4D images"):
        NiftiMasker(mask_img=mask_img).fit_transform([run, run])
    with pytest.raises(ParameterError, match=r"The length of the run vector \(5\) does not match"):
        NiftiMasker(mask_img=mask_img, runs=np.ones(5)).fit_transform(run).compute()
    with pytest.raises(ParameterError, match="Unknown value of mask_strategy 'oops'"):
        NiftiMasker(mask_strategy="oops").fit(run)


def test_inputs_nilearn_accepts(run):
    volumes = [nib.Nifti1Image(np.asarray(run.dataobj)[..., t : t + 1], np.eye(4)) for t in range(6)]
    mask = np.zeros((7, 8, 9, 1), np.int8)
    mask[2:5, 2:5, 2:5] = 1
    mask_4d = nib.Nifti1Image(mask, np.eye(4))  # one volume: a 3D mask to nilearn
    expected = _nilearn(lambda: nilearn_maskers.NiftiMasker(mask_img=mask_4d).fit_transform(volumes))
    ours = NiftiMasker(mask_img=mask_4d).fit_transform(volumes)
    np.testing.assert_allclose(ours.values, expected, rtol=1e-6)
    empty = _nilearn(lambda: nilearn_maskers.MultiNiftiMasker(mask_strategy="wm-template").fit([run, run]))
    fitted = MultiNiftiMasker(mask_strategy="wm-template").fit([run, run])  # an empty mask fits, as nilearn's
    assert fitted.n_elements_ == empty.n_elements_ == 0


def test_non_binary_and_4d_mask_img_read_as_nilearn_maskers_do(run):
    rng = np.random.default_rng(3)
    values = rng.random((7, 8, 9, 2))
    values[:2] = 0  # off in both volumes
    values[5:, ..., 1] = 0  # off in one volume
    for mask in (values[..., 0], values):  # any non-zero value inside; 4D: inside in every volume
        mask_img = nib.Nifti1Image(mask, np.eye(4))
        expected = _nilearn(lambda: nilearn_maskers.NiftiMasker(mask_img=mask_img).fit_transform(run))
        ours = NiftiMasker(mask_img=mask_img).fit_transform(run)
        np.testing.assert_allclose(ours.values, expected, rtol=1e-6)
        fitted = face_maskers.MultiNiftiMasker(mask_img=mask_img).fit()
        assert np.array_equal(np.asarray(fitted.mask_img_.dataobj),
                              _nilearn(lambda: nilearn_maskers.MultiNiftiMasker(mask_img=mask_img).fit()).mask_img_
                              .get_fdata())


def test_confounds_tsv_written_by_pandas_and_a_missing_file(run, tmp_path):
    rng = np.random.default_rng(4)
    path = tmp_path / "confounds.tsv"
    pd.DataFrame(rng.random((6, 2))).to_csv(path, sep="\t")  # header "\t0\t1": a leading tab
    series = rng.random((6, 4))
    expected = nilearn_signal.clean(series, confounds=str(path), standardize="zscore_sample")
    np.testing.assert_allclose(signal.clean(series, confounds=str(path)), expected, rtol=1e-6, atol=1e-8)
    with pytest.raises(FileNotFoundError):
        signal.clean(series, confounds=str(tmp_path / "missing.tsv"))


def test_multi_masker_refuses_confounds_not_in_a_list(run):
    for masker in (MultiNiftiMasker(), face_maskers.MultiNiftiLabelsMasker(
            nib.Nifti1Image(np.ones((7, 8, 9), np.int32), np.eye(4)))):
        masker.fit(run)
        for imgs in (run, [run, run]):
            with pytest.raises(TypeError, match=r"'confounds' must be a None or a list. Got int"):
                masker.transform(imgs, confounds=1)
            with pytest.raises(TypeError, match=r"'sample_mask' must be a None or a list. Got ndarray"):
                masker.transform(imgs, sample_mask=np.arange(3))


def test_high_variance_confounds_of_a_small_run_are_nilearns():
    """Fewer high-variance voxels than confounds: the extra confounds are nilearn's null-space basis."""
    from nilearn.image import high_variance_confounds as nilearn_image_hv

    rng = np.random.default_rng(5)
    img = nib.Nifti1Image(100 + 10 * rng.standard_normal((5, 5, 2, 40)), np.eye(4))
    confounds = rng.standard_normal((40, 3))
    mask_img = nib.Nifti1Image(np.ones((5, 5, 2), np.int8), np.eye(4))
    explicit = face_maskers.NiftiMasker(mask_img=mask_img).fit().transform(
        img, confounds=[nilearn_image_hv(img), confounds])
    built_in = face_maskers.NiftiMasker(mask_img=mask_img, high_variance_confounds=True).fit().transform(
        img, confounds=confounds)
    np.testing.assert_array_equal(built_in, explicit)
    expected = _nilearn(lambda: nilearn_maskers.NiftiMasker(mask_img=mask_img, high_variance_confounds=True)
                        .fit().transform(img, confounds=confounds))
    np.testing.assert_allclose(built_in, expected, rtol=1e-9, atol=1e-9)
