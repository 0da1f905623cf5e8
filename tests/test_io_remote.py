"""Remote NIfTI reads (lazymask.storage._bytes through io): against moto's S3 server and ``memory://``.

What is pinned: the values, dtype and affine nibabel reads from the same file; a ``.nii`` fetches
only the volumes asked for; a pass over a ``.nii.gz`` fetches the object about once, whatever the
scheduler's order; a changed object is refused, a missing one named; opening fetches only the
header; maskers given URLs give what they give on local paths; the run cache makes a second pass
download nothing.
"""

import itertools

import dask
import fsspec
import nibabel as nib
import numpy as np
import pytest

import lazymask
from lazymask.exceptions import CorruptImageError, ImageFileNotFoundError, ParameterError, SourceChangedError
from lazymask.maskers import NiftiLabelsMasker, NiftiMasker
from lazymask.storage import bytes_fetched, set_storage_options
from lazymask.testing import fake_fmri, raise_if_dask_computes

_names = itertools.count()


@pytest.fixture(scope="module")
def bucket(s3_server):
    return s3_server.bucket("remote-read")


@pytest.fixture(scope="module")
def options(s3_server):
    return s3_server.storage_options


def _scaled_int16(nifti2: bool = False):
    img = fake_fmri(shape=(9, 10, 8), n_volumes=13, seed=3)
    klass = nib.Nifti2Image if nifti2 else nib.Nifti1Image
    out = klass(np.asanyarray(img.dataobj), img.affine, img.header if not nifti2 else None)
    out.header.set_slope_inter(0.25, -3.0)
    out.header.set_zooms((3.0, 3.0, 3.0, 2.0))
    out.header.set_xyzt_units("mm", "sec")
    return out


def _upload(tmp_path, img, url: str, options: dict | None, ext: str):
    """Save ``img`` locally as ``ext`` and upload the same bytes to ``url``; the local path."""
    path = tmp_path / f"image-{next(_names)}{ext}"
    nib.save(img, path)
    fsspec.filesystem(url.split("://")[0], **(options or {})).pipe(url, path.read_bytes())
    return path


@pytest.fixture(params=[".nii", ".nii.gz"])
def ext(request):
    return request.param


@pytest.mark.parametrize("nifti2", [False, True], ids=["nifti1", "nifti2"])
def test_s3_values_dtype_affine_equal_nibabel(tmp_path, bucket, options, ext, nifti2):
    url = f"{bucket}/run-{next(_names)}{ext}"
    path = _upload(tmp_path, _scaled_int16(nifti2), url, options, ext)
    image = lazymask.open_nifti(url, chunks=4, storage_options=options)
    reference = nib.load(path)
    expected = np.asanyarray(reference.dataobj)
    values = image.values
    assert values.dtype == expected.dtype == np.float32 or values.dtype == expected.dtype
    np.testing.assert_array_equal(values, expected)
    np.testing.assert_allclose(image.nifti.affine, reference.affine)
    assert image.attrs["t_r"] == 2.0 and image.attrs["source"] == [url]


def test_memory_url_equal_nibabel(tmp_path, ext):
    url = f"memory://remote-tests/run-{next(_names)}{ext}"
    path = _upload(tmp_path, _scaled_int16(), url, None, ext)
    image = lazymask.open_nifti(url, chunks=5)
    np.testing.assert_array_equal(image.values, np.asanyarray(nib.load(path).dataobj))


def test_nii_reads_only_the_volumes_asked_for(tmp_path, bucket, options):
    url = f"{bucket}/plain-{next(_names)}.nii"
    img = _scaled_int16()
    path = _upload(tmp_path, img, url, options, ".nii")
    volume_bytes = int(np.prod(img.shape[:3])) * 2
    image = lazymask.open_nifti(url, chunks=1, storage_options=options)
    before = bytes_fetched()
    part = image.isel(time=[2, 7]).values
    assert bytes_fetched() - before == 2 * volume_bytes
    np.testing.assert_array_equal(part, np.asanyarray(nib.load(path).dataobj)[..., [2, 7]])


