"""NiftiMasker and MultiNiftiMasker against nilearn 0.14, laziness, invariance, persistence, bad input."""

import shutil
import warnings

import dask
import dask.array as da
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from nilearn import maskers as nilearn_maskers
from sklearn.base import clone
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from lazymask.exceptions import (
    CorruptImageError,
    DimensionError,
    ImageMismatchError,
    NotFittedError,
    ParameterError,
)
from lazymask.io import is_complete, open_nifti
from lazymask.maskers import MultiNiftiMasker, NiftiMasker, load_masker, open_signals, save_signals
from lazymask.testing import fake_fmri, raise_if_dask_computes

N_TIME = 60
RTOL = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A small int16 run on disk (.nii.gz) and its nibabel image."""
    img = fake_fmri((20, 24, 20), N_TIME, dtype="int16", seed=0)
    path = tmp_path_factory.mktemp("maskers") / "run.nii.gz"
    nib.save(img, path)
    return path, img


@pytest.fixture(scope="module")
def confounds():
    return np.random.default_rng(3).standard_normal((N_TIME, 4))


def _nilearn(cls_name, kwargs, imgs, **transform_kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return getattr(nilearn_maskers, cls_name)(**kwargs).fit_transform(imgs, **transform_kwargs)


CASES = {
    "background": dict(),
    "epi": dict(mask_strategy="epi"),
    "epi-mask_args": dict(mask_strategy="epi", mask_args=dict(opening=1, lower_cutoff=0.3, bogus=1)),
    "whole-brain-template": dict(mask_strategy="whole-brain-template"),
    "gm-template": dict(mask_strategy="gm-template", mask_args=dict(threshold=0.3)),
    "wm-template": dict(mask_strategy="wm-template"),
    "smoothing": dict(mask_strategy="epi", smoothing_fwhm=6),
    "target_affine": dict(mask_strategy="epi", target_affine=np.diag([4.0, 4.0, 4.0])),
    "target_affine_shape": dict(mask_strategy="epi", target_affine=np.diag([4.0, 4.0, 4.0, 1.0]),
                                target_shape=(14, 16, 14)),
    "clean": dict(mask_strategy="epi", detrend=True, standardize="zscore_sample", t_r=2.0),
    "band-pass": dict(mask_strategy="epi", detrend=True, standardize="zscore_sample", t_r=2.0,
                      low_pass=0.1, high_pass=0.01),
    "psc-cosine": dict(mask_strategy="epi", standardize="psc", t_r=2.0, high_pass=0.02,
                       clean_args=dict(filter="cosine")),
    "runs": dict(mask_strategy="epi", detrend=True, standardize="zscore_sample", runs=np.repeat([0, 1], N_TIME // 2)),
    "high_variance_confounds": dict(mask_strategy="epi", high_variance_confounds=True),
    "dtype-auto": dict(dtype="auto"),
    "dtype-float64": dict(mask_strategy="epi", dtype=np.float64, detrend=True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_nifti_masker_matches_nilearn(run, case):
    path, _ = run
    kwargs = CASES[case]
    expected = _nilearn("NiftiMasker", kwargs, str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        masker = NiftiMasker(**kwargs)
        signals = masker.fit_transform(str(path))
    assert isinstance(signals.data, da.Array)
    assert signals.dims == ("time", "voxel")
    assert signals.dtype == expected.dtype
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(np.asarray(signals), expected, rtol=1e-5, atol=1e-5 * scale)
    assert masker.n_elements_ == expected.shape[1]


def test_confounds_and_sample_mask_match_nilearn(run, confounds):
    path, _ = run
    kwargs = dict(mask_strategy="epi", detrend=True, standardize="zscore_sample", t_r=2.0,
                  high_variance_confounds=True)
    sample_mask = np.arange(3, N_TIME - 2)
    frame = pd.DataFrame(confounds, columns=list("abcd"))
    expected = _nilearn("NiftiMasker", kwargs, str(path), confounds=frame, sample_mask=sample_mask)
    signals = NiftiMasker(**kwargs).fit_transform(str(path), confounds=frame, sample_mask=sample_mask)
    np.testing.assert_allclose(np.asarray(signals), expected, **RTOL)
    np.testing.assert_array_equal(signals["time"], sample_mask * 2.0)


def test_mask_img_3d_input_and_inverse_transform_match_nilearn(run):
    path, img = run
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = nilearn_maskers.NiftiMasker(mask_strategy="epi").fit(img)
    mask = reference.mask_img_
    volume = nib.Nifti1Image(np.asarray(img.dataobj)[..., 7], img.affine)
    masker = NiftiMasker(mask_img=mask).fit()
    one_row = masker.transform(volume)
    assert one_row.dims == ("voxel",)
    np.testing.assert_array_equal(np.asarray(one_row), reference.transform(volume))
    signals = masker.transform(str(path))
    expected = reference.inverse_transform(reference.transform(img)).get_fdata(dtype=np.float32)
    for X in (np.asarray(signals), signals, pd.DataFrame(np.asarray(signals))):
        image = masker.inverse_transform(X)
        assert image.dims == ("i", "j", "k", "time")
        np.testing.assert_array_equal(np.asarray(image), expected)
    volume_back = masker.inverse_transform(np.asarray(one_row))
    assert volume_back.dims == ("i", "j", "k")
    np.testing.assert_array_equal(np.asarray(volume_back), expected[..., 7])


def test_multi_nifti_masker_matches_nilearn(tmp_path, confounds):
    imgs = [fake_fmri((20, 24, 20), N_TIME, dtype="int16", seed=seed) for seed in (0, 1, 2)]
    kwargs = dict(mask_strategy="epi", detrend=True, standardize="zscore_sample", t_r=2.0,
                  high_variance_confounds=True, target_affine=np.diag([4.0, 4.0, 4.0, 1.0]),
                  target_shape=(14, 16, 14))
    conf = [confounds, None, confounds[:, :2]]
    masks = [None, np.arange(5, N_TIME), None]
    expected = _nilearn("MultiNiftiMasker", kwargs, imgs, confounds=list(conf), sample_mask=masks)  # nilearn edits the list
    signals = MultiNiftiMasker(**kwargs).fit_transform(imgs, confounds=conf, sample_mask=masks)
    assert isinstance(signals, list) and all(isinstance(s.data, da.Array) for s in signals)
    for got, want in zip(dask.compute(*signals), expected, strict=True):
        np.testing.assert_allclose(np.asarray(got), want, **RTOL)
    background = _nilearn("MultiNiftiMasker", {}, imgs)
    for got, want in zip(MultiNiftiMasker().fit_transform(imgs), background, strict=True):
        np.testing.assert_array_equal(np.asarray(got), want)


def test_multi_fit_transform_reads_every_run_once_for_fit(tmp_path, confounds):
    """One pass over all runs computes the means and keeps the runs within the budget: a kept run is
    read once in all, a run beyond the budget once for its mean and once by its extraction."""
    from dask.threaded import get as threaded_get

    from lazymask import config
    from lazymask.testing import count_voxel_reads

    imgs = [fake_fmri((20, 24, 20), N_TIME, dtype="int16", seed=seed) for seed in (4, 5, 6)]
    paths = []
    for index, img in enumerate(imgs):
        paths.append(str(tmp_path / f"run-{index}.nii.gz"))
        nib.save(img, paths[-1])
    kwargs = dict(mask_strategy="epi", detrend=True, standardize="zscore_sample")
    budget = imgs[0].get_fdata(dtype=np.float32).size * 2 + 1  # the first int16 run only
    per_pass = []

    def scheduler(*args, **kwargs):  # the threaded scheduler, noting the volumes each pass reads
        before = reads.volumes
        try:
            return threaded_get(*args, **kwargs)
        finally:
            per_pass.append(reads.volumes - before)

    with config.set(memory_budget=budget), count_voxel_reads() as reads, dask.config.set(scheduler=scheduler):
        masker = MultiNiftiMasker(**kwargs)
        signals = masker.fit_transform(paths, confounds=[confounds] * 3)
    assert per_pass[0] == 3 * N_TIME and sum(per_pass) == 3 * N_TIME  # one pass reads every run, once
    with count_voxel_reads() as reads:
        computed = dask.compute(*signals)
    assert reads.volumes == 2 * N_TIME  # the two runs beyond the budget, not the kept one
    expected = _nilearn("MultiNiftiMasker", kwargs, paths, confounds=[confounds] * 3)
    for got, want in zip(computed, expected, strict=True):
        np.testing.assert_allclose(np.asarray(got), want, **RTOL)
    assert not hasattr(masker, "_prepared_means")
    with pytest.raises(ImageMismatchError), count_voxel_reads() as reads:
        MultiNiftiMasker(mask_strategy="epi").fit_transform(
            [paths[0], nib.Nifti1Image(np.asarray(imgs[1].dataobj)[:-1], imgs[1].affine)])
    assert reads.volumes == 0  # the grids are checked before any voxel is read


def test_transform_is_lazy_and_graph_grows_with_chunks_not_voxels(run):
    path, _ = run
    masker = NiftiMasker(mask_strategy="epi", detrend=True, standardize="zscore_sample", t_r=2.0,
                         low_pass=0.1, high_variance_confounds=True, smoothing_fwhm=4).fit(str(path))
    with raise_if_dask_computes():
        signals = masker.transform(str(path))
        inverse = masker.inverse_transform(signals)
    assert isinstance(inverse.data, da.Array)

    def graph_size(shape, chunks):
        img = fake_fmri(shape, 40, dtype="int16", seed=1)
        masker = NiftiMasker(mask_strategy="epi").fit(img)
        return len(masker.transform(open_nifti(img, chunks=chunks)).data.__dask_graph__())

    small, large = graph_size((12, 14, 12), 5), graph_size((24, 28, 24), 5)
    assert small == large
    assert graph_size((12, 14, 12), 10) < small


@pytest.mark.parametrize("chunks", [4, 7, -1])
def test_chunk_invariance(run, chunks, confounds):
    path, _ = run
    masker = NiftiMasker(mask_strategy="epi", detrend=True, standardize="zscore_sample", t_r=2.0,
                         high_pass=0.01, high_variance_confounds=True).fit(str(path))
    reference = np.asarray(masker.transform(str(path), confounds=confounds))
    got = masker.transform(open_nifti(str(path), chunks=chunks), confounds=confounds)
    np.testing.assert_allclose(np.asarray(got), reference, rtol=1e-5, atol=1e-5)


def test_scheduler_invariance(run):
    path, _ = run
    masker = NiftiMasker(mask_strategy="epi", detrend=True, standardize="zscore_sample", t_r=2.0,
                         smoothing_fwhm=5)
    signals = masker.fit_transform(open_nifti(str(path), chunks=13))
    (threads,) = dask.compute(signals, scheduler="threads")
    (processes,) = dask.compute(signals, scheduler="processes", num_workers=2)
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        distributed = client.compute(signals).result()
    np.testing.assert_array_equal(threads.values, processes.values)
    np.testing.assert_array_equal(threads.values, distributed.values)


def test_signals_are_labelled(run):
    path, _ = run
    masker = NiftiMasker(mask_strategy="epi", t_r=2.5).fit(str(path))
    signals = masker.transform(str(path))
    mask = np.asarray(masker.mask_img_) != 0
    i, j, k = np.nonzero(mask)
    np.testing.assert_array_equal(signals["i"], i)
    np.testing.assert_array_equal(signals["k"], k)
    np.testing.assert_array_equal(signals["time"], np.arange(N_TIME) * 2.5)
    assert signals.attrs["masker"] == "NiftiMasker"
    assert signals.attrs["parameters"]["mask_strategy"] == "epi"
    np.testing.assert_array_equal(signals.attrs["affine"], masker.affine_)
    [source] = signals.attrs["source"]
    assert source["path"].endswith("run.nii.gz") and source["size"] == path.stat().st_size


def test_sklearn_estimator_api(run):
    path, img = run
    masker = NiftiMasker(mask_strategy="epi", smoothing_fwhm=3)
    assert masker.get_params()["smoothing_fwhm"] == 3
    assert clone(masker).set_params(detrend=True).detrend is True
    assert not hasattr(masker, "mask_img_")
    assert masker.fit(img) is masker
    assert {"mask_img_", "affine_", "n_elements_", "clean_args_"} <= set(vars(masker))
    pipeline = Pipeline([("mask", NiftiMasker(mask_strategy="epi")), ("scale", StandardScaler())])
    out = pipeline.fit_transform(img)
    assert out.shape == (N_TIME, masker.n_elements_)


def test_report(run):
    path, _ = run
    masker = NiftiMasker(mask_strategy="epi", target_affine=np.diag([4.0, 4.0, 4.0])).fit(str(path))
    report = masker.generate_report()
    html = report._repr_html_()
    n = masker.n_elements_
    assert f"The mask includes {n} voxels" in html
    assert "mask_strategy" in html and html.count("<img") >= 2  # mask, and mask before resampling
    # what the report read is public and fitted: the mean volume (computed with the mask, in
    # memory, 3D only: not the run) and the mask before resampling
    assert masker.mean_img_.ndim == 3 and not isinstance(masker.mean_img_.data, da.Array)
    assert masker.mask_img_before_resampling_.shape != masker.mask_img_.shape
    assert NiftiMasker(mask_strategy="epi", reports=False).fit(str(path)).mean_img_ is None


def test_report_of_a_lazy_mean_leaves_the_masker_unchanged(run):
    path, _ = run
    masker = NiftiMasker(mask_strategy="whole-brain-template").fit(str(path))
    assert isinstance(masker.mean_img_.data, da.Array)  # the template needs no pass: the mean stays lazy
    before = dict(vars(masker))
    report = masker.generate_report()
    assert "The mask includes" in report.sentences[0]
    assert vars(masker).keys() == before.keys()
    assert all(vars(masker)[name] is value for name, value in before.items())
    assert isinstance(masker.mean_img_.data, da.Array)


def test_save_open_load_round_trip(tmp_path, run):
    path, _ = run
    masker = NiftiMasker(mask_strategy="epi", detrend=True, t_r=2.0)
    signals = masker.fit_transform(str(path))
    store = tmp_path / "out.zarr"
    save_signals(signals, store, "sub-01/run-1", masker=masker)
    assert is_complete(store, "sub-01/run-1")
    back = open_signals(store, "sub-01/run-1")
    assert isinstance(back.data, da.Array)
    computed = signals.compute()
    xr.testing.assert_identical(back.compute(), computed)
    path.rename(path.with_suffix(".moved"))  # the original file is not needed to rebuild images
    try:
        rebuilt = load_masker(store, "sub-01/run-1")
        np.testing.assert_array_equal(np.asarray(rebuilt.mask_img_), np.asarray(masker.mask_img_))
        np.testing.assert_array_equal(np.asarray(rebuilt.inverse_transform(back)),
                                      np.asarray(masker.inverse_transform(computed)))
    finally:
        path.with_suffix(".moved").rename(path)


def test_interrupted_write_leaves_no_complete_group(tmp_path, run, monkeypatch):
    path, _ = run
    masker = NiftiMasker(mask_strategy="epi").fit(str(path))
    signals = masker.transform(str(path))

    class Killed(Exception):
        pass

    store = tmp_path / "out.zarr"

    def fail(block):  # snapshot what a process killed now would leave, then stop the write
        [staging] = store.glob(".run-1.lazymask-tmp-*")
        shutil.copytree(staging, store / "run-killed", dirs_exist_ok=True)
        raise Killed("killed mid-write")

    broken = signals.copy(data=signals.data.map_blocks(fail, dtype=signals.dtype))
    with pytest.raises(Killed):
        save_signals(broken, store, "run-1", masker=masker)
    assert not is_complete(store, "run-1")
    with pytest.raises(Exception, match="no such store|not complete"):
        open_signals(store, "run-1")
    assert not is_complete(store, "run-killed")
    with pytest.raises(CorruptImageError, match="not complete"):
        open_signals(store, "run-killed")
    save_signals(signals, store, "run-1", masker=masker)  # the next write replaces the stale staging
    np.testing.assert_array_equal(open_signals(store, "run-1"), signals)
    assert not list(store.glob(".run-1.lazymask-tmp-*"))


def test_bad_input(run, tmp_path):
    path, img = run
    with pytest.raises(NotFittedError, match="This NiftiMasker instance is not fitted yet. Call 'fit'"):
        NiftiMasker().transform(img)
    with pytest.raises(NotFittedError, match="not fitted"):
        NiftiMasker().inverse_transform(np.zeros(3))
    masker = NiftiMasker(mask_strategy="epi", detrend=True).fit(img)
    with pytest.raises(ParameterError, match="confounds"):
        masker.transform(img, confounds=np.zeros((N_TIME - 1, 2)))
    small = nib.Nifti1Image(np.ones((10, 12, 10), dtype=np.int8), img.affine)
    with pytest.warns(UserWarning, match="imgs are being resampled to the mask_img resolution"):
        NiftiMasker(mask_img=small).fit().transform(img)  # as nilearn: resampled onto the mask's grid
    with pytest.raises(DimensionError, match="2D image"):
        masker.transform(nib.Nifti1Image(np.zeros((4, 5), dtype=np.float32), np.eye(4)))
    with pytest.raises(DimensionError, match="5D image"):
        masker.transform(nib.Nifti1Image(np.zeros((4, 5, 4, 3, 2), dtype=np.float32), np.eye(4)))
    fancy = r"Unknown value of mask_strategy 'fancy'. Acceptable values are 'background', 'epi'"
    with pytest.raises(ParameterError, match=fancy):
        NiftiMasker(mask_strategy="fancy").fit(img)
    with pytest.raises(ParameterError, match="Parameter 'imgs' must be provided to NiftiMasker.fit"):
        NiftiMasker().fit()
    with pytest.raises(ParameterError, match=r"The 'standardize' parameter of NiftiMasker must be .* Got 'z' instead"):
        NiftiMasker(standardize="z").fit(img)
    with pytest.raises(ParameterError, match="Input to 'inverse_transform' has wrong shape"):
        masker.inverse_transform(np.zeros((2, masker.n_elements_ + 1)))
    multi = MultiNiftiMasker(mask_strategy="epi").fit([img, img])
    with pytest.raises(ParameterError, match=r"number of confounds \(1\) unequal to number of images \(2\)"):
        multi.transform([img, img], confounds=[None])
    with pytest.raises(ParameterError, match="must be a None or a list"):
        multi.transform([img, img], confounds=np.zeros((N_TIME, 2)))


def test_fit_transform_reads_the_run_once(run):
    """One pass for the mean (mask and report) and the extraction (kept within the memory budget); nilearn needs about 2.5."""
    from lazymask.testing import count_voxel_reads

    path, _ = run
    with count_voxel_reads() as reads:
        signals = NiftiMasker(mask_strategy="epi", detrend=True, t_r=2.0).fit_transform(str(path))
        assert reads.volumes == N_TIME  # fit: the mean
        signals.compute()
        report_html = NiftiMasker(mask_strategy="epi").fit(str(path)).generate_report()._repr_html_()
    assert "The mask includes" in report_html
    assert reads.volumes == 2 * N_TIME  # the extraction reads nothing more; + the second masker's fit


# -- nilearn 0.14's set_output, repr, and t_r for filtering ------------------------------------------------
def test_set_output_pandas_matches_nilearn(run):
    _, img = run
    masker = NiftiMasker(mask_strategy="epi").fit(img)
    assert isinstance(masker.transform(img), xr.DataArray)  # lazymask's default stays the lazy DataArray
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = nilearn_maskers.NiftiMasker(mask_strategy="epi").fit(img).set_output(transform="pandas")
        expected, expected_3d = reference.transform(img), reference.transform(img.slicer[..., 0])
    assert masker.set_output(transform="pandas") is masker
    frame = masker.transform(img)
    assert isinstance(frame, pd.DataFrame)
    pd.testing.assert_frame_equal(frame, expected, check_dtype=False, **RTOL)
    assert list(frame.columns) == list(expected.columns)  # 'niftimasker0', 'niftimasker1', ...
    pd.testing.assert_frame_equal(masker.transform(img.slicer[..., 0]), expected_3d, check_dtype=False, **RTOL)
    assert isinstance(masker.fit_transform(img), pd.DataFrame)
    runs = MultiNiftiMasker(mask_strategy="epi").set_output(transform="pandas").fit_transform([img, img])
    assert [type(r) for r in runs] == [pd.DataFrame, pd.DataFrame]
    np.testing.assert_allclose(runs[0].to_numpy(), expected.to_numpy(), **RTOL)
    assert isinstance(masker.set_output(transform="default").transform(img), xr.DataArray)


def test_set_output_polars_and_bad_values(run):
    _, img = run
    masker = NiftiMasker(mask_strategy="epi").fit(img).set_output(transform="polars")
    try:
        import polars
    except ImportError:
        with pytest.raises(ImportError, match="requires polars to be installed"):
            masker.transform(img)
    else:
        frame = masker.transform(img)
        assert isinstance(frame, polars.DataFrame) and frame.shape == (N_TIME, masker.n_elements_)
    with pytest.raises(ParameterError, match="expected 'default', 'pandas' or 'polars'"):
        masker.set_output(transform="numpy")


def test_repr_shows_parameters_not_arrays(tmp_path, run):
    path, _ = run
    masker = NiftiMasker(mask_strategy="epi", t_r=2.0)
    save_signals(masker.fit_transform(str(path)), tmp_path / "s.zarr", "run", masker=masker)
    loaded = load_masker(tmp_path / "s.zarr", "run")
    text = repr(loaded)
    assert "mask_img=<xarray.DataArray (20, 24, 20) int8>" in text and "t_r=2.0" in text
    assert "\n" not in text and len(text) < 300
    assert "mask_img=<numpy.ndarray (20, 24, 20) int8>" in repr(NiftiMasker(mask_img=np.zeros((20, 24, 20), "int8")))
    assert repr(NiftiMasker()) == "NiftiMasker()"


def test_low_pass_without_t_r_raises_as_nilearn(run):
    _, img = run
    message = r"Repetition time \(t_r\) must be specified for butterworth filtering"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=message):
            nilearn_maskers.NiftiMasker(low_pass=0.1).fit_transform(img)
    with pytest.raises(ParameterError, match=message + r".*the images' header says 2 s"):
        NiftiMasker(low_pass=0.1).fit_transform(img)
    expected = _nilearn("NiftiMasker", dict(low_pass=0.1, t_r=2.0), img)
    np.testing.assert_allclose(NiftiMasker(low_pass=0.1, t_r=2.0).fit_transform(img).values, expected, **RTOL)


@pytest.mark.parametrize("name", ["NiftiLabelsMasker", "MultiNiftiLabelsMasker", "NiftiMapsMasker",
                                  "NiftiSpheresMasker", "MultiNiftiMasker"])
def test_set_output_pandas_of_every_masker_matches_nilearn(name):
    from lazymask import maskers as lazymask_maskers

    img = fake_fmri((8, 9, 8), 10, voxel_size=3.0, dtype="float32", seed=2)
    atlas = np.zeros((8, 9, 8), np.int16)
    atlas[1:4, 1:8, 1:7], atlas[4:7, 1:8, 1:7] = 1, 2
    maps = np.stack([atlas == 1, atlas == 2], axis=-1).astype(np.float32) * [0.7, 1.0]
    labels = dict(labels_img=nib.Nifti1Image(atlas, img.affine))
    kwargs = {"NiftiLabelsMasker": labels, "MultiNiftiLabelsMasker": labels,
              "NiftiMapsMasker": dict(maps_img=nib.Nifti1Image(maps.astype(np.float32), img.affine)),
              "NiftiSpheresMasker": dict(seeds=[(-4.5, 0.0, -1.5), (4.5, 0.0, -1.5)], radius=4.0),
              "MultiNiftiMasker": {}}[name]
    ours = getattr(lazymask_maskers, name)(**kwargs).set_output(transform="pandas")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = getattr(nilearn_maskers, name)(**kwargs).set_output(transform="pandas").fit_transform(img)
    frame = ours.fit_transform(img)
    assert list(frame.columns) == list(expected.columns)
    np.testing.assert_allclose(frame.to_numpy(), expected.to_numpy(), **RTOL)
    if name.startswith("Multi"):  # a list of runs: a list of frames (nilearn: a list of numpy arrays)
        assert [type(run) for run in ours.transform([img, img])] == [pd.DataFrame, pd.DataFrame]
