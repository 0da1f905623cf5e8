"""Archives as icechunk repositories: S3 (moto on loopback), versions, concurrent builders, refusals,
schedulers whose tasks run in other processes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from lazymask.archive import build_archive, find_runs, open_archive
from lazymask.datasets import make_fmriprep_dataset
from lazymask.exceptions import ParameterError, UnsafeTargetError
from lazymask.maskers import NiftiLabelsMasker

ROOT = Path(__file__).resolve().parent.parent
GROUPS = ["sub-01/ses-1/task-rest_run-1", "sub-01/ses-2/task-rest_run-1", "sub-02/ses-1/task-rest_run-1",
          "sub-02/ses-2/task-rest_run-1", "sub-03/task-rest_run-1"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_fmriprep_dataset(tmp_path_factory.mktemp("fmriprep") / "ds", n_subjects=3, n_volumes=24)


def _masker(dataset):
    return NiftiLabelsMasker(str(dataset / "atlas-demo_dseg.nii.gz"), lut=str(dataset / "atlas-demo_dseg.tsv"),
                             detrend=True, standardize="zscore_sample")


def _build(dataset, store, **kwargs):
    return build_archive(dataset, store, _masker(dataset), confounds_strategy="simple", progress=False, **kwargs)


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory):
    """A local archive of every run, built at once."""
    store = tmp_path_factory.mktemp("reference") / "archive"
    _build(dataset, store)
    return store


def _contents(archive) -> dict:
    record = dict(zarr.open_group(archive.store, mode="r").attrs["lazymask_archive"])
    record.pop("version")
    return {"record": record, "runs": {g: archive.signals(group=g).load() for g in archive.runs["group"]}}


def _assert_same(first, second):
    a, b = _contents(first), _contents(second)
    assert a["record"] == b["record"]
    assert sorted(a["runs"]) == sorted(b["runs"]) == GROUPS
    for group, signals in a["runs"].items():
        xr.testing.assert_identical(signals, b["runs"][group])


# -- versions -------------------------------------------------------------------------------------------
def test_every_build_is_tagged_and_earlier_versions_open(dataset, tmp_path):
    store = tmp_path / "pieces"
    first = _build(dataset, store, subjects="02", commit_every=1)
    assert first.tags == ["build-1"]
    assert [c["message"] for c in first.history] == [
        "lazymask build_archive: 1 run(s) written: sub-02/ses-2/task-rest_run-1",
        "lazymask build_archive: 1 run(s) written: sub-02/ses-1/task-rest_run-1",
        "lazymask build_archive: index of 2 run(s), 2 to write",
        "Repository initialized",
    ]
    second = _build(dataset, store, subjects=["01", "03"])
    assert second.tags == ["build-2"] and list(second.runs["group"]) == GROUPS
    old = open_archive(store, tag="build-1")
    assert list(old.runs["group"]) == GROUPS[2:4] and (old.runs["status"] == "complete").all()
    by_snapshot = open_archive(store, snapshot=first.history[1]["id"])  # after the first run's commit only
    assert list(by_snapshot.runs["status"]) == ["complete", "missing"]
    assert open_archive(store, branch="main").snapshot_id == second.snapshot_id
    with pytest.raises(ParameterError, match="name one version"):
        open_archive(store, tag="build-1", snapshot=first.snapshot_id)
    with pytest.raises(ParameterError, match=r"no version \{'tag': 'build-9'\}.*its tags: \['build-1', 'build-2'\]"):
        open_archive(store, tag="build-9")
    assert "build-2" in repr(second.tags) and second.snapshot_id in repr(second)


def test_a_repository_given_directly(dataset, reference):
    import icechunk

    repository = icechunk.Repository.create(icechunk.in_memory_storage())
    archive = _build(dataset, repository)
    _assert_same(archive, open_archive(reference))
    assert open_archive(repository).snapshot_id == archive.snapshot_id
    tree = xr.open_datatree(archive.store, engine="zarr", consolidated=False)
    assert tree[f"{GROUPS[4]}/signals"]["data"].shape == (23, 15)


# -- S3 ---------------------------------------------------------------------------------------------------
def test_s3_archive_equals_the_local_one(dataset, reference, s3_server):
    url = f"{s3_server.bucket()}/archives/one"
    archive = _build(dataset, url, storage_options=s3_server.storage_options)
    assert (archive.runs["status"] == "complete").all() and archive.tags == ["build-1"]
    _assert_same(archive, open_archive(reference))
    again = _build(dataset, url, storage_options=s3_server.storage_options)  # resume: nothing to do
    assert again.history == archive.history
    reopened = open_archive(url, storage_options=s3_server.storage_options, tag="build-1")
    assert reopened.snapshot_id == archive.snapshot_id
    assert repr(reopened).startswith(f"<lazymask Archive '{url}' at {archive.snapshot_id}: 5 runs")  # no options


def test_s3_prefix_holding_other_objects_is_refused(dataset, s3_server):
    bucket = s3_server.bucket()
    s3_server.client().put_object(Bucket=bucket.removeprefix("s3://"), Key="data/precious.csv", Body=b"1,2")
    with pytest.raises(UnsafeTargetError, match="holds objects that are not an icechunk repository"):
        _build(dataset, f"{bucket}/data", storage_options=s3_server.storage_options)
    with pytest.raises(ParameterError, match=r"storage_options \['profile'\] are not understood"):
        _build(dataset, f"{bucket}/new", storage_options={"profile": "x"})


# -- readers polling an archive being built --------------------------------------------------------------
BEING_BUILT = r"is being created by a builder: no commit yet; try again when it has committed"


def test_a_reader_polling_a_repository_being_created_is_told_so_at_once(tmp_path):
    """Issue 21: the states icechunk leaves while creating a repository (an empty directory, its config and
    first snapshot without the branch's ref) answer "being created", at once, never "not an archive"."""
    import time

    from lazymask.exceptions import ImageFileNotFoundError

    store = tmp_path / "building.zarr"
    store.mkdir()
    for entry in (None, "snapshots", "config.yaml"):  # in the order icechunk writes them
        if entry == "snapshots":
            (store / entry).mkdir()
        elif entry:
            (store / entry).write_text("inline_chunk_threshold_bytes: 61440\n")
        started = time.monotonic()
        with pytest.raises(ImageFileNotFoundError, match=BEING_BUILT):
            open_archive(store)
        assert time.monotonic() - started < 2  # a poller is answered, not kept waiting


def test_a_reader_between_a_builders_create_and_first_commit_is_told_so(dataset, tmp_path, monkeypatch):
    from lazymask.archive import _build
    from lazymask.exceptions import ImageFileNotFoundError

    store = tmp_path / "polled.zarr"
    seen = []
    prepare = _build._Builder.prepare

    def poll_then_prepare(self, todo, skipped):  # the repository exists; its first commit is not made yet
        with pytest.raises(ImageFileNotFoundError, match=BEING_BUILT) as caught:
            open_archive(store)
        seen.append(str(caught.value))
        prepare(self, todo, skipped)
        seen.append(open_archive(store).runs["status"].tolist())  # after the first commit: an archive

    monkeypatch.setattr(_build._Builder, "prepare", poll_then_prepare)
    build_archive(find_runs(dataset, subjects="03"), store, _masker(dataset), progress=False)
    assert seen[0].startswith(f"store={str(store)!r} is being created by a builder") and seen[1] == ["missing"]


def test_a_reader_of_an_s3_repository_being_created_is_told_so(s3_server):
    from lazymask.exceptions import ImageFileNotFoundError

    bucket = s3_server.bucket()
    s3_server.client().put_object(Bucket=bucket.removeprefix("s3://"), Key="building/config.yaml", Body=b"{}")
    with pytest.raises(ImageFileNotFoundError, match=BEING_BUILT):
        open_archive(f"{bucket}/building", storage_options=s3_server.storage_options)


# -- refusals ---------------------------------------------------------------------------------------------
def test_an_old_plain_zarr_archive_is_refused_with_how_to_rebuild(dataset, tmp_path):
    old = tmp_path / "old.zarr"
    old.mkdir()
    (old / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group",
                                               "attributes": {"lazymask_archive": {"format_version": 1}}}))
    with pytest.raises(UnsafeTargetError, match=r"former plain-zarr format.*Build it again into a new path"):
        _build(dataset, old)
    with pytest.raises(UnsafeTargetError, match="former plain-zarr format"):
        open_archive(old)
    assert sorted(p.name for p in old.iterdir()) == ["zarr.json"]


