"""``lazymask extract`` and the demo's extraction step."""

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from lazymask.cli import main
from lazymask.maskers import NiftiMasker, load_masker, open_signals
from lazymask.testing import fake_fmri


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("extract")
    paths = []
    for seed in (0, 1):
        paths.append(folder / f"sub-01_run-{seed + 1}_bold.nii.gz")
        nib.save(fake_fmri((16, 18, 14), 40, dtype="int16", seed=seed), paths[-1])
    confounds = folder / "confounds.tsv"
    pd.DataFrame(np.random.default_rng(0).standard_normal((40, 3)), columns=list("abc")).to_csv(
        confounds, sep="\t", index=False)
    return paths, confounds


def test_extract_one_run_with_cleaning_and_report(runs, tmp_path, capsys):
    (path, _), confounds = runs
    out, report = tmp_path / "out.zarr", tmp_path / "report.html"
    argv = ["extract", str(path), "--mask-strategy", "epi", "--detrend", "--standardize", "zscore_sample",
            "--high-pass", "0.01", "--confounds", str(confounds), "--out", str(out), "--report", str(report)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "100%" in captured.err and str(out) in captured.out
    expected = NiftiMasker(mask_strategy="epi", detrend=True, standardize="zscore_sample", high_pass=0.01,
                           t_r=2.0).fit_transform(str(path), confounds=str(confounds))
    np.testing.assert_allclose(np.asarray(open_signals(out)), np.asarray(expected), rtol=1e-6, atol=1e-6)
    assert load_masker(out).n_elements_ == expected.shape[1]
    assert "The mask includes" in report.read_text()
    assert main(argv) == 2  # OUT exists: refused without --overwrite
    assert "--overwrite" in capsys.readouterr().err


def test_extract_several_runs_one_group_each(runs, tmp_path, capsys):
    paths, _ = runs
    out = tmp_path / "out.zarr"
    assert main(["extract", *map(str, paths), "--mask-strategy", "epi", "--out", str(out)]) == 0
    for path in paths:
        group = path.name.removesuffix(".nii.gz")
        np.testing.assert_array_equal(open_signals(out, group).shape[0], 40)
    assert main(["extract", *map(str, paths), "--confounds", "x.tsv", "--out", str(tmp_path / "o2.zarr")]) == 2
    assert "pass one per image" in capsys.readouterr().err


def test_extract_overwrite_keeps_the_old_results_until_the_new_job_is_complete(runs, tmp_path, capsys):
    (path, _), confounds = runs
    out = tmp_path / "out.zarr"
    assert main(["extract", str(path), "--mask-strategy", "epi", "--out", str(out)]) == 0
    before = np.asarray(open_signals(out))
    bad = tmp_path / "bad_confounds.tsv"
    pd.DataFrame(np.zeros((7, 2)), columns=["a", "b"]).to_csv(bad, sep="\t", index=False)  # 7 rows, 40 volumes
    argv = ["extract", str(path), "--mask-strategy", "epi", "--detrend", "--confounds", str(bad), "--out", str(out),
            "--overwrite"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "lazymask: error:" in err and "confounds" in err and "Traceback" not in err
    np.testing.assert_array_equal(np.asarray(open_signals(out)), before)  # the old results are intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad_confounds.tsv", "out.zarr"]  # no staging left
    assert main(["extract", str(path), "--mask-strategy", "epi", "--detrend", "--out", str(out), "--overwrite"]) == 0
    assert not np.allclose(np.asarray(open_signals(out)), before)  # replaced by the new (detrended) job
    assert main(["verify", str(out)]) == 0


def test_extract_refuses_a_directory_it_did_not_write(runs, tmp_path, capsys):
    (path, _), _ = runs
    precious = tmp_path / "mydata"
    precious.mkdir()
    (precious / "important.txt").write_text("keep me")
    for extra in ([], ["--overwrite"]):
        assert main(["extract", str(path), "--mask-strategy", "epi", "--out", str(precious), *extra]) == 2
        assert "lazymask did not write" in capsys.readouterr().err
    assert sorted(p.name for p in precious.iterdir()) == ["important.txt"]
    assert (precious / "important.txt").read_text() == "keep me"
