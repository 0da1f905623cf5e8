"""A generated multi-subject dataset in fMRIPrep's output layout (deterministic, no network).

Contract
--------
* ``make_fmriprep_dataset(directory)`` writes, under ``directory``, an fMRIPrep-style derivatives
  tree: ``dataset_description.json``; per run ``sub-XX/[ses-Y/]func/`` with the preprocessed run
  ``*_space-MNI152NLin2009cAsym_res-2_desc-preproc_bold.nii.gz`` (int16), its JSON sidecar
  (``RepetitionTime``), its ``*_desc-brain_mask.nii.gz`` and its
  ``*_desc-confounds_timeseries.tsv`` + ``.json``; and at the root a labels atlas
  (``atlas-demo_dseg.nii.gz``) with its look-up table (``atlas-demo_dseg.tsv``).
* Subjects alternate between two sessions (``ses-1``, ``ses-2``) and none (every third subject
  has no session level), so discovery sees nested and flat layouts.
* The confounds TSV has the columns ``nilearn.interfaces.fmriprep.load_confounds`` reads for the
  ``simple`` and ``scrubbing`` strategies: motion with ``_derivative1``, ``_power2``,
  ``_derivative1_power2``; ``csf``, ``white_matter``, ``global_signal`` with the same
  expansions; ``cosineXX``; ``framewise_displacement``, ``dvars``, ``std_dvars``; and a
  ``non_steady_state_outlier00`` column (the first volume of every run is marked non-steady).
  Missing values are ``n/a``, as fMRIPrep writes them.
* The bytes depend only on the arguments: each run's seed is ``seed`` plus its index, and gzip
  headers carry no timestamp. An existing complete dataset (``dataset_description.json`` written
  last, with the arguments) is reused, not rewritten.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from lazymask.datasets._atlas import ATLAS_NAMES, atlas_labels
from lazymask.datasets._demo import _confound_columns, _write_nifti, _write_tsv
from lazymask.datasets._synthetic import GREY, WHITE, Grid, synthetic_run

__all__ = ["make_fmriprep_dataset"]

SPACE = "MNI152NLin2009cAsym"
TASK = "rest"
_HIGH_PASS_PERIOD = 128.0  # s: fMRIPrep's discrete cosine basis cut-off


def _grid(voxel_size: float) -> Grid:
    """The demo's field of view (192 x 192 x 120 mm) at ``voxel_size`` mm."""
    shape = tuple(int(round(extent / voxel_size)) for extent in (192.0, 192.0, 120.0))
    origin = (-voxel_size * (shape[0] - 1) / 2.0, -112.5, -58.5)
    return Grid(shape=shape, voxel_size=float(voxel_size), origin=origin)


def _layout(n_subjects: int, n_runs: int) -> list[tuple[str, str | None, int]]:
    runs = []
    for number in range(1, n_subjects + 1):
        sessions = [None] if number % 3 == 0 else ["1", "2"]
        for session in sessions:
            runs.extend((f"{number:02d}", session, run) for run in range(1, n_runs + 1))
    return runs


def _cosines(n_volumes: int, t_r: float) -> np.ndarray:
    n_basis = int(np.floor(2.0 * n_volumes * t_r / _HIGH_PASS_PERIOD))
    time = np.arange(n_volumes)
    return np.stack([np.sqrt(2.0 / n_volumes) * np.cos(np.pi * (2 * time + 1) * k / (2 * n_volumes))
                     for k in range(1, n_basis + 1)], axis=1) if n_basis else np.zeros((n_volumes, 0))


def _with_expansions(columns: dict, names) -> dict:
    out = {}
    for name in names:
        base = np.asarray(columns[name], dtype=float)
        derivative = np.concatenate([[np.nan], np.diff(base)])
        out[name] = base
        out[f"{name}_derivative1"] = derivative
        out[f"{name}_power2"] = base**2
        out[f"{name}_derivative1_power2"] = derivative**2
    return out


def _confounds(run, non_steady: int) -> dict[str, np.ndarray]:
    base = _confound_columns(run)
    columns = _with_expansions(base, ["global_signal", "csf", "white_matter",
                                      "trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"])
    brain = (run.fractions[GREY] + run.fractions[WHITE]) > 0.5
    voxels = run.data[brain].astype(np.float64)
    dvars = np.concatenate([[np.nan], np.sqrt(np.mean(np.diff(voxels, axis=1) ** 2, axis=0))])
    columns["dvars"] = dvars
    columns["std_dvars"] = dvars / np.nanmedian(dvars)
    columns["framewise_displacement"] = base["framewise_displacement"]
    for index, cosine in enumerate(_cosines(run.data.shape[-1], run.t_r).T):
        columns[f"cosine{index:02d}"] = cosine
    for index in range(non_steady):
        flag = np.zeros(run.data.shape[-1])
        flag[index] = 1.0
        columns[f"non_steady_state_outlier{index:02d}"] = flag
    return columns


