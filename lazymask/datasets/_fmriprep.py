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
* The confounds TSV has the columns ``nilearn.interfaces.fmriprep.load_confounds`` reads for every
  strategy: motion with ``_derivative1``, ``_power2``, ``_derivative1_power2``; ``csf``,
  ``white_matter``, ``global_signal`` with the same expansions; ``cosineXX``;
  ``framewise_displacement``, ``dvars``, ``std_dvars``; a ``non_steady_state_outlier00`` column
  (the first volume of every run is marked non-steady); CompCor components as fMRIPrep >= 21
  names them (``t_comp_cor_XX``, ``c_comp_cor_XX`` (CSF mask), ``w_comp_cor_XX`` (WM),
  ``a_comp_cor_XX`` (combined)); and ``aroma_motion_XX`` columns. Missing values are ``n/a``, as
  fMRIPrep writes them.
* The CompCor components are computed as fMRIPrep does, on this run: the principal components
  (SVD) of the time series of the mask's voxels (anatomical: WM, CSF or both, fractions > 0.9;
  temporal: the 5 % brain voxels of highest temporal standard deviation) after removing the mean
  and the cosine drifts; components are retained until 50 % of the variance is explained, at most
  5 per mask here (a small dataset). The JSON sidecar carries fMRIPrep's metadata for each
  (``Method``, ``Mask`` for the anatomical ones, ``Retained``, ``SingularValue``,
  ``VarianceExplained``, ``CumulativeVarianceExplained``), plus 2 ``dropped_N`` entries per mask
  (``Retained: false``, as fMRIPrep 1.4 lists the components it did not keep).
