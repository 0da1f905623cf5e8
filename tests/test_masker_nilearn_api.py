"""Generic masker behaviour shared with nilearn 0.14: methods, verbose messages, report options, dtypes."""

from __future__ import annotations

import warnings

import nibabel as nib
import numpy as np
import pytest

from lazymask.exceptions import ParameterError, ParameterTypeError
from lazymask.maskers import MultiNiftiMasker, NiftiMapsMasker, NiftiMasker, NiftiSpheresMasker

AFFINE = np.eye(4)


@pytest.fixture
def run():
    return nib.Nifti1Image(np.random.default_rng(0).random((6, 7, 8, 5)).astype("float32"), AFFINE)


@pytest.fixture
def mask():
    data = np.zeros((6, 7, 8), "int8")
    data[1:-1, 1:-1, 1:-1] = 1
    return nib.Nifti1Image(data, AFFINE)


def test_transform_single_imgs_and_transform_imgs_equal_transform(run, mask):
    masker = NiftiMasker(mask_img=mask).fit()
    np.testing.assert_array_equal(masker.transform_single_imgs(run).values, masker.transform(run).values)
    multi = MultiNiftiMasker(mask_img=mask).fit()
    single, = multi.transform_imgs([run])
    np.testing.assert_array_equal(single.values, masker.transform(run).values)


def test_verbose_messages_are_nilearn_s(run, mask, capsys):
    masker = NiftiMasker(verbose=1).fit(run)
    fitted = capsys.readouterr().out
    assert "[NiftiMasker.fit] Loading data from" in fitted
    assert fitted.count("Computing mask") == 1 and fitted.count("Finished fit") == 1
    signals = masker.transform(run)
    assert capsys.readouterr().out.count("Extracting region signals") == 1
    masker.inverse_transform(signals)
    assert "Computing image from signals" in capsys.readouterr().out
    NiftiMasker(mask_img=mask).fit(run).transform(run)
    assert capsys.readouterr().out == ""


def test_inverse_transform_dtype_and_shape_errors_match_nilearn(mask):
    from nilearn.maskers import NiftiMasker as NilearnMasker

    ours, theirs = NiftiMasker(mask_img=mask).fit(), NilearnMasker(mask_img=mask).fit()
    for dtype in (np.float32, np.float64, np.int32):
        signals = np.arange(2 * ours.n_elements_).reshape(2, -1).astype(dtype)
        expected = theirs.inverse_transform(signals)
        got = ours.inverse_transform(signals)
        assert got.dtype == expected.get_data_dtype() == dtype
        np.testing.assert_array_equal(got.values, expected.get_fdata())
    with pytest.raises(ParameterError, match="Input to 'inverse_transform' has wrong shape"):
        ours.inverse_transform(np.zeros((1, ours.n_elements_ + 1)))
    with pytest.warns(UserWarning, match="Casting boolean input to int32"):
        assert ours.inverse_transform(np.ones(ours.n_elements_, bool)).dtype == np.int32


def test_dtype_accepts_numpy_type_codes_and_refuses_bool(run, mask):
    assert NiftiMasker(mask_img=mask, dtype="i4").fit().transform(run).dtype == np.int32
    with pytest.raises(TypeError, match="'dtype' cannot be bool"):
        NiftiMasker(mask_img=mask, dtype=bool).fit()


def test_messages_of_empty_inputs(mask):
    with pytest.raises(ValueError, match="Parameter 'imgs' must be provided to NiftiMasker.fit"):
        NiftiMasker().fit()
    empty_mask = nib.Nifti1Image(np.zeros((6, 7, 8), "int8"), AFFINE)
    with pytest.raises(ValueError, match="The mask is invalid as it is empty: it masks all data"):
        NiftiMasker(mask_img=empty_mask).fit()
    with pytest.raises(ValueError, match="The image is empty"):
        NiftiMasker().fit(nib.Nifti1Image(np.zeros((4, 4, 0)), AFFINE))
    non_finite = np.ones((6, 7, 8))
    non_finite[0] = np.nan
    with pytest.warns(UserWarning, match="Non-finite values detected"):
        NiftiMasker(mask_img=nib.Nifti1Image(non_finite, AFFINE)).fit()
    with pytest.raises(TypeError):
        NiftiMasker().fit(object())


def test_report_displayed_maps_and_spheres(run):
    maps = nib.Nifti1Image(np.random.default_rng(1).random((6, 7, 8, 3)), AFFINE)
    masker = NiftiMapsMasker(maps_img=maps).fit(run)
    assert masker.generate_report(title="Maps", displayed_maps=[0, 2]).title == "Maps"
    with pytest.raises(ParameterTypeError, match="should be either 'all' or a positive 'int'"):
        masker.generate_report(displayed_maps=[1.5])
    with pytest.warns(UserWarning, match="was set to 3"):
        masker.generate_report(displayed_maps=5)
    with pytest.warns(UserWarning, match=r"Report cannot display the following map\(s\) \[7\]"):
        masker.generate_report(displayed_maps=[0, 7])
    with pytest.raises(ParameterError, match="unexpected argument"):
        masker.generate_report(displayed_spheres=2)
    spheres = NiftiSpheresMasker(seeds=[(1, 1, 1), (3, 3, 3)]).fit()  # no image at all: nilearn's warning
    with pytest.warns(UserWarning, match="No image provided to fit in NiftiSpheresMasker") as caught:
        report = spheres.generate_report(displayed_spheres="all")
    assert report.title == "NiftiSpheresMasker" and len(caught) == 1
    assert 'id="warnings"' in str(report) and len(report.figures) == 3  # all spheres, then each