@pytest.mark.parametrize("order", ["forward", "reversed", "reduction"])
def test_gzip_pass_fetches_the_object_once(tmp_path, bucket, options, order):
    url = f"{bucket}/once-{next(_names)}.nii.gz"
    path = _upload(tmp_path, fake_fmri(shape=(16, 18, 14), n_volumes=20, seed=5), url, options, ".nii.gz")
    size = path.stat().st_size
    image = lazymask.open_nifti(url, chunks=2, storage_options=options)
    before = bytes_fetched()
    if order == "reduction":
        total = float(image.mean("time").sum())
    else:
        blocks = image.data.to_delayed().ravel().tolist()
        computed = dask.compute(*(blocks if order == "forward" else blocks[::-1]), scheduler="threads")
        total = float(np.concatenate(computed, axis=3).mean(axis=3).sum())
    assert size <= bytes_fetched() - before <= size  # exactly once: no byte fetched twice
    assert np.isclose(total, np.asanyarray(nib.load(path).dataobj).mean(axis=3).sum())


def test_memory_gzip_pass_fetches_once_counted_by_the_file_system(tmp_path, monkeypatch):
    """The same count, taken by the fsspec file system itself (not by lazymask's counter)."""
    from fsspec.implementations.memory import MemoryFileSystem

    url = f"memory://remote-tests/counted-{next(_names)}.nii.gz"
    path = _upload(tmp_path, fake_fmri(shape=(16, 18, 14), n_volumes=20, seed=6), url, None, ".nii.gz")
    fetched, original = [], MemoryFileSystem.cat_file

    def counting_cat_file(self, path, start=None, end=None, **kwargs):
        data = original(self, path, start=start, end=end, **kwargs)
        fetched.append(len(data))
        return data

    monkeypatch.setattr(MemoryFileSystem, "cat_file", counting_cat_file)
    image = lazymask.open_nifti(url, chunks=3)
    assert sum(fetched) < 20_000  # the header: a few small ranged reads
    fetched.clear()
    image.mean("time").compute(scheduler="threads")
    assert sum(fetched) == path.stat().st_size


def test_opening_fetches_only_the_header_and_building_computes_nothing(tmp_path, bucket, options, ext):
    url = f"{bucket}/lazy-{next(_names)}{ext}"
    _upload(tmp_path, fake_fmri(shape=(16, 18, 14), n_volumes=20, seed=7), url, options, ext)
    before = bytes_fetched()
    with raise_if_dask_computes():
        image = lazymask.open_nifti(url, storage_options=options)
        lazy = (image - image.mean("time")).std("time")
    fetched = bytes_fetched() - before
    assert fetched <= 544 if ext == ".nii" else fetched <= 544 + (1 << 14)
    assert lazy.shape == image.shape[:3]


def test_changed_object_is_refused(tmp_path, bucket, options, ext):
    url = f"{bucket}/changed-{next(_names)}{ext}"
    _upload(tmp_path, _scaled_int16(), url, options, ext)
    image = lazymask.open_nifti(url, storage_options=options)
    fsspec.filesystem("s3", **options).pipe(url, b"new bytes")
    with pytest.raises(SourceChangedError, match=f"{url}: the object changed after it was opened"):
        image.values


def test_changed_memory_object_is_refused(tmp_path, ext):
    url = f"memory://remote-tests/changed-{next(_names)}{ext}"
    _upload(tmp_path, _scaled_int16(), url, None, ext)
    image = lazymask.open_nifti(url)
    fsspec.filesystem("memory").pipe(url, b"x" * 10)
    with pytest.raises(SourceChangedError, match=f"{url}: the object changed"):
        image.values


def test_missing_object_is_named(bucket, options):
    url = f"{bucket}/no-such-run.nii.gz"
    with pytest.raises(ImageFileNotFoundError, match=f"{url}: no such object"):
        lazymask.open_nifti(url, storage_options=options)
    with pytest.raises(ImageFileNotFoundError, match="no object matches the pattern"):
        lazymask.open_nifti(f"{bucket}/no-such-*.nii.gz", storage_options=options)


