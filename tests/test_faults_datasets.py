"""Real-world dataset mistakes: duplicate runs, hostile or wrong sidecars, degenerate confounds tables.

Each case fails with a LazymaskError naming the file(s) and the fix, never a silent wrong result or
a raw traceback (issue 21).
"""

import gzip
import json
import shutil

import pandas as pd
import pytest

from lazymask.datasets import make_fmriprep_dataset
from lazymask.exceptions import ParameterError
from lazymask.interfaces import find_runs
from lazymask.interfaces.fmriprep import confounds_from_table


@pytest.fixture
def dataset(tmp_path_factory, tmp_path):
    source = make_fmriprep_dataset(tmp_path_factory.getbasetemp() / "faults-datasets", n_subjects=3, n_volumes=12)
    return shutil.copytree(source, tmp_path / "fmriprep")


def _first_bold(root):
    return sorted(root.glob("sub-01/ses-1/func/*_desc-preproc_bold.nii.gz"))[0]


def test_a_decompressed_copy_beside_its_nii_gz_is_refused_naming_both(dataset):
    bold = _first_bold(dataset)
    bold.with_suffix("").write_bytes(gzip.decompress(bold.read_bytes()))
    with pytest.raises(ParameterError, match=r"several files for one run:\n.*bold.nii and .*bold.nii.gz") as info:
        find_runs(dataset)
    assert "Keep one file per run" in str(info.value)


def test_a_run_copied_into_another_subjects_folder_is_refused(dataset):
    bold = _first_bold(dataset)
    target = dataset / "sub-02" / "ses-1" / "func" / bold.name
    for companion in bold.parent.glob(bold.name.split("_space-")[0] + "*"):
        shutil.copy(companion, target.parent / companion.name)
    with pytest.raises(ParameterError, match=r"sub-02/ses-1/func/sub-01_.*its name says sub-01/ses-1 but it lies in sub-02/ses-1"):
        find_runs(dataset)


@pytest.mark.parametrize("value, message", [
    (True, "RepetitionTime is true, not a number of seconds"),
    ("2.0", "RepetitionTime is \"2.0\", not a number"),
    (float("nan"), "RepetitionTime is nan; expected seconds between 0.01 and 100"),
    (1e-300, "RepetitionTime is 1e-300; expected seconds"),
    (2000, "RepetitionTime is 2000; expected seconds.*divided by 1000"),
    (0, "RepetitionTime is 0; expected"),
    (-2.0, "RepetitionTime is -2.0; expected"),
])
def test_a_sidecar_repetition_time_that_is_not_seconds_is_refused_naming_the_sidecar(dataset, value, message):
    sidecar = _first_bold(dataset).with_name(_first_bold(dataset).name.split(".")[0] + ".json")
    sidecar.write_text(json.dumps({"RepetitionTime": value}))
    with pytest.raises(ParameterError, match=f"{sidecar.name}: {message}"):
        find_runs(dataset)


def test_hostile_sidecars_fail_cleanly(dataset):
    sidecar = _first_bold(dataset).with_name(_first_bold(dataset).name.split(".")[0] + ".json")
    sidecar.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ParameterError, match=f"{sidecar.name}: its JSON is nested too deeply"):
        find_runs(dataset)
    sidecar.write_text("{not json")
    with pytest.raises(ParameterError, match=f"{sidecar.name}: not valid JSON"):
        find_runs(dataset)
    sidecar.write_text("[2.0]")
    with pytest.raises(ParameterError, match=f"{sidecar.name}: a JSON list, not an object"):
        find_runs(dataset)


def test_a_sidecar_without_repetition_time_is_still_a_missing_value(dataset):
    sidecar = _first_bold(dataset).with_name(_first_bold(dataset).name.split(".")[0] + ".json")
    sidecar.write_text("{}")
    with pytest.warns(UserWarning, match="no RepetitionTime"):
        runs = find_runs(dataset, on_missing="skip")
    assert len(runs) == len(find_runs(make_fmriprep_dataset(dataset.parent.parent / "x", n_subjects=3,
                                                            n_volumes=12))) - 1


def test_a_one_row_confounds_table():
    motion = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")
    table = pd.DataFrame({"csf": [1.0], "white_matter": [2.0], **{m: [0.1] for m in motion},
                          **{f"{m}_derivative1": [float("nan")] for m in motion}})
    confounds, sample_mask = confounds_from_table(table, strategy=("wm_csf",), demean=False)
    assert confounds.to_dict("list") == {"csf": [1.0], "white_matter": [2.0]} and sample_mask is None
    with pytest.raises(ParameterError, match="x.tsv has a single row.*_derivative1.*at least 2 volumes"):
        confounds_from_table(table, strategy=("motion",), motion="derivatives", where="x.tsv")


@pytest.mark.parametrize("standardize", [False, "zscore_sample"])
def test_a_one_volume_run_detrended_keeps_its_values_as_nilearn(standardize):
    import numpy as np
    from nilearn import signal as nsignal

    from lazymask import signal

    values = np.random.default_rng(0).normal(size=(1, 5)).astype("float32") + 10
    with pytest.warns(UserWarning, match="Detrending"):
        expected = nsignal.clean(values.copy(), detrend=True, standardize=standardize)
    with pytest.warns(UserWarning, match="single time point"):
        got = signal.clean(values.copy(), detrend=True, standardize=standardize)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    np.testing.assert_allclose(got, values, rtol=1e-6)
