"""Region maskers (labels, maps, spheres) against nilearn 0.14, laziness, invariance, bad input."""

from __future__ import annotations

import warnings
from pathlib import Path

import dask
import nibabel as nib
import nilearn
import nilearn.maskers as nm
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from lazymask.exceptions import ImageMismatchError, ParameterError
from lazymask.maskers._labels import MultiNiftiLabelsMasker, NiftiLabelsMasker
from lazymask.maskers._maps import MultiNiftiMapsMasker, NiftiMapsMasker
from lazymask.regions import STRATEGIES
from lazymask.maskers._spheres import NiftiSpheresMasker
from lazymask.testing import count_voxel_reads, fake_brain, fake_fmri, raise_if_dask_computes

SHAPE = (20, 24, 20)
NILEARN_DATA = Path(nilearn.__file__).parent / "datasets" / "data"
RTOL, ATOL = 2e-5, 1e-3


@pytest.fixture(autouse=True)
def _quiet_nilearn():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*zscore_sample.*")
        yield


@pytest.fixture(scope="module")
def run():
    return fake_fmri(SHAPE, 12, dtype="float32", seed=1)


@pytest.fixture(scope="module")
def labels_img(run):
    rng = np.random.default_rng(3)
    values = ndimage.zoom(rng.integers(0, 7, (5, 6, 5)), 4, order=0).astype(np.int16)
    return nib.Nifti1Image(values, run.affine)


@pytest.fixture(scope="module")
def brain_mask(run):
    return nib.Nifti1Image(fake_brain(SHAPE)[1].astype(np.int8), run.affine)


@pytest.fixture(scope="module")
def maps_img(run):
    rng = np.random.default_rng(5)
    maps = np.zeros((*SHAPE, 6), np.float32)
    for k in range(6):
        point = np.zeros(SHAPE)
        point[tuple(rng.integers(4, 16, 3))] = 1
        blob = ndimage.gaussian_filter(point, 2.5)
        blob[blob < 0.05 * blob.max()] = 0
        maps[..., k] = blob / blob.max()
    return nib.Nifti1Image(maps, run.affine)


def close(ours, reference):
    np.testing.assert_allclose(np.asarray(ours), np.asarray(reference), rtol=RTOL, atol=ATOL)


# -- labels -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_labels_every_strategy_matches_nilearn(run, labels_img, strategy):
    ours = NiftiLabelsMasker(labels_img, strategy=strategy).fit_transform(run)
    reference = nm.NiftiLabelsMasker(labels_img, strategy=strategy).fit_transform(run)
    assert ours.dims == ("time", "region") and ours.dtype == reference.dtype
    close(ours, reference)


def test_labels_median_of_int16_data_matches_nilearn(labels_img):
    run16 = fake_fmri(SHAPE, 6, dtype="int16", seed=2)
    ours = NiftiLabelsMasker(labels_img, strategy="median").fit_transform(run16)
    close(ours, nm.NiftiLabelsMasker(labels_img, strategy="median").fit_transform(run16))


def test_labels_background_label_and_fitted_attributes(run, labels_img):
    kwargs = {"background_label": 3}
    ours = NiftiLabelsMasker(labels_img, **kwargs)
    reference = nm.NiftiLabelsMasker(labels_img, **kwargs)
    close(ours.fit_transform(run), reference.fit_transform(run))
    assert ours.labels_ == reference.labels_
    assert ours.region_ids_ == reference.region_ids_
    assert ours.region_names_ == reference.region_names_
    assert ours.n_elements_ == reference.n_elements_


def test_labels_mask_removing_labels_warns_and_matches(run, labels_img):
    values = np.asarray(labels_img.dataobj)
    mask = nib.Nifti1Image((values != 2).astype(np.int8), run.affine)
    with pytest.warns(UserWarning, match=r"the following labels were removed: \{2\}"):
        ours = NiftiLabelsMasker(labels_img, mask_img=mask)
        signals = ours.fit_transform(run)
    reference = nm.NiftiLabelsMasker(labels_img, mask_img=mask)
    expected = reference.fit_transform(run)
    close(signals, expected)
    assert 2 not in signals["region"].values.tolist()
    assert ours.labels_ == reference.labels_ and ours.region_ids_ == reference.region_ids_
    assert ours.n_elements_ == reference.n_elements_


