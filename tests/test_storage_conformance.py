"""Every storage kind through one suite: round trips, refusals, overwrite, interruptions, corruption, races.

Kinds: a local directory, ``memory://``, a ``zarr.storage.MemoryStore``, S3 (moto's server on
loopback), icechunk on a local disk and icechunk on S3. What each kind does with ``overwrite`` of a
complete group is the decision of docs/guarantees.md ("Object storage and icechunk"): replaced once
the new one is complete where there is an atomic rename or a transaction, refused elsewhere.
"""

import threading
import uuid

import nibabel as nib
import numpy as np
import pytest
import xarray as xr
import zarr
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

import lazymask
from lazymask.exceptions import CorruptStoreError, UnsafeTargetError
from lazymask.io import is_complete, open_zarr, to_zarr, verify
from lazymask.maskers import NiftiMasker, load_masker, open_signals, save_signals
from lazymask.storage import list_keys, resolve
from lazymask.testing import fake_fmri

KINDS = ["local", "memory-url", "memory-store", "s3", "icechunk-local", "icechunk-s3"]
#: kinds that replace a complete group safely (a rename, a transaction)
REPLACEABLE = {"local", "icechunk-local", "icechunk-s3"}


class Target:
    """One store of one kind: what to pass to lazymask, and raw access for the tests."""

    def __init__(self, kind, store, options=None):
        self.kind, self.store, self.options = kind, store, options

    @property
    def kwargs(self):
        return {"storage_options": self.options} if self.options else {}

    def raw_set(self, key, data: bytes):
        """Write bytes at a key behind lazymask's back (committed, for icechunk)."""
        if self.kind.startswith("icechunk"):
            session = self.store.writable_session("main")
            buffer = default_buffer_prototype().buffer.from_bytes(data)
            sync(session.store.set(key, buffer))
            session.commit(f"test: write {key}")
            return
        store = resolve(self.store, self.options).zarr_store()
        sync(store.set(key, default_buffer_prototype().buffer.from_bytes(data)))

    def raw_get(self, key) -> bytes:
        store = self.read_store()
        return sync(store.get(key, default_buffer_prototype())).to_bytes()

    def read_store(self):
        if self.kind.startswith("icechunk"):
            return self.store.readonly_session(branch="main").store
        return resolve(self.store, self.options).zarr_store(read_only=True)

    def keys(self, prefix):
        return list_keys(self.read_store(), prefix)


@pytest.fixture(params=KINDS)
def target(request, tmp_path):
    kind = request.param
    if kind == "local":
        return Target(kind, tmp_path / "store.zarr")
    if kind == "memory-url":
        return Target(kind, f"memory://conformance-{uuid.uuid4().hex}/store.zarr")
    if kind == "memory-store":
        return Target(kind, zarr.storage.MemoryStore())
    icechunk = pytest.importorskip("icechunk")
    if kind == "icechunk-local":
        return Target(kind, icechunk.Repository.create(icechunk.local_filesystem_storage(str(tmp_path / "repo"))))
    server = request.getfixturevalue("s3_server")
    bucket = server.bucket("conformance")
    if kind == "s3":
        return Target(kind, f"{bucket}/store.zarr", server.storage_options)
    return Target(kind, icechunk.Repository.create(server.icechunk_storage(f"{bucket}/repo")))


@pytest.fixture(scope="module")
def image():
    img = fake_fmri(shape=(8, 9, 7), n_volumes=6, seed=3)
    data = lazymask.io.image_dataarray(np.asarray(img.dataobj), img.affine, t_r=2.0)
    return data.chunk({"time": 2})


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    path = tmp_path_factory.mktemp("conformance") / "run.nii.gz"
    nib.save(fake_fmri(shape=(10, 11, 9), n_volumes=12, seed=5, dtype="int16"), path)
    masker = NiftiMasker(mask_strategy="epi", standardize="zscore_sample", t_r=2.0).fit(str(path))
    return masker, masker.transform(str(path))