def test_object_deleted_after_open_is_named(tmp_path, bucket, options):
    url = f"{bucket}/deleted-{next(_names)}.nii"
    _upload(tmp_path, _scaled_int16(), url, options, ".nii")
    image = lazymask.open_nifti(url, storage_options=options)
    fsspec.filesystem("s3", **options).rm(url)
    with pytest.raises(ImageFileNotFoundError, match=f"{url}: the object no longer exists"):
        image.values


def test_truncated_object_is_corrupt(tmp_path, bucket, options, ext):
    url = f"{bucket}/truncated-{next(_names)}{ext}"
    path = tmp_path / f"whole{ext}"
    nib.save(_scaled_int16(), path)
    data = path.read_bytes()
    fsspec.filesystem("s3", **options).pipe(url, data[: len(data) * 2 // 3] if ext == ".nii.gz" else data)
    if ext == ".nii":  # a .nii cut short is refused at open (its size is known)
        fsspec.filesystem("s3", **options).pipe(url, data[:-100])
        with pytest.raises(CorruptImageError, match=f"{url}: the header declares voxel data up to byte"):
            lazymask.open_nifti(url, storage_options=options)
        return
    image = lazymask.open_nifti(url, storage_options=options)
    with pytest.raises(CorruptImageError, match=f"{url}: the gzip stream ends"):
        image.values


def test_anonymous_access(tmp_path, s3_server, options):
    bucket = s3_server.bucket("public")
    s3_server.client().put_bucket_acl(Bucket=bucket.removeprefix("s3://"), ACL="public-read")
    url = f"{bucket}/anon.nii.gz"
    path = _upload(tmp_path, _scaled_int16(), url, options, ".nii.gz")
    anonymous = {"anon": True, "endpoint_url": s3_server.endpoint_url}
    image = lazymask.open_nifti(url, storage_options=anonymous)
    np.testing.assert_array_equal(image.values, np.asanyarray(nib.load(path).dataobj))


def test_globs_lists_and_default_storage_options(tmp_path, bucket, options):
    prefix = f"{bucket}/glob-{next(_names)}"
    img = _scaled_int16()
    for run in (1, 2):
        _upload(tmp_path, img, f"{prefix}/sub-01_run-{run}_bold.nii.gz", options, ".nii.gz")
    with set_storage_options(options):
        globbed = lazymask.open_nifti(f"{prefix}/sub-01_run-*_bold.nii.gz")
    listed = lazymask.open_nifti([f"{prefix}/sub-01_run-1_bold.nii.gz", f"{prefix}/sub-01_run-2_bold.nii.gz"],
                                 storage_options=options)
    assert globbed.attrs["source"] == listed.attrs["source"] and globbed.sizes["time"] == 26
    np.testing.assert_array_equal(globbed.values, listed.values)


def test_storage_options_with_a_local_path_are_refused(tmp_path):
    path = tmp_path / "local.nii"
    nib.save(_scaled_int16(), path)
    with pytest.raises(ParameterError, match="storage_options were given with the local path"):
        lazymask.open_nifti(str(path), storage_options={"anon": True})


@pytest.mark.parametrize(("chunks", "scheduler"), [(1, "threads"), (5, "sync"), (-1, "threads"), (6, "processes")])
def test_chunk_and_scheduler_invariance(tmp_path, bucket, options, ext, chunks, scheduler):
    url = f"{bucket}/invariance-{next(_names)}{ext}"
    path = _upload(tmp_path, _scaled_int16(), url, options, ext)
    image = lazymask.open_nifti(url, chunks=chunks, storage_options=options)
    mean = image.mean("time").compute(scheduler=scheduler)
    expected = np.asanyarray(nib.load(path).dataobj).mean(axis=3, dtype=np.float64)
    np.testing.assert_allclose(mean.values, expected, rtol=1e-6)


@pytest.fixture(scope="module")
def masker_run(tmp_path_factory, bucket, options):
    folder = tmp_path_factory.mktemp("masker-run")
    path = folder / "bold.nii.gz"
    nib.save(fake_fmri(shape=(20, 24, 20), n_volumes=24, seed=11), path)
    url = f"{bucket}/masker/bold.nii.gz"
    fsspec.filesystem("s3", **options).put(str(path), url)
    return path, url


def test_nifti_masker_on_a_url_gives_the_local_signals(tmp_path, masker_run, options):
    path, url = masker_run
    kwargs = {"mask_strategy": "epi", "detrend": True, "standardize": "zscore_sample"}
    local_masker = NiftiMasker(**kwargs)
    local = local_masker.fit_transform(str(path))
    with set_storage_options(options):
        remote = NiftiMasker(**kwargs).fit_transform(url)
    np.testing.assert_array_equal(np.asarray(remote), np.asarray(local))
    mask_path, mask_url = tmp_path / "mask.nii.gz", url.replace("bold.nii.gz", "epi-mask.nii.gz")
    lazymask.to_nifti(local_masker.mask_img_, mask_path)
    fsspec.filesystem("s3", **options).put(str(mask_path), mask_url)
    with set_storage_options(options):
        given = NiftiMasker(mask_img=mask_url, detrend=True).fit_transform(url)
    expected = NiftiMasker(mask_img=str(mask_path), detrend=True).fit_transform(str(path))
    np.testing.assert_array_equal(np.asarray(given), np.asarray(expected))


def test_labels_masker_with_url_atlas_and_mask(tmp_path, masker_run, bucket, options):
    path, url = masker_run
    labels = np.zeros((20, 24, 20), dtype=np.int16)
    labels[3:9, 4:12, 5:15], labels[10:17, 12:20, 5:15] = 1, 2
    reference = nib.load(path)
    atlas_path = tmp_path / "atlas.nii.gz"
    nib.save(nib.Nifti1Image(labels, reference.affine), atlas_path)
    mask_path = tmp_path / "mask.nii.gz"
    nib.save(nib.Nifti1Image((labels > -1).astype(np.int8), reference.affine), mask_path)
    atlas_url, mask_url = f"{bucket}/masker/atlas.nii.gz", f"{bucket}/masker/mask.nii.gz"
    fs = fsspec.filesystem("s3", **options)
    fs.put(str(atlas_path), atlas_url)
    fs.put(str(mask_path), mask_url)
    local = NiftiLabelsMasker(str(atlas_path), mask_img=str(mask_path)).fit_transform(str(path))
    with set_storage_options(options):
        remote = NiftiLabelsMasker(atlas_url, mask_img=mask_url).fit_transform(url)
    np.testing.assert_array_equal(np.asarray(remote), np.asarray(local))


def test_run_cache_second_pass_downloads_nothing(tmp_path, bucket, options, ext):
    url = f"{bucket}/cached-{next(_names)}{ext}"
    path = _upload(tmp_path, fake_fmri(shape=(16, 18, 14), n_volumes=20, seed=8), url, options, ext)
    with lazymask.config.set(cache_dir=str(tmp_path / "cache")):
        image = lazymask.open_nifti(url, chunks=3, storage_options=options)
        first = image.mean("time").compute()
        assert lazymask.io.run_cache_entries()[0]["source"] == url
        before = bytes_fetched()
        again = lazymask.open_nifti(url, chunks=3, storage_options=options)
        second = again.mean("time").compute()
        assert bytes_fetched() - before <= 544 + (1 << 14)  # the header at open, no voxel
    np.testing.assert_array_equal(first.values, second.values)
    expected = np.asanyarray(nib.load(path).dataobj).mean(axis=3)
    np.testing.assert_allclose(second.values, expected, rtol=1e-6)


def test_reader_pickles_with_its_object_identity(tmp_path, bucket, options):
    import pickle

    url = f"{bucket}/pickled-{next(_names)}.nii.gz"
    _upload(tmp_path, _scaled_int16(), url, options, ".nii.gz")
    image = lazymask.open_nifti(url, storage_options=options)
    (reader,) = [value for value in image.data.dask.values() if isinstance(value, tuple)][0][1].readers
    copy = pickle.loads(pickle.dumps(reader))
    assert copy == reader and "secret" not in repr(copy)
    np.testing.assert_array_equal(copy.read(0, 2), reader.read(0, 2))


def test_xarray_backend_opens_a_url(tmp_path, bucket, options):
    import xarray as xr

    url = f"{bucket}/backend-{next(_names)}.nii.gz"
    path = _upload(tmp_path, _scaled_int16(), url, options, ".nii.gz")
    image = xr.open_dataarray(url, engine="lazymask", chunks={}, storage_options=options)
    np.testing.assert_array_equal(image.values, np.asanyarray(nib.load(path).dataobj))


def test_masking_memory_cache_is_keyed_on_the_object(tmp_path, bucket, options):
    from lazymask.masking import compute_epi_mask

    url = f"{bucket}/memory-{next(_names)}.nii.gz"
    _upload(tmp_path, fake_fmri(shape=(16, 18, 14), n_volumes=10, seed=9), url, options, ".nii.gz")
    first = compute_epi_mask(lazymask.open_nifti(url, storage_options=options), memory=str(tmp_path / "m"))
    before = bytes_fetched()
    again = compute_epi_mask(lazymask.open_nifti(url, storage_options=options), memory=str(tmp_path / "m"))
    assert bytes_fetched() - before <= 544 + (1 << 14)  # the header only: the mask came from the cache
    np.testing.assert_array_equal(first.values, again.values)
    _upload(tmp_path, fake_fmri(shape=(16, 18, 14), n_volumes=10, seed=10), url, options, ".nii.gz")
    before = bytes_fetched()
    compute_epi_mask(lazymask.open_nifti(url, storage_options=options), memory=str(tmp_path / "m"))
    assert bytes_fetched() - before > 10_000  # a new object (new ETag): recomputed, not the old entry


def test_versioned_bucket_reads_the_version_opened_and_refuses_a_new_one(tmp_path, s3_server, options):
    bucket = s3_server.bucket("versioned", versioned=True)
    url = f"{bucket}/run.nii.gz"
    path = _upload(tmp_path, _scaled_int16(), url, options, ".nii.gz")
    image = lazymask.open_nifti(url, chunks=4, storage_options=options)
    assert image.data.dask  # the identity holds the version id
    np.testing.assert_array_equal(image.values, np.asanyarray(nib.load(path).dataobj))
    fsspec.filesystem("s3", **options).pipe(url, b"a new version")
    with pytest.raises(SourceChangedError, match=f"{url}: the object changed after it was opened"):
        image.values


def test_an_image_store_at_a_url_opens_with_open_nifti(s3_server):
    import lazymask
    from lazymask.testing import fake_fmri

    image = lazymask.open_nifti(fake_fmri((6, 7, 5), 9, seed=5), chunks=4)
    url = f"{s3_server.bucket()}/images/bold.zarr"
    lazymask.to_zarr(image, url, storage_options=s3_server.storage_options)
    reopened = lazymask.open_nifti(url, storage_options=s3_server.storage_options)
    np.testing.assert_array_equal(reopened.values, image.values)
    np.testing.assert_array_equal(reopened.nifti.affine, image.nifti.affine)


def test_a_confounds_file_at_a_url_is_read_like_a_local_one(tmp_path):
    import pandas as pd

    from lazymask import signal

    table = pd.DataFrame(np.random.default_rng(3).normal(size=(20, 3)), columns=["a", "b", "c"])
    table.iloc[0, 1] = np.nan
    local = tmp_path / "confounds.tsv"
    table.to_csv(local, sep="\t", index=False, na_rep="n/a")
    fsspec.filesystem("memory").pipe("/confounds-doc/confounds.tsv", local.read_bytes())
    signals = np.random.default_rng(4).normal(size=(20, 6))
    expected = signal.clean(signals, confounds=str(local))
    np.testing.assert_array_equal(signal.clean(signals, confounds="memory://confounds-doc/confounds.tsv"), expected)
