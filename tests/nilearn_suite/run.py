"""Run nilearn's own tests with lazymask in nilearn's place and print the pass rate.

    python tests/nilearn_suite/run.py [--mode face|lazy] [pytest options...]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

SUITE = [
    "nilearn.maskers.tests",
    "nilearn.tests.test_masking",
    "nilearn.tests.test_signal",
    "nilearn.regions.tests.test_signal_extraction",
    "nilearn.interfaces.fmriprep.tests",
]


def command(extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "pytest", "-p", "lazymask_in_nilearn", "-c", str(HERE / "pytest.ini"),
            "--rootdir", str(HERE), "-q", "--pyargs", *SUITE, *extra]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", choices=("face", "lazy"), default="face")
    args, extra = parser.parse_known_args(argv)
    env = dict(os.environ, LAZYMASK_NILEARN_MODE=args.mode,
               PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    return subprocess.call(command(extra), env=env, cwd=HERE)


if __name__ == "__main__":
    sys.exit(main())
