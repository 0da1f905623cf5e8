"""scikit-learn's estimator checks on every masker, and their image-based counterparts.

scikit-learn's checks feed 2D numeric arrays to ``fit``; a masker's ``fit`` takes images, so the
checks that fit on such arrays cannot apply (``INAPPLICABLE`` lists each with its reason). What
they verify is checked below on images instead: ``fit`` returns self and leaves the parameters
alone, ``transform``/``inverse_transform``/``generate_report`` change nothing on the masker, a
pickled fitted masker transforms the same, a second ``fit`` gives the same result, and the
errors are scikit-learn's (``InvalidParameterError``, ``NotFittedError``) as well as lazymask's.
"""

import copy
import pickle
import warnings

import dask.array as da
import nibabel as nib
import numpy as np
import pytest
import sklearn.exceptions
import xarray as xr
from sklearn.base import clone
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import check_param_validation, parametrize_with_checks

from lazymask import exceptions
from lazymask.maskers import (
    MultiNiftiLabelsMasker,
    MultiNiftiMapsMasker,
    MultiNiftiMasker,
    NiftiLabelsMasker,
    NiftiMapsMasker,
    NiftiMasker,
    NiftiSpheresMasker,
)
from lazymask.testing import fake_fmri

SHAPE = (8, 9, 8)
AFFINE = np.array([[3.0, 0, 0, -10.5], [0, 3.0, 0, -12.0], [0, 0, 3.0, -10.5], [0, 0, 0, 1]])  # fake_fmri's


def _atlas() -> nib.Nifti1Image:
    values = np.zeros(SHAPE, dtype=np.int16)
    values[1:4, 1:8, 1:7], values[4:7, 1:8, 1:7] = 1, 2
    return nib.Nifti1Image(values, AFFINE)


def _maps() -> nib.Nifti1Image:
    maps = np.zeros((*SHAPE, 2), dtype=np.float32)
    maps[1:4, 1:8, 1:7, 0] = np.linspace(0.5, 1, 3)[:, None, None]
    maps[4:7, 1:8, 1:7, 1] = 1.0
    return nib.Nifti1Image(maps, AFFINE)


def maskers() -> list:
    """One instance of every masker, with the spatial definition it needs."""
    atlas, maps = _atlas(), _maps()
    return [
        NiftiMasker(),
        MultiNiftiMasker(),
        NiftiLabelsMasker(labels_img=atlas),
        MultiNiftiLabelsMasker(labels_img=atlas),
        NiftiMapsMasker(maps_img=maps),
        MultiNiftiMapsMasker(maps_img=maps),
        NiftiSpheresMasker(seeds=[(-4.5, 0.0, -1.5), (4.5, 0.0, -1.5)], radius=4.0),
    ]


