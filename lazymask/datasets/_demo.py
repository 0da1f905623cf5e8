"""The bundled demo run: generated on first use, cached on disk, regenerated when damaged.

Contract
--------
* ``load_demo()`` returns a :class:`DemoRun` of paths to files in the demo's cache directory
  (``$LAZYMASK_DATA/demo-v1`` when ``LAZYMASK_DATA`` is set, else ``~/.cache/lazymask/demo-v1``).
* The files are generated locally, never downloaded: the same bytes on every call and on every
  machine with the same numpy and zlib.
* A cache directory is complete when its ``manifest.json`` lists every file with its SHA-256;
  the directory is written through lazymask's one staged-write protocol (under a temporary name,
  renamed into place only when complete), so a crash or a concurrent call never leaves a
  half-written cache behind. A missing, altered or truncated file makes ``load_demo`` regenerate
  the whole directory; a directory there holding files the demo does not write is never touched.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from lazymask.exceptions import UnsafeTargetError
from lazymask.io import Found, found_unless, staged_path
from lazymask.datasets._atlas import ATLAS_NAMES, atlas_labels
from lazymask.datasets._synthetic import CSF, GREY, MOTION_COLUMNS, WHITE, demo_grid, framewise_displacement, synthetic_run

DEMO_VERSION = "demo-v1"
N_VOLUMES = 150
T_R = 2.0
SEED = 20240229
_GZIP_LEVEL = 1  # nibabel's default for .nii.gz

FILES = {
    "func": "sub-01_task-checkerboard_bold.nii.gz",
    "confounds": "sub-01_task-checkerboard_desc-confounds_timeseries.tsv",
    "events": "sub-01_task-checkerboard_events.tsv",
    "atlas": "atlas-demo_dseg.nii.gz",
    "atlas_lut": "atlas-demo_dseg.tsv",
}
_MANIFEST = "manifest.json"


@dataclass(frozen=True)
class DemoRun:
    """Paths to the demo files (``str``) and what is known about them.

    Attributes
    ----------
    func : str
        The 4D EPI run (``.nii.gz``, int16, 64 x 64 x 40 voxels of 3 mm, 150 volumes).
    confounds : str
        fMRIPrep-style confounds TSV (``n/a`` for missing values).
    events : str
        BIDS events TSV of the block design (``onset``, ``duration``, ``trial_type``).
    atlas : str
        A labels image on the run's grid (int16; 0 is background).
    atlas_lut : str
        The atlas look-up table: a BIDS-style TSV with columns ``index`` and ``name``.
    t_r : float
        Repetition time in seconds.
    description : str
        What the data are and how they were made.
    """

    func: str
    confounds: str
    events: str
    atlas: str
    atlas_lut: str
    t_r: float
    description: str


DESCRIPTION = f"""\
lazymask demo run ({DEMO_VERSION}): a synthetic, deterministic EPI run generated locally.

- func: 64 x 64 x 40 voxels of 3 mm, {N_VOLUMES} volumes, TR {T_R} s, int16 like a scanner's output;
  T2*-weighted tissue contrast (CSF > grey > white matter) with partial volumes, coil bias field,
  susceptibility dropout (orbitofrontal, inferior temporal), a faint N/2 ghost, a Rayleigh-noise
  background (not zero), slow drift, physiological fluctuations (strongest in CSF) and motion.
- task: a visual block design, 20 s rest / 20 s checkerboard, starting with rest; bilateral
  occipital activation of ~3.5 % at its peak (events TSV).
- confounds: fMRIPrep-style columns trans_x..rot_z (mm, radians) and their _derivative1,
  framewise_displacement, csf, white_matter and global_signal (means over the true tissue masks);
  n/a where a value is undefined (first row of derivatives and framewise displacement).
- atlas: {len(ATLAS_NAMES)} parcels (lobes, thalamus, putamen, cerebellum per hemisphere, brainstem)
  on the run's grid, with a look-up table (index, name).
"""


# -- public ---------------------------------------------------------------------------------------
def load_demo(data_dir: str | os.PathLike | None = None, *, refresh: bool = False) -> DemoRun:
    """Return the demo run, generating and caching it on first use (no network, ever).

    Parameters
    ----------
    data_dir : str or path-like, optional
        Where to cache the files. Default: ``$LAZYMASK_DATA`` when set, else ``~/.cache/lazymask``.
        The files go into a ``demo-v1`` subdirectory.
    refresh : bool, default False
        Regenerate the files even if a valid cache exists.

    Returns
    -------
    DemoRun
        Paths to ``func``, ``confounds``, ``events``, ``atlas``, ``atlas_lut``, and ``t_r``,
        ``description``.

    Examples
    --------
    >>> from lazymask.datasets import load_demo
    >>> demo = load_demo()                      # doctest: +SKIP
    >>> img = lazymask.open_nifti(demo.func)    # doctest: +SKIP
    >>> img.shape                               # doctest: +SKIP
    (64, 64, 40, 150)
    """
    directory = cache_root(data_dir) / DEMO_VERSION
    if refresh or not is_complete(directory):
        _generate_into_place(directory, refresh=refresh)
    return _demo_run(directory)


def cache_root(data_dir: str | os.PathLike | None = None) -> Path:
    """The directory under which lazymask caches generated data."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get("LAZYMASK_DATA")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "lazymask"


