"""A full disk, a read-only file system: the command line says one line (exit 2) and leaves nothing
half-written, and an old result stays intact (issue 21).

The file systems are small tmpfs mounts made by the test (it runs as root on CI); where mounting
is impossible (no CAP_SYS_ADMIN) the tests skip and say so.
"""

from __future__ import annotations

import os
import subprocess
import sys

import nibabel as nib
import pytest

from lazymask.cli import main
from lazymask.io import verify
from lazymask.testing import fake_fmri


def _mount(path, *options) -> None:
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(("size=256k", *options)), "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN): {done.stderr.strip()}")


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs: any run below is larger than it."""
    disk = tmp_path / "disk"
    _mount(disk)
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.fixture(scope="module")
def big_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("disk-runs") / "bold.nii.gz"
    nib.save(fake_fmri((40, 40, 30), 30, seed=3), path)  # ~2.9 MB of int16, noisy: compresses to > 256 KiB
    return path


def _one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip() and "%" not in line and "[" not in line[:3]]
    errors = [line for line in lines if line.startswith("lazymask: error:")]
    assert len(errors) == 1, err
    assert "Traceback" not in err
    return errors[0]


def test_convert_on_a_full_disk_is_one_line_and_leaves_nothing(small_disk, big_run, capsys):
    out = small_disk / "bold.zarr"
    assert main(["convert", str(big_run), str(out)]) == 2
    line = _one_line_error(capsys.readouterr().err)
    assert "No space left on device (ENOSPC)" in line and str(small_disk) in line
    assert os.listdir(small_disk) == []  # no staging, no partial store


def test_extract_on_a_full_disk_is_one_line_and_leaves_nothing(small_disk, big_run, capsys):
    out = small_disk / "signals.zarr"
    assert main(["extract", str(big_run), "--out", str(out), "--mask-strategy", "epi"]) == 2
    assert "No space left on device (ENOSPC)" in _one_line_error(capsys.readouterr().err)
    assert os.listdir(small_disk) == []


def test_a_replacement_on_a_full_disk_keeps_the_old_result(small_disk, tmp_path, capsys):
    small = tmp_path / "small.nii.gz"
    nib.save(fake_fmri((6, 6, 5), 4, seed=4), small)
    out = small_disk / "bold.zarr"
    assert main(["convert", str(small), str(out)]) == 0
    filler = small_disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:  # fill the disk to its last block
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    assert main(["convert", str(small), str(out), "--overwrite"]) == 2
    assert "ENOSPC" in _one_line_error(capsys.readouterr().err)
    assert verify(out)["groups"] == 1  # the old store, whole
    assert sorted(os.listdir(small_disk)) == ["bold.zarr", "filler"]


def test_a_read_only_file_system_is_one_line(tmp_path, big_run):
    disk = tmp_path / "ro"
    _mount(disk, "ro")
    try:
        done = subprocess.run([sys.executable, "-m", "lazymask", "convert", str(big_run), str(disk / "bold.zarr")],
                              capture_output=True, text=True)
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
    assert done.returncode == 2, done.stderr
    line = _one_line_error(done.stderr)
    assert "Read-only file system (EROFS)" in line and "write elsewhere" in line


def test_a_resume_with_nothing_to_do_on_a_read_only_archive_succeeds(tmp_path):
    from lazymask.archive import build_archive
    from lazymask.datasets import make_fmriprep_dataset
    from lazymask.maskers import NiftiSpheresMasker

    dataset = make_fmriprep_dataset(tmp_path / "ds", n_subjects=1, n_volumes=12)
    disk = tmp_path / "archive-disk"
    disk.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN): {done.stderr.strip()}")
    try:
        masker = NiftiSpheresMasker([(0.0, -20.0, 10.0)], radius=10.0)
        first = build_archive(dataset, disk / "archive", masker, progress=False)
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        again = build_archive(dataset, disk / "archive", masker, progress=False)  # nothing to do: no write
        assert again.history == first.history
        assert (again.runs["status"] == "complete").all()
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.mark.parametrize("size", ["120k", "160k"])  # the disk fills in a commit / in the runs' writes
def test_an_archive_on_a_full_disk_is_one_line_and_keeps_its_last_commit(tmp_path, size):
    from lazymask.archive import open_archive
    from lazymask.datasets import make_fmriprep_dataset

    dataset = make_fmriprep_dataset(tmp_path / "ds", n_subjects=3, n_volumes=40)
    disk = tmp_path / "archive-disk"
    _mount_sized(disk, size)
    try:
        done = subprocess.run([sys.executable, "-m", "lazymask", "archive", str(dataset), str(disk / "archive"),
                               "--quiet"], capture_output=True, text=True, timeout=300)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()  # one line per failed run, or one for a failed commit
        assert lines and all(line.startswith("lazymask:") for line in lines), done.stderr
        assert all("No space left on device (ENOSPC)" in line and "write elsewhere" in line for line in lines)
        archive = open_archive(disk / "archive")  # the commits made before the disk filled are intact
        assert archive.history and (archive.runs["status"] != "complete").any()
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def _mount_sized(path, size: str) -> None:
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN): {done.stderr.strip()}")


def test_the_on_disk_regroup_on_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, big_run, capsys):
    import gc

    import dask

    from lazymask import config

    scratch = tmp_path / "scratch"
    _mount_sized(scratch, "256k")
    try:
        with config.set(memory_budget=2**20), dask.config.set({"temporary-directory": str(scratch)}):
            code = main(["extract", str(big_run), "--out", str(tmp_path / "signals.zarr"), "--mask-strategy", "epi",
                         "--detrend", "--chunks", "5"])
        assert code == 2
        assert "No space left on device (ENOSPC)" in _one_line_error(capsys.readouterr().err)
        gc.collect()  # the intermediate goes with the graph that named it
        assert os.listdir(scratch) == []
        assert not (tmp_path / "signals.zarr").exists()
    finally:
        subprocess.run(["umount", "-l", str(scratch)], check=False)