@pytest.mark.parametrize("target", ["data", "labels"])
def test_labels_resampling_targets(run, labels_img, brain_mask, target):
    coarse = nib.Nifti1Image(np.asarray(labels_img.dataobj)[::2, ::2, ::2],
                             labels_img.affine @ np.diag([2, 2, 2, 1]))
    ours = NiftiLabelsMasker(coarse, mask_img=brain_mask, resampling_target=target).fit_transform(run)
    reference = nm.NiftiLabelsMasker(coarse, mask_img=brain_mask, resampling_target=target).fit_transform(run)
    close(ours, reference)


def test_labels_resampling_target_none_with_mismatched_grids(run, labels_img):
    shifted = nib.Nifti1Image(np.asarray(labels_img.dataobj), labels_img.affine @ np.diag([2, 2, 2, 1]))
    with pytest.raises(ImageMismatchError, match="resampling_target=None"):
        NiftiLabelsMasker(shifted, resampling_target=None).fit(run)
    ours = NiftiLabelsMasker(labels_img, resampling_target=None).fit_transform(run)
    close(ours, nm.NiftiLabelsMasker(labels_img, resampling_target=None).fit_transform(run))


def test_labels_names_from_labels_and_lut(run, labels_img, tmp_path):
    names = ["Background", "a", "b", "c", "d", "e", "f"]
    ours = NiftiLabelsMasker(labels_img, labels=names).fit(run)
    reference = nm.NiftiLabelsMasker(labels_img, labels=list(names)).fit(run)
    assert ours.region_names_ == reference.region_names_
    lut = pd.DataFrame({"index": [0, 1, 2, 3, 4, 5, 6], "name": ["bg", "v1", "v2", "v3", "v4", "v5", "v6"],
                        "color": ["000000"] * 7})
    path = tmp_path / "atlas_dseg.tsv"
    lut.to_csv(path, sep="\t", index=False)
    ours = NiftiLabelsMasker(labels_img, lut=path)
    signals = ours.fit_transform(run)
    reference = nm.NiftiLabelsMasker(labels_img, lut=path).fit(run)
    assert ours.region_names_ == reference.region_names_
    assert signals["region_name"].values.tolist() == ["v1", "v2", "v3", "v4", "v5", "v6"]


def test_labels_inverse_transform_matches_nilearn(run, labels_img, brain_mask):
    ours = NiftiLabelsMasker(labels_img, mask_img=brain_mask).fit(run)
    reference = nm.NiftiLabelsMasker(labels_img, mask_img=brain_mask).fit(run)
    signals = reference.transform(run)
    assert ours.n_elements_ == reference.n_elements_ == signals.shape[1]  # known at fit, no transform needed
    close(ours.inverse_transform(signals).values, reference.inverse_transform(signals).get_fdata())
    close(ours.inverse_transform(signals[0]).values, reference.inverse_transform(signals[0]).get_fdata())


def test_labels_cleaning_options(run, labels_img):
    options = {"detrend": True, "standardize": "zscore_sample", "high_variance_confounds": True, "t_r": 2.0}
    confounds = np.random.default_rng(0).standard_normal((12, 2))
    ours = NiftiLabelsMasker(labels_img, **options).fit_transform(run, confounds=confounds)
    reference = nm.NiftiLabelsMasker(labels_img, **options).fit_transform(run, confounds=confounds)
    np.testing.assert_allclose(ours.values, reference, rtol=1e-4, atol=1e-4)


def test_multi_labels_masker(run, labels_img):
    runs = [run, fake_fmri(SHAPE, 12, dtype="float32", seed=9)]
    ours = MultiNiftiLabelsMasker(labels_img).fit_transform(runs)
    reference = nm.MultiNiftiLabelsMasker(labels_img).fit_transform(runs)
    assert len(ours) == 2
    for a, b in zip(ours, reference, strict=True):
        close(a, b)