def _signals(n_time=12, n_regions=5, seed=0, chunks=4):
    values = np.random.default_rng(seed).standard_normal((n_time, n_regions)).astype("f4")
    return xr.DataArray(values, dims=("time", "region"), coords={"region": np.arange(1, n_regions + 1)},
                        name="signals", attrs={"t_r": 2.0}).chunk({"time": chunks})


def _broken(obj):
    """``obj`` whose second time chunk raises while being computed (a failed dask task)."""
    def fail_on_second(block, block_info=None):
        if block_info[0]["chunk-location"][0] == 1:
            raise RuntimeError("worker lost")
        return block

    data = obj.data.map_blocks(fail_on_second, dtype=obj.dtype, meta=np.empty((0,) * obj.ndim, obj.dtype))
    return obj.copy(data=data)


# -- round trips ------------------------------------------------------------------------------------
def test_to_zarr_round_trips_images_and_labelled_arrays(target, image):
    signals = _signals()
    to_zarr(image, target.store, group="sub-01/anat", **target.kwargs)
    to_zarr(signals, target.store, group="sub-01/signals", **target.kwargs)
    back = open_zarr(target.store, group="sub-01/anat", **target.kwargs)
    np.testing.assert_array_equal(back.values, image.values)
    np.testing.assert_allclose(lazymask.io.get_affine(back), lazymask.io.get_affine(image))
    xr.testing.assert_identical(open_zarr(target.store, group="sub-01/signals", verify=True, **target.kwargs).compute(),
                                signals.compute())
    assert verify(target.store, **target.kwargs)["groups"] == 2
    assert is_complete(target.store, "sub-01/anat", **target.kwargs)
    assert not is_complete(target.store, "sub-02", **target.kwargs)


def test_save_signals_open_signals_and_load_masker_round_trip(target, fitted):
    masker, signals = fitted
    save_signals([signals, signals * 2], target.store, ["sub-01/run-1", "sub-01/run-2"], masker=masker,
                 **target.kwargs)
    back = open_signals(target.store, "sub-01/run-2", verify=True, **target.kwargs)
    np.testing.assert_allclose(back.values, signals.values * 2, rtol=1e-6)
    rebuilt = load_masker(target.store, "sub-01/run-1", **target.kwargs)
    np.testing.assert_array_equal(np.asarray(rebuilt.mask_img_), np.asarray(masker.mask_img_))
    assert verify(target.store, "sub-01", **target.kwargs)["groups"] == 6  # each run: itself, signals, mask


# -- refusals -----------------------------------------------------------------------------------------
def test_foreign_content_another_kind_and_a_complete_group_are_refused(target):
    signals = _signals()
    to_zarr(signals, target.store, group="sub-01/array", **target.kwargs)
    target.raw_set("sub-01/foreign/zarr.json", b'{"zarr_format": 3, "node_type": "group", "attributes": {"x": 1}}')
    with pytest.raises(UnsafeTargetError, match="did not write"):
        to_zarr(signals, target.store, group="sub-01/foreign", overwrite=True, **target.kwargs)
    with pytest.raises(UnsafeTargetError, match="another kind"):
        save_signals(signals, target.store, "sub-01/array", overwrite=True, **target.kwargs)
    with pytest.raises(UnsafeTargetError, match="pass overwrite=True"):
        to_zarr(signals, target.store, group="sub-01/array", **target.kwargs)
    if not target.kind.startswith("icechunk"):  # icechunk holds zarr keys only
        target.raw_set("sub-01/array/notes.txt", b"mine")
        with pytest.raises(UnsafeTargetError, match="notes.txt"):
            to_zarr(signals, target.store, group="sub-01/array", overwrite=True, **target.kwargs)
    assert target.raw_get("sub-01/foreign/zarr.json").startswith(b'{"zarr_format": 3')


