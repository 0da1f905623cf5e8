"""lazymask._progress.ProgressBar: one redrawn line in a terminal, a widget in Jupyter, a few lines in a log."""

import io
import time

import dask
import dask.array as da
import pytest

from lazymask import _progress
from lazymask._progress import ProgressBar


def slow_computation(n_chunks=40, pause=0.01):
    def work(block):
        time.sleep(pause)
        return block

    return da.ones(n_chunks, chunks=1).map_blocks(work, dtype=float).sum()


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_not_a_terminal_writes_a_few_whole_lines():
    log = io.StringIO()
    with dask.config.set(scheduler="threads"), ProgressBar(out=log, dt=0.001):
        assert slow_computation().compute() == 40
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert 1 <= len(lines) <= 4
    assert lines[-1].startswith("[" + "#" * 40 + "] | 100% Completed | ")
    assert all("%" in line for line in lines)


def test_several_computations_in_a_log_stay_a_few_lines_each():
    log = io.StringIO()
    with dask.config.set(scheduler="threads"), ProgressBar(out=log, dt=0.001):
        for _ in range(3):
            slow_computation(n_chunks=20).compute()
    assert len(log.getvalue().splitlines()) <= 12
    assert log.getvalue().count("100% Completed") == 3


def test_a_terminal_gets_one_line_redrawn_in_place():
    terminal = FakeTerminal()
    with dask.config.set(scheduler="threads"), ProgressBar(out=terminal, dt=0.001):
        slow_computation().compute()
    text = terminal.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")  # one line, redrawn
    assert text.count("\r") >= 2
    assert text.rstrip("\n").split("\r")[-1].startswith("[" + "#" * 40 + "] | 100% Completed")


def test_minimum_hides_short_computations():
    log = io.StringIO()
    with ProgressBar(out=log, minimum=60):
        da.ones(10, chunks=2).sum().compute()
    assert log.getvalue() == ""


def test_a_failed_computation_says_so():
    log = io.StringIO()

    def fail(block):
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"), ProgressBar(out=log):
        da.ones(4, chunks=1).map_blocks(fail, dtype=float).sum().compute(scheduler="sync")
    assert "Failed" in log.getvalue().splitlines()[-1]


def test_jupyter_without_ipywidgets_updates_one_display(monkeypatch):
    updates = []

    class Handle:
        def update(self, data, raw):
            updates.append(data["text/plain"])

    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda *a, **k: shown.append(a) or Handle())
    monkeypatch.setattr(_progress, "_in_jupyter", lambda out: True)
    monkeypatch.setitem(__import__("sys").modules, "ipywidgets", None)  # not installed
    out = io.StringIO()
    with dask.config.set(scheduler="threads"), ProgressBar(out=out, dt=0.001):
        slow_computation(n_chunks=10).compute()
    assert len(shown) == 1 and out.getvalue() == ""  # one display, nothing written to the stream
    assert updates and "100% Completed" in updates[-1]
