"""Run every benchmark: ``python benchmarks/run.py [--quick]`` (or ``python -m benchmarks.run``).

Each ``benchmarks/bench_*.py`` module exposes ``main(quick: bool)``, which prints its table (and
writes ``benchmarks/results/<name>.json`` through :func:`benchmarks._harness.report`) and returns
its rows. This runner calls them in turn, keeps going when one fails, and writes everything to
``benchmarks/results/summary.json``. The exit code is 1 if any benchmark failed.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import platform
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make `benchmarks` and `lazymask` importable
    sys.path.insert(0, str(ROOT))

BENCHMARKS = ROOT / "benchmarks"
SUMMARY = BENCHMARKS / "results" / "summary.json"


def benchmark_modules() -> list[str]:
    """Names of the benchmark modules (``benchmarks.bench_*``), sorted."""
    return [f"benchmarks.{path.stem}" for path in sorted(BENCHMARKS.glob("bench_*.py"))]


def _call_main(module, quick: bool):
    """A benchmark's ``main``: ``main(quick)``, or ``main(argv)`` for those that parse their own options."""
    parameters = list(inspect.signature(module.main).parameters)
    if parameters and parameters[0] == "argv":
        return module.main(["--quick"] if quick else [])
    return module.main(quick)


def run_all(quick: bool, only: list[str] | None = None) -> dict:
    """Run the benchmarks (all, or those whose module name contains one of ``only``)."""
    summary = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "quick": quick,
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": _cpu_count()},
        "benchmarks": {},
    }
    for name in benchmark_modules():
        if only and not any(word in name for word in only):
            continue
        print(f"\n### {name}", flush=True)
        start = time.perf_counter()
        try:
            rows = _call_main(importlib.import_module(name), quick)
            entry = {"status": "ok", "rows": rows}
        except Exception:  # one broken benchmark must not hide the others
            traceback.print_exc()
            entry = {"status": "failed", "error": traceback.format_exc(limit=5)}
        entry["seconds"] = time.perf_counter() - start
        summary["benchmarks"][name] = entry
    SUMMARY.parent.mkdir(parents=True, exist_ok=True)
    SUMMARY.write_text(json.dumps(summary, indent=2, default=str))
    print(f"\nsummary written to {SUMMARY}")
    return summary


def _cpu_count() -> int | None:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run lazymask's benchmarks and write a summary.")
    parser.add_argument("--quick", action="store_true", help="small cases only")
    parser.add_argument("only", nargs="*", help="run only benchmarks whose name contains one of these")
    args = parser.parse_args(argv)
    summary = run_all(args.quick, args.only)
    failed = [name for name, entry in summary["benchmarks"].items() if entry["status"] != "ok"]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
