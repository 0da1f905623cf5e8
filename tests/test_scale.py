"""Scale: the memory-budgeted regroup of signal.clean, the user's scheduler running everything.

Checks that the three ways of regrouping time chunks into whole-time blocks (in memory, dask's P2P
rechunk on distributed, one file per group of time chunks on disk locally) give bit-identical
results on every scheduler and chunking; that the on-disk intermediate writes one file per group,
lives under dask's ``temporary-directory`` and is removed; that a lost or truncated file is a
clear error naming it; that nothing is computed or written when a graph is built; and that under
a ``distributed.Client`` every computation of a masker runs on the workers.
"""

from __future__ import annotations

import gc
import threading
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest

from lazymask import config
from lazymask.datasets import lazy_synthetic_run
from lazymask.signal import clean, high_variance_confounds
from lazymask.exceptions import LazymaskError
from lazymask.signal import _regroup
from lazymask.signal._regroup import distributed_client, memory_budget, regroup_method, time_groups, whole_time_blocks
from lazymask.testing import CountingScheduler, raise_if_dask_computes

distributed = pytest.importorskip("distributed")

N_TIME, N_FEATURES = 90, 40
FILTER = {"low_pass": 0.1, "high_pass": 0.01, "t_r": 2.0}
TINY_BUDGET = {"memory_budget": 1000}  # forces the out-of-memory paths on any test-sized input
# also over budget for the test signals (14.4 kB > 200 kB / 16), but a file may hold 12.5 kB (78 rows)
GROUPING_BUDGET = {"memory_budget": 200_000}


@pytest.fixture(scope="module")
def signals():
    rng = np.random.default_rng(3)
    trend = np.linspace(0, 2, N_TIME)[:, None]
    return (50 + trend + rng.standard_normal((N_TIME, N_FEATURES)) * rng.uniform(0.5, 2, N_FEATURES)).astype(np.float32)


@pytest.fixture(scope="module")
def confounds():
    return np.random.default_rng(4).standard_normal((N_TIME, 6))


def _lazy_clean(signals, confounds, chunks, **settings):
    with config.set(**settings) if settings else _nothing():
        return clean(da.from_array(signals, chunks=chunks), confounds=confounds, **FILTER)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _layers(array) -> str:
    return " ".join(str(name) for name in array.dask.layers)


# --- planning (pure) --------------------------------------------------------------------------------

@pytest.mark.parametrize(("shape", "time_chunks", "budget", "remote_workers", "expected"), [
    ((1200, 219_000), (1200,), 1, False, "none"),  # one time chunk: no all-to-all at all
    ((100, 219_000), (20,) * 5, 2 * 2**30, False, "memory"),  # 88 MB <= 2 GiB / 16
    ((200, 219_000), (20,) * 10, 2 * 2**30, False, "disk"),  # 175 MB > 2 GiB / 16
    ((1200, 219_000), (20,) * 60, 2 * 2**30, False, "disk"),
    ((1200, 219_000), (20,) * 60, 2 * 2**30, True, "p2p"),
    ((1200, 219_000), (20,) * 60, 32 * 2**30, True, "memory"),
])
def test_regroup_method(shape, time_chunks, budget, remote_workers, expected):
    assert regroup_method(shape, time_chunks, 4, budget, remote_workers) == expected


# --- same numbers whatever the path -----------------------------------------------------------------

@pytest.mark.parametrize("budget", [TINY_BUDGET, GROUPING_BUDGET], ids=["a file per chunk", "grouped chunks"])
@pytest.mark.parametrize("chunks", [(7, N_FEATURES), (13, 10), (30, 7), (N_TIME, 9)])
@pytest.mark.parametrize("scheduler", ["sync", "threads", "processes"])
def test_through_disk_equals_in_memory(signals, confounds, chunks, scheduler, budget, tmp_path):
    in_memory = _lazy_clean(signals, confounds, chunks)
    with dask.config.set({"temporary-directory": str(tmp_path)}):
        on_disk = _lazy_clean(signals, confounds, chunks, **budget)
    assert "_read_block" not in _layers(in_memory)
    assert ("_read_block" in _layers(on_disk)) == (chunks[0] < N_TIME)
    expected = in_memory.compute(scheduler="sync")
    np.testing.assert_array_equal(on_disk.compute(scheduler=scheduler), expected)
    eager = clean(signals, confounds=confounds, **FILTER)
    np.testing.assert_allclose(expected, eager, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16])