# -- maps -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("use_mask", [False, True])
def test_maps_match_nilearn(run, maps_img, brain_mask, use_mask):
    kwargs = {"mask_img": brain_mask} if use_mask else {}
    ours = NiftiMapsMasker(maps_img, **kwargs).fit_transform(run)
    reference = nm.NiftiMapsMasker(maps_img, **kwargs).fit_transform(run)
    assert ours.dtype == reference.dtype
    close(ours, reference)


def test_maps_without_overlap_and_overlap_error(run, maps_img):
    values = np.asarray(maps_img.dataobj)
    winner = values.argmax(axis=3)[..., None] == np.arange(values.shape[3])
    exclusive = np.where(winner, values, 0).astype(np.float32)
    exclusive_img = nib.Nifti1Image(exclusive, run.affine)
    ours = NiftiMapsMasker(exclusive_img, allow_overlap=False).fit_transform(run)
    close(ours, nm.NiftiMapsMasker(exclusive_img, allow_overlap=False).fit_transform(run))
    with pytest.raises(ParameterError, match="allow_overlap=False but maps overlap"):
        NiftiMapsMasker(maps_img, allow_overlap=False).fit(run)


@pytest.mark.parametrize("target", ["maps", "mask"])
def test_maps_resampling_targets(run, maps_img, brain_mask, target):
    ours = NiftiMapsMasker(maps_img, mask_img=brain_mask, resampling_target=target).fit_transform(run)
    reference = nm.NiftiMapsMasker(maps_img, mask_img=brain_mask, resampling_target=target).fit_transform(run)
    close(ours, reference)


def test_maps_inverse_transform_matches_nilearn(run, maps_img, brain_mask):
    ours = NiftiMapsMasker(maps_img, mask_img=brain_mask).fit(run)
    reference = nm.NiftiMapsMasker(maps_img, mask_img=brain_mask).fit(run)
    signals = reference.transform(run)
    close(ours.inverse_transform(signals).values, reference.inverse_transform(signals).get_fdata())


def test_multi_maps_masker(run, maps_img):
    runs = [run, fake_fmri(SHAPE, 12, dtype="float32", seed=9)]
    for a, b in zip(MultiNiftiMapsMasker(maps_img).fit_transform(runs),
                    nm.MultiNiftiMapsMasker(maps_img).fit_transform(runs), strict=True):
        close(a, b)


# -- spheres on an MNI-like grid ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mni_run():
    template = nib.load(NILEARN_DATA / "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz")
    affine = template.affine @ np.diag([4, 4, 4, 1])
    shape = tuple(int(np.ceil(n / 4)) for n in template.shape)
    rng = np.random.default_rng(0)
    data = rng.normal(100, 10, (*shape, 5)).astype(np.float32)
    grey = np.asarray(template.dataobj)[::4, ::4, ::4] > 0.2
    return nib.Nifti1Image(data, affine), nib.Nifti1Image(grey.astype(np.int8), affine)


def _seeds(name):
    table = pd.read_csv(NILEARN_DATA / f"{name}.csv")
    return table[[c for c in table.columns if c.lower() in "xyz"]].to_numpy().tolist()


@pytest.mark.parametrize("atlas", ["power_2011", "dosenbach_2010"])
@pytest.mark.parametrize("radius", [None, 5, 10])
@pytest.mark.parametrize("use_mask", [True, pytest.param(False, marks=pytest.mark.slow)])
def test_spheres_match_nilearn(mni_run, atlas, radius, use_mask):
    img, mask = mni_run
    seeds = _seeds(atlas)
    kwargs = {"radius": radius, "allow_overlap": True, "mask_img": mask if use_mask else None}
    try:
        reference = nm.NiftiSpheresMasker(seeds, **kwargs).fit_transform(img)
    except ValueError as error:  # a seed outside the grey matter: both refuse
        with pytest.raises(ParameterError, match="hold no voxel"):
            NiftiSpheresMasker(seeds, **kwargs).fit_transform(img)
        assert "empty" in str(error)
        return
    ours = NiftiSpheresMasker(seeds, **kwargs).fit_transform(img)
    close(ours, reference)
    np.testing.assert_array_equal(ours["x"].values, np.asarray(seeds)[:, 0])


