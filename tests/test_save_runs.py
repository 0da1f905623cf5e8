"""save_signals with a list of runs: one group per run, the runs of a window computed together."""

import nibabel as nib
import numpy as np
import pytest
import xarray as xr

from lazymask import config
from lazymask.exceptions import ParameterError, UnsafeTargetError
from lazymask.io import is_complete
from lazymask.maskers import MultiNiftiMasker, load_masker, open_signals, save_signals
from lazymask.maskers._persist import _windows
from lazymask.testing import fake_fmri, raise_if_dask_computes

N_TIME = 30
GROUPS = ["sub-01/run-1", "sub-01/run-2", "sub-01/run-3"]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A MultiNiftiMasker fitted on three small .nii.gz runs, and its (lazy) signals."""
    folder = tmp_path_factory.mktemp("runs")
    paths = []
    for seed in range(3):
        path = folder / f"run-{seed + 1}.nii.gz"
        nib.save(fake_fmri((16, 18, 14), N_TIME, dtype="int16", seed=seed), path)
        paths.append(str(path))
    masker = MultiNiftiMasker(mask_strategy="epi", detrend=True, standardize="zscore_sample", t_r=2.0).fit(paths)
    return masker, paths, masker.transform(paths)


def test_every_run_is_its_own_complete_group_equal_to_one_by_one(fitted, tmp_path):
    masker, _, signals = fitted
    together, alone = tmp_path / "together.zarr", tmp_path / "alone.zarr"
    save_signals(signals, together, GROUPS, masker=masker)
    for run, group in zip(signals, GROUPS, strict=True):
        save_signals(run, alone, group, masker=masker)
    for run, group in zip(signals, GROUPS, strict=True):
        assert is_complete(together, group)
        xr.testing.assert_identical(open_signals(together, group).compute(), open_signals(alone, group).compute())
        np.testing.assert_array_equal(open_signals(together, group).values, run.values)
        rebuilt = load_masker(together, group)
        np.testing.assert_array_equal(np.asarray(rebuilt.mask_img_), np.asarray(masker.mask_img_))


def test_the_runs_of_a_window_are_computed_together(fitted, tmp_path):
    masker, _, signals = fitted
    with raise_if_dask_computes(max_computes=100) as counting:
        save_signals(signals, tmp_path / "one.zarr", GROUPS, masker=masker)
    assert counting.total_computes == 1
    budget = signals[0].nbytes + signals[1].nbytes  # the first two runs, then the third
    with config.set(memory_budget=budget), raise_if_dask_computes(max_computes=100) as counting:
        save_signals(signals, tmp_path / "two.zarr", GROUPS, masker=masker)
    assert counting.total_computes == 2
    assert all(is_complete(tmp_path / "two.zarr", group) for group in GROUPS)


def test_windows_add_up_to_the_budget_with_at_least_one_run():
    runs = [xr.DataArray(np.zeros((n, 10), "f4")) for n in (5, 5, 20, 1)]  # 200, 200, 800, 40 bytes
    assert _windows(runs, 400) == [[0, 1], [2], [3]]
    assert _windows(runs, 10) == [[0], [1], [2], [3]]
    assert _windows(runs, 10**6) == [[0, 1, 2, 3]]


def test_a_refused_target_stops_everything_before_any_write(fitted, tmp_path):
    masker, _, signals = fitted
    store = tmp_path / "out.zarr"
    save_signals(signals[0], store, "keep", masker=masker)  # a lazymask store
    theirs = store / "sub-01" / "run-3"
    theirs.mkdir(parents=True)
    (theirs / "notes.txt").write_text("mine")
    with pytest.raises(UnsafeTargetError), raise_if_dask_computes():
        save_signals(signals, store, GROUPS, masker=masker)
    assert (theirs / "notes.txt").read_text() == "mine"
    assert not is_complete(store, GROUPS[0]) and not (store / "sub-01" / "run-1").exists()


def test_a_failed_run_publishes_no_group_of_its_window(fitted, tmp_path):
    masker, _, signals = fitted

    class Killed(Exception):
        pass

    def fail(block):
        raise Killed("killed mid-write")

    broken = [signals[0], signals[1].copy(data=signals[1].data.map_blocks(fail, dtype=signals[1].dtype)), signals[2]]
    store = tmp_path / "out.zarr"
    with pytest.raises(Killed):
        save_signals(broken, store, GROUPS, masker=masker)
    assert not any(is_complete(store, group) for group in GROUPS)
    save_signals(signals, store, GROUPS, masker=masker)  # the next write replaces the stale staging
    assert all(is_complete(store, group) for group in GROUPS)
    assert not list((store / "sub-01").glob(".*"))


@pytest.mark.parametrize("groups, message", [("run", "a list of one group per run"),
                                             (None, "a list of one group per run"),
                                             (GROUPS[:2], "a list of one group per run"),
                                             (["a", "b", "a"], "must differ"),
                                             (["a", "", "c"], "not its root")])
def test_a_list_needs_one_distinct_group_per_run(fitted, tmp_path, groups, message):
    masker, _, signals = fitted
    with pytest.raises(ParameterError, match=message):
        save_signals(signals, tmp_path / "out.zarr", groups, masker=masker)
    assert not (tmp_path / "out.zarr").exists()


def test_one_run_takes_one_group(fitted, tmp_path):
    masker, _, signals = fitted
    with pytest.raises(ParameterError, match="one group"):
        save_signals(signals[0], tmp_path / "out.zarr", GROUPS[:1], masker=masker)


def test_one_masker_per_run(fitted, tmp_path):
    """Runs fitted each on its own (an archive's) are saved together with a list of maskers: each group
    records its own."""
    from lazymask.maskers import NiftiMasker

    _, paths, _ = fitted
    maskers = [NiftiMasker(mask_strategy="epi", t_r=t_r).fit(path) for t_r, path in zip((2.0, 2.5), paths, strict=False)]
    runs = [masker.transform(path) for masker, path in zip(maskers, paths, strict=False)]
    save_signals(runs, tmp_path / "s.zarr", GROUPS[:2], masker=maskers)
    for masker, group in zip(maskers, GROUPS[:2], strict=True):
        loaded = load_masker(tmp_path / "s.zarr", group)
        assert loaded.t_r == masker.t_r
        np.testing.assert_array_equal(np.asarray(loaded.mask_img_), np.asarray(masker.mask_img_))
    with pytest.raises(ParameterError, match="a list of 1 maskers for 2 runs"):
        save_signals(runs, tmp_path / "t.zarr", GROUPS[:2], masker=maskers[:1])
