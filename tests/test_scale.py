"""Scale: the memory-budgeted regroup of signal.clean, the user's scheduler running everything.

Checks that the three ways of regrouping time chunks into whole-time blocks (in memory, dask's P2P
rechunk on distributed, ``.npy`` pieces on disk locally) give bit-identical results on every
scheduler and chunking; that the on-disk intermediate lives under dask's ``temporary-directory``
and is removed; that nothing is computed or written when a graph is built; and that under a
``distributed.Client`` every computation of a masker runs on the workers.
"""

from __future__ import annotations

import gc
import threading

import dask
import dask.array as da
import numpy as np
import pytest

from lazymask import config
from lazymask.datasets import lazy_synthetic_run
from lazymask.signal import clean, high_variance_confounds
from lazymask.signal._regroup import distributed_client, memory_budget, regroup_method
from lazymask.testing import CountingScheduler, raise_if_dask_computes

distributed = pytest.importorskip("distributed")

N_TIME, N_FEATURES = 90, 40
FILTER = {"low_pass": 0.1, "high_pass": 0.01, "t_r": 2.0}
TINY_BUDGET = {"memory_budget": 1000}  # forces the out-of-memory paths on any test-sized input


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

@pytest.mark.parametrize("chunks", [(7, N_FEATURES), (13, 10), (30, 7), (N_TIME, 9)])
@pytest.mark.parametrize("scheduler", ["sync", "threads", "processes"])
def test_through_disk_equals_in_memory(signals, confounds, chunks, scheduler, tmp_path):
    in_memory = _lazy_clean(signals, confounds, chunks)
    with dask.config.set({"temporary-directory": str(tmp_path)}):
        on_disk = _lazy_clean(signals, confounds, chunks, **TINY_BUDGET)
    assert "_read_block" not in _layers(in_memory)
    assert ("_read_block" in _layers(on_disk)) == (chunks[0] < N_TIME)
    expected = in_memory.compute(scheduler="sync")
    np.testing.assert_array_equal(on_disk.compute(scheduler=scheduler), expected)
    eager = clean(signals, confounds=confounds, **FILTER)
    np.testing.assert_allclose(expected, eager, rtol=1e-4, atol=1e-4)


def test_disk_blocks_follow_the_requested_feature_blocks(signals, confounds):
    blocks = {"clean_max_block_bytes": N_TIME * 4 * 8, "clean_target_block_bytes": N_TIME * 4 * 6}
    cleaned = _lazy_clean(signals, confounds, (11, N_FEATURES), **blocks, **TINY_BUDGET)
    in_memory = _lazy_clean(signals, confounds, (11, N_FEATURES), **blocks)
    assert cleaned.chunks == in_memory.chunks == ((N_TIME,), (6, 6, 6, 6, 6, 6, 4))
    np.testing.assert_array_equal(cleaned.compute(), in_memory.compute())


def test_intermediate_lives_in_the_temporary_directory_and_is_removed(signals, confounds, tmp_path):
    with dask.config.set({"temporary-directory": str(tmp_path)}):
        with raise_if_dask_computes():
            cleaned = _lazy_clean(signals, confounds, (10, N_FEATURES), **TINY_BUDGET)
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


def test_a_lost_piece_is_a_clear_error(signals, tmp_path, monkeypatch):
    from lazymask.exceptions import LazymaskError
    from lazymask.signal import _regroup

    original = _regroup._read_block

    def read_after_a_loss(template, barrier, scratch, n_time_chunks, block_info=None):
        for piece in sorted((tmp_path / scratch.path.rsplit("/", 1)[-1]).glob("*.npy"))[:1]:
            piece.unlink()  # something else removed a piece between the writes and this read
        return original(template, barrier, scratch, n_time_chunks, block_info=block_info)

    monkeypatch.setattr(_regroup, "_read_block", read_after_a_loss)
    with dask.config.set({"temporary-directory": str(tmp_path)}), config.set(**TINY_BUDGET):
        cleaned = clean(da.from_array(signals, chunks=(10, N_FEATURES)))
    with pytest.raises(LazymaskError, match=r"on-disk intermediate of signal.clean lost a piece \(.*\.npy\)"):
        cleaned.compute(scheduler="sync")


# --- distributed ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0",
                                  memory_limit="2GiB") as cluster, distributed.Client(cluster) as client:
        yield client


def test_a_local_cluster_shares_the_disk_and_p2p_is_taken_when_asked(signals, confounds, client, tmp_path):
    from lazymask.signal._regroup import workers_share_this_disk

    assert workers_share_this_disk(client)
    expected = _lazy_clean(signals, confounds, (13, 10)).compute(scheduler="sync")
    with dask.config.set({"temporary-directory": str(tmp_path)}):
        on_disk = _lazy_clean(signals, confounds, (13, 10), **TINY_BUDGET)
    with dask.config.set({"array.rechunk.method": "p2p"}):
        p2p = _lazy_clean(signals, confounds, (13, 10), **TINY_BUDGET)
    assert "_read_block" in _layers(on_disk) and "p2p" not in _layers(on_disk)
    assert "p2p" in _layers(p2p) and "_read_block" not in _layers(p2p)
    np.testing.assert_array_equal(client.compute(on_disk).result(), expected)
    np.testing.assert_array_equal(client.compute(p2p).result(), expected)


def test_p2p_when_the_workers_are_elsewhere(signals, confounds, client, monkeypatch):
    from lazymask.signal import _regroup

    monkeypatch.setattr(_regroup, "workers_share_this_disk", lambda client: False)
    over_budget = _lazy_clean(signals, confounds, (13, 10), **TINY_BUDGET)
    assert "p2p" in _layers(over_budget)
    expected = _lazy_clean(signals, confounds, (13, 10)).compute(scheduler="sync")
    np.testing.assert_array_equal(client.compute(over_budget).result(), expected)


def test_processes_cluster_through_disk(signals, confounds, tmp_path):
    expected = _lazy_clean(signals, confounds, (7, 40)).compute(scheduler="sync")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as client, dask.config.set({"temporary-directory": str(tmp_path)}):
        on_disk = _lazy_clean(signals, confounds, (7, 40), **TINY_BUDGET)
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