@pytest.mark.parametrize(("time_chunks", "feature_chunks", "columns", "piece_bytes"), [
    ((7,) * 12 + (6,), (40,), (9, 9, 9, 9, 4), 2**20),  # groups limited by the budget
    ((1, 30, 2, 2, 50, 5), (13, 27), (40,), 2**20),  # irregular chunks, one block
    ((5,) * 18, (40,), (1,) * 40, 64),  # one-column blocks; groups end once a piece holds 64 bytes
    ((11,) * 8 + (2,), (7,) * 5 + (5,), (33, 7), 1),  # a group per chunk: any piece is big enough
])
def test_disk_path_returns_the_signals(time_chunks, feature_chunks, columns, piece_bytes, dtype, tmp_path, monkeypatch):
    values = np.random.default_rng(6).standard_normal((N_TIME, N_FEATURES)) * 1000
    array = da.from_array(values.astype(dtype), chunks=(time_chunks, feature_chunks))
    monkeypatch.setattr(_regroup, "PIECE_BYTES", piece_bytes)
    with dask.config.set({"temporary-directory": str(tmp_path)}), config.set(**GROUPING_BUDGET):
        blocks = whole_time_blocks(array, columns, max(np.dtype(dtype).itemsize, 4))  # cleaned as floats
    assert "_read_block" in _layers(blocks)
    assert blocks.chunks == ((N_TIME,), columns)
    for scheduler in ("sync", "threads"):
        result = blocks.compute(scheduler=scheduler)
        assert result.dtype == dtype
        np.testing.assert_array_equal(result, values.astype(dtype))


@pytest.mark.parametrize(("budget", "piece_bytes", "expected_files"), [
    (TINY_BUDGET, 2**20, 13),  # a file per time chunk: no group fits 1000 / 16 bytes
    (GROUPING_BUDGET, 2**20, 2),  # 11 chunks (77 rows, 12.3 kB <= 12.5 kB), then 2
    (GROUPING_BUDGET, 9 * 4 * 20, 5),  # until a 9-column piece holds 20 rows: 3 chunks (21 rows) a file
])
def test_one_file_per_group_of_time_chunks(signals, budget, piece_bytes, expected_files, tmp_path, monkeypatch):
    monkeypatch.setattr(_regroup, "PIECE_BYTES", piece_bytes)
    held = []
    original = _regroup._write_group

    def recording(chunks, scratch, edges, group, dtype):
        held.append(sum(chunk.nbytes for chunk in chunks))
        return original(chunks, scratch, edges, group, dtype)

    monkeypatch.setattr(_regroup, "_write_group", recording)
    array = da.from_array(signals, chunks=(7, N_FEATURES))  # 13 time chunks of 7 rows (the last 6)
    with dask.config.set({"temporary-directory": str(tmp_path)}), config.set(**budget):
        blocks = whole_time_blocks(array, (9, 9, 9, 9, 4), 4)
        np.testing.assert_array_equal(blocks.compute(scheduler="threads"), signals)
        budget_bytes = config.get("memory_budget")
    (directory,) = tmp_path.iterdir()
    files = sorted(path.name for path in directory.iterdir())
    assert files == [f"t{group:07d}.pieces" for group in range(expected_files)]  # no partial file left
    assert sorted(held) == sorted(path.stat().st_size for path in directory.iterdir())
    assert len(held) == expected_files  # each group written once, by one task
    assert max(held) <= max(budget_bytes / 16, 7 * N_FEATURES * 4)  # a write task holds <= 1/16 of the budget