* ``aroma_motion_XX`` are stand-ins for ICA-AROMA's motion components (no ICA is run): mixtures of
  the motion parameters and noise, numbered as noise components among 12 "ICs". With
  ``aroma=True`` (the default) each run also has ``*_space-MNI152NLin6Asym_res-2_desc-
  smoothAROMAnonaggr_bold.nii.gz`` (+ ``.json``): the run with those regressors projected out (on
  the same grid; a stand-in for fMRIPrep < 24's non-aggressive ICA-AROMA output).
* With ``tedana=True`` (the default) each run also has tedana's outputs beside it:
  ``*_desc-optcom_bold.nii.gz`` (the run's data), ``*_desc-ICA_mixing.tsv`` (``ICA_00`` ...:
  the run's first 8 principal time courses, standardised, as stand-ins for ICA components) and
  ``*_desc-tedana_metrics.tsv`` (``Component``, ``kappa``, ``rho``, ``variance explained``,
  ``classification`` among ``accepted``/``rejected``/``ignored``, ``classification_tags``); runs
  of odd index name the components unpadded in the metrics table (``ICA_4``), as some tedana
  versions do.
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
from lazymask.datasets._synthetic import CSF, GREY, WHITE, Grid, synthetic_run

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


_MAX_RETAINED = 5
_DROPPED = 2
_N_AROMA_ICS = 12
_N_TEDANA = 8


def _components(series: np.ndarray, drifts: np.ndarray):
    """fMRIPrep-style CompCor of ``series`` (time x voxels): drifts removed, SVD; time courses and metadata."""
    design = np.column_stack([np.ones(len(series)), drifts])
    residual = series - design @ np.linalg.lstsq(design, series, rcond=None)[0]
    u, singular, _ = np.linalg.svd(residual, full_matrices=False)
    variance = singular**2 / np.sum(singular**2)
    cumulative = np.cumsum(variance)
    n_retained = min(int(np.searchsorted(cumulative, 0.5) + 1), _MAX_RETAINED, len(singular))
    n_listed = min(n_retained + _DROPPED, len(singular))
    metadata = [{"CumulativeVarianceExplained": float(round(cumulative[i], 10)),
                 "Retained": i < n_retained, "SingularValue": float(round(singular[i], 10)),
                 "VarianceExplained": float(round(variance[i], 10))} for i in range(n_listed)]
    return u[:, :n_retained], metadata


def _compcor(run, brain: np.ndarray, cosines: np.ndarray):
    """The CompCor columns of ``run`` and their sidecar entries (fMRIPrep >= 21 names; dropped ones as 1.4's)."""
    data = run.data.reshape(-1, run.data.shape[-1]).T.astype(np.float64)  # time x voxels
    white, csf = run.fractions[WHITE] > 0.9, run.fractions[CSF] > 0.9
    std = data[:, brain.ravel()].std(axis=0)
    top = np.zeros(brain.size, dtype=bool)
    top[np.flatnonzero(brain.ravel())[std >= np.quantile(std, 0.95)]] = True
    columns, sidecar, dropped = {}, {}, 0
    for prefix, mask, label in (("t", top, None), ("c", csf.ravel(), "CSF"), ("w", white.ravel(), "WM"),
                                ("a", (white | csf).ravel(), "combined")):
        method = "tCompCor" if prefix == "t" else "aCompCor"
        time_courses, metadata = _components(data[:, mask], cosines)
        for index, entry in enumerate(metadata):
            entry = {**entry, **({"Mask": label} if label else {}), "Method": method}
            if entry["Retained"]:
                name = f"{prefix}_comp_cor_{index:02d}"
                columns[name] = time_courses[:, index]
            else:
                name = f"dropped_{dropped}"
                dropped += 1
            sidecar[name] = dict(sorted(entry.items()))
    return columns, sidecar


def _aroma(run, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Stand-ins for ICA-AROMA's motion components: motion mixtures plus noise, standardised."""
    n_volumes = run.data.shape[-1]
    noise_ics = np.sort(rng.choice(np.arange(1, _N_AROMA_ICS + 1), size=4, replace=False))
    columns = {}
    for number in noise_ics:
        course = run.motion @ rng.standard_normal(run.motion.shape[1]) + 0.3 * rng.standard_normal(n_volumes)
        course = course - course.mean()
        columns[f"aroma_motion_{number:02d}"] = course / (course.std() or 1.0)
    return columns


def _tedana(run, brain: np.ndarray, rng: np.random.Generator, unpadded: bool):
    """tedana-like mixing and metrics tables (principal time courses as stand-ins for ICA components)."""
    series = run.data[brain].astype(np.float64).T  # time x voxels
    series = series - series.mean(axis=0)
    u, singular, _ = np.linalg.svd(series, full_matrices=False)
    n = min(_N_TEDANA, u.shape[1])
    mixing = {f"ICA_{i:02d}": (u[:, i] - u[:, i].mean()) / (u[:, i].std() or 1.0) for i in range(n)}
    classes = ["accepted", "rejected"] * (n // 2) + ["accepted"] * (n % 2)
    classes[-1] = "ignored"
    classes = [classes[i] for i in rng.permutation(n)]
    variance = singular[:n] ** 2 / np.sum(singular**2) * 100.0
    tags = {"accepted": "Likely BOLD", "rejected": "Unlikely BOLD", "ignored": "Low variance"}
    metrics = {
        "Component": [f"ICA_{i}" if unpadded else f"ICA_{i:02d}" for i in range(n)],
        "kappa": [float(round(v, 6)) for v in rng.uniform(10.0, 80.0, n)],
        "rho": [float(round(v, 6)) for v in rng.uniform(5.0, 30.0, n)],
        "variance explained": [float(round(v, 6)) for v in variance],
        "classification": classes,
        "classification_tags": [tags[c] for c in classes],
    }
    return mixing, metrics


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
    cosines = _cosines(run.data.shape[-1], run.t_r)
    for index, cosine in enumerate(cosines.T):
        columns[f"cosine{index:02d}"] = cosine
    for index in range(non_steady):
        flag = np.zeros(run.data.shape[-1])
        flag[index] = 1.0
        columns[f"non_steady_state_outlier{index:02d}"] = flag
    return columns


def _write_run(func: Path, stem: str, run, mask: np.ndarray, non_steady: int, *, seed: int, aroma: bool,
               tedana: bool, unpadded: bool) -> None:
    func.mkdir(parents=True, exist_ok=True)
    prefix = f"{stem}_space-{SPACE}_res-2"
    sidecar = {"RepetitionTime": run.t_r, "SkullStripped": False, "TaskName": TASK}
    _write_nifti(func / f"{prefix}_desc-preproc_bold.nii.gz", run.data, run.affine, t_r=run.t_r,
                 description="lazymask generated fMRIPrep run")
    (func / f"{prefix}_desc-preproc_bold.json").write_text(json.dumps(sidecar, indent=2) + "\n")
    _write_nifti(func / f"{prefix}_desc-brain_mask.nii.gz", mask.astype(np.uint8), run.affine)
    rng = np.random.default_rng([seed, 7])  # the extras' own stream: the run's data are unchanged
    columns = _confounds(run, non_steady)
    compcor, compcor_meta = _compcor(run, mask, _cosines(run.data.shape[-1], run.t_r))
    aroma_columns = _aroma(run, rng)
    columns.update(compcor)
    columns.update(aroma_columns)
    names = list(columns)
    _write_tsv(func / f"{stem}_desc-confounds_timeseries.tsv", names, zip(*(columns[n] for n in names), strict=True))
    meta = {name: {"Description": f"generated {name}"} for name in names if name not in compcor}
    meta.update({name: {"Method": "ICA-AROMA", "Description": "generated stand-in for an ICA-AROMA motion IC"}
                 for name in aroma_columns})
    meta.update(compcor_meta)
    (func / f"{stem}_desc-confounds_timeseries.json").write_text(json.dumps(meta, indent=2) + "\n")
    if aroma:
        series = run.data.reshape(-1, run.data.shape[-1]).T.astype(np.float64)
        regressors = np.column_stack(list(aroma_columns.values()))
        denoised = series - regressors @ np.linalg.lstsq(regressors, series - series.mean(axis=0), rcond=None)[0]
        denoised = np.clip(np.rint(denoised), np.iinfo(np.int16).min, np.iinfo(np.int16).max).astype(np.int16)
        aroma_prefix = f"{stem}_space-MNI152NLin6Asym_res-2_desc-smoothAROMAnonaggr_bold"
        _write_nifti(func / f"{aroma_prefix}.nii.gz", denoised.T.reshape(run.data.shape), run.affine, t_r=run.t_r,
                     description="lazymask generated ICA-AROMA stand-in")
        (func / f"{aroma_prefix}.json").write_text(json.dumps(sidecar, indent=2) + "\n")
    if tedana:
        mixing, metrics = _tedana(run, mask, rng, unpadded)
        _write_nifti(func / f"{stem}_desc-optcom_bold.nii.gz", run.data, run.affine, t_r=run.t_r,
                     description="lazymask generated tedana optcom stand-in")
        _write_tsv(func / f"{stem}_desc-ICA_mixing.tsv", list(mixing), zip(*mixing.values(), strict=True))
        _write_tsv(func / f"{stem}_desc-tedana_metrics.tsv", list(metrics), zip(*metrics.values(), strict=True))


def make_fmriprep_dataset(directory, n_subjects: int = 3, n_runs: int = 1, n_volumes: int = 60,
                          voxel_size: float = 6.0, t_r: float = 2.0, seed: int = 20261201, *,
                          aroma: bool = True, tedana: bool = True) -> Path:
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
    aroma : bool, default True
        Write each run's ``*_desc-smoothAROMAnonaggr_bold.nii.gz`` (for ``ica_aroma="full"``).
    tedana : bool, default True
        Write each run's tedana outputs (``*_desc-optcom_bold.nii.gz``, ``*_desc-ICA_mixing.tsv``,
        ``*_desc-tedana_metrics.tsv``).

    Returns
    -------
    pathlib.Path
        ``directory``.

    Examples
    --------
    >>> import tempfile
    >>> root = make_fmriprep_dataset(tempfile.mkdtemp(), n_subjects=1, n_volumes=20)
    >>> sorted(p.name for p in (root / "sub-01" / "ses-1" / "func").iterdir() if "confounds" in p.name)
    ['sub-01_ses-1_task-rest_run-1_desc-confounds_timeseries.json', 'sub-01_ses-1_task-rest_run-1_desc-confounds_timeseries.tsv']
    """
    root = Path(directory)
    arguments = dict(format=3, n_subjects=n_subjects, n_runs=n_runs, n_volumes=n_volumes, voxel_size=voxel_size,
                     t_r=t_r, seed=seed, aroma=aroma, tedana=tedana)
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
        _write_run(root.joinpath(*parts, "func"), stem, run, mask, non_steady=1, seed=seed + index, aroma=aroma,
                   tedana=tedana, unpadded=index % 2 == 1)
    description_text = json.dumps({
        "Name": "lazymask generated fMRIPrep derivatives", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "lazymask.datasets.make_fmriprep_dataset", "Arguments": arguments}],
    }, indent=2) + "\n"
    partial = description.with_name(f".{description.name}.{os.getpid()}")
    partial.write_text(description_text)
    os.replace(partial, description)  # written last: the dataset is complete
    return root
