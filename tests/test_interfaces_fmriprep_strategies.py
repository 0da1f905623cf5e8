"""CompCor, ICA-AROMA and tedana confounds (and their presets) against nilearn.interfaces.fmriprep, on every run."""

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lazymask.datasets import make_fmriprep_dataset
from lazymask.exceptions import ImageFileNotFoundError, ParameterError
from lazymask.interfaces import find_runs
from lazymask.interfaces import fmriprep as lazy_fmriprep

nilearn_fmriprep = pytest.importorskip("nilearn.interfaces.fmriprep")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_fmriprep_dataset(tmp_path_factory.mktemp("fmriprep-strategies") / "ds", n_subjects=3, n_volumes=40)


def _sibling(bold: str, pattern: str) -> str:
    (match,) = Path(bold).parent.glob(pattern)
    return str(match)


@pytest.fixture(scope="module")
def runs(dataset):
    """Every run: its desc-preproc, smoothAROMAnonaggr and tedana optcom images."""
    return [{"preproc": bold, "aroma": _sibling(bold, "*_desc-smoothAROMAnonaggr_bold.nii.gz"),
             "optcom": _sibling(bold, "*_desc-optcom_bold.nii.gz")} for bold in find_runs(dataset)["bold"]]


@pytest.fixture
def dataset_copy(dataset, tmp_path):
    return shutil.copytree(dataset, tmp_path / "copy")


def _same(lazy, reference):
    lazy_confounds, lazy_mask = lazy
    ref_confounds, ref_mask = reference
    if ref_confounds is None:
        assert lazy_confounds is None
    else:
        pd.testing.assert_frame_equal(lazy_confounds, ref_confounds, rtol=1e-6, atol=1e-9)
    if ref_mask is None:
        assert lazy_mask is None
    else:
        np.testing.assert_array_equal(lazy_mask, ref_mask)


