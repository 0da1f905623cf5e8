"""A progress bar for dask computations that suits where its output goes.

Contract
--------
* :class:`ProgressBar` is a drop-in for ``dask.diagnostics.ProgressBar`` (same arguments:
  ``minimum``, ``width``, ``dt``, ``out``; a context manager, or ``register()``); it reports the
  computations of dask's local schedulers (threads, processes, synchronous), as dask's does.
* To a terminal (``out.isatty()``) it redraws **one line** in place (carriage returns), as dask's.
* In Jupyter (an IPython kernel, ``out`` the notebook's ``stdout``/``stderr``) it shows a widget
  (``ipywidgets.IntProgress`` when ipywidgets is installed, else one line of text updated in
  place through an IPython display handle): nothing accumulates in the cell's output.
* To anything else (a log file, a pipe, a CI job) it stays quiet: one line when 25 %, 50 % and 75 %
  of the tasks are done and one at the end — at most four lines per computation, never the
  stream of partial lines a carriage-return bar leaves in a log.
* A computation shorter than ``minimum`` seconds prints nothing, in every mode.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time

from dask.callbacks import Callback

__all__ = ["ProgressBar"]

_MILESTONES = (0.25, 0.5, 0.75)


def _format_time(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{int(minutes)} min {seconds:.0f} s"
    hours, minutes = divmod(minutes, 60)
    return f"{int(hours)} h {int(minutes)} min"


def _in_jupyter(out) -> bool:
    """True when ``out`` is the output of a running IPython kernel (a notebook's cell)."""
    if "ipykernel" not in sys.modules or out not in (sys.stdout, sys.stderr):
        return False
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - ipykernel needs IPython
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _is_terminal(out) -> bool:
    isatty = getattr(out, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed file
        return False


class _TerminalView:
    """One line, redrawn in place."""

    def __init__(self, out):
        self.out = out

    def show(self, line: str, done: bool) -> None:
        with contextlib.suppress(ValueError):
            self.out.write("\r" + line + ("\n" if done else ""))
            self.out.flush()


class _LogView:
    """A line per milestone (25, 50, 75 %) and at the end."""

    def __init__(self, out):
        self.out = out
        self.next_milestone = 0

    def show(self, line: str, done: bool, fraction: float = 0.0) -> None:
        passed = False
        while self.next_milestone < len(_MILESTONES) and fraction >= _MILESTONES[self.next_milestone]:
            self.next_milestone += 1
            passed = True
        if passed or done:
            with contextlib.suppress(ValueError):
                self.out.write(line + "\n")
                self.out.flush()


class _JupyterView:
    """An ipywidgets bar when available, else a text line updated through a display handle."""

    def __init__(self):
        from IPython.display import display

        try:
            import ipywidgets
        except ImportError:
            ipywidgets = None
        if ipywidgets is not None:
            self.bar = ipywidgets.IntProgress(min=0, max=100, value=0, bar_style="info")
            self.label = ipywidgets.Label("")
            display(ipywidgets.HBox([self.bar, self.label]))
            self.handle = None
        else:
            self.bar = None
            self.handle = display({"text/plain": ""}, raw=True, display_id=True)

    def show(self, line: str, done: bool, fraction: float = 0.0, failed: bool = False) -> None:
        if self.bar is not None:
            self.bar.value = int(100 * fraction)
            self.label.value = line.split("] ", 1)[-1]
            if done:
                self.bar.bar_style = "danger" if failed else "success"
        else:
            self.handle.update({"text/plain": line}, raw=True)


class ProgressBar(Callback):
    """Show the progress of dask computations: a line in a terminal, a widget in Jupyter, a few lines in logs.

    A drop-in for ``dask.diagnostics.ProgressBar``.

    Parameters
    ----------
    minimum : float, default=0
        Show nothing for computations shorter than this (seconds).
    width : int, default=40
        Width of the bar, in characters.
    dt : float, default=0.1
        Update interval in seconds.
    out : file-like, optional
        Where to write (default ``sys.stdout``).

    Attributes
    ----------
    last_duration : float
        Duration of the last computation, in seconds.

    Examples
    --------
    >>> import io, dask.array as da
    >>> log = io.StringIO()                    # not a terminal: a few lines only
    >>> with ProgressBar(out=log):
    ...     _ = da.ones(100, chunks=10).sum().compute()
    >>> log.getvalue().splitlines()[-1].startswith("[########################################] | 100% Completed")
    True
    """

    def __init__(self, minimum: float = 0, width: int = 40, dt: float = 0.1, out=None):
        self._minimum = minimum
        self._width = width
        self._dt = dt
        self._file = sys.stdout if out is None else out
        self.last_duration = 0.0
        self._lock = threading.Lock()

    # -- dask callbacks -----------------------------------------------------------------------------
    def _start(self, dsk) -> None:
        self._state = None
        self._view = None
        self._start_time = time.perf_counter()
        self._running = True
        self._timer = threading.Thread(target=self._tick, daemon=True)
        self._timer.start()

    def _pretask(self, key, dsk, state) -> None:
        self._state = state

    def _finish(self, dsk, state, errored) -> None:
        self._running = False
        self._timer.join()
        elapsed = time.perf_counter() - self._start_time
        self.last_duration = elapsed
        if elapsed < self._minimum:
            return
        fraction = 1.0 if not errored else self._fraction()
        self._draw(fraction, elapsed, done=True, failed=bool(errored))

    # -- drawing ------------------------------------------------------------------------------------
    def _tick(self) -> None:
        while self._running:
            elapsed = time.perf_counter() - self._start_time
            if elapsed >= self._minimum:
                fraction = self._fraction()
                if fraction < 1.0:
                    self._draw(fraction, elapsed, done=False)
            time.sleep(self._dt)

    def _fraction(self) -> float:
        state = self._state
        if not state:
            return 0.0
        finished = len(state["finished"])
        total = finished + sum(len(state[k]) for k in ("ready", "waiting", "running"))
        return finished / total if total else 0.0

    def _line(self, fraction: float, elapsed: float, failed: bool) -> str:
        bar = "#" * int(self._width * fraction)
        status = "Failed" if failed else "Completed"
        return f"[{bar:<{self._width}}] | {int(100 * fraction):3d}% {status} | {_format_time(elapsed)}"

    def _draw(self, fraction: float, elapsed: float, done: bool, failed: bool = False) -> None:
        with self._lock:
            if self._view is None:
                self._view = self._make_view()
            line = self._line(fraction, elapsed, failed)
            if isinstance(self._view, _TerminalView):
                self._view.show(line, done)
            elif isinstance(self._view, _JupyterView):
                self._view.show(line, done, fraction, failed)
            else:
                self._view.show(line, done, fraction)

    def _make_view(self):
        if _in_jupyter(self._file):
            try:
                return _JupyterView()
            except Exception:  # pragma: no cover - a kernel without a display: fall back to text
                pass
        if _is_terminal(self._file):
            return _TerminalView(self._file)
        return _LogView(self._file)
