"""Tests of lazymask.datasets: the generated demo run, its cache, and its determinism."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from lazymask.datasets import DemoRun, load_demo
from lazymask.datasets import _demo
from lazymask.datasets._synthetic import CSF, GREY, WHITE, demo_grid, tissue_fractions


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("lazymask-data")
    return root


@pytest.fixture(scope="module")
def demo(demo_root) -> DemoRun:
    return load_demo(demo_root)


@pytest.fixture(scope="module")
def bold(demo) -> np.ndarray:
    return np.asanyarray(nib.load(demo.func).dataobj)


def test_load_demo_returns_existing_paths_and_metadata(demo, demo_root):
    for key in ("func", "confounds", "events", "atlas", "atlas_lut"):
        path = getattr(demo, key)
        assert isinstance(path, str)
        assert path.startswith(str(demo_root / "demo-v1"))
        assert open(path, "rb").read(1)
    assert demo.t_r == 2.0
    assert "synthetic" in demo.description


def test_files_are_the_same_bytes_every_time_and_need_no_network(demo, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the demo data must never touch the network")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    again = _demo.write_demo(tmp_path)
    first = json.loads((Path(demo.func).parent / "manifest.json").read_text())
    second = json.loads((again / "manifest.json").read_text())
    assert first == second
    assert set(first) == set(_demo.FILES.values())
    assert _demo.is_complete(again)


def test_func_looks_like_a_scanner_epi_run(demo, bold):
    image = nib.load(demo.func)
    assert image.shape == (64, 64, 40, 150)
    assert image.get_data_dtype() == np.int16
    assert image.header.get_zooms() == (3.0, 3.0, 3.0, 2.0)
    assert image.header.get_xyzt_units() == ("mm", "sec")
    fractions = tissue_fractions(demo_grid())
    mean = bold.mean(axis=-1)
    tissue_means = {t: mean[fractions[t] > 0.9].mean() for t in (CSF, GREY, WHITE)}
    assert tissue_means[CSF] > 1.2 * tissue_means[GREY] > 1.2 * tissue_means[WHITE]
    background = sum(fractions.values()) == 0
    assert background.sum() > 0.4 * background.size
    background_values = bold[background, :10]
    assert 10 < background_values.mean() < 60  # raw EPI: a noisy background, not zeros
    assert (background_values == 0).mean() < 0.05


def test_func_has_the_block_design_activation(demo, bold):
    events = pd.read_csv(demo.events, sep="\t")
    assert list(events.columns) == ["onset", "duration", "trial_type"]
    task = np.zeros(bold.shape[-1], dtype=bool)
    for onset, duration in zip(events.onset, events.duration, strict=True):
        task[int(onset / demo.t_r) + 3 : int((onset + duration) / demo.t_r) + 2] = True  # HRF delay
    visual = bold[25:31, 6:10, 19:23].reshape(-1, bold.shape[-1]).mean(axis=0)
    frontal = bold[25:31, 50:54, 30:34].reshape(-1, bold.shape[-1]).mean(axis=0)
    change = visual[task].mean() / visual[~task].mean() - 1
    assert change > 0.01
    assert abs(frontal[task].mean() / frontal[~task].mean() - 1) < 0.005


def test_confounds_are_fmriprep_style(demo, bold):
    text = open(demo.confounds).read().splitlines()
    motion = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]
    header = text[0].split("\t")
    expected = motion + [f"{m}_derivative1" for m in motion] + [
        "csf", "white_matter", "global_signal", "framewise_displacement"
    ]
    assert set(expected) <= set(header)
    first_row = dict(zip(header, text[1].split("\t"), strict=True))
    assert all(first_row[f"{m}_derivative1"] == "n/a" for m in motion)
    assert first_row["framewise_displacement"] == "n/a"
    confounds = pd.read_csv(demo.confounds, sep="\t", na_values="n/a")
    assert len(confounds) == bold.shape[-1]
    assert confounds.iloc[1:].notna().all().all()
    np.testing.assert_allclose(confounds.trans_x_derivative1[1:], np.diff(confounds.trans_x), atol=1e-9)
    assert confounds.framewise_displacement.max() > 0.5  # some volumes to scrub
    assert confounds.framewise_displacement.median() < 0.3
    assert confounds.csf.mean() > confounds.global_signal.mean() > confounds.white_matter.mean()


def test_atlas_covers_the_brain_on_the_func_grid(demo):
    atlas = nib.load(demo.atlas)
    func = nib.load(demo.func)
    assert atlas.shape == func.shape[:3]
    np.testing.assert_array_equal(atlas.affine, func.affine)
    labels = np.asanyarray(atlas.dataobj)
    assert labels.dtype.kind == "i"
    lut = pd.read_csv(demo.atlas_lut, sep="\t")
    assert list(lut.columns) == ["index", "name"]
    assert 10 <= len(lut) <= 20
    assert set(np.unique(labels)) == {0, *lut["index"]}
    fractions = tissue_fractions(demo_grid())
    brain = (fractions[GREY] + fractions[WHITE]) > 0.9
    assert (labels[brain] > 0).mean() > 0.9
    assert labels[0, 0, 0] == 0


def test_load_demo_uses_the_cache(demo_root, monkeypatch):
    monkeypatch.setenv("LAZYMASK_DATA", str(demo_root))
    monkeypatch.setattr(_demo, "write_demo", lambda directory: pytest.fail("regenerated a valid cache"))
    assert load_demo().func.startswith(str(demo_root))


def test_default_cache_dir_is_user_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("LAZYMASK_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert _demo.cache_root() == tmp_path / ".cache" / "lazymask"
    monkeypatch.setenv("LAZYMASK_DATA", str(tmp_path / "elsewhere"))
    assert _demo.cache_root() == tmp_path / "elsewhere"


@pytest.mark.parametrize("damage", ["truncate", "delete", "manifest"])
def test_damaged_cache_is_regenerated(demo, tmp_path, damage):
    directory = tmp_path / "demo-v1"
    shutil.copytree(Path(demo.func).parent, directory)
    demo = load_demo(tmp_path)
    good = (directory / "manifest.json").read_text()
    if damage == "truncate":
        with open(demo.func, "r+b") as f:
            f.truncate(1000)
    elif damage == "delete":
        Path(demo.atlas_lut).unlink()
    else:
        (directory / "manifest.json").write_text("{not json")
    assert not _demo.is_complete(directory)
    load_demo(tmp_path)
    assert _demo.is_complete(directory)
    assert (directory / "manifest.json").read_text() == good
    assert [p.name for p in tmp_path.iterdir()] == ["demo-v1"]  # no staging directory left


def test_datasets_does_not_import_testing_helpers():
    code = "import sys, lazymask.datasets; assert 'lazymask.testing' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