def is_complete(directory: Path) -> bool:
    """Whether ``directory`` holds every demo file with the checksum its manifest records."""
    try:
        manifest = json.loads((Path(directory) / _MANIFEST).read_text())
        return set(manifest) == set(FILES.values()) and all(
            _sha256(Path(directory) / name) == digest for name, digest in manifest.items()
        )
    except (OSError, ValueError, TypeError, AttributeError):
        return False


def write_demo(directory: str | os.PathLike) -> Path:
    """Generate every demo file, and their manifest, into the existing empty ``directory``."""
    directory = Path(directory)
    grid = demo_grid()
    run = synthetic_run(grid, n_volumes=N_VOLUMES, t_r=T_R, seed=SEED)
    _write_nifti(directory / FILES["func"], run.data, run.affine, t_r=T_R, description="lazymask demo EPI")
    confounds = _confound_columns(run)
    _write_tsv(directory / FILES["confounds"], list(confounds), list(zip(*confounds.values(), strict=True)))
    _write_tsv(directory / FILES["events"], ["onset", "duration", "trial_type"], _events(run))
    _write_nifti(directory / FILES["atlas"], atlas_labels(grid), run.affine, description="lazymask demo atlas")
    lut_rows = [(index, name) for index, name in enumerate(ATLAS_NAMES, start=1)]
    _write_tsv(directory / FILES["atlas_lut"], ["index", "name"], lut_rows)
    manifest = {name: _sha256(directory / name) for name in FILES.values()}
    (directory / _MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return directory


# -- generating in place ----------------------------------------------------------------------------
class _FinishedElsewhere(Exception):
    """Another process published a complete cache while this one was generating it."""


def _generate_into_place(directory: Path, refresh: bool = False) -> None:
    """Write the demo files through the one staged-write protocol and publish them by a rename.

    The cache directory is lazymask's own: a damaged one (holding only the demo's file names) is
    replaced; a directory holding anything else is refused (:class:`UnsafeTargetError`).
    """
    directory.parent.mkdir(parents=True, exist_ok=True)
    try:
        with staged_path(directory, kind="lazymask demo cache", overwrite=True, inspect=_inspect_cache,
                         directory=True) as staging:
            staging.chmod(0o755)  # the cache is as readable as its parent
            write_demo(staging)  # the manifest, written last, marks it complete
            if not refresh and is_complete(directory):
                raise _FinishedElsewhere  # keep theirs (same bytes): readers never see it swapped
    except _FinishedElsewhere:
        return
    except UnsafeTargetError:
        if not is_complete(directory):  # not a race lost to a process that finished first
            raise


def _inspect_cache(path: Path) -> Found:
    """What is at the demo cache's place: its own files (complete or damaged), or anything else."""
    settled = found_unless(path, directory=True)
    if settled is not None:
        return settled
    names = {entry.name for entry in path.iterdir()}
    foreign = sorted(names - set(FILES.values()) - {_MANIFEST})
    if foreign:
        return Found.other(f"a directory with files the demo does not write ({', '.join(foreign[:5])})")
    if is_complete(path):
        return Found.complete("a complete lazymask demo cache")
    return Found.stale("a damaged or unfinished lazymask demo cache")


def _demo_run(directory: Path) -> DemoRun:
    paths = {key: str(directory / name) for key, name in FILES.items()}
    return DemoRun(**paths, t_r=T_R, description=DESCRIPTION)


# -- file formats -----------------------------------------------------------------------------------
def _write_nifti(path: Path, data: np.ndarray, affine: np.ndarray, *, t_r=None, description="") -> None:
    """Write a NIfTI-1 ``.nii.gz`` with a reproducible gzip header (no timestamp, no file name)."""
    image = nib.Nifti1Image(data, affine)
    header = image.header
    header.set_xyzt_units("mm", "sec")
    if t_r is not None:
        header.set_zooms(header.get_zooms()[:3] + (t_r,))
    header["descrip"] = description.encode()[:80]
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    path.write_bytes(gzip.compress(image.to_bytes(), compresslevel=_GZIP_LEVEL, mtime=0))


def _format(value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int | np.integer):
        return str(int(value))
    return "n/a" if not np.isfinite(value) else f"{float(value):.10g}"


def _write_tsv(path: Path, columns: list[str], rows) -> None:
    lines = ["\t".join(columns)] + ["\t".join(_format(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _confound_columns(run) -> dict[str, np.ndarray]:
    """fMRIPrep-style confounds of ``run``: tissue means, global signal, motion and derivatives."""
    columns = {}
    data = run.data
    brain = (run.fractions[GREY] + run.fractions[WHITE]) > 0.5
    for name, mask in (
        ("global_signal", brain),
        ("csf", run.fractions[CSF] > 0.9),
        ("white_matter", run.fractions[WHITE] > 0.9),
    ):
        columns[name] = data[mask].mean(axis=0, dtype=np.float64)
    for index, name in enumerate(MOTION_COLUMNS):
        columns[name] = run.motion[:, index]
    for name in MOTION_COLUMNS:
        columns[f"{name}_derivative1"] = np.concatenate([[np.nan], np.diff(columns[name])])
    columns["framewise_displacement"] = framewise_displacement(run.motion)
    return columns


def _events(run) -> list[tuple]:
    onsets = np.flatnonzero(np.diff(np.concatenate([[0.0], run.boxcar])) > 0)
    duration = run.block_volumes * run.t_r
    return [(float(onset * run.t_r), float(duration), "checkerboard") for onset in onsets]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(4 * 2**20), b""):
            digest.update(block)
    return digest.hexdigest()
