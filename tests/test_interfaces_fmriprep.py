"""Discovery of fMRIPrep runs and confounds selection, against nilearn.interfaces.fmriprep."""

import json
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest

from lazymask.datasets import make_fmriprep_dataset
from lazymask.exceptions import ImageFileNotFoundError, ParameterError
from lazymask.interfaces import find_runs, group_name, parse_bids_filename
from lazymask.interfaces import fmriprep as lazy_fmriprep

nilearn_fmriprep = pytest.importorskip("nilearn.interfaces.fmriprep")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_fmriprep_dataset(tmp_path_factory.mktemp("fmriprep") / "ds", n_subjects=3, n_volumes=40)


@pytest.fixture
def dataset_copy(dataset, tmp_path):
    return shutil.copytree(dataset, tmp_path / "copy")


def test_dataset_is_deterministic(dataset, tmp_path):
    again = make_fmriprep_dataset(tmp_path / "again", n_subjects=3, n_volumes=40)
    files = sorted(p.relative_to(dataset) for p in dataset.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert all((dataset / f).read_bytes() == (again / f).read_bytes() for f in files)


def test_find_runs_nested_sessions(dataset):
    runs = find_runs(dataset)
    assert list(runs["group"]) == ["sub-01/ses-1/task-rest_run-1", "sub-01/ses-2/task-rest_run-1",
                                   "sub-02/ses-1/task-rest_run-1", "sub-02/ses-2/task-rest_run-1",
                                   "sub-03/task-rest_run-1"]
    assert list(runs["subject"]) == ["01", "01", "02", "02", "03"]
    assert runs["session"].iloc[:4].tolist() == ["1", "2", "1", "2"] and pd.isna(runs["session"].iloc[4])
    assert (runs["t_r"] == 2.0).all() and (runs["space"] == "MNI152NLin2009cAsym").all()
    for column in ("bold", "confounds", "sidecar", "mask"):
        assert all(pd.io.common.file_exists(p) for p in runs[column])
    assert runs["bold"].iloc[4].endswith("sub-03_task-rest_run-1_space-MNI152NLin2009cAsym_res-2_desc-preproc_bold.nii.gz")
    assert runs["confounds"].iloc[4].endswith("sub-03_task-rest_run-1_desc-confounds_timeseries.tsv")


def test_find_runs_filters(dataset):
    assert list(find_runs(dataset, subjects=["sub-02"])["subject"]) == ["02", "02"]
    assert list(find_runs(dataset, sessions="2")["group"]) == ["sub-01/ses-2/task-rest_run-1", "sub-02/ses-2/task-rest_run-1"]
    with pytest.raises(ImageFileNotFoundError, match="no preprocessed run .* matching task='motor'"):
        find_runs(dataset, task="motor")
    with pytest.raises(ImageFileNotFoundError, match="no such directory"):
        find_runs(dataset / "nope")


def test_missing_confounds_is_a_clear_error(dataset_copy):
    victim = next(dataset_copy.glob("sub-02/ses-1/func/*_desc-confounds_timeseries.tsv"))
    victim.unlink()
    with pytest.raises(ImageFileNotFoundError, match=r"(?s)sub-02_ses-1.*missing confounds sub-02_ses-1_task-rest_run-1_desc-confounds_timeseries\.tsv.*on_missing='skip'"):
        find_runs(dataset_copy)
    with pytest.warns(UserWarning, match="runs left out"):
        runs = find_runs(dataset_copy, on_missing="skip")
    assert "sub-02/ses-1/task-rest_run-1" not in set(runs["group"]) and len(runs) == 4


def test_run_without_sidecar(dataset_copy):
    sidecar = next(dataset_copy.glob("sub-03/func/*_desc-preproc_bold.json"))
    sidecar.unlink()
    with pytest.raises(ImageFileNotFoundError, match=r"(?s)sub-03.*missing sidecar sub-03_task-rest_run-1_space-\S+_desc-preproc_bold\.json"):
        find_runs(dataset_copy)
    sidecar.write_text(json.dumps({"TaskName": "rest"}))  # a sidecar without RepetitionTime
    with pytest.raises(ImageFileNotFoundError, match=r"missing sidecar .*\(no RepetitionTime\)"):
        find_runs(dataset_copy)


def test_parse_and_group_name():
    parsed = parse_bids_filename("sub-01_ses-2_task-rest_acq-mb_run-3_space-T1w_desc-preproc_bold.nii.gz")
    assert parsed["entities"] == {"sub": "01", "ses": "2", "task": "rest", "acq": "mb", "run": "3",
                                  "space": "T1w", "desc": "preproc"}
    assert parsed["suffix"] == "bold" and parsed["extension"] == ".nii.gz"
    assert group_name(parsed["entities"]) == "sub-01/ses-2/task-rest_acq-mb_run-3"
    assert group_name(parsed["entities"], with_space=True) == "sub-01/ses-2/task-rest_acq-mb_run-3_space-T1w"
    with pytest.raises(ParameterError, match="not a BIDS file name"):
        parse_bids_filename("sub-01_garbage_bold.nii.gz")


STRATEGY_CASES = [
    ("simple", {}),
    ("scrubbing", {}),
    ("scrubbing", {"fd_threshold": 0.2, "std_dvars_threshold": 1.2, "scrub": 3}),
    ("scrubbing", {"scrub": 0, "motion": "basic"}),
    ("simple", {"global_signal": "full", "motion": "derivatives", "wm_csf": "power2"}),
    ("simple", {"demean": False}),
]


def _same(lazy, reference):
    lazy_confounds, lazy_mask = lazy
    ref_confounds, ref_mask = reference
    pd.testing.assert_frame_equal(lazy_confounds, ref_confounds)
    if ref_mask is None:
        assert lazy_mask is None
    else:
        np.testing.assert_array_equal(lazy_mask, ref_mask)


@pytest.mark.parametrize(("preset", "overrides"), STRATEGY_CASES)
def test_load_confounds_strategy_matches_nilearn(dataset, preset, overrides):
    for bold in find_runs(dataset)["bold"]:
        _same(lazy_fmriprep.load_confounds_strategy(bold, preset, **overrides),
              nilearn_fmriprep.load_confounds_strategy(bold, preset, **overrides))


def test_scrubbing_censors_volumes(dataset):
    bold = find_runs(dataset)["bold"].iloc[0]
    _, sample_mask = lazy_fmriprep.load_confounds_strategy(bold, "scrubbing", fd_threshold=0.2)
    assert sample_mask is not None and 0 < len(sample_mask) < 39  # the fixture has motion to censor


@pytest.mark.parametrize("params", [
    {"strategy": ("motion", "scrub"), "scrub": 0, "demean": False},
    {"strategy": ("global_signal", "high_pass")},
    {"strategy": ("motion", "wm_csf", "scrub"), "motion": "power2", "fd_threshold": 0.3},
    {"strategy": ("high_pass",)},
])
def test_load_confounds_matches_nilearn(dataset, params):
    bolds = list(find_runs(dataset)["bold"][:2])
    lazy = lazy_fmriprep.load_confounds(bolds, **params)
    reference = nilearn_fmriprep.load_confounds(bolds, **params)
    for index in range(2):
        _same((lazy[0][index], lazy[1][index]), (reference[0][index], reference[1][index]))


def test_confounds_errors(dataset_copy):
    bold = find_runs(dataset_copy)["bold"].iloc[0]
    with pytest.raises(ParameterError, match="'compcor' needs 'high_pass'"):
        lazy_fmriprep.load_confounds(bold, strategy=("compcor",))
    with pytest.raises(ParameterError, match="'denoise_strategy' must be one of"):
        lazy_fmriprep.load_confounds_strategy(bold, "aroma")
    with pytest.raises(ParameterError, match=r"'motion' must be one of .*; got 'quadratic'"):
        lazy_fmriprep.load_confounds(bold, motion="quadratic")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UserWarning, match="not needed for the selected strategy 'simple'"):
            lazy_fmriprep.load_confounds_strategy(bold, "simple", scrub=3)
    table = pd.read_csv(next(dataset_copy.glob("sub-01/ses-1/func/*_timeseries.tsv")), sep="\t")
    with pytest.raises(ParameterError, match=r"lacks the columns \[\] and the noise components \['wm_csf'\]"):
        lazy_fmriprep.confounds_from_table(table.drop(columns=["csf", "white_matter"]), strategy=("wm_csf",))
    with pytest.raises(ParameterError, match=r"lacks the columns \['trans_x_power2'\] and the noise components \[\]"):
        lazy_fmriprep.confounds_from_table(table.drop(columns=["trans_x_power2"]), strategy=("motion",))
    with pytest.raises(ImageFileNotFoundError, match="Could not find associated confound file"):
        lazy_fmriprep.load_confounds(str(dataset_copy / "sub-09_task-rest_desc-preproc_bold.nii.gz"))
