"""A pytest plugin: nilearn's own tests, with lazymask put in nilearn's place.

Loaded with ``-p lazymask_in_nilearn`` (this folder on ``PYTHONPATH``) in a pytest run that collects
nilearn's installed tests (``--pyargs nilearn.maskers.tests ...``). Before any test module is
imported, the public names of ``nilearn.maskers``, ``nilearn.masking``, ``nilearn.signal``,
``nilearn.regions`` (signal extraction), ``nilearn.exceptions`` and ``nilearn.interfaces.fmriprep``
are rebound to lazymask's, as a nilearn user switching imports would. Two modes
(``LAZYMASK_NILEARN_MODE``):

``face``
    ``lazymask.nilearn`` (the drop-in face: nilearn's types, exceptions and warnings).
``lazy``
    lazymask's lazy API, each result computed to what nilearn returns (numpy arrays, nibabel
    images): how far the core alone is from nilearn.

Tests that cannot apply are deselected with their reason (``exclusions.py``); the summary prints the
pass rate over the rest.
"""

from __future__ import annotations

import importlib
import json
import os
from collections import Counter

import pytest

from exclusions import exclusion_reason  # noqa: E402  (this folder is on sys.path)

MODE = os.environ.get("LAZYMASK_NILEARN_MODE", "face")

# nilearn module -> the lazymask.nilearn module whose public names replace its own.
SUBSTITUTED = {
    "nilearn.exceptions": "lazymask.nilearn.exceptions",
    "nilearn.masking": "lazymask.nilearn.masking",
    "nilearn.signal": "lazymask.nilearn.signal",
    "nilearn.regions": "lazymask.nilearn.regions",
    "nilearn.regions.signal_extraction": "lazymask.nilearn.regions",
    "nilearn.maskers": "lazymask.nilearn.maskers",
    "nilearn.maskers.nifti_masker": "lazymask.nilearn.maskers",
    "nilearn.maskers.multi_nifti_masker": "lazymask.nilearn.maskers",
    "nilearn.maskers.nifti_labels_masker": "lazymask.nilearn.maskers",
    "nilearn.maskers.multi_nifti_labels_masker": "lazymask.nilearn.maskers",
    "nilearn.maskers.nifti_maps_masker": "lazymask.nilearn.maskers",
    "nilearn.maskers.multi_nifti_maps_masker": "lazymask.nilearn.maskers",
    "nilearn.maskers.nifti_spheres_masker": "lazymask.nilearn.maskers",
    # check_embedded_masker builds a masker from an estimator's public parameters (or a given masker's)
    "nilearn.maskers.masker_validation": "lazymask.nilearn.maskers",
    "nilearn.interfaces.fmriprep": "lazymask.nilearn.interfaces.fmriprep",
    # the class a masker's generate_report() returns (tests check isinstance against it)
    "nilearn.reporting": "lazymask.nilearn.reporting",
    "nilearn.interfaces.fmriprep.load_confounds": "lazymask.nilearn.interfaces.fmriprep",
    "nilearn.interfaces.fmriprep.load_confounds_strategy": "lazymask.nilearn.interfaces.fmriprep",
}

_outcomes: Counter = Counter()
_excluded: Counter = Counter()
_failed: list[str] = []


def _replacements(face_module: str) -> dict:
    face = importlib.import_module(face_module)
    if MODE == "lazy":
        import lazy_api

        return lazy_api.replacements(face_module)
    return {name: getattr(face, name) for name in face.__all__}


def pytest_configure(config):
    # After nilearn's conftests were loaded (their fixtures stay nilearn's), before any test module.
    config.addinivalue_line("markers", "thread_unsafe: nilearn's marker")
    config.addinivalue_line("markers", "single_process: nilearn's marker")
    for nilearn_name, face_name in SUBSTITUTED.items():
        module = importlib.import_module(nilearn_name)
        for name, value in _replacements(face_name).items():
            if hasattr(module, name):
                setattr(module, name, value)
    # nilearn's checks tell a Multi masker by its private mixin (isinstance only): lazymask's Multi
    # maskers count as such (imported after the substitution, so its masker names are lazymask's)
    checks = importlib.import_module("nilearn._utils.estimator_checks")
    from lazymask.maskers._multi_nifti_masker import MultiNiftiMasker
    from lazymask.maskers._region_base import MultiMixin

    checks._MultiMixin = (checks._MultiMixin, MultiMixin, MultiNiftiMasker)
    validation = importlib.import_module("nilearn.maskers.masker_validation")
    validation._MultiMixin = (validation._MultiMixin, MultiMixin, MultiNiftiMasker)


def pytest_collection_modifyitems(config, items):
    kept, dropped = [], []
    for item in items:
        reason = exclusion_reason(item.nodeid)
        if reason is None:
            kept.append(item)
        else:
            dropped.append(item)
            _excluded[reason] += 1
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    items[:] = kept


def pytest_runtest_logreport(report):
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        if hasattr(report, "wasxfail"):
            outcome = "xpassed" if report.outcome == "passed" else "xfailed"
        elif report.outcome == "failed" and report.when == "setup":
            outcome = "error"
        else:
            outcome = report.outcome
        _outcomes[outcome] += 1
        if outcome in ("failed", "error"):
            _failed.append(report.nodeid)


def pass_rate(outcomes) -> float:
    passed = outcomes["passed"] + outcomes["xpassed"]
    counted = passed + outcomes["failed"] + outcomes["error"]
    return passed / counted if counted else 0.0


def pytest_terminal_summary(terminalreporter):
    write = terminalreporter.write_line
    write("")
    write(f"lazymask in nilearn's place ({MODE} mode): nilearn's own tests")
    for reason, n in sorted(_excluded.items()):
        write(f"  excluded {n:5d}  {reason}")
    counted = sum(_outcomes[k] for k in ("passed", "xpassed", "failed", "error"))
    write(
        f"  in scope {counted}: passed {_outcomes['passed']} + xpassed {_outcomes['xpassed']}, "
        f"failed {_outcomes['failed']}, errors {_outcomes['error']} "
        f"(skipped {_outcomes['skipped']}, xfailed {_outcomes['xfailed']}: not counted)"
    )
    write(f"  PASS RATE {100 * pass_rate(_outcomes):.1f} %")
    summary = os.environ.get("LAZYMASK_NILEARN_SUMMARY")
    if summary:
        with open(summary, "w") as f:
            json.dump({"mode": MODE, "outcomes": dict(_outcomes), "excluded": dict(_excluded),
                       "failed": _failed, "pass_rate": pass_rate(_outcomes)}, f, indent=1)
