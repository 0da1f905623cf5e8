"""Signals to the command line (issue 21): SIGTERM ends a job like Ctrl-C (one line, exit 143, staging
removed, the old OUT intact), a second Ctrl-C during the cleanup never escapes as a traceback, and the
staging a killed job left is removed by the next write of the same target."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lazymask.cli import main
from lazymask.maskers import open_signals
from lazymask.testing import fake_fmri

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A run that takes a couple of seconds to extract (most of it the interpreter's start)."""
    path = tmp_path_factory.mktemp("signals") / "run.nii.gz"
    fake_fmri((40, 48, 40), 200).to_filename(path)
    return path


@pytest.fixture
def out(run, tmp_path) -> Path:
    """A complete OUT, extracted in this process."""
    target = tmp_path / "out.zarr"
    assert main(["extract", str(run), "--out", str(target), "--mask-strategy", "epi"]) == 0
    return target


def _state(store: Path) -> tuple:
    """What a reader of OUT sees, and every file of it with its bytes' size and mtime."""
    files = sorted((str(p.relative_to(store)), p.stat().st_size, p.stat().st_mtime_ns)
                   for p in store.rglob("*") if p.is_file())
    return np.asarray(open_signals(store).values), files


def _staging(out: Path, pid: int | None = None) -> list[Path]:
    middle = f"-{pid}-" if pid is not None else ""
    return [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.lazymask-tmp-") and middle in p.name]


def _start_overwrite(run: Path, out: Path) -> subprocess.Popen:
    """``extract --overwrite`` over ``out`` in a subprocess, returned once it is writing its staging."""
    process = subprocess.Popen(
        [sys.executable, "-m", "lazymask", "extract", str(run), "--out", str(out), "--overwrite",
         "--mask-strategy", "epi"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 60
    while not _staging(out, process.pid):
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline
        time.sleep(0.002)
    return process


def _lines(stderr: str) -> list[str]:
    """stderr without dask's progress bar."""
    return [line for line in stderr.splitlines() if line.strip() and "Completed" not in line]


def test_sigterm_mid_overwrite_ends_like_ctrl_c_and_keeps_the_old_out(run, out):
    before = _state(out)
    process = _start_overwrite(run, out)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr
    assert _lines(stderr) == ["lazymask: terminated"]
    after = _state(out)
    np.testing.assert_array_equal(after[0], before[0])
    assert after[1] == before[1]  # not a byte of the old OUT touched
    assert _staging(out, process.pid) == []  # removed on the way out


def test_the_staging_a_killed_job_left_is_removed_by_the_next_write(run, out):
    process = _start_overwrite(run, out)
    process.send_signal(signal.SIGKILL)  # no cleanup at all: its staging stays, its pid is dead
    process.wait(timeout=60)
    left = _staging(out, process.pid)
    assert left
    assert main(["extract", str(run), "--out", str(out), "--overwrite", "--mask-strategy", "epi"]) == 0
    assert not any(path.exists() for path in left) and _staging(out) == []
    assert open_signals(out).sizes["time"] == 200


def test_a_second_ctrl_c_during_the_cleanup_is_not_a_traceback(run, out):
    before = _state(out)
    process = _start_overwrite(run, out)
    process.send_signal(signal.SIGINT)
    while process.poll() is None:  # Ctrl-C again and again, through the cleanup and the interpreter's exit
        time.sleep(0.002)
        try:
            process.send_signal(signal.SIGINT)
        except ProcessLookupError:
            break
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and _lines(stderr) == ["lazymask: interrupted"], stderr
    after = _state(out)
    np.testing.assert_array_equal(after[0], before[0])
    assert after[1] == before[1]


def test_handlers_are_put_back_after_a_command():
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    assert main(["info", "no-such-file.nii.gz"]) == 2
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