def test_an_icechunk_repository_lazymask_did_not_write_is_refused(dataset, tmp_path):
    import icechunk

    repository = icechunk.Repository.create(icechunk.local_filesystem_storage(str(tmp_path / "theirs")))
    session = repository.writable_session("main")
    zarr.open_group(session.store, mode="w", attributes={"owner": "someone"}).create_array("x", shape=(3,), dtype="f4")
    session.commit("their data")
    with pytest.raises(UnsafeTargetError, match="icechunk repository that holds no lazymask archive"):
        _build(dataset, tmp_path / "theirs")
    assert [c.message for c in repository.ancestry(branch="main")][0] == "their data"


def test_different_arguments_are_refused_before_any_commit(dataset, reference, tmp_path):
    import shutil

    store = shutil.copytree(reference, tmp_path / "copy")
    before = open_archive(store).history
    with pytest.raises(ParameterError, match=r"(?s)other arguments:.*detrend: the archive has True, this call False"):
        build_archive(dataset, store, _masker(dataset).set_params(detrend=False), confounds_strategy="simple",
                      progress=False)
    assert open_archive(store).history == before


# -- concurrency ------------------------------------------------------------------------------------------
_SUBJECT_BUILD = """
import json, sys, dask
from lazymask.archive import build_archive
from lazymask.maskers import NiftiLabelsMasker
dataset, store, subject, options = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
masker = NiftiLabelsMasker(dataset + "/atlas-demo_dseg.nii.gz", lut=dataset + "/atlas-demo_dseg.tsv",
                           detrend=True, standardize="zscore_sample")
with dask.config.set(scheduler="sync"):
    build_archive(dataset, store, masker, confounds_strategy="simple", progress=False, subjects=subject,
                  commit_every=1, storage_options=options or None)
# Known issue (icechunk 1.1.21): after two processes committed to one repository, the interpreter's
# final garbage collection sometimes aborts (SIGABRT, about 1 run in 5 here), after the build
# finished and committed; this test is about what was committed, so the builder leaves at once.
import os
sys.stdout.flush()
os._exit(0)
"""


