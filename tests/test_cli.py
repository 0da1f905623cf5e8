"""Tests of the ``lazymask`` command line, run in-process through ``main(argv)``."""

from __future__ import annotations

import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from lazymask.cli import main
from lazymask.testing import count_voxel_reads, fake_fmri



@pytest.fixture(scope="module")
def run_gz(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "bold.nii.gz"
    nib.save(fake_fmri((20, 24, 20), 30, t_r=2.5, seed=1), path)
    return path


def test_info_shows_grid_dtype_and_chunk_plan(run_gz, capsys):
    with count_voxel_reads() as reads:
        assert main(["info", str(run_gz), "--chunks", "8"]) == 0
    assert reads.calls == 0  # headers only
    out = capsys.readouterr().out
    assert str(run_gz) in out
    assert "(20, 24, 20, 30)" in out
    assert "int16" in out
    assert "3 x 3 x 3 mm" in out
    assert "2.5 s" in out
    assert "-28.5" in out  # the affine's translation
    assert "8 volumes per chunk, 4 chunks, 150.0 KiB per chunk" in out
    assert "(gzip)" in out


def test_info_reports_the_effective_dtype_of_scaled_data(tmp_path, capsys):
    image = fake_fmri((6, 7, 8), 4, seed=2)
    image.header.set_slope_inter(0.5, 10.0)
    path = tmp_path / "scaled.nii"
    nib.save(image, path)
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "float" in out.split("dtype", 1)[1].splitlines()[0]
    assert "(gzip)" not in out


def test_info_on_a_bad_file_is_one_line_and_exit_2(tmp_path, run_gz, capsys):
    not_nifti = tmp_path / "notes.nii"
    not_nifti.write_text("this is not an image")
    missing = tmp_path / "missing.nii.gz"
    assert main(["info", str(not_nifti), str(run_gz), str(missing)]) == 2
    captured = capsys.readouterr()
    errors = captured.err.strip().splitlines()
    assert len(errors) == 2
    assert errors[0].startswith("lazymask: error: ") and "notes.nii" in errors[0]
    assert "missing.nii.gz" in errors[1] and "no such file" in errors[1]
    assert "Traceback" not in captured.err
    assert "(20, 24, 20, 30)" in captured.out  # the good file is still described


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["info"])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit) as exit_info:
        main(["info", "x.nii", "--chunks", "many"])
    assert exit_info.value.code == 2
    assert "expected 'auto' or an integer" in capsys.readouterr().err


def test_convert_refuses_to_replace_what_is_not_a_zarr_store(run_gz, tmp_path, capsys):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    assert main(["convert", str(run_gz), str(precious)]) == 2
    assert "holds a directory lazymask did not write (1 entries: thesis.tex)" in capsys.readouterr().err
    assert main(["convert", str(run_gz), str(precious), "--overwrite"]) == 2
    assert "never replaces or deletes what it did not write, whatever overwrite says" in capsys.readouterr().err
    assert (precious / "thesis.tex").read_text() == "years of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious"]  # nothing added beside it


def test_convert_of_a_missing_input_exits_2(tmp_path, capsys):
    assert main(["convert", str(tmp_path / "nope.nii.gz"), str(tmp_path / "out.zarr")]) == 2
    assert "nope.nii.gz" in capsys.readouterr().err
    assert not (tmp_path / "out.zarr").exists()


def test_convert_writes_a_zarr_store_with_progress(run_gz, tmp_path, capsys):
    from lazymask.io._zarr import open_zarr

    out = tmp_path / "bold.zarr"
    assert main(["convert", str(run_gz), str(out), "--chunks", "10"]) == 0
    captured = capsys.readouterr()
    assert "100%" in captured.err  # the progress bar, on stderr
    assert str(out) in captured.out
    stored = open_zarr(out)
    np.testing.assert_array_equal(np.asarray(stored), np.asanyarray(nib.load(run_gz).dataobj))
    assert main(["convert", str(run_gz), str(out)]) == 2  # a complete store: refused without --overwrite
    assert "pass overwrite=True (--overwrite" in capsys.readouterr().err
    assert main(["convert", str(run_gz), str(out), "--overwrite"]) == 0


def test_verify_command(run_gz, tmp_path, capsys):
    out = tmp_path / "bold.zarr"
    assert main(["convert", str(run_gz), str(out), "--chunks", "10"]) == 0
    capsys.readouterr()
    assert main(["verify", str(out)]) == 0
    assert "ok" in capsys.readouterr().out
    chunk = sorted((out / "0" / "c").rglob("*"))[-1]
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    assert main(["verify", str(out)]) == 2
    err = capsys.readouterr().err
    assert "lazymask: error:" in err and "chunk" in err and "array '0'" in err and "corrupt" in err
    assert main(["verify", str(tmp_path / "missing.zarr")]) == 2
    assert "no such store" in capsys.readouterr().err