def _both(function: str, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return (getattr(lazy_fmriprep, function)(*args, **kwargs), getattr(nilearn_fmriprep, function)(*args, **kwargs))


def test_dataset_has_the_fmriprep_and_tedana_outputs(dataset, runs):
    table = pd.read_csv(find_runs(dataset)["confounds"].iloc[0], sep="\t")
    for prefix in ("t", "c", "w", "a"):
        assert f"{prefix}_comp_cor_00" in table.columns
    assert any(c.startswith("aroma_motion_") for c in table.columns) and "cosine00" in table.columns
    meta = json.loads(Path(find_runs(dataset)["confounds_json"].iloc[0]).read_text())
    assert meta["a_comp_cor_00"]["Mask"] == "combined" and meta["w_comp_cor_00"]["Mask"] == "WM"
    assert meta["c_comp_cor_00"]["Mask"] == "CSF" and meta["t_comp_cor_00"]["Method"] == "tCompCor"
    for name, entry in meta.items():
        if "comp_cor" in name:
            assert entry["Retained"] is True and name in table.columns
            assert 0 < entry["VarianceExplained"] <= entry["CumulativeVarianceExplained"] <= 1
        if name.startswith("dropped_"):
            assert entry["Retained"] is False
    for run in runs:
        folder = Path(run["preproc"]).parent
        assert len(list(folder.glob("*_desc-ICA_mixing.tsv"))) == 1
        assert len(list(folder.glob("*_desc-tedana_metrics.tsv"))) == 1
    unpadded = pd.read_csv(_sibling(runs[1]["preproc"], "*_desc-tedana_metrics.tsv"), sep="\t")
    assert unpadded["Component"].iloc[0] == "ICA_0"  # odd runs: tedana versions that do not pad


def test_extras_are_optional(tmp_path):
    root = make_fmriprep_dataset(tmp_path / "plain", n_subjects=1, n_volumes=20, aroma=False, tedana=False)
    names = {p.name for p in root.rglob("*")}
    assert not any("AROMA" in n or "optcom" in n or "mixing" in n for n in names)


COMPCOR_CASES = [
    {"strategy": ("high_pass", "compcor"), "compcor": compcor, "n_compcor": n}
    for compcor in ("anat_combined", "anat_separated", "temporal", "temporal_anat_combined",
                    "temporal_anat_separated")
    for n in ("all", 1, 3, 50)
] + [
    {"strategy": ("high_pass", "motion", "compcor", "scrub"), "compcor": "anat_separated", "n_compcor": 2,
     "motion": "basic", "fd_threshold": 0.2},
    {"strategy": ("compcor", "high_pass", "global_signal"), "compcor": "temporal", "demean": False},
]
AROMA_CASES = [
    ("preproc", {"strategy": ("ica_aroma",), "ica_aroma": "basic"}),
    ("preproc", {"strategy": ("high_pass", "wm_csf", "ica_aroma"), "ica_aroma": "basic", "wm_csf": "full"}),
    ("aroma", {"strategy": ("ica_aroma",), "ica_aroma": "full"}),
    ("aroma", {"strategy": ("high_pass", "wm_csf", "ica_aroma"), "ica_aroma": "full"}),
    ("aroma", {"strategy": ("high_pass", "ica_aroma", "scrub"), "ica_aroma": "full", "scrub": 0, "demean": False}),
]
TEDANA_CASES = [
    ("optcom", {"strategy": ("tedana",)}),
    ("optcom", {"strategy": ("tedana",), "tedana": "non-aggressive"}),
    ("optcom", {"strategy": ("tedana",), "tedana": "aggressive", "demean": False}),
]


@pytest.mark.parametrize("params", COMPCOR_CASES)
def test_compcor_matches_nilearn_on_every_run(runs, params):
    for run in runs:
        _same(*_both("load_confounds", run["preproc"], **params))


@pytest.mark.parametrize(("image", "params"), AROMA_CASES + TEDANA_CASES)
def test_ica_aroma_and_tedana_match_nilearn_on_every_run(runs, image, params):
    for run in runs:
        _same(*_both("load_confounds", run[image], **params))


def test_tedana_columns(runs):
    confounds, sample_mask = lazy_fmriprep.load_confounds(runs[1]["optcom"], strategy=("tedana",),
                                                          tedana="non-aggressive")
    assert sample_mask is None and list(confounds.columns) == sorted(confounds.columns)
    assert {c.split("_", 1)[0] for c in confounds.columns} == {"accepted", "rejected"}
    assert all(c.split("_", 1)[1].startswith("ICA_") and len(c.split("_")[-1]) == 2 for c in confounds.columns)


@pytest.mark.parametrize(("preset", "image", "overrides"), [
    ("compcor", "preproc", {}),
    ("compcor", "preproc", {"compcor": "temporal_anat_separated", "n_compcor": 2}),
    ("compcor", "preproc", {"global_signal": "full", "motion": "power2", "demean": False}),
    ("ica_aroma", "aroma", {}),
    ("ica_aroma", "aroma", {"wm_csf": "full", "global_signal": "basic"}),
    ("simple", "preproc", {"global_signal": "derivatives"}),
    ("scrubbing", "preproc", {"fd_threshold": 0.2}),
])
def test_presets_match_nilearn_on_every_run(runs, preset, image, overrides):
    for run in runs:
        _same(*_both("load_confounds_strategy", run[image], preset, **overrides))


def test_lists_of_runs_match_nilearn(runs):
    for image, params in [("preproc", {"strategy": ("high_pass", "compcor"), "compcor": "anat_separated"}),
                          ("aroma", {"strategy": ("high_pass", "wm_csf", "ica_aroma")}),
                          ("optcom", {"strategy": ("tedana",)})]:
        images = [run[image] for run in runs]
        (lazy, lazy_masks), (ref, ref_masks) = _both("load_confounds", images, **params)
        assert len(lazy) == len(ref) == len(runs)
        for index in range(len(runs)):
            _same((lazy[index], lazy_masks[index]), (ref[index], ref_masks[index]))
    (lazy, _), (ref, _) = _both("load_confounds", [runs[0]["preproc"]], strategy=("high_pass", "compcor"))
    assert isinstance(lazy, pd.DataFrame) and isinstance(ref, pd.DataFrame)  # a list of one is one run
    _same((lazy, None), (ref, None))


def test_ica_aroma_full_reads_no_image(runs, dataset_copy, dataset):
    aroma = Path(runs[0]["aroma"].replace(str(dataset), str(dataset_copy)))
    aroma.write_bytes(b"")  # not an image any more: only its name is checked
    confounds, _ = lazy_fmriprep.load_confounds_strategy(str(aroma), "ica_aroma")
    _same((confounds, None), (nilearn_fmriprep.load_confounds_strategy(runs[0]["aroma"], "ica_aroma")[0], None))


ERROR_CASES = [
    ("preproc", {"strategy": ("compcor",)}, "high_pass"),
    ("preproc", {"strategy": ("high_pass", "compcor"), "compcor": "anat"}, "'compcor' must be one of"),
    ("preproc", {"strategy": ("ica_aroma",), "ica_aroma": "aggressive"}, "'ica_aroma' must be one of"),
    ("optcom", {"strategy": ("tedana",), "tedana": "soft"}, "'tedana' must be one of"),
    ("preproc", {"strategy": ("ica_aroma",), "ica_aroma": "full"}, "desc-smoothAROMAnonaggr_bold"),
    ("aroma", {"strategy": ("ica_aroma",), "ica_aroma": "basic"}, "Invalid file type for the selected 'nii.gz'"),
    ("preproc", {"strategy": ("tedana",)}, r"Input must be the ~desc-optcom_bold\.nii\.gz"),
    ("optcom", {"strategy": ("motion",)}, "Invalid file type for the selected 'nii.gz'"),
    ("preproc", {"strategy": ("high_pass", "motion"), "motion": "quadratic"}, "'motion' must be one of"),
    ("preproc", {"strategy": "motion"}, "tuple or list of strings"),
    ("preproc", {"strategy": ("motion", "wavelets")}, "'strategy' must be one of"),
]


@pytest.mark.parametrize(("image", "params", "match"), ERROR_CASES)
def test_errors_like_nilearn(runs, image, params, match):
    with pytest.raises(ValueError):
        nilearn_fmriprep.load_confounds(runs[0][image], **params)
    with pytest.raises(ParameterError, match=match):
        lazy_fmriprep.load_confounds(runs[0][image], **params)


def test_missing_sidecar_and_components(dataset_copy):
    bold = find_runs(dataset_copy)["bold"].iloc[0]
    Path(find_runs(dataset_copy)["confounds_json"].iloc[0]).unlink()
    for compcor in ("anat_combined", "temporal_anat_separated"):
        with pytest.raises(ValueError, match="Could not find associated json file"):
            nilearn_fmriprep.load_confounds(bold, strategy=("high_pass", "compcor"), compcor=compcor)
        with pytest.raises(ParameterError, match="Could not find associated json file"):
            lazy_fmriprep.load_confounds(bold, strategy=("high_pass", "compcor"), compcor=compcor)
    # temporal CompCor without the sidecar: no component is named, the component is missing
    with pytest.raises(ValueError, match=r"\['compcor'\]"):
        nilearn_fmriprep.load_confounds(bold, strategy=("high_pass", "compcor"), compcor="temporal")
    with pytest.raises(ParameterError, match=r"noise components \['compcor'\]"):
        lazy_fmriprep.load_confounds(bold, strategy=("high_pass", "compcor"), compcor="temporal")
    # the sidecar is not needed by the other components
    _same(*_both("load_confounds_strategy", bold, "simple"))
    tsv = Path(find_runs(dataset_copy)["confounds"].iloc[0])
    table = pd.read_csv(tsv, sep="\t")
    table.drop(columns=[c for c in table.columns if "aroma" in c]).to_csv(tsv, sep="\t", index=False, na_rep="n/a")
    with pytest.raises(ValueError, match=r"\['ica_aroma'\]"):
        nilearn_fmriprep.load_confounds(bold, strategy=("ica_aroma",), ica_aroma="basic")
    with pytest.raises(ParameterError, match=r"noise components \['ica_aroma'\]"):
        lazy_fmriprep.load_confounds(bold, strategy=("ica_aroma",), ica_aroma="basic")


def test_tedana_errors_and_warning(runs, dataset_copy, dataset):
    with pytest.warns(UserWarning, match="TEDANA strategy"):
        lazy = lazy_fmriprep.load_confounds(runs[0]["optcom"], strategy=("tedana", "motion", "high_pass"))
    with pytest.warns(UserWarning, match="TEDANA strategy"):
        reference = nilearn_fmriprep.load_confounds(runs[0]["optcom"], strategy=("tedana", "motion", "high_pass"))
    _same(lazy, reference)
    optcom = runs[0]["optcom"].replace(str(dataset), str(dataset_copy))
    mixing = Path(_sibling(optcom, "*_desc-ICA_mixing.tsv"))
    mixing.rename(mixing.with_name(mixing.name.replace("desc-ICA", "desc-other")))
    with pytest.raises(ParameterError, match="Found 1 tedana tables"):
        lazy_fmriprep.load_confounds(optcom, strategy=("tedana",))
    with pytest.raises(ValueError, match="Found 1 confound files"):
        nilearn_fmriprep.load_confounds(optcom, strategy=("tedana",))


def test_n_compcor_and_preset_checks(runs):
    for bad in ("some", 0, -2, 1.5, True):
        with pytest.raises(ParameterError, match="n_compcor="):
            lazy_fmriprep.load_confounds(runs[0]["preproc"], strategy=("high_pass", "compcor"), n_compcor=bad)
    with pytest.warns(UserWarning, match=r"not needed for the selected strategy 'ica_aroma': \['ica_aroma'\]"):
        lazy = lazy_fmriprep.load_confounds_strategy(runs[0]["aroma"], "ica_aroma", ica_aroma="basic")
    with pytest.warns(UserWarning, match=r"not needed for the selected strategy 'ica_aroma': \['ica_aroma'\]"):
        reference = nilearn_fmriprep.load_confounds_strategy(runs[0]["aroma"], "ica_aroma", ica_aroma="basic")
    _same(lazy, reference)  # the preset stays the non-aggressive one
    with pytest.raises(ParameterError, match="'denoise_strategy' must be one of"):
        lazy_fmriprep.load_confounds_strategy(runs[0]["preproc"], "aroma")
    assert set(lazy_fmriprep.PRESETS) == {"simple", "scrubbing", "compcor", "ica_aroma"}


def test_confounds_from_table(dataset, runs):
    row = find_runs(dataset).iloc[0]
    table = pd.read_csv(row["confounds"], sep="\t")
    meta = json.loads(Path(row["confounds_json"]).read_text())
    params = {"strategy": ("high_pass", "motion", "compcor"), "compcor": "temporal_anat_separated"}
    from_path = lazy_fmriprep.confounds_from_table(row["confounds"], **params)
    from_frame = lazy_fmriprep.confounds_from_table(table, meta_json=meta, **params)
    _same(from_frame, from_path)
    _same(from_path, nilearn_fmriprep.load_confounds(row["bold"], **params))
    with pytest.raises(ParameterError, match="Could not find associated json file"):
        lazy_fmriprep.confounds_from_table(table, **params)
    with pytest.raises(ParameterError, match="ica_aroma='full' adds no regressor"):
        lazy_fmriprep.confounds_from_table(row["confounds"], strategy=("high_pass", "wm_csf", "ica_aroma"))
    _same(lazy_fmriprep.confounds_from_table(row["confounds"], strategy=("high_pass", "wm_csf", "ica_aroma"),
                                             img_file=runs[0]["aroma"]),
          nilearn_fmriprep.load_confounds(runs[0]["aroma"], strategy=("high_pass", "wm_csf", "ica_aroma")))
    tables = {"mixing": _sibling(row["bold"], "*_desc-ICA_mixing.tsv"),
              "metrics": _sibling(row["bold"], "*_desc-tedana_metrics.tsv")}
    _same(lazy_fmriprep.confounds_from_table(tables, strategy=("tedana",)),
          nilearn_fmriprep.load_confounds(runs[0]["optcom"], strategy=("tedana",)))
    with pytest.raises(ParameterError, match="tedana's two tables"):
        lazy_fmriprep.confounds_from_table(table, strategy=("tedana",))
    assert lazy_fmriprep.compcor_columns(meta, "anat_separated", 1) == ["w_comp_cor_00", "c_comp_cor_00"]


def test_confounds_file_discovery(dataset_copy):
    bold = Path(find_runs(dataset_copy)["bold"].iloc[0])
    tsv = Path(find_runs(dataset_copy)["confounds"].iloc[0])
    # a name with fewer entities is found too (any subset of the run's entities, with desc-confounds)
    renamed = tsv.with_name(tsv.name.replace("_run-1", ""))
    tsv.rename(renamed)
    _same(*_both("load_confounds", str(bold)))
    shutil.copy(renamed, tsv)
    with pytest.raises(ParameterError, match="more than one"):
        lazy_fmriprep.load_confounds(str(bold))
    renamed.unlink()
    tsv.unlink()
    with pytest.raises(ImageFileNotFoundError, match="Could not find associated confound file") as error:
        lazy_fmriprep.load_confounds(str(bold))
    assert isinstance(error.value, ValueError)  # as nilearn's
    with pytest.raises(ParameterError, match="Unsupported input"):
        lazy_fmriprep.load_confounds(str(tsv))