_FITS_ON_ARRAYS = "fits on a 2D numeric array; a masker's fit takes images (checked on images in this module)"
#: scikit-learn checks that cannot apply to a masker, and why.
INAPPLICABLE = {
    "check_fit_score_takes_y": _FITS_ON_ARRAYS,
    "check_estimators_overwrite_params": _FITS_ON_ARRAYS + ": test_fit_returns_self_and_keeps_parameters",
    "check_dont_overwrite_parameters": _FITS_ON_ARRAYS + ": test_fit_returns_self_and_keeps_parameters",
    "check_estimators_fit_returns_self": _FITS_ON_ARRAYS + ": test_fit_returns_self_and_keeps_parameters",
    "check_readonly_memmap_input": "fits on a read-only memmap array; images are opened lazily (read-only) anyway",
    "check_n_features_in_after_fitting": "n_features_in_ has no meaning for images: the fitted count is n_elements_",
    "check_n_features_in": "n_features_in_ has no meaning for images: the fitted count is n_elements_",
    "check_positive_only_tag_during_fit": _FITS_ON_ARRAYS,
    "check_estimators_dtypes": _FITS_ON_ARRAYS + " of several dtypes (image dtypes: tests/test_maskers.py)",
    "check_complex_data": _FITS_ON_ARRAYS + " of complex numbers",
    "check_dtype_object": _FITS_ON_ARRAYS + " of objects",
    "check_estimators_empty_data_messages": _FITS_ON_ARRAYS + " with no sample",
    "check_pipeline_consistency": _FITS_ON_ARRAYS + " (a masker in a Pipeline: tests/test_maskers.py)",
    "check_estimators_nan_inf": _FITS_ON_ARRAYS + " holding NaN (non-finite voxels are read as 0, as nilearn)",
    "check_estimator_sparse_tag": "fits on a sparse matrix; images are dense volumes",
    "check_estimator_sparse_array": "fits on a sparse array; images are dense volumes",
    "check_estimator_sparse_matrix": "fits on a sparse matrix; images are dense volumes",
    "check_estimators_pickle": _FITS_ON_ARRAYS + ": test_pickled_masker_transforms_the_same",
    "check_f_contiguous_array_estimator": _FITS_ON_ARRAYS + " in Fortran order",
    "check_transformer_data_not_an_array": _FITS_ON_ARRAYS + "-like; images are paths, nibabel images or DataArrays",
    "check_transformer_general": _FITS_ON_ARRAYS + "; transform returns a lazy DataArray",
    "check_transformer_preserve_dtypes": _FITS_ON_ARRAYS + " (the dtype rule is nilearn's: tests/test_maskers.py)",
    "check_methods_sample_order_invariance": _FITS_ON_ARRAYS + "; the samples of a run are its volumes",
    "check_methods_subset_invariance": _FITS_ON_ARRAYS + "; the samples of a run are its volumes",
    "check_fit2d_1sample": _FITS_ON_ARRAYS + " with one sample",
    "check_fit2d_1feature": _FITS_ON_ARRAYS + " with one feature",
    "check_dict_unchanged": _FITS_ON_ARRAYS + ": test_transform_changes_nothing_on_the_masker",
    "check_fit_idempotent": _FITS_ON_ARRAYS + ": test_fit_is_idempotent",
    "check_fit_check_is_fitted": _FITS_ON_ARRAYS + ": test_errors_are_scikit_learn_and_lazymask_errors",
    "check_fit2d_predict1d": _FITS_ON_ARRAYS + "; a masker has no predict",
}


@parametrize_with_checks(maskers(), expected_failed_checks=lambda estimator: INAPPLICABLE)
def test_scikit_learn_estimator_checks(estimator, check):
    name = getattr(check, "func", check).__name__
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if name not in INAPPLICABLE:
            check(estimator)
            return
        try:
            check(estimator)
        except Exception as error:  # expected (xfail): re-raised short, pytest formats no sklearn frames
            raise AssertionError(f"{name} does not apply ({type(error).__name__}: {error})") from None


@pytest.mark.parametrize("masker", maskers(), ids=lambda m: type(m).__name__)
def test_parameter_constraints_are_scikit_learns(masker):
    # every parameter is declared, and an invalid one fails fit with scikit-learn's message
    check_param_validation(type(masker).__name__, masker)


# -- the same properties, on images --------------------------------------------------------------------
@pytest.fixture(scope="module")
def run():
    img = fake_fmri(SHAPE, 10, voxel_size=3.0, dtype="float32", seed=2)
    assert np.allclose(img.affine, AFFINE)
    return img


def _fit_input(masker, run):
    return [run, run] if type(masker).__name__.startswith("Multi") else run


def _snapshot(masker) -> dict:
    return {name: copy.copy(value) for name, value in vars(masker).items()}


def _assert_same_state(before: dict, masker) -> None:
    """Deep equality of ``vars(masker)`` with a snapshot (arrays and DataArrays by value)."""
    after = vars(masker)
    assert after.keys() == before.keys()
    for name, value in before.items():
        _assert_equal(value, after[name], name)


