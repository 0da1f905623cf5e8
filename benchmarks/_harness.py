"""Run benchmark cases each in its own process and print lazymask-vs-reference ratios.

A *case* is a function ``f(**params) -> dict`` in an importable module (``"module:function"``).
:func:`measure` runs it in a fresh Python process and reports its wall time (of the call only,
not of imports) and the process's peak RSS (``ru_maxrss``, which includes imports), along with the
dict it returned (for checking that both sides computed the same numbers).

Usage from a benchmark script::

    from benchmarks._harness import measure, report
    rows = [pair("mean 200 vols .nii.gz",
                 measure("benchmarks.bench_io:lazymask_mean", path=p),
                 measure("benchmarks.bench_io:nibabel_mean", path=p),
                 target="time <= 1.3x zlib")]
    report("io", rows)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def preload(*modules: str):
    """Mark a case function: its process imports ``modules`` before the clock starts.

    Imports are not the work a case measures (lazymask's take ~0.8 s, nilearn's more), but they
    stay in the peak RSS, each side with its own libraries only.
    """

    def mark(function):
        function.preload = modules
        return function

    return mark


JOB_SECONDS = "job_seconds"
"""A case may return its own timing under this key: the seconds of the job it measures, without
the checksums it then computes for comparing outputs (the wall time of the whole call is kept as
``seconds_with_check``)."""

QUIET_LOAD_PER_CORE = 0.5
"""A ratio to the machine's own speed is evidence only on a quiet machine: above this load per core
(from anything but the benchmark), the reference (one ISA-L decompression) slows more than a
parallel job does, and the ratios flatter the job (issue 22 measured 0.9x loaded against
1.97-2.71x quiet)."""


def load_per_core() -> float:
    """The 1-minute load average divided by the number of cores."""
    return os.getloadavg()[0] / (os.cpu_count() or 1)


def _busy_cpu_seconds() -> float | None:
    """CPU seconds all cores have spent busy since boot (``/proc/stat``), or None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _children_cpu_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class OthersLoad:
    """The load the rest of the machine put on it while a case ran, per core.

    The 1-minute load average counts the benchmark itself (a case that keeps both cores busy
    lifts it above 1 on a 2-core machine) and remembers the previous case; this counts only the
    CPU time spent by anything but the measured child process: busy CPU seconds of the whole
    machine (``/proc/stat``) minus the child's own (``RUSAGE_CHILDREN``), over the wall time and
    the cores. ``None`` where ``/proc/stat`` is not there (the load average is used instead).
    """

    def __enter__(self):
        self._busy, self._children = _busy_cpu_seconds(), _children_cpu_seconds()
        self._start, self.per_core = time.perf_counter(), None
        return self

    def __exit__(self, *exc):
        busy, wall = _busy_cpu_seconds(), time.perf_counter() - self._start
        if busy is None or self._busy is None or wall <= 0:
            self.per_core = load_per_core()
        else:
            others = (busy - self._busy) - (_children_cpu_seconds() - self._children)
            self.per_core = max(0.0, others) / wall / (os.cpu_count() or 1)
        return False


def verdict(value: float, target: float | None, loads: list[float]) -> str:
    """``"met"``/``"MISSED"`` for ``value <= target``, or no verdict when the machine was not quiet.

    ``loads`` are the per-core loads from other processes (:class:`OthersLoad`) seen while the
    value and its reference were measured.
    """
    if target is None:
        return ""
    worst = max(loads) if loads else load_per_core()
    if worst > QUIET_LOAD_PER_CORE:
        return f"no verdict (load {worst:.2f}/core > {QUIET_LOAD_PER_CORE})"
    return "met" if value <= target else "MISSED"


def median(values: list[float]) -> float:
    """The median of ``values`` (the mean of the middle two for an even count)."""
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def measure(target: str, repeat: int = 1, **params) -> dict:
    """Run ``target`` (``"module:function"``) with ``params`` in its own process, ``repeat`` times.

    Returns ``{"seconds": best wall time (of the job, when the case timed it: :data:`JOB_SECONDS`),
    "seconds_with_check" (then), "median_seconds", "all_seconds", "peak_rss_gb": largest
    peak RSS, "result": dict, "others_load": the largest per-core load of other processes while it
    ran (:class:`OthersLoad`)}``.
    """
    runs, loads = [], []
    for _ in range(repeat):
        cmd = [sys.executable, "-m", "benchmarks._harness", target, json.dumps(params)]
        with OthersLoad() as others:
            done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=_env())
        if done.returncode != 0:
            raise RuntimeError(f"benchmark case {target} failed:\n{done.stderr[-4000:]}")
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        loads.append(others.per_core)
    checked = [r["seconds_with_check"] for r in runs if "seconds_with_check" in r]
    return {
        **({"seconds_with_check": min(checked)} if checked else {}),
        "seconds": min(r["seconds"] for r in runs),
        "median_seconds": median([r["seconds"] for r in runs]),
        "all_seconds": [r["seconds"] for r in runs],
        "peak_rss_gb": max(r["peak_rss_gb"] for r in runs),
        "result": runs[0]["result"],
        "repeat": repeat,
        "others_load": max(loads),
    }


def pair(case: str, lazymask: dict, reference: dict | None, target: str = "", reference_name="nilearn") -> dict:
    """One row of a table: lazymask's and the reference's measurements side by side."""
    row = {"case": case, "lazymask": lazymask, "reference": reference, "target": target,
           "reference_name": reference_name}
    if reference is not None:
        row["time_ratio"] = lazymask["seconds"] / reference["seconds"]
        row["rss_ratio"] = lazymask["peak_rss_gb"] / reference["peak_rss_gb"]
    return row


def report(name: str, rows: list[dict]) -> str:
    """Print a side-by-side table of ``rows`` and write them as JSON to ``benchmarks/results/``."""
    header = f"{'case':<44} {'lazymask':>16} {'reference':>24} {'time x':>7} {'RSS x':>7}  target"
    lines = [f"== {name}", header, "-" * len(header)]
    for row in rows:
        lm, ref = row["lazymask"], row["reference"]
        left = f"{lm['seconds']:7.2f}s {lm['peak_rss_gb']:5.2f}GB"
        if ref is None:
            right, tr, rr = "-", "-", "-"
        else:
            right = f"{row['reference_name']} {ref['seconds']:7.2f}s {ref['peak_rss_gb']:5.2f}GB"
            tr, rr = f"{row['time_ratio']:.2f}", f"{row['rss_ratio']:.2f}"
        lines.append(f"{row['case']:<44} {left:>16} {right:>24} {tr:>7} {rr:>7}  {row['target']}")
    text = "\n".join(lines)
    print(text, flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(rows, indent=2, default=str))
    return text


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _child(target: str, params_json: str) -> None:
    import importlib
    import resource

    module_name, function_name = target.split(":")
    function = getattr(importlib.import_module(module_name), function_name)
    for module in getattr(function, "preload", ()):
        importlib.import_module(module)
    params = json.loads(params_json)
    start = time.perf_counter()
    result = function(**params) or {}
    seconds = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    timing = {"seconds": seconds}
    if JOB_SECONDS in result:  # the case timed its job itself, before checking its output
        timing = {"seconds": result.pop(JOB_SECONDS), "seconds_with_check": seconds}
    print(json.dumps({**timing, "peak_rss_gb": peak_kb / 2**20, "result": result}, default=float))


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2])