def test_spheres_overlap_error_and_inverse(mni_run):
    img, mask = mni_run
    seeds = [[0, -52, 26], [4, -52, 26], [40, 20, 10]]
    with pytest.raises(ParameterError, match="allow_overlap=False but spheres overlap"):
        NiftiSpheresMasker(seeds, radius=6).fit_transform(img)
    ours = NiftiSpheresMasker(seeds, radius=6, allow_overlap=True, mask_img=mask).fit(img)
    reference = nm.NiftiSpheresMasker(seeds, radius=6, allow_overlap=True, mask_img=mask).fit(img)
    signals = reference.transform(img)
    close(ours.inverse_transform(signals).values, reference.inverse_transform(signals).get_fdata())
    with pytest.raises(ParameterError, match="needs a grid"):
        NiftiSpheresMasker(seeds, radius=6, allow_overlap=True).fit(img).inverse_transform(signals)


def test_spheres_seed_outside_image(run):
    with pytest.raises(ParameterError, match="outside the image"):
        NiftiSpheresMasker([[0, 0, 0], [500, 0, 0]], radius=4).fit_transform(run)


# -- laziness, graph size, invariance -----------------------------------------------------------------
def _labels_volume(n_labels):
    flat = np.arange(int(np.prod(SHAPE))) % (n_labels + 1)
    return np.random.default_rng(0).permutation(flat).reshape(SHAPE).astype(np.int32)


def test_transform_is_lazy_and_graph_does_not_grow_with_regions(tmp_path, run):
    path = tmp_path / "run.nii.gz"
    nib.save(run, path)
    sizes = []
    for n_labels in (10, 1000):
        atlas = nib.Nifti1Image(_labels_volume(n_labels), run.affine)
        masker = NiftiLabelsMasker(atlas, strategy="median").fit(str(path))
        with raise_if_dask_computes():
            signals = masker.transform(str(path))
        assert signals.sizes["region"] == n_labels
        sizes.append(len(dict(signals.data.__dask_graph__())))
    assert sizes[0] == sizes[1]


@pytest.mark.parametrize("masker_factory", ["labels", "maps", "spheres"])
def test_chunk_and_scheduler_invariance(run, labels_img, maps_img, masker_factory):
    from lazymask.io import open_nifti

    factories = {
        "labels": lambda: NiftiLabelsMasker(labels_img, strategy="median"),
        "maps": lambda: NiftiMapsMasker(maps_img),
        "spheres": lambda: NiftiSpheresMasker([[0, 0, 0], [9, -9, 6]], radius=5),
    }
    expected = factories[masker_factory]().fit_transform(run).values
    for chunks, scheduler in ((1, "threads"), (5, "sync"), (12, "threads"), (5, "processes")):
        image = open_nifti(run, chunks={"time": chunks})
        lazy = factories[masker_factory]().fit_transform(image)
        np.testing.assert_array_equal(lazy.compute(scheduler=scheduler).values, expected)


def test_distributed_local_cluster(run, labels_img, maps_img):
    distributed = pytest.importorskip("distributed")
    from lazymask.io import open_nifti

    image = open_nifti(run, chunks={"time": 4})
    lazy = [NiftiLabelsMasker(labels_img, strategy="maximum").fit_transform(image),
            NiftiMapsMasker(maps_img).fit_transform(image)]
    expected = [x.compute(scheduler="sync").values for x in lazy]
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster):
        got = dask.compute(*[x.data for x in lazy])
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)