def _write_run(func: Path, stem: str, run, mask: np.ndarray, non_steady: int) -> None:
    func.mkdir(parents=True, exist_ok=True)
    prefix = f"{stem}_space-{SPACE}_res-2"
    _write_nifti(func / f"{prefix}_desc-preproc_bold.nii.gz", run.data, run.affine, t_r=run.t_r,
                 description="lazymask generated fMRIPrep run")
    (func / f"{prefix}_desc-preproc_bold.json").write_text(json.dumps(
        {"RepetitionTime": run.t_r, "SkullStripped": False, "TaskName": TASK}, indent=2) + "\n")
    _write_nifti(func / f"{prefix}_desc-brain_mask.nii.gz", mask.astype(np.uint8), run.affine)
    columns = _confounds(run, non_steady)
    names = list(columns)
    _write_tsv(func / f"{stem}_desc-confounds_timeseries.tsv", names, zip(*(columns[n] for n in names), strict=True))
    (func / f"{stem}_desc-confounds_timeseries.json").write_text(json.dumps(
        {name: {"Description": f"generated {name}"} for name in names}, indent=2) + "\n")


def make_fmriprep_dataset(directory, n_subjects: int = 3, n_runs: int = 1, n_volumes: int = 60,
                          voxel_size: float = 6.0, t_r: float = 2.0, seed: int = 20261201) -> Path:
    """Write a deterministic multi-subject dataset in fMRIPrep's layout (or reuse a complete one).

    Parameters
    ----------
    directory : str or pathlib.Path
        Where to write (created). A complete dataset with the same arguments is reused.
    n_subjects : int, default 3
        Subjects ``sub-01`` ... ; every third one has no session level, the others two sessions.
    n_runs : int, default 1
        Runs of task ``rest`` per session.
    n_volumes : int, default 60
        Volumes per run.
    voxel_size : float, default 6.0
        Isotropic voxel size (mm) over a 192 x 192 x 120 mm field of view (2.0 for full size).
    t_r : float, default 2.0
        Repetition time (s).
    seed : int
        Seed of the first run (run ``n`` uses ``seed + n``).

    Returns
    -------
    pathlib.Path
        ``directory``.

    Examples
    --------
    >>> import tempfile
    >>> root = make_fmriprep_dataset(tempfile.mkdtemp(), n_subjects=1, n_volumes=20)
    >>> sorted(p.name for p in (root / "sub-01" / "ses-1" / "func").iterdir())[:2]
    ['sub-01_ses-1_task-rest_run-1_desc-confounds_timeseries.json', 'sub-01_ses-1_task-rest_run-1_desc-confounds_timeseries.tsv']
    """
    root = Path(directory)
    arguments = dict(format=2, n_subjects=n_subjects, n_runs=n_runs, n_volumes=n_volumes, voxel_size=voxel_size,
                     t_r=t_r, seed=seed)
    description = root / "dataset_description.json"
    if description.is_file():
        try:
            if json.loads(description.read_text()).get("GeneratedBy", [{}])[0].get("Arguments") == arguments:
                return root
        except (ValueError, AttributeError, IndexError):
            pass
    root.mkdir(parents=True, exist_ok=True)
    grid = _grid(voxel_size)
    atlas = atlas_labels(grid)
    _write_nifti(root / "atlas-demo_dseg.nii.gz", atlas, grid.affine)
    _write_tsv(root / "atlas-demo_dseg.tsv", ["index", "name"],
               [(index + 1, name) for index, name in enumerate(ATLAS_NAMES)])
    for index, (subject, session, run_number) in enumerate(_layout(n_subjects, n_runs)):
        run = synthetic_run(grid, n_volumes=n_volumes, t_r=t_r, seed=seed + index)
        mask = (run.fractions[GREY] + run.fractions[WHITE]) > 0.5
        parts = [f"sub-{subject}"] + ([f"ses-{session}"] if session else [])
        stem = "_".join(parts + [f"task-{TASK}", f"run-{run_number}"])
        _write_run(root.joinpath(*parts, "func"), stem, run, mask, non_steady=1)
    description_text = json.dumps({
        "Name": "lazymask generated fMRIPrep derivatives", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "lazymask.datasets.make_fmriprep_dataset", "Arguments": arguments}],
    }, indent=2) + "\n"
    partial = description.with_name(f".{description.name}.{os.getpid()}")
    partial.write_text(description_text)
    os.replace(partial, description)  # written last: the dataset is complete
    return root