def test_time_groups_hold_whole_chunks():
    chunks = (8,) * 9 + (3,)
    for min_rows, max_bytes in [(1, 10**9), (20, 10**9), (10**9, 2500), (10**9, 1), (30, 3300)]:
        groups = time_groups(chunks, min_rows=min_rows, max_bytes=max_bytes, row_bytes=100)
        assert sum(groups) == len(chunks) and min(groups) >= 1
        first = 0
        for count in groups:
            rows = sum(chunks[first : first + count])
            assert count == 1 or rows * 100 <= max_bytes
            assert count == 1 or rows - chunks[first + count - 1] < min_rows  # stops once it has min_rows
            first += count


def test_disk_blocks_follow_the_requested_feature_blocks(signals, confounds):
    blocks = {"clean_max_block_bytes": N_TIME * 4 * 8, "clean_target_block_bytes": N_TIME * 4 * 6}
    cleaned = _lazy_clean(signals, confounds, (11, N_FEATURES), **blocks, **TINY_BUDGET)
    in_memory = _lazy_clean(signals, confounds, (11, N_FEATURES), **blocks)
    assert cleaned.chunks == in_memory.chunks == ((N_TIME,), (6, 6, 6, 6, 6, 6, 4))
    np.testing.assert_array_equal(cleaned.compute(), in_memory.compute())


@pytest.mark.parametrize("budget", [TINY_BUDGET, GROUPING_BUDGET], ids=["a file per chunk", "grouped chunks"])
def test_intermediate_lives_in_the_temporary_directory_and_is_removed(signals, confounds, budget, tmp_path):
    with dask.config.set({"temporary-directory": str(tmp_path)}):
        with raise_if_dask_computes():
            cleaned = _lazy_clean(signals, confounds, (10, N_FEATURES), **budget)
        assert list(tmp_path.iterdir()) == []  # building the graph writes nothing
        first = cleaned.compute()
        (directory,) = tmp_path.iterdir()
        assert directory.name.startswith("lazymask-regroup-")
        assert list(directory.iterdir())  # pieces are kept while the graph lives (a retried read finds them)
        np.testing.assert_array_equal(cleaned.compute(scheduler="threads"), first)  # computable again
        derived = cleaned * 2  # the graph is still referenced: the directory stays
        del cleaned
        gc.collect()
        assert directory.exists()
        del derived
        gc.collect()
    assert list(tmp_path.iterdir()) == []


def _damage_before_the_reads(monkeypatch, damage):
    """The first read task first applies ``damage`` to the first file of the intermediate."""
    original = _regroup._read_block
    done = []

    def read_after_damage(template, barrier, scratch, rows, edges, block_info=None):
        if not done:
            damage(sorted(Path(scratch.path).glob("*.pieces"))[0])
            done.append(True)
        return original(template, barrier, scratch, rows, edges, block_info=block_info)

    monkeypatch.setattr(_regroup, "_read_block", read_after_damage)


@pytest.mark.parametrize("budget", [TINY_BUDGET, GROUPING_BUDGET], ids=["a file per chunk", "grouped chunks"])
def test_a_lost_piece_is_a_clear_error(signals, budget, tmp_path, monkeypatch):
    _damage_before_the_reads(monkeypatch, Path.unlink)  # something else removed a file after the writes
    with dask.config.set({"temporary-directory": str(tmp_path)}), config.set(**budget):
        cleaned = clean(da.from_array(signals, chunks=(10, N_FEATURES)))
    with pytest.raises(LazymaskError, match=r"on-disk intermediate of signal.clean lost a piece "
                                            r"\(.*lazymask-regroup-\w+/t0000000\.pieces\): its directory"):
        cleaned.compute(scheduler="sync")