# -- bad input ------------------------------------------------------------------------------------------
def test_bad_input_errors(run, labels_img, maps_img):
    fractional = nib.Nifti1Image(np.asarray(labels_img.dataobj) + 0.5, run.affine)
    with pytest.raises(ParameterError, match="non-integer values"):
        NiftiLabelsMasker(fractional).fit(run)
    one_map = nib.Nifti1Image(np.asarray(maps_img.dataobj)[..., 0], run.affine)  # a 3D image is one map
    assert NiftiMapsMasker(one_map).fit(run).n_elements_ == nm.NiftiMapsMasker(one_map).fit(run).n_elements_ == 1
    with pytest.raises(ParameterError, match="does not match labels_img"):
        NiftiLabelsMasker(labels_img, lut=pd.DataFrame({"index": [40, 41], "name": ["x", "y"]})).fit(run)
    with pytest.raises(ParameterError, match="needs an 'index' column"):
        NiftiLabelsMasker(labels_img, lut=pd.DataFrame({"label": [1], "name": ["x"]})).fit(run)
    with pytest.raises(ParameterError, match="strategy"):
        NiftiLabelsMasker(labels_img, strategy="mode").fit(run)
    with pytest.raises(ParameterError, match="seeds\\[1\\]"):
        NiftiSpheresMasker([[0, 0, 0], [1, 2]]).fit(run)


# -- command line ---------------------------------------------------------------------------------------
def test_cli_extract_regions(tmp_path, run, labels_img):
    from lazymask.cli import main
    from lazymask.maskers import open_signals

    nib.save(run, tmp_path / "run.nii.gz")
    nib.save(labels_img, tmp_path / "atlas.nii.gz")
    (tmp_path / "lut.tsv").write_text("index\tname\n" + "".join(f"{i}\tr{i}\n" for i in range(7)))
    (tmp_path / "seeds.csv").write_text("x,y,z\n0,0,0\n9,-9,6\n")
    run_path = str(tmp_path / "run.nii.gz")
    assert main(["extract", run_path, "--out", str(tmp_path / "l.zarr"), "--labels", str(tmp_path / "atlas.nii.gz"),
                 "--lut", str(tmp_path / "lut.tsv"), "--strategy", "median"]) == 0
    signals = open_signals(str(tmp_path / "l.zarr"))
    close(signals, nm.NiftiLabelsMasker(labels_img, strategy="median").fit_transform(run))
    assert signals["region_name"].values.tolist()[0] == "r1"
    assert main(["extract", run_path, "--out", str(tmp_path / "s.zarr"), "--seeds", str(tmp_path / "seeds.csv"),
                 "--radius", "5"]) == 0
    assert open_signals(str(tmp_path / "s.zarr")).shape == (12, 2)


def test_reports_and_persistence(tmp_path, run, labels_img, maps_img):
    from lazymask.maskers import load_masker, open_signals, save_signals

    maskers = [NiftiLabelsMasker(labels_img), NiftiMapsMasker(maps_img),
               NiftiSpheresMasker([[0, 0, 0], [9, -9, 6]], radius=5)]
    for index, masker in enumerate(maskers):
        with raise_if_dask_computes(max_computes=1):  # the small labels/maps volume is read at fit, nothing else
            signals = masker.fit_transform(run)
        assert f"{masker.n_elements_}" in masker.generate_report().sentences[0]
        store = str(tmp_path / f"{index}.zarr")
        save_signals(signals, store, masker=masker)
        rebuilt = load_masker(store)
        assert type(rebuilt) is type(masker) and rebuilt.n_elements_ == masker.n_elements_
        np.testing.assert_allclose(rebuilt.transform(run).values, open_signals(store).values, rtol=1e-6)


# -- stateless estimators -------------------------------------------------------------------------------
def _snapshot(masker) -> dict:
    return {name: (value, sorted(value) if isinstance(value, dict) else None) for name, value in vars(masker).items()}


@pytest.mark.parametrize("kind", ["labels", "labels-mask", "maps", "spheres", "multi-labels"])
def test_transform_and_inverse_change_nothing(run, labels_img, maps_img, brain_mask, kind):
    maskers = {
        "labels": lambda: NiftiLabelsMasker(labels_img, strategy="median"),
        "labels-mask": lambda: NiftiLabelsMasker(labels_img, mask_img=brain_mask, resampling_target="labels"),
        "maps": lambda: NiftiMapsMasker(maps_img, mask_img=brain_mask),
        "spheres": lambda: NiftiSpheresMasker([[0, 0, 0], [9, -9, 6]], radius=5, mask_img=brain_mask),
        "multi-labels": lambda: MultiNiftiLabelsMasker(labels_img),
    }
    masker = maskers[kind]().fit(run)
    before = _snapshot(masker)
    fitted = (masker.n_elements_, getattr(masker, "labels_", None), getattr(masker, "region_names_", None))
    signals = masker.transform([run, run] if kind.startswith("multi") else run)
    signals = signals[0] if isinstance(signals, list) else signals
    masker.inverse_transform(signals)
    after = _snapshot(masker)
    assert after.keys() == before.keys()
    for name, (value, keys) in before.items():
        assert after[name][0] is value and after[name][1] == keys, name
    assert (masker.n_elements_, getattr(masker, "labels_", None), getattr(masker, "region_names_", None)) == fitted
    assert signals.sizes["region"] == (masker.n_elements_ if kind != "maps" else signals.sizes["region"])