def test_overwrite_of_a_complete_group_follows_the_documented_decision(target):
    old, new = _signals(seed=1), _signals(seed=2)
    to_zarr(old, target.store, group="run", **target.kwargs)
    if target.kind in REPLACEABLE:
        to_zarr(new, target.store, group="run", overwrite=True, **target.kwargs)
        expected = new
    else:
        with pytest.raises(UnsafeTargetError, match="neither an atomic rename nor transactions"):
            to_zarr(new, target.store, group="run", overwrite=True, **target.kwargs)
        expected = old
    xr.testing.assert_identical(open_zarr(target.store, group="run", verify=True, **target.kwargs).compute(),
                                expected.compute())


# -- interruptions --------------------------------------------------------------------------------------
def test_an_interrupted_write_leaves_nothing_complete_and_the_old_result_intact(target):
    old = _signals(seed=1)
    to_zarr(old, target.store, group="run-1", **target.kwargs)
    if target.kind in REPLACEABLE:
        with pytest.raises(RuntimeError, match="worker lost"):
            to_zarr(_broken(_signals(seed=2)), target.store, group="run-1", overwrite=True, **target.kwargs)
    with pytest.raises(RuntimeError, match="worker lost"):
        to_zarr(_broken(_signals(seed=2)), target.store, group="run-2", **target.kwargs)
    xr.testing.assert_identical(open_zarr(target.store, group="run-1", **target.kwargs).compute(), old.compute())
    assert not is_complete(target.store, "run-2", **target.kwargs)
    assert not target.keys("run-2")  # the claim and the chunks written are deleted (or never committed)
    to_zarr(old, target.store, group="run-2", **target.kwargs)  # and the target can be written again
    assert is_complete(target.store, "run-2", **target.kwargs)


