"""BIDS discovery and fMRIPrep confounds on object storage (memory:// and a real S3 API server)."""

import fsspec
import pandas as pd
import pytest

from lazymask.datasets import make_fmriprep_dataset
from lazymask.exceptions import ImageFileNotFoundError
from lazymask.interfaces import find_runs
from lazymask.interfaces.fmriprep import load_confounds, load_confounds_strategy


@pytest.fixture(scope="module")
def local_dataset(tmp_path_factory):
    return make_fmriprep_dataset(tmp_path_factory.mktemp("bids") / "fmriprep", n_subjects=3, n_volumes=20)


def _upload(local_root, url, options):
    fs, _, (base,) = fsspec.get_fs_token_paths(url, storage_options=options)
    for path in sorted(local_root.rglob("*")):
        if path.is_file():
            fs.pipe_file(f"{base}/{path.relative_to(local_root).as_posix()}", path.read_bytes())
    return url


@pytest.fixture(params=["memory", "s3"])
def remote_dataset(request, local_dataset, s3_server):
    if request.param == "memory":
        return _upload(local_dataset, "memory://bids-remote/fmriprep", None), None
    options = s3_server.storage_options
    return _upload(local_dataset, s3_server.bucket() + "/fmriprep", options), options


def test_find_runs_on_object_storage_equals_the_local_tree(local_dataset, remote_dataset):
    url, options = remote_dataset
    local = find_runs(local_dataset)
    remote = find_runs(url, storage_options=options)
    assert list(remote["group"]) == list(local["group"])
    for column in ("bold", "confounds", "confounds_json", "sidecar", "mask"):
        expected = [None if p is None else p.replace(str(local_dataset), url) for p in local[column]]
        assert list(remote[column]) == expected
    pd.testing.assert_frame_equal(remote.drop(columns=["bold", "confounds", "confounds_json", "sidecar", "mask"]),
                                  local.drop(columns=["bold", "confounds", "confounds_json", "sidecar", "mask"]))
    subset = find_runs(url, subjects="02", storage_options=options)
    assert set(subset["subject"]) == {"02"}


def test_load_confounds_from_urls_equals_local(local_dataset, remote_dataset):
    url, options = remote_dataset
    local_runs = list(find_runs(local_dataset)["bold"])
    remote_runs = [p.replace(str(local_dataset), url) for p in local_runs]
    expected, expected_mask = load_confounds(local_runs, strategy=("motion", "wm_csf", "scrub"))
    got, got_mask = load_confounds(remote_runs, strategy=("motion", "wm_csf", "scrub"), storage_options=options)
    for e, g in zip(expected, got, strict=True):
        pd.testing.assert_frame_equal(g, e)
    for e, g in zip(expected_mask, got_mask, strict=True):
        assert (e is None and g is None) or (e == g).all()
    single, _ = load_confounds_strategy(remote_runs[0], "simple", storage_options=options)
    pd.testing.assert_frame_equal(single, load_confounds_strategy(local_runs[0], "simple")[0])


def test_a_missing_remote_tree_is_named(s3_server):
    url = s3_server.bucket() + "/nothing-here"
    with pytest.raises(ImageFileNotFoundError, match="nothing-here"):
        find_runs(url, storage_options=s3_server.storage_options)


def test_anonymous_access_to_a_public_bucket(local_dataset, s3_server):
    url = _upload(local_dataset, s3_server.bucket(public=True) + "/public", s3_server.storage_options)
    anonymous = {"anon": True, "endpoint_url": s3_server.endpoint_url}
    runs = find_runs(url, storage_options=anonymous)
    assert len(runs) == len(find_runs(local_dataset))
    confounds, _ = load_confounds_strategy(runs["bold"].iloc[0], "simple", storage_options=anonymous)
    assert confounds.shape[0] == 20
    private = _upload(local_dataset, s3_server.bucket() + "/private", s3_server.storage_options)
    with pytest.raises(ImageFileNotFoundError, match="access denied.*anon"):  # listed, but not readable
        find_runs(private, storage_options=anonymous)