def test_transform_on_another_grid_builds_for_that_call_only(run, labels_img):
    masker = NiftiLabelsMasker(labels_img).fit(run)
    before = _snapshot(masker)
    coarse = nib.Nifti1Image(np.asarray(run.dataobj)[::2, ::2, ::2], run.affine @ np.diag([2, 2, 2, 1]))
    with pytest.warns(UserWarning, match="Resampling labels at transform time"):
        signals = masker.transform(coarse)
    reference = nm.NiftiLabelsMasker(labels_img).fit(run)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        close(signals, reference.transform(coarse))
    assert {name: value for name, (value, _) in _snapshot(masker).items()} == \
        {name: value for name, (value, _) in before.items()}


def test_labels_region_atlas_matches_nilearn(run, labels_img, brain_mask):
    ours = NiftiLabelsMasker(labels_img, mask_img=brain_mask).fit(run)
    reference = nm.NiftiLabelsMasker(labels_img, mask_img=brain_mask).fit(run)
    reference.transform(run)  # nilearn sets region_atlas_ at transform; lazymask at fit
    assert ours.region_atlas_.dtype == np.int32
    np.testing.assert_array_equal(ours.region_atlas_.values, np.asarray(reference.region_atlas_.dataobj))


# -- nilearn 0.14's deprecated keep_masked_* options ------------------------------------------------------
def test_keep_masked_labels_matches_nilearn(run, labels_img):
    values = np.asarray(labels_img.dataobj)
    mask = nib.Nifti1Image((values != 2).astype(np.int8), run.affine)
    ours = NiftiLabelsMasker(labels_img, mask_img=mask, keep_masked_labels=True)
    reference = nm.NiftiLabelsMasker(labels_img, mask_img=mask, keep_masked_labels=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no "labels were removed" warning: they are kept
        with pytest.warns(FutureWarning, match='"keep_masked_labels" parameter will be removed'):
            signals = ours.fit_transform(run)
    with pytest.warns(FutureWarning, match='"keep_masked_labels" parameter will be removed'):
        expected = reference.fit_transform(run)
    close(signals, expected)
    assert 2 in signals["region"].values.tolist() and np.all(signals.sel(region=2).values == 0)
    assert ours.n_elements_ == reference.n_elements_ and ours.labels_ == reference.labels_


def _four_quadrants():
    labels = np.zeros((6, 6, 4), np.int32)
    labels[:3, :3], labels[3:, :3], labels[:3, 3:], labels[3:, 3:] = 1, 2, 3, 4
    labels[5, 5, 3] = 0
    data = np.random.default_rng(3).random((6, 6, 4, 5))
    return nib.Nifti1Image(labels, np.eye(4)), nib.Nifti1Image(data, np.eye(4)), labels


@pytest.mark.parametrize("removed", [None, 4, 2])
@pytest.mark.parametrize("resampling_target", ["data", "labels"])
def test_keep_masked_labels_inverse_transform_against_nilearn(removed, resampling_target):
    """keep_masked_labels=True with a mask: the way back puts each column on its own label.

    nilearn 0.14 gives the same image when no label, or only the last one, is removed; when the
    mask removes a label in the middle, nilearn paints the columns on the labels left in order
    (each later region gets its neighbour's signal): lazymask fixes it (docs/differences_from_nilearn.md).
    """
    from lazymask.nilearn.maskers import NiftiLabelsMasker as FaceLabelsMasker
    from lazymask.nilearn.regions import signals_to_img_labels

    labels_img, img, labels = _four_quadrants()
    mask = np.ones(labels.shape, np.int8)
    mask[0, 0, 0] = 0
    if removed is not None:
        mask[labels == removed] = 0
    mask_img = nib.Nifti1Image(mask, np.eye(4))
    kwargs = {"mask_img": mask_img, "keep_masked_labels": True, "resampling_target": resampling_target}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        reference = nm.NiftiLabelsMasker(labels_img, **kwargs)
        expected_signals = reference.fit_transform(img)
        expected = reference.inverse_transform(expected_signals).get_fdata()
        lazy = NiftiLabelsMasker(labels_img, **kwargs)
        face = FaceLabelsMasker(labels_img, **kwargs)
        signals = face.fit_transform(img)
        ours = face.inverse_transform(signals).get_fdata()
        lazy_image = lazy.fit(img).inverse_transform(lazy.transform(img)).values
        by_function = signals_to_img_labels(signals, labels_img, mask_img=mask_img).get_fdata()
    close(signals, expected_signals)
    assert signals.shape == (5, 4) and face.n_elements_ == reference.n_elements_ == 4
    np.testing.assert_array_equal(ours, lazy_image)
    np.testing.assert_array_equal(ours, by_function)
    # each region's voxels inside the mask hold its own column; voxels outside the mask are 0
    for column, label in enumerate([1, 2, 3, 4]):
        inside = (labels == label) & (mask != 0)
        assert np.all(ours[inside] == signals[:, column])
    assert np.all(ours[(mask == 0) | (labels == 0)] == 0)
    if removed in (None, 4):
        close(ours, expected)
    else:  # nilearn's shift: label 3 gets label 2's column (0), label 4 gets label 3's
        three, four = (labels == 3) & (mask != 0), (labels == 4) & (mask != 0)
        assert np.all(expected[three] == 0) and np.allclose(expected[four], signals[:, 2])
        assert not np.allclose(ours, expected)


def test_keep_masked_maps_matches_nilearn(run, maps_img):
    values = np.asarray(maps_img.dataobj)
    mask = nib.Nifti1Image((values[..., 0] == 0).astype(np.int8), run.affine)  # empties map 0
    ours = NiftiMapsMasker(maps_img, mask_img=mask, keep_masked_maps=True)
    reference = nm.NiftiMapsMasker(maps_img, mask_img=mask, keep_masked_maps=True)
    with pytest.warns(FutureWarning, match='"keep_masked_maps" parameter will be removed'):
        signals = ours.fit_transform(run)
    with pytest.warns(FutureWarning, match='"keep_masked_maps" parameter will be removed'):
        expected = reference.fit_transform(run)
    assert signals.shape == expected.shape == (12, 6)
    close(signals, expected)
    with pytest.warns(UserWarning, match=r"maps with the following indices were removed: \{0\}"):
        dropped = NiftiMapsMasker(maps_img, mask_img=mask).fit_transform(run)
    assert dropped.shape == (12, 5)


# -- maps: resampled once per fit, on the user's scheduler --------------------------------------------
def test_maps_resampled_once_per_fit_on_the_users_scheduler(tmp_path, run, monkeypatch):
    import lazymask.regions._maps as maps_module

    rng = np.random.default_rng(7)
    coarse_shape = tuple(n // 2 for n in SHAPE)
    maps = nib.Nifti1Image(rng.random((*coarse_shape, 40)).astype(np.float32), run.affine @ np.diag([2, 2, 2, 1]))
    maps_path = str(tmp_path / "maps.nii")
    nib.save(maps, maps_path)
    resampled = []
    original = maps_module.resample_map

    def counting(volume, *args, **kwargs):
        resampled.append(1)
        return original(volume, *args, **kwargs)

    monkeypatch.setattr(maps_module, "resample_map", counting)
    with count_voxel_reads() as reads, raise_if_dask_computes(max_computes=1) as scheduler:
        masker = NiftiMapsMasker(maps_path).fit(run)  # 40 maps, in the chunks they are read in
    assert scheduler.total_computes == 1
    assert sum(resampled) == 40  # each map resampled exactly once
    assert reads.volumes == 40  # and read once (no reduction over every map per slice)
    resampled.clear()
    monkeypatch.setattr(maps_module, "resample_map", original)
    reference = nm.NiftiMapsMasker(maps).fit(run)
    close(masker.transform(run), reference.transform(run))


def _fine_blobs(shape, n_maps, seed, sigma=2.0):
    """Smooth local maps (Gaussian blobs truncated at 5 %) on a grid of ``shape``."""
    rng = np.random.default_rng(seed)
    voxels = np.stack(np.indices(shape), axis=-1)[..., None, :]
    centres = rng.uniform(0.2, 0.8, (n_maps, 3)) * np.asarray(shape)
    blobs = np.exp(-((voxels - centres) ** 2).sum(axis=-1) / (2 * sigma**2))
    blobs[blobs < 0.05] = 0
    return (blobs * rng.uniform(0.5, 1.0, n_maps)).astype(np.float32)


@pytest.mark.parametrize("grid", ["half voxel, aligned", "finer, shifted", "oblique"])
def test_finer_maps_resampled_onto_the_run_match_nilearn(tmp_path, run, brain_mask, grid):
    """A probabilistic atlas finer than the run (the 1 mm atlas on a 2 mm run), as a .nii.gz."""
    rotation = np.eye(4)
    if grid == "oblique":
        angle = np.deg2rad(7.0)
        rotation[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    scale, shift = {"half voxel, aligned": (0.5, 0.0), "finer, shifted": (0.7, 0.35), "oblique": (0.6, 0.2)}[grid]
    affine = run.affine @ rotation @ np.diag([scale, scale, scale, 1.0])
    affine[:3, 3] += shift
    shape = tuple(int(n / scale) for n in SHAPE)
    values = _fine_blobs(shape, 7, seed=3, sigma=2.5 / scale)
    peak = np.unravel_index(np.argmax(values[..., 2]), shape)
    values[(*peak, 2)] = np.nan  # nilearn zeroes non-finite values (ensure_finite) before resampling
    maps = nib.Nifti1Image(values, affine)
    path = str(tmp_path / "atlas.nii.gz")
    nib.save(maps, path)
    for kwargs in ({}, {"mask_img": brain_mask}):
        ours = NiftiMapsMasker(path, **kwargs).fit(run)
        reference = nm.NiftiMapsMasker(path, **kwargs).fit(run)
        np.testing.assert_allclose(ours.maps_img_.values, reference.maps_img_.get_fdata(), rtol=1e-6, atol=1e-7)
        close(ours.transform(run), reference.transform(run))


# -- bad input and persistence of look-up tables -------------------------------------------------------
def test_nan_seed_is_a_clear_error(run):
    with pytest.raises(ParameterError, match=r"seeds\[1\].*non-finite coordinate"):
        NiftiSpheresMasker([[0, 0, 0], [1, np.nan, 2]], radius=4).fit(run)


@pytest.mark.parametrize("as_path", [False, True])
def test_lut_is_stored_as_data(tmp_path, run, labels_img, as_path):
    from lazymask.maskers import load_masker, open_signals, save_signals

    lut = pd.DataFrame({"index": list(range(7)), "name": ["bg", *(f"area{i}" for i in range(1, 7))]})
    if as_path:
        lut_path = tmp_path / "atlas_dseg.tsv"
        lut.to_csv(lut_path, sep="\t", index=False)
    masker = NiftiLabelsMasker(labels_img, lut=lut_path if as_path else lut)
    signals = masker.fit_transform(run)
    store = str(tmp_path / "lut.zarr")
    save_signals(signals, store, masker=masker)
    if as_path:
        lut_path.unlink()  # the store alone must be enough: no path is read back
    rebuilt = load_masker(store)
    assert rebuilt.region_names_ == masker.region_names_
    assert rebuilt.labels_ == masker.labels_
    np.testing.assert_allclose(rebuilt.transform(run).values, open_signals(store).values, rtol=1e-6)
    assert rebuilt.transform(run)["region_name"].values.tolist() == [f"area{i}" for i in range(1, 7)]
