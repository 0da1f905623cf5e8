"""nilearn 0.14.1's own tests, run with ``lazymask.nilearn`` in nilearn's place (issue 20's measure).

The run is a separate pytest process (``tests/nilearn_suite/run.py``): its plugin rebinds
nilearn's public names to lazymask's, which must not leak into this process's comparisons with
the real nilearn. The pass rate is printed; the test fails when it drops below
:data:`FACE_FLOOR` (a ratchet below the rate reached, never lowered).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SUITE = Path(__file__).resolve().parent / "nilearn_suite"

#: The lowest pass rate (face mode) accepted (reached: 99.8 % of 1316; issue 20 asked for 95 %).
FACE_FLOOR = 0.99


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_nilearn_suite_against_the_face(tmp_path):
    summary = tmp_path / "summary.json"
    env = dict(os.environ, LAZYMASK_NILEARN_SUMMARY=str(summary))
    run = subprocess.run(
        [sys.executable, str(SUITE / "run.py"), "--mode", "face", "--tb=no"],
        env=env, capture_output=True, text=True,
    )
    assert summary.exists(), f"the nilearn suite did not finish:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    result = json.loads(summary.read_text())
    outcomes = result["outcomes"]
    rate = result["pass_rate"]
    print(f"nilearn's own tests against lazymask.nilearn: pass rate {100 * rate:.1f} % ({outcomes})")
    assert rate >= FACE_FLOOR, (
        f"pass rate {100 * rate:.1f} % < {100 * FACE_FLOOR:.1f} %; failing:\n" + "\n".join(result["failed"][:40])
    )