def test_demo_computes_the_mean_and_writes_results(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LAZYMASK_DATA", str(tmp_path / "cache"))
    out = tmp_path / "results"
    assert main(["demo", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "(64, 64, 40, 150)" in captured.out
    assert "TR 2 s" in captured.out
    assert str(out.resolve()) in captured.out
    mean = nib.load(out / "mean_bold.nii.gz")
    from lazymask.datasets import load_demo

    bold = nib.load(load_demo().func)
    np.testing.assert_allclose(mean.get_fdata(), bold.get_fdata().mean(-1), rtol=1e-6)
    np.testing.assert_array_equal(mean.affine, bold.affine)
    assert (out / "bold.zarr").is_dir()


def test_module_entry_point_in_a_subprocess(run_gz, tmp_path):
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"\x1f\x8b garbage")
    done = subprocess.run([sys.executable, "-m", "lazymask.cli", "info", str(run_gz)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "(20, 24, 20, 30)" in done.stdout
    done = subprocess.run([sys.executable, "-m", "lazymask.cli", "info", str(bad)], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.startswith("lazymask: error: ") and len(done.stderr.strip().splitlines()) == 1


def test_storage_options_reach_every_command(monkeypatch):
    from lazymask import cli
    from lazymask.storage import default_storage_options

    seen = []
    monkeypatch.setattr(cli, "_run_verify", lambda args: seen.append(default_storage_options()) or 0)
    parser = cli._parser
    monkeypatch.setattr(cli, "_parser", lambda: _with_verify(parser(), cli._run_verify))
    assert cli.main(["--storage-option", "anon=true", "verify", "s3://bucket/x.zarr"]) == 0
    assert cli.main(["verify", "s3://bucket/x.zarr", "--storage-option", "endpoint_url=http://127.0.0.1:9",
                     "--storage-option", 'client_kwargs={"region_name": "eu-west-1"}']) == 0
    assert cli.main(["verify", "s3://bucket/x.zarr"]) == 0
    assert seen == [{"anon": True}, {"endpoint_url": "http://127.0.0.1:9",
                                     "client_kwargs": {"region_name": "eu-west-1"}}, {}]


def _with_verify(parser, run):
    for action in parser._subparsers._group_actions:
        action.choices["verify"].set_defaults(run=run)
    return parser


def test_a_malformed_storage_option_is_one_line(capsys):
    from lazymask import cli

    assert cli.main(["verify", "x.zarr", "--storage-option", "anon"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err


def test_convert_extract_and_verify_on_s3(run_gz, s3_server, capsys):
    import xarray as xr

    from lazymask import open_zarr
    from lazymask.maskers import open_signals

    bucket = s3_server.bucket()
    options = [f"--storage-option={k}={v}" for k, v in (("endpoint_url", s3_server.endpoint_url), ("key", "lazymask-test"),
                                                         ("secret", "lazymask-test"))]
    source = f"{bucket}/in/bold.nii.gz"
    from lazymask.storage import resolve

    location = resolve(source, s3_server.storage_options)
    location.filesystem.pipe_file(location.fs_path, run_gz.read_bytes())
    assert main(["info", source, *options]) == 0
    assert "(20, 24, 20, 30)" in capsys.readouterr().out
    assert main(["convert", source, f"{bucket}/out/bold.zarr", *options]) == 0
    assert main(["extract", source, "--out", f"{bucket}/out/signals.zarr", "--mask-strategy", "epi", *options]) == 0
    assert main(["verify", f"{bucket}/out/signals.zarr", *options]) == 0
    assert "ok " in capsys.readouterr().out
    image = open_zarr(f"{bucket}/out/bold.zarr", storage_options=s3_server.storage_options)
    assert image.shape == (20, 24, 20, 30)
    signals = open_signals(f"{bucket}/out/signals.zarr", storage_options=s3_server.storage_options)
    local = main(["extract", str(run_gz), "--out", str(run_gz.parent / "signals-local.zarr"), "--mask-strategy", "epi"])
    assert local == 0
    xr.testing.assert_allclose(signals.load(), open_signals(run_gz.parent / "signals-local.zarr").load())
    assert main(["convert", source, f"{bucket}/out/bold.zarr", *options]) == 2  # complete: refused
    assert "already holds" in capsys.readouterr().err