@pytest.mark.parametrize("where", ["local", "s3"])
def test_concurrent_builders_one_per_subject_lose_nothing(dataset, reference, tmp_path, s3_server, where):
    if where == "local":
        store, options = str(tmp_path / "shared"), {}
    else:
        store, options = f"{s3_server.bucket()}/shared", s3_server.storage_options
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    processes = [subprocess.Popen([sys.executable, "-c", _SUBJECT_BUILD, str(dataset), store, json.dumps(subjects),
                                   json.dumps(options)], env=env, stderr=subprocess.PIPE, text=True)
                 for subjects in (["01"], ["02", "03"])]  # two builders, one commit per run each
    errors = [p.communicate(timeout=180)[1] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], errors
    archive = open_archive(store, storage_options=options or None)
    assert list(archive.runs["group"]) == GROUPS and (archive.runs["status"] == "complete").all()
    assert archive._record["failures"] == {}
    _assert_same(archive, open_archive(reference))
    assert sorted(archive.repository.list_tags()) == ["build-1", "build-2"]
    written = [c["message"] for c in archive.history if "written" in c["message"]]
    assert len(written) == 5  # one commit per run, none lost or repeated


# -- schedulers whose tasks run in other processes ----------------------------------------------------------
def test_processes_scheduler_gives_the_same_archive(dataset, reference, tmp_path):
    import dask

    with dask.config.set(scheduler="processes", num_workers=2):
        archive = _build(dataset, tmp_path / "processes", subjects="03")
    xr.testing.assert_identical(archive.signals(group=GROUPS[4]).load(),
                                open_archive(reference).signals(group=GROUPS[4]).load())


