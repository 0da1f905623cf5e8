"""build_archive / open_archive: one resumable group per run in an icechunk repository, the numbers nilearn
gives, the CLI. (Versions, concurrency, S3: test_archive_icechunk.py.)"""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from lazymask import config as lazymask_config
from lazymask.archive import build_archive, find_runs, open_archive
from lazymask.datasets import make_fmriprep_dataset
from lazymask.exceptions import ImageFileNotFoundError, ParameterError, UnsafeTargetError
from lazymask.io import is_complete
from lazymask.maskers import NiftiLabelsMasker, NiftiMasker, NiftiSpheresMasker

ROOT = Path(__file__).resolve().parent.parent
GROUPS = ["sub-01/ses-1/task-rest_run-1", "sub-01/ses-2/task-rest_run-1", "sub-02/ses-1/task-rest_run-1",
          "sub-02/ses-2/task-rest_run-1", "sub-03/task-rest_run-1"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_fmriprep_dataset(tmp_path_factory.mktemp("fmriprep") / "ds", n_subjects=3, n_volumes=40)


def _labels_masker(dataset, **params):
    return NiftiLabelsMasker(str(dataset / "atlas-demo_dseg.nii.gz"), lut=str(dataset / "atlas-demo_dseg.tsv"),
                             detrend=True, standardize="zscore_sample", **params)


@pytest.fixture(scope="module")
def built(dataset, tmp_path_factory):
    store = tmp_path_factory.mktemp("archive") / "archive.zarr"
    archive = build_archive(dataset, store, _labels_masker(dataset), confounds_strategy="simple", progress=False)
    return store, archive


def _tree(store) -> dict:
    """Every run's signals (values, coords, attrs) and the root's attributes, for comparisons."""
    archive = open_archive(store)
    runs = {group: archive.signals(group=group).load() for group in archive.runs["group"]}
    root = zarr.open_group(archive.store, mode="r").attrs.asdict()
    root["lazymask_archive"].pop("version")
    return {"root": root, "runs": runs}


def _assert_same_archive(first, second):
    a, b = _tree(first), _tree(second)
    assert a["root"] == b["root"]
    assert sorted(a["runs"]) == sorted(b["runs"])
    for group, signals in a["runs"].items():
        xr.testing.assert_identical(signals, b["runs"][group])


def test_build_and_open(built, dataset):
    store, archive = built
    runs = archive.runs
    assert list(runs["group"]) == GROUPS and (runs["status"] == "complete").all()
    assert list(runs["subject"]) == ["01", "01", "02", "02", "03"]
    signals = archive.signals(subject="02", session="1")
    assert signals.dims == ("time", "region") and signals.sizes == {"time": 39, "region": 15}
    record = signals.attrs["archive"]
    assert record["entities"]["subject"] == "02" and record["group"] == GROUPS[2]
    assert record["sample_mask"] == list(range(1, 40))  # the first volume is non-steady
    assert "trans_x_derivative1_power2" in record["confounds_columns"] and "cosine00" in record["confounds_columns"]
    bold = {s["role"]: s for s in record["sources"]}["bold"]
    assert bold["size"] == os.path.getsize(bold["path"]) and bold["version"] == f"mtime_ns={os.stat(bold['path']).st_mtime_ns}"
    assert signals.attrs["t_r"] == 2.0
    root = zarr.open_group(archive.store, mode="r").attrs["lazymask_archive"]
    assert root["masker"] == "NiftiLabelsMasker" and root["parameters"]["detrend"] is True
    assert root["confounds"]["strategy"] == ["high_pass", "motion", "wm_csf"]
    assert [r["group"] for r in root["runs"]] == GROUPS
    with pytest.raises(ParameterError, match=r"selects 2 runs \(sub-01/ses-1/task-rest_run-1, sub-01/ses-2"):
        archive.signals(subject="01")
    assert "5 complete" in repr(archive)


def test_archive_equals_the_nilearn_loop(built, dataset):
    from nilearn.interfaces.fmriprep import load_confounds_strategy
    from nilearn.maskers import NiftiLabelsMasker as NilearnLabelsMasker

    store, archive = built
    for row in find_runs(dataset).itertuples():
        confounds, sample_mask = load_confounds_strategy(row.bold, "simple")
        reference = NilearnLabelsMasker(str(dataset / "atlas-demo_dseg.nii.gz"), detrend=True,
                                        standardize="zscore_sample", t_r=row.t_r).fit_transform(
            row.bold, confounds=confounds, sample_mask=sample_mask)
        np.testing.assert_allclose(archive.signals(group=row.group).values, reference, rtol=1e-4, atol=1e-4)


def test_a_compcor_strategy_equals_the_nilearn_loop(dataset, tmp_path):
    from nilearn.interfaces.fmriprep import load_confounds
    from nilearn.maskers import NiftiLabelsMasker as NilearnLabelsMasker

    strategy = {"strategy": ["high_pass", "motion", "compcor"], "compcor": "temporal", "n_compcor": 2}
    archive = build_archive(dataset, tmp_path / "a.zarr", _labels_masker(dataset), confounds_strategy=strategy,
                            progress=False)
    for row in find_runs(dataset).itertuples():
        confounds, sample_mask = load_confounds(row.bold, **{**strategy, "strategy": tuple(strategy["strategy"])})
        assert any(column.startswith("t_comp_cor") for column in confounds.columns)
        reference = NilearnLabelsMasker(str(dataset / "atlas-demo_dseg.nii.gz"), detrend=True,
                                        standardize="zscore_sample", t_r=row.t_r).fit_transform(
            row.bold, confounds=confounds, sample_mask=sample_mask)
        np.testing.assert_allclose(archive.signals(group=row.group).values, reference, rtol=1e-4, atol=1e-4)


def test_stack_masker_and_open_datatree(built, dataset):
    store, archive = built
    stacked = archive.stack()
    assert stacked.dims == ("run", "time", "region") and stacked.shape == (5, 39, 15)
    assert list(stacked["run"].values) == GROUPS and list(stacked["subject"].values) == ["01", "01", "02", "02", "03"]
    np.testing.assert_array_equal(stacked.sel(run=GROUPS[3]).values, archive.signals(group=GROUPS[3]).values)
    assert archive.stack(session="2").shape == (2, 39, 15)
    masker = archive.masker
    image = masker.inverse_transform(archive.signals(group=GROUPS[0]))
    assert image.sizes["time"] == 39
    tree = xr.open_datatree(archive.store, engine="zarr", consolidated=False)
    for group in GROUPS:
        assert tree[f"{group}/signals"]["data"].shape == (39, 15)
        assert "0" in tree[f"{group}/labels_img"].data_vars


def test_resume_skips_complete_runs_and_redoes_changed_ones(built, dataset, tmp_path):
    store = shutil.copytree(built[0], tmp_path / "copy.zarr")
    before = open_archive(store).history
    archive = build_archive(dataset, store, _labels_masker(dataset), confounds_strategy="simple", progress=False)
    assert (archive.runs["status"] == "complete").all()
    assert archive.history == before  # nothing rewritten: not even a commit
    # a source that changed since its run was written: that run (only) is redone
    confounds = Path(find_runs(dataset)["confounds"].iloc[4])
    copy = shutil.copytree(dataset, tmp_path / "ds")
    changed = copy / confounds.relative_to(dataset)
    os.utime(changed, ns=(time.time_ns(), time.time_ns()))
    fresh = tmp_path / "fresh.zarr"
    build_archive(copy, fresh, _labels_masker(dataset), confounds_strategy="simple", progress=False)
    n_commits = len(open_archive(fresh).history)
    os.utime(changed, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    archive = build_archive(copy, fresh, _labels_masker(dataset), confounds_strategy="simple", progress=False)
    new = archive.history[: len(archive.history) - n_commits]
    assert [c["message"] for c in new] == ["lazymask build_archive: 1 run(s) written: sub-03/task-rest_run-1"]
    assert archive.tags == ["build-2"]


def test_different_arguments_are_refused(built, dataset):
    store, _ = built
    with pytest.raises(ParameterError, match=r"(?s)other arguments:.*detrend: the archive has True, this call False"):
        build_archive(dataset, store, _labels_masker(dataset).set_params(detrend=False),
                      confounds_strategy="simple", progress=False)
    with pytest.raises(ParameterError, match=r"(?s)confounds: the archive has .*'wm_csf': 'basic'.*this call .*'scrub': 5"):
        build_archive(dataset, store, _labels_masker(dataset), confounds_strategy="scrubbing", progress=False)
    with pytest.raises(ParameterError, match="masker: the archive has NiftiLabelsMasker, this call NiftiMasker"):
        build_archive(dataset, store, NiftiMasker(), confounds_strategy="simple", progress=False)


def test_subject_filters_build_an_archive_piece_by_piece(built, dataset, tmp_path):
    """Other subjects=/sessions= filters on an archive add runs: the index is the union of the calls."""
    store = tmp_path / "pieces.zarr"
    build_archive(dataset, store, _labels_masker(dataset), confounds_strategy="simple", progress=False,
                  subjects="02")
    assert list(open_archive(store).runs["group"]) == GROUPS[2:4]
    build_archive(dataset, store, _labels_masker(dataset), confounds_strategy="simple", progress=False,
                  subjects=["01", "03"])
    _assert_same_archive(store, built[0])  # the same archive as one build of every run


def _second_space(dataset, tmp_path) -> Path:
    """A copy of the dataset where every run also exists in space T1w (same data, other files)."""
    copy = shutil.copytree(dataset, tmp_path / "two_spaces")
    for path in list(copy.rglob("*space-MNI152NLin2009cAsym_res-2_*")):
        shutil.copy(path, path.with_name(path.name.replace("space-MNI152NLin2009cAsym_res-2", "space-T1w")))
    return copy


def test_a_filter_that_would_replace_or_rename_runs_is_refused(dataset, tmp_path):
    copy = _second_space(dataset, tmp_path)
    store = tmp_path / "mni.zarr"
    build_archive(copy, store, _labels_masker(dataset), confounds_strategy="simple", progress=False,
                  space="MNI152NLin2009cAsym", subjects="03")
    before = _tree(store)
    # another space: the same group names, other files -> would overwrite the MNI runs
    with pytest.raises(ParameterError, match=r"(?s)other arguments:.*group 'sub-03/task-rest_run-1': the archive has "
                                             r"'.*space-MNI152NLin2009cAsym_res-2_desc-preproc_bold.nii.gz', this call "
                                             r"'.*space-T1w_desc-preproc_bold.nii.gz'"):
        build_archive(copy, store, _labels_masker(dataset), confounds_strategy="simple", progress=False,
                      space="T1w", subjects="03")
    # no space filter: both spaces, so the groups are named with their space -> the same file, another name
    with pytest.raises(ParameterError, match=r"(?s)'.*space-MNI152NLin2009cAsym_res-2_desc-preproc_bold.nii.gz': the "
                                             r"archive holds it as group 'sub-03/task-rest_run-1', this call as "
                                             r"'sub-03/task-rest_run-1_space-MNI152NLin2009cAsym_res-2'"):
        build_archive(copy, store, _labels_masker(dataset), confounds_strategy="simple", progress=False,
                      subjects="03")
    after = _tree(store)
    assert after["root"] == before["root"] and sorted(after["runs"]) == sorted(before["runs"])


def test_refuses_a_store_it_did_not_write(dataset, tmp_path):
    other = tmp_path / "mine"
    other.mkdir()
    (other / "precious.txt").write_text("keep me")
    with pytest.raises(UnsafeTargetError, match="exists and is not a lazymask archive"):
        build_archive(dataset, other, _labels_masker(dataset), progress=False)
    assert (other / "precious.txt").read_text() == "keep me"
    with pytest.raises(ImageFileNotFoundError, match="no archive there"):
        open_archive(tmp_path / "nothing.zarr")
    with pytest.raises(ParameterError, match="confounds_strategy='fancy'"):
        build_archive(dataset, tmp_path / "a.zarr", _labels_masker(dataset), confounds_strategy="fancy")


def test_a_failed_run_does_not_stop_the_others(dataset, tmp_path):
    copy = shutil.copytree(dataset, tmp_path / "ds")
    bold = Path(find_runs(copy)["bold"].iloc[1])
    good = bold.read_bytes()
    bold.write_bytes(good[: len(good) // 3])  # truncated
    store = tmp_path / "archive.zarr"
    with pytest.warns(UserWarning, match=r"(?s)1 run\(s\) failed.*sub-01/ses-2/task-rest_run-1"):
        archive = build_archive(copy, store, _labels_masker(dataset), confounds_strategy="simple", progress=False)
    runs = archive.runs.set_index("group")
    assert runs.loc[GROUPS[1], "status"] == "failed" and runs.loc[GROUPS[1], "error"]
    assert (runs.drop(GROUPS[1])["status"] == "complete").all()
    with pytest.raises(ImageFileNotFoundError, match="is not complete .*it failed"):
        archive.signals(group=GROUPS[1])
    bold.write_bytes(good)
    archive = build_archive(copy, store, _labels_masker(dataset), confounds_strategy="simple", progress=False)
    assert (archive.runs["status"] == "complete").all() and archive.runs["error"].isna().all()


def _same_size_edit(path: Path, edit) -> None:
    """Rewrite the uncompressed image ``path`` with ``edit(values)``'s values: same size, same mtime."""
    import nibabel as nib

    stat = path.stat()
    image = nib.load(path)
    values = np.asarray(image.dataobj).copy()
    nib.Nifti1Image(edit(values).astype(values.dtype), image.affine, image.header).to_filename(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns


def _uncompressed_copy(source, target: Path) -> Path:
    import nibabel as nib

    nib.load(source).to_filename(target)
    return target


def _swap_two_labels(values):
    present = [v for v in np.unique(values) if v != 0]
    a, b = present[0], present[1]
    return np.where(values == a, b, np.where(values == b, a, values))


def test_an_atlas_replaced_at_the_same_path_is_refused(dataset, tmp_path):
    """Issue 21: the archive records the atlas' content; another atlas at the same path (same size and
    mtime) is refused on resume, naming labels_img, the path and what changed; nothing is committed."""
    atlas = _uncompressed_copy(dataset / "atlas-demo_dseg.nii.gz", tmp_path / "atlas.nii")
    runs = find_runs(dataset, subjects="03")
    store = tmp_path / "atlas.zarr"

    def build():
        return build_archive(runs, store, NiftiLabelsMasker(str(atlas), detrend=True), progress=False)

    build()
    record = zarr.open_group(open_archive(store).store, mode="r").attrs["lazymask_archive"]
    assert record["inputs"]["labels_img"]["path"] == str(atlas) and len(record["inputs"]["labels_img"]["sha256"]) == 64
    history = open_archive(store).history
    original = atlas.read_bytes()
    _same_size_edit(atlas, _swap_two_labels)
    with pytest.raises(ParameterError, match=rf"(?s)other inputs at the same paths.*labels_img: '{atlas}' held "
                                             r"sha256 \w+, \d+ bytes when the archive was built; it now holds sha256 "
                                             r"\w+.*Restore the file.*or build into a new store"):
        build()
    assert open_archive(store).history == history  # nothing committed
    atlas.write_bytes(original)  # restored: the resume has nothing to do
    assert build().history == history


def test_a_mask_replaced_at_the_same_path_is_refused(dataset, tmp_path):
    runs = find_runs(dataset, subjects="03")
    mask = _uncompressed_copy(runs["mask"].iloc[0], tmp_path / "mask.nii")
    store = tmp_path / "voxels.zarr"
    build_archive(runs, store, NiftiMasker(mask_img=str(mask)), progress=False)
    history = open_archive(store).history

    def erode(values):
        values[np.nonzero(values)[0][:5]] = 0
        return values

    _same_size_edit(mask, erode)
    with pytest.raises(ParameterError, match=r"(?s)other inputs at the same paths.*mask_img: '.*mask.nii' held"):
        build_archive(runs, store, NiftiMasker(mask_img=str(mask)), progress=False)
    assert open_archive(store).history == history


def test_an_atlas_in_memory_is_fingerprinted_by_its_values(dataset, tmp_path):
    import nibabel as nib

    image = nib.load(dataset / "atlas-demo_dseg.nii.gz")
    runs = find_runs(dataset, subjects="03")
    store = tmp_path / "memory.zarr"
    build_archive(runs, store, NiftiLabelsMasker(image), progress=False)
    changed = nib.Nifti1Image(_swap_two_labels(np.asarray(image.dataobj)), image.affine, image.header)
    with pytest.raises(ParameterError, match="labels_img: the image in memory held sha256"):
        build_archive(runs, store, NiftiLabelsMasker(changed), progress=False)


_BUILD_SCRIPT = """
import sys, dask
from lazymask.archive import build_archive
from lazymask.maskers import NiftiLabelsMasker
dataset, store = sys.argv[1], sys.argv[2]
masker = NiftiLabelsMasker(dataset + "/atlas-demo_dseg.nii.gz", lut=dataset + "/atlas-demo_dseg.tsv",
                           detrend=True, standardize="zscore_sample")
with dask.config.set(scheduler="sync"):
    build_archive(dataset, store, masker, confounds_strategy="simple", progress=False, commit_every=2)
"""


def _committed_runs(store) -> list[str]:
    """The runs the commits of a repository name as written (nothing when there is no repository yet)."""
    try:
        history = open_archive(store).history
    except (ImageFileNotFoundError, ParameterError, UnsafeTargetError):
        return []
    return [g for c in history if "written: " in c["message"] for g in c["message"].split("written: ")[1].split(", ")]


def test_resume_after_sigkill_equals_an_uninterrupted_build(built, dataset, tmp_path):
    """Killed after its first batch commit: the resume redoes nothing committed, and equals a clean build."""
    store = tmp_path / "killed.zarr"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-c", _BUILD_SCRIPT, str(dataset), str(store)], env=env)
    try:
        deadline = time.monotonic() + 120
        while not _committed_runs(store) and process.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    done = _committed_runs(store)
    assert 0 < len(done) < len(GROUPS), done  # killed halfway
    assert set(open_archive(store).runs.query("status == 'complete'")["group"]) == set(done)
    n_before = len(open_archive(store).history)
    archive = build_archive(dataset, store, _labels_masker(dataset), confounds_strategy="simple", progress=False)
    new = archive.history[: len(archive.history) - n_before]
    redone = [g for c in new if "written: " in c["message"] for g in c["message"].split("written: ")[1].split(", ")]
    assert sorted(done + redone) == GROUPS  # nothing committed was redone
    _assert_same_archive(store, built[0])


def test_distributed_client_gives_the_same_archive(built, dataset, tmp_path):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as client:
        build_archive(dataset, tmp_path / "dist.zarr", _labels_masker(dataset), confounds_strategy="simple",
                      client=client, progress=False)
    _assert_same_archive(tmp_path / "dist.zarr", built[0])


@pytest.mark.parametrize("scheduler", ["sync", "threads"])
def test_local_schedulers_give_the_same_archive(built, dataset, tmp_path, scheduler):
    import dask

    with dask.config.set(scheduler=scheduler):
        build_archive(dataset, tmp_path / "local.zarr", _labels_masker(dataset), confounds_strategy="simple",
                      progress=False)
    _assert_same_archive(tmp_path / "local.zarr", built[0])


def test_voxel_and_sphere_maskers(dataset, tmp_path):
    runs = find_runs(dataset, subjects="03")
    archive = build_archive(runs, tmp_path / "voxels.zarr", NiftiMasker(mask_strategy="epi", detrend=True),
                            confounds_strategy="scrubbing", progress=False)
    signals = archive.signals(subject="03")
    assert signals.dims == ("time", "voxel") and signals.sizes["voxel"] > 100
    assert archive.masker.mask_img_ is not None
    spheres = build_archive(runs, tmp_path / "spheres.zarr", NiftiSpheresMasker([(0.0, -20.0, 10.0)], radius=10.0),
                            progress=False)
    assert spheres.signals(subject="03").shape == (40, 1)  # no confounds: no volume censored


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "lazymask", "archive", *map(str, args)], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)


def test_cli_builds_resumes_and_reports(built, dataset, tmp_path):
    store = tmp_path / "cli.zarr"
    done = _cli(dataset, store, "--labels", dataset / "atlas-demo_dseg.nii.gz", "--lut", dataset / "atlas-demo_dseg.tsv",
                "--detrend", "--standardize", "zscore_sample", "--confounds-strategy", "simple")
    assert done.returncode == 0, done.stderr
    assert "5/5 runs complete" in done.stdout
    _assert_same_archive(store, built[0])
    status = _cli("--status", store)
    assert status.returncode == 0 and status.stdout.count("complete") == 5 and GROUPS[4] in status.stdout
    refused = _cli(dataset, store, "--labels", dataset / "atlas-demo_dseg.nii.gz", "--confounds-strategy", "simple")
    assert refused.returncode == 2 and "other arguments" in refused.stderr and "Traceback" not in refused.stderr


def test_cli_submits_to_a_running_scheduler(built, dataset, tmp_path):
    """--scheduler ADDRESS: the runs are tasks of that scheduler (seen in its log), the archive the same."""
    distributed = pytest.importorskip("distributed")
    store = tmp_path / "scheduler.zarr"
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, protocol="tcp",
                                  dashboard_address=None) as cluster:  # tcp: reachable from the CLI's process
        done = _cli(dataset, store, "--labels", dataset / "atlas-demo_dseg.nii.gz", "--lut",
                    dataset / "atlas-demo_dseg.tsv", "--detrend", "--standardize", "zscore_sample",
                    "--confounds-strategy", "simple", "--scheduler", cluster.scheduler_address, "--quiet")
        keys = {str(entry[0]) for entry in cluster.scheduler.transition_log}
    assert done.returncode == 0, done.stderr
    assert {g for g in GROUPS if any(f"archive-run-{g}" in key for key in keys)} == set(GROUPS)
    _assert_same_archive(store, built[0])


def test_cli_scheduler_that_does_not_answer(dataset, tmp_path):
    import socket

    with socket.socket() as free:  # a port nobody listens on
        free.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{free.getsockname()[1]}"
    done = _cli(dataset, tmp_path / "a.zarr", "--scheduler", address, "--quiet")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"--scheduler {address}: no dask scheduler answers at that address" in done.stderr
    assert not (tmp_path / "a.zarr").exists()


def test_cli_exit_2_names_failed_runs(dataset, tmp_path):
    copy = shutil.copytree(dataset, tmp_path / "ds")
    bold = Path(find_runs(copy)["bold"].iloc[0])
    bold.write_bytes(bold.read_bytes()[:1000])
    done = _cli(copy, tmp_path / "a.zarr", "--labels", copy / "atlas-demo_dseg.nii.gz", "--participant-label", "01",
                "--quiet")
    assert done.returncode == 2
    assert "lazymask: run sub-01/ses-1/task-rest_run-1 failed:" in done.stderr
    assert "1/2 runs complete" in done.stdout
    status = _cli("--status", tmp_path / "a.zarr")
    assert status.returncode == 2 and "failed" in status.stdout


def test_opening_and_selecting_compute_nothing(built):
    import lazymask
    from lazymask.testing import raise_if_dask_computes

    store, _ = built
    with raise_if_dask_computes():
        archive = lazymask.open_archive(store)
        archive.runs
        archive.signals(group=GROUPS[0])
        archive.stack(subject=["01", "02"])


# -- progress -------------------------------------------------------------------------------------------
class _Terminal(__import__("io").StringIO):
    def isatty(self):
        return True


def _slow_block(block):
    time.sleep(0.05)
    return block


def test_progress_in_a_terminal_is_one_line_over_runs_and_the_current_runs_tasks():
    import dask
    import dask.array as da

    from lazymask.archive._progress import ArchiveProgress

    out = _Terminal()
    bar = ArchiveProgress(2, out=out, dt=0.02)
    with bar, dask.config.set(scheduler="threads"):
        for group in ("sub-01/task-rest_run-1", "sub-02/task-rest_run-1"):
            bar.start_run(group)
            da.ones(40, chunks=2).map_blocks(_slow_block, dtype=float).sum().compute()
            bar.run_done({"group": group, "error": None})
    text = out.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n") and "\r" in text  # one line, redrawn in place
    frames = text.strip().split("\r")
    assert any("0/2 runs" in f and "sub-01/task-rest_run-1:" in f and "% of its tasks" in f for f in frames)
    assert any("1/2 runs" in f and "sub-02/task-rest_run-1:" in f for f in frames)
    percents = [int(f.split("|")[1].strip().rstrip("%")) for f in frames if f.startswith("archive [")]
    assert percents == sorted(percents) and 0 < percents[len(percents) // 2] < 100  # advances within runs
    assert frames[-1].startswith("archive [" + "#" * 30 + "] 2/2 runs | 100%")


def test_progress_in_a_log_is_a_few_lines(dataset, tmp_path, capsys):
    runs = find_runs(dataset, subjects=["01", "02"])
    build_archive(runs, tmp_path / "log.zarr", _labels_masker(dataset), progress=True)
    lines = capsys.readouterr().err.strip().splitlines()
    assert 1 <= len(lines) <= 4 and "\r" not in "".join(lines)  # 25/50/75 % and the end, at most
    assert lines[-1].startswith("archive [") and "4/4 runs | 100%" in lines[-1]
    build_archive(runs, tmp_path / "quiet.zarr", _labels_masker(dataset), progress=False)
    assert capsys.readouterr().err == ""


def test_an_image_in_memory_is_fingerprinted_chunk_by_chunk_whatever_the_chunking():
    import lazymask
    from lazymask.archive._inputs import _memory_fingerprint
    from lazymask.testing import fake_fmri, raise_if_dask_computes

    image = fake_fmri((5, 6, 4), 9, seed=1)
    by_two, whole = lazymask.open_nifti(image, chunks=2), lazymask.open_nifti(image, chunks=-1)
    with raise_if_dask_computes(max_computes=5 + 1):  # one compute per time chunk (5, then 1), never more
        assert _memory_fingerprint(by_two, "maps_img") == _memory_fingerprint(whole, "maps_img")
    assert _memory_fingerprint(whole, "maps_img") == _memory_fingerprint(image, "maps_img")
    changed = whole.copy(data=whole.data + 1)
    assert _memory_fingerprint(changed, "maps_img") != _memory_fingerprint(whole, "maps_img")


def test_runs_are_computed_a_window_at_a_time_on_the_threaded_scheduler(built, dataset, tmp_path):
    """As many runs as the scheduler has workers go to it in one compute (their reads in parallel),
    within the memory budget; the archive is the one built run by run."""
    import dask
    from dask.callbacks import Callback

    files_per_compute = []

    def start(dsk):
        names = {key[0] for key in dsk if isinstance(key, tuple) and str(key[0]).startswith("open-nifti-")}
        if names:
            files_per_compute.append(len(names))

    store = tmp_path / "windows.zarr"
    with dask.config.set(scheduler="threads", num_workers=2), Callback(start=start):
        build_archive(dataset, store, _labels_masker(dataset), confounds_strategy="simple", progress=False)
    assert max(files_per_compute) == 2  # two runs' reads in one graph
    _assert_same_archive(built[0], store)
    files_per_compute.clear()
    with dask.config.set(scheduler="threads", num_workers=2), Callback(start=start), \
            lazymask_config.set(memory_budget=1):  # no two runs fit: one at a time
        build_archive(dataset, tmp_path / "alone.zarr", _labels_masker(dataset), confounds_strategy="simple",
                      progress=False)
    assert max(files_per_compute) == 1
    _assert_same_archive(built[0], tmp_path / "alone.zarr")