@pytest.mark.parametrize("keep", [0.0, 0.5, 0.99])
def test_a_truncated_piece_is_a_clear_error(signals, keep, tmp_path, monkeypatch):
    def truncate(path):
        size = path.stat().st_size
        with open(path, "r+b") as stream:
            stream.truncate(int(size * keep))

    _damage_before_the_reads(monkeypatch, truncate)
    with dask.config.set({"temporary-directory": str(tmp_path)}), config.set(**GROUPING_BUDGET):
        cleaned = clean(da.from_array(signals, chunks=(10, N_FEATURES)))
    with pytest.raises(LazymaskError, match=r"on-disk intermediate of signal.clean has a damaged piece "
                                            r"\(.*lazymask-regroup-\w+/t0000000\.pieces: \d+ bytes, \d+ expected\)"):
        cleaned.compute(scheduler="sync")


# --- distributed ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0",
                                  memory_limit="2GiB") as cluster, distributed.Client(cluster) as client:
        yield client


@pytest.mark.parametrize("budget", [TINY_BUDGET, GROUPING_BUDGET], ids=["a file per chunk", "grouped chunks"])
def test_a_local_cluster_shares_the_disk_and_p2p_is_taken_when_asked(signals, confounds, client, budget, tmp_path):
    from lazymask.signal._regroup import workers_share_this_disk

    assert workers_share_this_disk(client)
    expected = _lazy_clean(signals, confounds, (13, 10)).compute(scheduler="sync")
    with dask.config.set({"temporary-directory": str(tmp_path)}):
        on_disk = _lazy_clean(signals, confounds, (13, 10), **budget)
    with dask.config.set({"array.rechunk.method": "p2p"}):
        p2p = _lazy_clean(signals, confounds, (13, 10), **budget)
    assert "_read_block" in _layers(on_disk) and "p2p" not in _layers(on_disk)
    assert "p2p" in _layers(p2p) and "_read_block" not in _layers(p2p)
    np.testing.assert_array_equal(client.compute(on_disk).result(), expected)
    np.testing.assert_array_equal(client.compute(p2p).result(), expected)


def test_p2p_when_the_workers_are_elsewhere(signals, confounds, client, monkeypatch):
    monkeypatch.setattr(_regroup, "workers_share_this_disk", lambda client: False)
    over_budget = _lazy_clean(signals, confounds, (13, 10), **TINY_BUDGET)
    assert "p2p" in _layers(over_budget)
    expected = _lazy_clean(signals, confounds, (13, 10)).compute(scheduler="sync")
    np.testing.assert_array_equal(client.compute(over_budget).result(), expected)


def test_processes_cluster_through_disk(signals, confounds, tmp_path):
    expected = _lazy_clean(signals, confounds, (7, 40)).compute(scheduler="sync")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as client, dask.config.set({"temporary-directory": str(tmp_path)}):
        for budget in (TINY_BUDGET, GROUPING_BUDGET):
            on_disk = _lazy_clean(signals, confounds, (7, 40), **budget)
            assert "_read_block" in _layers(on_disk)
            np.testing.assert_array_equal(client.compute(on_disk).result(), expected)


def test_a_local_scheduler_set_over_a_client_takes_the_disk_path(signals, confounds, client, tmp_path):
    assert distributed_client() is client
    with dask.config.set({"scheduler": "sync", "temporary-directory": str(tmp_path)}):
        assert distributed_client() is None
        cleaned = _lazy_clean(signals, confounds, (13, 10), **TINY_BUDGET)
        assert "_read_block" in _layers(cleaned)
        result = cleaned.compute()
    np.testing.assert_array_equal(result, _lazy_clean(signals, confounds, (13, 10)).compute(scheduler="sync"))


def test_the_budget_is_capped_by_the_workers_memory(client):
    assert memory_budget(None) == config.get("memory_budget")
    assert memory_budget(client) == min(config.get("memory_budget"), 2 * 2**30)
    with config.set(memory_budget=2**40):
        assert memory_budget(client) == 2 * 2**30


