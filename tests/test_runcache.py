"""The run cache (lazymask/io/_runcache.py) and one decompression per fit_transform.

Contract checked: off by default; a first pass fills an entry, later passes read it (no voxel read
from the file) with bit-identical values for any chunking; a changed source is never read through
the cache; a damaged entry is dropped and the file read instead; the size cap evicts least recently
used entries; only what the cache wrote is ever deleted; building a graph computes nothing; a
masker's fit_transform decompresses a run once (in memory within the budget, else via the cache).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import dask
import nibabel as nib
import numpy as np
import pytest

from lazymask import config
from lazymask.exceptions import ParameterError, SourceChangedError
from lazymask.io import clear_run_cache, open_nifti, run_cache_entries
from lazymask.maskers import MultiNiftiMasker, NiftiMasker
from lazymask.testing import count_voxel_reads, fake_fmri, raise_if_dask_computes

SHAPE = (10, 12, 9)
N_TIME = 24
CHUNK = int(np.prod(SHAPE)) * 2 * 5  # 5 int16 volumes per chunk


def _write(path: Path, seed: int = 0, n_time: int = N_TIME) -> np.ndarray:
    data = (np.random.default_rng(seed).standard_normal((*SHAPE, n_time)) * 300 + 1000).astype(np.int16)
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0])), path)
    return data


def _chained(img) -> bool:
    """Whether the image's read tasks wait for the previous chunk's read (the gzip order chain)."""
    graph = dict(img.data.__dask_graph__())
    reads = [task for key, task in graph.items() if isinstance(key, tuple)
             and key[0].startswith(("open-nifti-", "gzip-read-")) and task[0].__name__.startswith("_read_chunk")]
    return any(task[4] is not None for task in reads)


@pytest.fixture
def cache(tmp_path):
    directory = tmp_path / "cache"
    with config.set(cache_dir=directory, auto_chunk_bytes=CHUNK):
        yield directory


def test_off_by_default_and_settings_checked(tmp_path, monkeypatch):
    monkeypatch.delenv("LAZYMASK_CACHE_DIR", raising=False)
    seen = {}
    thread = threading.Thread(target=lambda: seen.update(value=config.get("cache_dir")))  # fresh defaults
    thread.start(), thread.join()
    assert seen["value"] is None
    monkeypatch.setenv("LAZYMASK_CACHE_DIR", str(tmp_path / "c"))
    thread = threading.Thread(target=lambda: seen.update(value=config.get("cache_dir")))
    thread.start(), thread.join()
    assert seen["value"] == str(tmp_path / "c")
    with pytest.raises(ParameterError, match=r"cache_dir=3: expected a directory path or None"):
        with config.set(cache_dir=3):
            pass
    with pytest.raises(ParameterError, match="cache_max_bytes=0: expected a positive integer"):
        with config.set(cache_max_bytes=0):
            pass


def test_first_pass_fills_later_passes_read_the_cache(tmp_path, cache):
    data = _write(tmp_path / "run.nii.gz")
    img = open_nifti(tmp_path / "run.nii.gz")
    with raise_if_dask_computes(), count_voxel_reads() as reads:
        lazy = img.mean("time")  # building: nothing computed, nothing read, nothing written
    assert reads.calls == 0 and not cache.exists()
    with count_voxel_reads() as reads:
        mean = lazy.values
    assert reads.volumes == N_TIME
    (entry,) = run_cache_entries(cache)
    assert entry["source"] == str(tmp_path / "run.nii.gz") and entry["bytes"] > 0
    np.testing.assert_array_equal(mean, data.mean(axis=3))
    assert _chained(img)
    for chunks in ("auto", 7, -1, (1, 23)):  # any chunking reads the same entry, bit-identical
        with count_voxel_reads() as reads:
            cached = open_nifti(tmp_path / "run.nii.gz", chunks=chunks)
            assert not _chained(cached)  # a complete entry at build time: reads in any order, in parallel
            values = cached.values
        assert reads.calls == 0
        assert values.dtype == data.dtype
        np.testing.assert_array_equal(values, data)


def test_scaled_and_multi_file_reads_are_identical(tmp_path, cache):
    data = _write(tmp_path / "a.nii.gz", seed=1)
    scaled = nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0]))
    scaled.header.set_slope_inter(0.5, 3.0)
    nib.save(scaled, tmp_path / "b.nii.gz")
    paths = [tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"]
    expected = np.concatenate([np.asanyarray(nib.load(p).dataobj) for p in paths], axis=3)
    first = open_nifti(paths).values
    assert len(run_cache_entries(cache)) == 2
    with count_voxel_reads() as reads:
        second = open_nifti(paths, chunks=9).values
    assert reads.calls == 0
    assert first.dtype == second.dtype == expected.dtype
    np.testing.assert_array_equal(first, expected)
    np.testing.assert_array_equal(second, expected)


def test_a_changed_source_is_never_read_through_the_cache(tmp_path, cache):
    path = tmp_path / "run.nii.gz"
    _write(path, seed=0)
    img = open_nifti(path)
    img.values  # fills the cache
    time.sleep(0.01)
    new = _write(path, seed=5)  # rewritten: new identity
    with pytest.raises(SourceChangedError, match="the file changed after it was opened"):
        img.values  # the old graph: the source is checked even though its entry is complete
    with count_voxel_reads() as reads:
        values = open_nifti(path).values  # opened again: another identity, a miss, the new data
    assert reads.volumes == N_TIME
    np.testing.assert_array_equal(values, new)


def test_a_damaged_entry_is_dropped_and_the_file_read(tmp_path, cache):
    path = tmp_path / "run.nii.gz"
    data = _write(path)
    open_nifti(path).values
    (entry,) = run_cache_entries(cache)
    chunk = Path(entry["path"]) / "volumes" / "c" / "3" / "0"
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    chunk.write_bytes(bytes(raw))
    from lazymask.io import _runcache

    _runcache._opened.clear()  # another process: nothing opened yet
    with pytest.warns(RuntimeWarning, match=r"chunk '3/0' of array 'volumes' is corrupt.*The entry was deleted"):
        with count_voxel_reads() as reads:
            values = open_nifti(path).values
    assert reads.volumes > 0
    np.testing.assert_array_equal(values, data)
    assert run_cache_entries(cache) == []  # the damaged entry is gone
    open_nifti(path).values  # the next whole pass writes a fresh one
    (fresh,) = run_cache_entries(cache)
    with count_voxel_reads() as reads:
        np.testing.assert_array_equal(open_nifti(path).values, data)
    assert reads.calls == 0


def test_an_entry_whose_codecs_changed_is_not_used(tmp_path, cache):
    """Its chunks still have their checksums, but would decode to other values: a miss, the file read."""
    import json

    from lazymask.io import _runcache

    path = tmp_path / "run.nii.gz"
    data = _write(path)
    open_nifti(path).values
    (entry,) = run_cache_entries(cache)
    metadata = Path(entry["path"]) / "volumes" / "zarr.json"
    document = json.loads(metadata.read_text())
    document["codecs"][0]["configuration"]["endian"] = "big"
    metadata.write_text(json.dumps(document))
    _runcache._opened.clear()  # another process: nothing opened yet
    with count_voxel_reads() as reads:
        values = open_nifti(path).values
    assert reads.volumes == N_TIME
    np.testing.assert_array_equal(values, data)


@pytest.mark.parametrize("damage", ["deleted", "truncated"])
def test_an_entry_read_chunk_by_chunk_checks_every_chunk(tmp_path, cache, damage):
    """The entry's own reader (no zarr array) gives zarr's values and refuses a missing or cut chunk."""
    from lazymask.io import _runcache

    path = tmp_path / "run.nii.gz"
    data = _write(path)
    open_nifti(path).values  # fills the entry
    open_nifti(path).values  # reads it (and keeps it open)
    (entry,) = run_cache_entries(cache)
    opened = _runcache._opened[str(entry["path"])]
    assert opened.direct  # the layout this module writes
    spatial = data.shape[:3]
    direct = opened.read(2, 7, type("R", (), {"spatial_shape": spatial})())
    opened.direct = False
    through_zarr = opened.read(2, 7, type("R", (), {"spatial_shape": spatial})())
    opened.direct = True
    np.testing.assert_array_equal(direct, through_zarr)
    np.testing.assert_array_equal(direct, data[..., 2:7])
    assert direct.flags.f_contiguous
    chunk = Path(entry["path"]) / "volumes" / "c" / "4" / "0"
    if damage == "deleted":
        chunk.unlink()
    else:
        chunk.write_bytes(chunk.read_bytes()[:-7])
    _runcache._opened.clear()
    with pytest.warns(RuntimeWarning, match=r"chunk '4/0' of array 'volumes' is (missing|corrupt|truncated).*The entry was deleted"):
        values = open_nifti(path).values
    np.testing.assert_array_equal(values, data)


def test_size_cap_evicts_least_recently_used_entries_only(tmp_path, cache):
    paths = [tmp_path / f"run-{i}.nii.gz" for i in range(3)]
    for i, path in enumerate(paths):
        _write(path, seed=i)
    open_nifti(paths[0]).values
    entry_bytes = run_cache_entries(cache)[0]["bytes"]
    foreign = cache / "notes.txt"
    foreign.write_text("mine")
    (cache / "lazymask_runs" / "not-an-entry").mkdir()
    with config.set(cache_max_bytes=int(2.5 * entry_bytes)):
        open_nifti(paths[1]).values
        time.sleep(0.01)
        open_nifti(paths[0]).values  # a hit: run-0 becomes the most recently used
        time.sleep(0.01)
        open_nifti(paths[2]).values  # room for two: run-1, least recently used, goes
    sources = [Path(e["source"]).name for e in run_cache_entries(cache)]
    assert sorted(sources) == ["run-0.nii.gz", "run-2.nii.gz"]
    with config.set(cache_max_bytes=entry_bytes // 2):  # larger than the cap: not kept
        open_nifti(paths[1]).values
    assert len(run_cache_entries(cache)) == 2
    assert clear_run_cache(cache) == 2
    assert run_cache_entries(cache) == []
    assert foreign.read_text() == "mine" and (cache / "lazymask_runs" / "not-an-entry").is_dir()


def test_a_partial_pass_publishes_nothing(tmp_path, cache):
    path = tmp_path / "run.nii.gz"
    data = _write(path)
    part = open_nifti(path)[..., :6].values
    np.testing.assert_array_equal(part, data[..., :6])
    assert run_cache_entries(cache) == []
    leftovers = [p.name for p in (cache / "lazymask_runs").iterdir()]
    assert all(".lazymask-tmp-" in name for name in leftovers)  # only staging, removed at exit
    open_nifti(path).values  # a whole pass completes it
    assert len(run_cache_entries(cache)) == 1


def test_fit_transform_decompresses_once_in_memory(tmp_path):
    path = tmp_path / "run.nii.gz"
    nib.save(fake_fmri(shape=SHAPE, n_volumes=N_TIME), path)
    reference = NiftiMasker(mask_strategy="epi", detrend=True, standardize="zscore_sample")
    with config.set(memory_budget=1):  # over budget, no cache: two passes (the old way)
        with count_voxel_reads() as reads:
            expected = reference.fit_transform(str(path)).values
    assert reads.volumes == 2 * N_TIME
    masker = NiftiMasker(mask_strategy="epi", detrend=True, standardize="zscore_sample")
    with count_voxel_reads() as reads:
        signals = masker.fit_transform(str(path))
        with raise_if_dask_computes():
            masker.transform(str(path))  # transform stays lazy
        values = signals.values
    assert reads.volumes == N_TIME
    np.testing.assert_array_equal(values, expected)
    np.testing.assert_array_equal(masker.mean_img_.values, reference.mean_img_.values)


def test_fit_transform_averages_in_the_decoding_pass(tmp_path, monkeypatch):
    """The mask's mean is summed in the compute that decodes the run (no pass of its own)."""
    from dask.callbacks import Callback

    from lazymask.image import _mean

    path = tmp_path / "run.nii.gz"
    nib.save(fake_fmri(shape=SHAPE, n_volumes=N_TIME), path)
    computes = []  # per compute: [volumes read during it, additions of the mean during it]
    additions, accumulate = [0], _mean._accumulate
    monkeypatch.setattr(_mean, "_accumulate", lambda *a: additions.__setitem__(0, additions[0] + 1) or accumulate(*a))
    masker = NiftiMasker(mask_strategy="epi")
    with count_voxel_reads() as reads:
        def start(_dsk):
            computes.append([reads.volumes, additions[0]])

        def finish(_dsk, _state, _errored):
            computes[-1] = [reads.volumes - computes[-1][0], additions[0] - computes[-1][1]]

        with Callback(start=start, finish=finish), dask.config.set(scheduler="sync"):
            signals = masker.fit_transform(open_nifti(str(path), chunks={"time": 3}))
        values, mean = signals.values, masker.mean_img_.values
    averaging = [c for c in computes if c[1]]
    assert averaging == [[N_TIME, -(-N_TIME // 3)]]  # one compute sums the mean: the one that decodes
    expected = NiftiMasker(mask_strategy="epi")
    with config.set(memory_budget=1):  # over budget: the mean has its own pass
        np.testing.assert_array_equal(expected.fit_transform(str(path)).values, values)
    np.testing.assert_array_equal(mean, expected.mean_img_.values)


def test_fit_transform_over_budget_reads_the_cache(tmp_path, cache):
    path = tmp_path / "run.nii.gz"
    nib.save(fake_fmri(shape=SHAPE, n_volumes=N_TIME), path)
    expected = NiftiMasker(mask_strategy="epi").fit_transform(str(path)).values
    clear_run_cache(cache)
    with config.set(memory_budget=1), count_voxel_reads() as reads:
        first = NiftiMasker(mask_strategy="epi").fit_transform(str(path)).values
        assert reads.volumes == N_TIME  # the mean's pass filled the cache; the extraction read it
        second = NiftiMasker(mask_strategy="epi", detrend=True).fit_transform(str(path))
        second.values  # another masker, another job: nothing read from the file
    assert reads.volumes == N_TIME
    np.testing.assert_array_equal(first, expected)


def test_multi_masker_reads_each_run_once(tmp_path):
    paths = []
    for seed in (0, 1):
        path = tmp_path / f"run-{seed}.nii.gz"
        nib.save(fake_fmri(shape=SHAPE, n_volumes=N_TIME, seed=seed), path)
        paths.append(str(path))
    with config.set(memory_budget=1):
        expected = [s.values for s in MultiNiftiMasker(mask_strategy="epi", detrend=True).fit_transform(paths)]
    with count_voxel_reads() as reads:
        signals = MultiNiftiMasker(mask_strategy="epi", detrend=True).fit_transform(paths)
        values = [s.values for s in signals]
    assert reads.volumes == 2 * N_TIME
    for got, want in zip(values, expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_an_unwritable_cache_warns_and_reads_the_file(tmp_path):
    path = tmp_path / "run.nii.gz"
    data = _write(path)
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the cache would go")
    with config.set(cache_dir=blocker, auto_chunk_bytes=CHUNK):
        with pytest.warns(RuntimeWarning, match=r"lazymask run cache: cannot write .*read without the cache"):
            values = open_nifti(path).values
    np.testing.assert_array_equal(values, data)
    assert blocker.read_text() == "a file where the cache would go"


def test_a_run_kept_in_memory_is_gathered_into_whole_time_blocks(tmp_path):
    """fit_transform with cleaning: no time-chunked signals to regroup (no rechunk, no disk intermediate)."""
    path = tmp_path / "run.nii.gz"
    nib.save(fake_fmri(shape=SHAPE, n_volumes=N_TIME), path)
    options = dict(mask_strategy="epi", detrend=True, standardize="zscore_sample", low_pass=0.2, t_r=2.0)
    masker = NiftiMasker(**options)
    signals = masker.fit_transform(open_nifti(str(path), chunks={"time": 5}))
    layers = " ".join(map(str, signals.data.dask.layers))
    assert "rechunk" not in layers and "_read_block" not in layers and "_write" not in layers
    assert "gathered" in layers and "gather-voxels" not in layers  # each block cleaned in the task gathering it
    with config.set(memory_budget=1):  # not kept: extracted by time chunks, then regrouped
        reference = NiftiMasker(**options).fit_transform(open_nifti(str(path), chunks={"time": 5}))
    regrouped = " ".join(map(str, reference.data.dask.layers))
    assert "rechunk" in regrouped or "_read_block" in regrouped
    np.testing.assert_array_equal(signals.values, reference.values)