def test_distributed_processes_cluster_gives_the_same_archive(dataset, reference, tmp_path):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        archive = _build(dataset, tmp_path / "cluster", client=client)
    _assert_same(archive, open_archive(reference))
    written = [c["message"] for c in archive.history if "written" in c["message"]]
    assert sum(m.count("task-rest") for m in written) == 5


def test_failed_runs_are_recorded_in_the_commit(dataset, tmp_path):
    import shutil

    copy = shutil.copytree(dataset, tmp_path / "ds")
    bold = Path(find_runs(copy)["bold"].iloc[0])
    bold.write_bytes(bold.read_bytes()[:2000])
    with pytest.warns(UserWarning, match="1 run"):
        archive = build_archive(copy, tmp_path / "a", _masker(copy), progress=False, subjects="01")
    assert "1 run(s) failed: sub-01/ses-1/task-rest_run-1" in archive.history[0]["message"]
    runs = archive.runs.set_index("group")
    assert runs.loc[GROUPS[0], "status"] == "failed" and runs.loc[GROUPS[1], "status"] == "complete"
    assert not np.isnan(archive.signals(group=GROUPS[1]).values).any()


# -- the command line -----------------------------------------------------------------------------------
def test_cli_builds_on_s3_with_storage_options_and_reads_with_aws_environment(dataset, s3_server):
    url = f"{s3_server.bucket()}/cli"
    endpoint = s3_server.endpoint_url
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["PYTHONPATH"] = str(ROOT)
    built = subprocess.run(
        [sys.executable, "-m", "lazymask", "archive", str(dataset), url, "--labels", str(dataset / "atlas-demo_dseg.nii.gz"),
         "--participant-label", "03", "--quiet", "--storage-option", f"endpoint_url={endpoint}",
         "--storage-option", "key=lazymask-test", "--storage-option", "secret=lazymask-test",
         "--storage-option", 'client_kwargs={"region_name": "us-east-1"}'],
        capture_output=True, text=True, env=env, timeout=300)
    assert built.returncode == 0, built.stderr
    assert "1/1 runs complete; build-1" in built.stdout
    aws = {**env, "AWS_ACCESS_KEY_ID": "lazymask-test", "AWS_SECRET_ACCESS_KEY": "lazymask-test",
           "AWS_REGION": "us-east-1"}
    status = subprocess.run([sys.executable, "-m", "lazymask", "archive", "--status", url, "--tag", "build-1",
                             "--storage-option", f"endpoint_url={endpoint}"],
                            capture_output=True, text=True, env=aws, timeout=300)
    assert status.returncode == 0, status.stderr
    assert "sub-03/task-rest_run-1 complete" in " ".join(status.stdout.split()) and "(build-1)" in status.stdout


def test_a_dataset_on_a_public_bucket_is_archived_like_its_local_copy(dataset, reference, s3_server, tmp_path):
    import fsspec

    bucket = s3_server.bucket(public=True)
    fs = fsspec.filesystem("s3", **s3_server.storage_options)
    for path in sorted(dataset.rglob("*")):
        if path.is_file() and "func" in path.parts:
            fs.pipe_file(f"{bucket[5:]}/ds/{path.relative_to(dataset).as_posix()}", path.read_bytes())
    anonymous = {"anon": True, "endpoint_url": s3_server.endpoint_url}
    archive = build_archive(f"{bucket}/ds", tmp_path / "archive", _masker(dataset), confounds_strategy="simple",
                            progress=False, source_storage_options=anonymous)
    assert list(archive.runs["status"]) == ["complete"] * len(GROUPS)
    expected = open_archive(reference)
    for group in GROUPS:
        xr.testing.assert_identical(archive.signals(group=group).load().drop_attrs(),
                                    expected.signals(group=group).load().drop_attrs())
    sources = archive.signals(group=GROUPS[0]).attrs["archive"]["sources"]
    assert sources[0]["path"].startswith(f"{bucket}/ds/sub-01/") and sources[0]["version"].startswith("ETag=")
    again = build_archive(f"{bucket}/ds", tmp_path / "archive", _masker(dataset), confounds_strategy="simple",
                          progress=False, source_storage_options=anonymous)
    assert again.history == archive.history  # resumed: every run skipped, no commit