def _assert_equal(a, b, name) -> None:
    if isinstance(a, xr.DataArray):
        assert isinstance(b, xr.DataArray) and a.dims == b.dims, name
        if isinstance(a.data, da.Array):
            assert isinstance(b.data, da.Array) and a.data.name == b.data.name, name  # the same graph
        else:
            xr.testing.assert_identical(a, b)
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b, err_msg=name)
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), name
        for key in a:
            _assert_equal(a[key], b[key], f"{name}[{key!r}]")
    elif hasattr(a, "equals"):
        assert a.equals(b), name
    elif hasattr(a, "dataobj") and hasattr(a, "affine"):  # a nibabel image (copy.copy makes a new one)
        np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj), err_msg=name)
        np.testing.assert_array_equal(a.affine, b.affine, err_msg=name)
    else:
        assert a is b or a == b, name


@pytest.mark.parametrize("masker", maskers()[:2], ids=lambda m: type(m).__name__)
def test_transform_changes_nothing_on_the_masker(masker, run):
    masker.fit(_fit_input(masker, run))
    before = _snapshot(masker)
    signals = masker.transform(_fit_input(masker, run))
    _assert_same_state(before, masker)
    if not (hasattr(masker, "seeds_") and masker.mask_img_ is None):  # spheres invert onto a mask's grid only
        masker.inverse_transform(signals[0] if isinstance(signals, list) else signals)
        _assert_same_state(before, masker)
    masker.generate_report()
    # generate_report records the last report (title, warnings) in the private report state, as
    # nilearn's _report_content; nothing else changes
    before.pop("_report_state", None)
    state = masker.__dict__.pop("_report_state", None)
    _assert_same_state(before, masker)
    masker.__dict__["_report_state"] = state


@pytest.mark.parametrize("masker", maskers()[2:], ids=lambda m: type(m).__name__)
def test_region_transform_changes_nothing_on_the_masker(masker, run):
    test_transform_changes_nothing_on_the_masker(masker, run)


@pytest.mark.parametrize("masker", maskers(), ids=lambda m: type(m).__name__)
def test_fit_returns_self_and_keeps_parameters(masker, run):
    params = masker.get_params(deep=False)
    public_before = {name for name in vars(masker) if not name.startswith("_")}
    assert masker.fit(_fit_input(masker, run)) is masker
    assert all(masker.get_params(deep=False)[name] is value for name, value in params.items())
    added = {name for name in vars(masker) if not name.startswith("_")} - public_before
    assert added and all(name.endswith("_") for name in added)  # fit adds fitted attributes only


@pytest.mark.parametrize("masker", maskers(), ids=lambda m: type(m).__name__)
def test_pickled_masker_transforms_the_same(masker, run):
    masker.fit(_fit_input(masker, run))
    expected = masker.transform(run)
    restored = pickle.loads(pickle.dumps(masker))
    np.testing.assert_array_equal(restored.transform(run).values, expected.values)


@pytest.mark.parametrize("masker", maskers(), ids=lambda m: type(m).__name__)
def test_fit_is_idempotent(masker, run):
    first = clone(masker).fit(_fit_input(masker, run)).transform(run).values
    refitted = masker.fit(_fit_input(masker, run)).fit(_fit_input(masker, run))
    np.testing.assert_array_equal(refitted.transform(run).values, first)


@pytest.mark.parametrize("masker", maskers(), ids=lambda m: type(m).__name__)
def test_errors_are_scikit_learn_and_lazymask_errors(masker, run):
    for error in (exceptions.NotFittedError, sklearn.exceptions.NotFittedError):
        with pytest.raises(error, match=f"This {type(masker).__name__} instance is not fitted yet"):
            clone(masker).transform(run)
    bad = clone(masker).set_params(standardize="z")
    for error in (exceptions.ParameterError, InvalidParameterError):
        with pytest.raises(error, match=f"The 'standardize' parameter of {type(masker).__name__} must be"):
            bad.fit(_fit_input(masker, run))
    with pytest.raises(exceptions.ParameterError, match="'dtype' cannot be bool"):
        clone(masker).set_params(dtype=bool).fit(_fit_input(masker, run))
