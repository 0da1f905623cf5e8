"""The archive's progress bar: one bar over the runs, which also advances with the current run's tasks.

Contract
--------
* One bar whose fraction is ``(runs finished + the current run's share of its tasks) / runs``; its
  line says how many runs are done (and failed) and, while a run computes, that run's group and
  the percentage of its tasks done: ``archive [######    ] 2/5 runs | 48% | 3.1 s - sub-02/ses-1/
  task-rest_run-1: 40% of its tasks``.
* Where it goes is decided as for :class:`lazymask._progress.ProgressBar` (whose views it uses): one line
  redrawn in a terminal, a widget in Jupyter, a line at 25, 50, 75 % and one at the end in a log.
* The current run's tasks are seen through dask's local-scheduler callbacks (threads, processes,
  synchronous); on a ``distributed`` cluster, where several runs are in flight at once and those
  callbacks do not fire, the bar advances by runs (the dashboard shows the tasks).
"""

from __future__ import annotations

import sys
import threading
import time

from lazymask._progress import ProgressBar


class ArchiveProgress(ProgressBar):
    """A bar over ``total`` runs (see the module's contract); inactive when ``enabled`` is False."""

    def __init__(self, total: int, enabled: bool = True, out=None, dt: float = 0.2):
        super().__init__(minimum=0, width=30, dt=dt, out=sys.stderr if out is None else out)
        self.total, self.enabled = total, enabled and total > 0
        self.done = self.failed = 0
        self.current = None
        self._state = self._view = None
        self._running = False
        self._start_time = time.perf_counter()

    # -- what build_archive tells ---------------------------------------------------------------------
    def __enter__(self):
        if self.enabled:
            super().__enter__()  # dask's local schedulers report the current run's tasks
        return self

    def __exit__(self, *exc):
        if self.enabled:
            super().__exit__(*exc)

    def start_run(self, group: str) -> None:
        self.current, self._state = group, None

    def run_done(self, result: dict) -> None:
        self.done += 1
        self.failed += result["error"] is not None
        self.current, self._state = None, None
        if self.enabled:
            self._draw(self._fraction(), time.perf_counter() - self._start_time, done=self.done == self.total)

    # -- dask callbacks: a run computes (a mask pass, the extraction and write) --------------------------
    def _start(self, dsk) -> None:
        self._state = None
        self._running = True
        self._timer = threading.Thread(target=self._tick, daemon=True)
        self._timer.start()

    def _finish(self, dsk, state, errored) -> None:
        self._running = False
        self._timer.join()

    # -- drawing ------------------------------------------------------------------------------------
    def _task_fraction(self) -> float:
        return super()._fraction() if self.current is not None else 0.0

    def _fraction(self) -> float:
        return min(1.0, (self.done + self._task_fraction()) / self.total) if self.total else 1.0

    def _line(self, fraction: float, elapsed: float, failed: bool) -> str:
        bar = "#" * int(self._width * fraction)
        failures = f", {self.failed} failed" if self.failed else ""
        line = (f"archive [{bar:<{self._width}}] {self.done}/{self.total} runs{failures} | "
                f"{int(100 * fraction):3d}% | {_elapsed(elapsed)}")
        if self.current is not None:
            line += f" - {self.current}: {int(100 * self._task_fraction())}% of its tasks"
        return line

    def _draw(self, fraction: float, elapsed: float, done: bool, failed: bool = False) -> None:
        super()._draw(fraction, elapsed, done, failed or (done and self.failed > 0))


def _elapsed(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes} min {seconds} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"
