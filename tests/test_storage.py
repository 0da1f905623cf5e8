"""lazymask.storage: what a path, URL or store resolves to, and source identities (local, memory, S3)."""

import pickle

import fsspec
import pytest
import zarr

from lazymask.exceptions import ImageFileNotFoundError, ParameterError, SourceChangedError
from lazymask.storage import (
    IcechunkLocation,
    LocalLocation,
    ObjectIdentity,
    ObjectLocation,
    StoreLocation,
    check_unchanged,
    resolve,
    set_storage_options,
    source_identity,
)


def test_paths_and_urls_resolve_to_locations_with_capabilities(tmp_path):
    local = resolve(tmp_path / "out.zarr")
    assert isinstance(local, LocalLocation) and local.capabilities.atomic_rename
    assert resolve(f"file://{tmp_path}/out.zarr") == local
    remote = resolve("s3://bucket/prefix/out.zarr", {"anon": True})
    assert isinstance(remote, ObjectLocation) and remote.protocol == "s3" and remote.fs_path == "bucket/prefix/out.zarr"
    assert remote.capabilities.conditional_put and not remote.capabilities.atomic_rename
    assert not resolve("https://example.org/x.nii.gz").capabilities.conditional_put
    store = zarr.storage.MemoryStore()
    assert isinstance(resolve(store), StoreLocation)


def test_icechunk_repositories_and_sessions_are_transactional():
    icechunk = pytest.importorskip("icechunk")
    repo = icechunk.Repository.create(icechunk.in_memory_storage())
    session = repo.writable_session("main")
    for target in (repo, session, session.store):
        location = resolve(target)
        assert isinstance(location, IcechunkLocation) and location.capabilities.transactional


def test_storage_options_never_show_and_go_with_urls_only(tmp_path):
    location = resolve("s3://bucket/key", {"key": "AKIA-SECRET", "secret": "hunter2"})
    assert "hunter2" not in repr(location) and "hunter2" not in repr(location.options)
    assert pickle.loads(pickle.dumps(location)) == location
    with pytest.raises(ParameterError, match="apply to URLs"):
        resolve(tmp_path / "out.zarr", {"anon": True})
    with pytest.raises(ParameterError, match="expected a dict"):
        resolve("s3://bucket/key", ["anon"])
    with pytest.raises(ParameterError, match="expected a path, a URL"):
        resolve(42)


def test_default_storage_options_apply_where_none_are_given():
    with set_storage_options(anon=True):
        assert resolve("s3://bucket/key").options["anon"] is True
        assert "anon" not in resolve("s3://bucket/key", {}).options


@pytest.mark.parametrize("kind", ["local", "memory", "s3"])
def test_a_changed_source_is_refused(kind, tmp_path, s3_server):
    if kind == "local":
        url, options = str(tmp_path / "a.bin"), None
        write = lambda data: (tmp_path / "a.bin").write_bytes(data)  # noqa: E731
    else:
        base = "memory://identity-test" if kind == "memory" else s3_server.bucket()
        options = None if kind == "memory" else s3_server.storage_options
        url = f"{base}/a.bin"
        location = resolve(url, options)
        write = lambda data: location.filesystem.pipe_file(location.fs_path, data)  # noqa: E731
    write(b"abc")
    identity = source_identity(url, options)
    assert identity.size == 3
    check_unchanged(identity)
    assert pickle.loads(pickle.dumps(identity)) == identity
    write(b"abd")  # same size, new content
    if kind == "local":
        import os

        os.utime(url, ns=(1, 1))
    with pytest.raises(SourceChangedError, match="a.bin"):
        check_unchanged(identity)


def test_a_missing_object_is_named(s3_server):
    url = s3_server.bucket() + "/nothing.nii.gz"
    with pytest.raises(ImageFileNotFoundError, match="nothing.nii.gz: no such object"):
        source_identity(url, s3_server.storage_options)
    fsspec.filesystem("memory").pipe("/gone/x.bin", b"x")
    identity = source_identity("memory://gone/x.bin")
    assert isinstance(identity, ObjectIdentity)
    fsspec.filesystem("memory").rm("/gone/x.bin")
    with pytest.raises(ImageFileNotFoundError, match="no longer exists"):
        check_unchanged(identity)