# --- the user's scheduler runs everything -----------------------------------------------------------

_EXECUTED: list[str] = []
_LOCK = threading.Lock()


class _TaskCounter(distributed.WorkerPlugin):
    """Records the key prefix of every task a worker runs."""

    def transition(self, key, start, finish, **kwargs):
        if start == "executing" and finish == "memory":
            name = key[0] if isinstance(key, tuple) else key
            with _LOCK:
                _EXECUTED.append(str(name).rsplit("-", 1)[0])


@pytest.fixture
def no_local_scheduler(monkeypatch):
    """Any computation on dask's local schedulers (sync, threads, processes) fails."""

    def refuse(*args, **kwargs):
        raise AssertionError("a computation ran in the client process, not on the cluster's workers")

    for name in list(dask.base.named_schedulers):
        monkeypatch.setitem(dask.base.named_schedulers, name, refuse)
    monkeypatch.setattr(dask.threaded, "get", refuse)


@pytest.mark.parametrize("budget", [None, 1000], ids=["in-memory regroup", "disk regroup"])
def test_every_computation_of_a_masker_runs_on_the_workers(client, no_local_scheduler, budget, tmp_path):
    from lazymask.maskers import NiftiMasker, save_signals

    run = lazy_synthetic_run(shape=(12, 14, 12), n_volumes=60, chunks=9, seed=1)
    confounds = np.random.default_rng(0).standard_normal((60, 6))
    client.register_plugin(_TaskCounter(), name="count-tasks")
    _EXECUTED.clear()
    with config.set(memory_budget=budget or config.get("memory_budget")):
        masker = NiftiMasker(mask_strategy="epi", detrend=True, standardize="zscore_sample",
                             high_variance_confounds=True, **FILTER)
        signals = masker.fit_transform(run.func, confounds=confounds)
        save_signals(signals, tmp_path / "out.zarr", masker=masker)
    executed = " ".join(sorted(set(_EXECUTED)))
    assert "synthetic" in executed, executed  # the voxels were made on the workers
    assert "clean_block" in executed, executed
    assert ("_read_block" in executed) == (budget is not None), executed


def test_mask_reads_use_the_users_scheduler():
    from lazymask.masking import apply_mask

    run = lazy_synthetic_run(shape=(8, 9, 8), n_volumes=12, chunks=5)
    mask = run.mask.chunk()  # a lazy mask: reading it is a computation on the user's scheduler
    scheduler = CountingScheduler(max_computes=10)
    with dask.config.set(scheduler=scheduler):
        signals = apply_mask(run.func, mask)
    assert scheduler.total_computes == 1
    assert signals.shape == (12, int(run.mask.sum()))


# --- high_variance_confounds multiplies the kept columns only ---------------------------------------

@pytest.mark.parametrize("chunks", [(20, 400), (100, 37), (7, 130)])
def test_high_variance_gram_selects_the_kept_columns(chunks, monkeypatch):
    from lazymask.signal import _variance

    series = np.random.default_rng(5).standard_normal((100, 400)) * np.linspace(0.5, 3, 400)
    widths = []
    original = _variance._gram_piece

    def recording(left, right, kept):
        widths.append((left.shape[1], int(kept.sum())))
        return original(left, right, kept)

    monkeypatch.setattr(_variance, "_gram_piece", recording)
    lazy = high_variance_confounds(da.from_array(series, chunks=chunks), n_confounds=4, percentile=5.0)
    computed = lazy.compute(scheduler="sync")
    eager = high_variance_confounds(series, n_confounds=4, percentile=5.0)
    np.testing.assert_allclose(np.abs(computed), np.abs(eager), rtol=1e-6, atol=1e-8)
    n_time_blocks = len(range(0, 100, chunks[0]))
    assert sum(kept for _, kept in widths) == 20 * n_time_blocks**2  # 5 % of 400 columns, each pair once