@pytest.mark.parametrize("failing_put", [1, 3])
def test_s3_errors_mid_write_give_a_clear_error_and_nothing_complete(s3_server, monkeypatch, failing_put):
    import s3fs

    url, options = f"{s3_server.bucket('faults')}/store.zarr", s3_server.storage_options
    to_zarr(_signals(seed=1), url, group="run-1", storage_options=options)
    calls = {"n": 0}
    original = s3fs.S3FileSystem._pipe_file

    async def flaky_pipe_file(self, path, data, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == failing_put:
            raise OSError(f"S3 returned 503 Slow Down for {path}")
        return await original(self, path, data, *args, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "_pipe_file", flaky_pipe_file)
    with pytest.raises(OSError, match="503"):
        to_zarr(_signals(seed=2), url, group="run-2", storage_options=options)
    monkeypatch.undo()
    assert not is_complete(url, "run-2", storage_options=options)
    assert is_complete(url, "run-1", storage_options=options)
    with pytest.raises(Exception):  # noqa: B017 - nothing at run-2 opens
        open_zarr(url, group="run-2", storage_options=options)


# -- corruption ---------------------------------------------------------------------------------------
def test_a_corrupted_chunk_is_found_by_verify_and_by_reads(target):
    to_zarr(_signals(), target.store, group="run", **target.kwargs)
    key = next(k for k in target.keys("run/data") if "/c/" in k)
    chunk = bytearray(target.raw_get(key))
    chunk[len(chunk) // 2] ^= 0xFF
    target.raw_set(key, bytes(chunk))
    with pytest.raises(CorruptStoreError, match="corrupt"):
        verify(target.store, **target.kwargs)
    with pytest.raises(CorruptStoreError, match="array 'data'"):
        open_zarr(target.store, group="run", **target.kwargs).compute()


# -- races ----------------------------------------------------------------------------------------------
def test_two_writers_of_one_new_target_exactly_one_wins(target):
    to_zarr(_signals(seed=0), target.store, group="other", **target.kwargs)  # the root exists already
    outcomes, barrier = [], threading.Barrier(2)

    def write(seed):
        barrier.wait()
        try:
            to_zarr(_signals(seed=seed), target.store, group="run", **target.kwargs)
            outcomes.append(("won", seed))
        except UnsafeTargetError as exc:
            outcomes.append(("refused", str(exc)))
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            outcomes.append(("failed", repr(exc)))

    threads = [threading.Thread(target=write, args=(seed,)) for seed in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(o[0] for o in outcomes) == ["refused", "won"], outcomes
    winner = next(seed for state, seed in outcomes if state == "won")
    xr.testing.assert_identical(open_zarr(target.store, group="run", verify=True, **target.kwargs).compute(),
                                _signals(seed=winner).compute())


# -- the icechunk session contract (an archive builder writes into its own session) ---------------------
def test_save_signals_into_an_icechunk_session_writes_in_place_and_never_commits(fitted, tmp_path):
    icechunk = pytest.importorskip("icechunk")
    masker, signals = fitted
    repo = icechunk.Repository.create(icechunk.local_filesystem_storage(str(tmp_path / "archive")))
    session = repo.writable_session("main")
    before = session.snapshot_id
    save_signals(signals, session, "sub-01/task-rest_run-1", masker=masker)
    save_signals([signals, signals], session.store, ["sub-02/run-1", "sub-02/run-2"], masker=masker)
    assert session.has_uncommitted_changes
    assert repo.lookup_branch("main") == before  # nothing committed
    assert not [k for k in list_keys(session.store, "") if ".lazymask-tmp-" in k]  # no staging copy
    session.commit("archive: three runs")
    readonly = repo.readonly_session(branch="main")
    for where in (readonly, readonly.store):
        assert is_complete(where, "sub-01/task-rest_run-1")
        np.testing.assert_allclose(open_signals(where, "sub-02/run-2").values, signals.values, rtol=1e-6)
        assert type(load_masker(where, "sub-01/task-rest_run-1")).__name__ == "NiftiMasker"
        assert verify(where)["groups"] == 9  # three runs, each with its signals and mask groups
    with pytest.raises(UnsafeTargetError, match="pass overwrite=True"):
        save_signals(signals, repo.writable_session("main"), "sub-01/task-rest_run-1", masker=masker)


def test_replacing_in_a_session_keeps_the_old_group_in_the_repository_until_the_commit(tmp_path):
    icechunk = pytest.importorskip("icechunk")
    repo = icechunk.Repository.create(icechunk.local_filesystem_storage(str(tmp_path / "repo")))
    old, new = _signals(seed=1), _signals(seed=2)
    to_zarr(old, repo, group="run")  # lazymask commits on the repository's branch
    session = repo.writable_session("main")
    with pytest.raises(RuntimeError, match="worker lost") as failure:
        to_zarr(_broken(new), session, group="run", overwrite=True)
    assert "do not commit" in "\n".join(getattr(failure.value, "__notes__", []))
    xr.testing.assert_identical(open_zarr(repo, group="run").compute(), old.compute())
    session = repo.writable_session("main")
    to_zarr(new, session, group="run", overwrite=True)
    xr.testing.assert_identical(open_zarr(repo, group="run").compute(), old.compute())  # not yet committed
    session.commit("replace run")
    xr.testing.assert_identical(open_zarr(repo, group="run", verify=True).compute(), new.compute())


# -- NIfTI files on object stores ------------------------------------------------------------------------
def test_to_nifti_on_s3_is_one_put_create_only_and_replaced_only_with_overwrite(s3_server, image):
    options = s3_server.storage_options
    url = f"{s3_server.bucket('nifti')}/sub-01/bold.nii.gz"
    assert lazymask.to_nifti(image, url, storage_options=options) == url
    reopened = lazymask.open_nifti(url, storage_options=options) if _opens_urls() else None
    if reopened is not None:
        np.testing.assert_array_equal(reopened.values, image.values)
    with pytest.raises(UnsafeTargetError, match="pass overwrite=True"):
        lazymask.to_nifti(image, url, storage_options=options)
    lazymask.to_nifti(image * 2, url, storage_options=options, overwrite=True)
    notes = f"{s3_server.bucket('nifti')}/notes.nii"
    s3_server.client().put_object(Bucket=notes[5:].split("/")[0], Key="notes.nii", Body=b"not an image")
    with pytest.raises(UnsafeTargetError, match="not a NIfTI image"):
        lazymask.to_nifti(image, notes, storage_options=options, overwrite=True)


def _opens_urls() -> bool:
    import inspect

    return "storage_options" in inspect.signature(lazymask.open_nifti).parameters
