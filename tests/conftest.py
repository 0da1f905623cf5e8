"""Shared fixtures: small deterministic images written to a temporary directory."""

import nibabel as nib
import pytest

from lazymask.testing import fake_fmri


@pytest.fixture(scope="session")
def fmri_paths(tmp_path_factory):
    """A small 4D int16 run as .nii and .nii.gz (same data)."""
    folder = tmp_path_factory.mktemp("fmri")
    img = fake_fmri(shape=(12, 14, 10), n_volumes=17, seed=1)
    paths = {}
    for ext in (".nii", ".nii.gz"):
        paths[ext] = folder / f"run{ext}"
        nib.save(img, paths[ext])
    return paths


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 API server on loopback, for the whole session (tests make their own buckets)."""
    from lazymask.testing import s3_test_server

    with s3_test_server() as server:
        yield server
