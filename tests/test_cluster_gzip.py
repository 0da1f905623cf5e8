"""A .nii.gz costs one decompression on a multi-process distributed cluster too (issue 12, item 3).

The bytes decompressed are counted in every worker process (``lazymask.io._gzip.bytes_decompressed``)
and summed: a pass over one file must decompress that file's data once in all, whichever worker
runs which read, with the same values as the threaded scheduler.

* By placement: each chained read takes the previous read's result as its argument, and the
  scheduler puts a task where its argument is, so a file's reads stay in the worker that began it.
  Work stealing is turned off for this test: it is the one rule of the scheduler that may move a
  read (a timing heuristic, see ``benchmarks/bench_cluster.py``), which the next test covers.
* By resume points: with resumable streams (``lazymask.io._zran``) a read that runs in another
  worker than the previous one resumes from the point the previous read left in its result. The
  test moves the chain mid-file on purpose (worker restrictions: the first reads on one worker, the
  rest on the other) and allows the one deflate block between that point (a block boundary) and the
  read's first byte to be decompressed twice. With ISA-L streams the same move decompresses the
  first half of the file again, so the test fails.
* The resumable stream alone, in one process: reads through fresh streams (as in fresh processes)
  that each start from the pickled point the previous one left give the file's bytes, across gzip
  members, and a cut or damaged file fails as with the ISA-L stream.
* A worker killed mid-pass: the pass still finishes, with the threaded values, with either kind of
  stream (the lost reads are run again, the chain resuming from the last point that survived).
"""

from __future__ import annotations

import gzip
import os
import pickle
import signal
import time

import dask
import numpy as np
import pytest

from lazymask.datasets import make_raw_epi
from lazymask.exceptions import CorruptImageError
from lazymask.io import _gzip, _zran, open_nifti

distributed = pytest.importorskip("distributed")

N_VOLUMES = 120
CHUNKS = 8  # 15 chunks of 8 volumes (0.78 MB each)
MAX_BLOCK = 256 << 10  # more than a deflate block of this file holds (measured: the slack is 12 kB)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 36 x 45 x 30 int16 run of 120 volumes (11.7 MB of data, 7.8 MB gzipped) and its threaded mean."""
    path = tmp_path_factory.mktemp("cluster-gzip") / "run_bold.nii.gz"
    make_raw_epi(n_volumes=N_VOLUMES, path=path)
    with gzip.open(path) as f:
        decompressed = len(f.read())  # the header and the voxel data: what one pass decompresses
    expected = open_nifti(path, chunks=CHUNKS).mean("time").compute(scheduler="threads").values
    return path, decompressed, expected


def _cluster(**config):
    with dask.config.set(config):  # the scheduler (in this process) reads its settings at start
        return distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                        worker_dashboard_address=None)


def _pass(client, image, optimize: bool = True) -> tuple[np.ndarray, int]:
    before = client.run(_gzip.bytes_decompressed)
    if optimize:
        mean = image.mean("time").compute().values
    else:  # dask's graph optimisation fuses tasks and drops their worker restrictions
        mean = client.compute(image.mean("time").data, optimize_graph=False).result()
    after = client.run(_gzip.bytes_decompressed)
    return mean, sum(after[worker] - before[worker] for worker in after)


def test_a_file_s_reads_stay_in_one_worker(run):
    path, decompressed, expected = run
    with _cluster(**{"distributed.scheduler.work-stealing": False}) as cluster, distributed.Client(cluster) as client:
        image = open_nifti(path, chunks=CHUNKS)
        for _ in range(2):  # the second pass restarts each stream: once more, not more
            mean, total = _pass(client, image)
            np.testing.assert_array_equal(mean, expected)
            assert total == decompressed, f"{total / decompressed:.2f} decompressions"


def test_a_read_moved_to_another_worker_resumes_where_the_previous_one_ended(run, monkeypatch):
    path, decompressed, expected = run
    monkeypatch.setenv("LAZYMASK_GZIP_READER", "zran")  # the workers' streams (they read it at import)
    monkeypatch.setattr(_gzip, "_READER", "zran")  # and this process's graph: reads pass resume points on
    with _cluster() as cluster, distributed.Client(cluster) as client:
        first, second = sorted(client.scheduler_info(n_workers=-1)["workers"])
        n_chunks = N_VOLUMES // CHUNKS

        def where(key):  # the first half of the reads on one worker, the second half on the other
            index = key[-1] if isinstance(key, tuple) else 0
            return [first] if index < n_chunks // 2 else [second]

        with dask.annotate(workers=where, allow_other_workers=False):
            image = open_nifti(path, chunks=CHUNKS)
        mean, total = _pass(client, image, optimize=False)
        np.testing.assert_array_equal(mean, expected)
        assert decompressed <= total <= decompressed + MAX_BLOCK, f"{total / decompressed:.2f} decompressions"


@pytest.mark.skipif(not _zran.available(), reason="the system zlib cannot be loaded through ctypes")
def test_resume_points_carry_a_read_to_fresh_streams(tmp_path):
    rng = np.random.default_rng(0)
    members = [rng.integers(0, 20, 700_000, dtype=np.uint8).tobytes() for _ in range(3)]
    path = tmp_path / "members.gz"
    path.write_bytes(b"".join(gzip.compress(m, level) for m, level in zip(members, (1, 6, 9))) + b"\0" * 64)
    data = b"".join(members)
    for chunk in (50_000, 333_333, len(data)):
        offset, point, resumed = 0, None, 0
        while offset < len(data):
            stream, out = _zran.ZranStream(str(path)), bytearray(min(chunk, len(data) - offset))
            if point is not None:
                stream.offer(pickle.loads(pickle.dumps(point)))
                resumed += 1
            stream.read_into(offset, memoryview(out), to_end=offset + len(out) == len(data))
            assert out == data[offset : offset + len(out)], (chunk, offset)
            point = stream.point_at(offset + len(out))
            assert point is None or point.position <= offset + len(out)
            offset += len(out)
        assert resumed == -(-len(data) // chunk) - 1
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(CorruptImageError, match="the file is truncated"):
        _zran.ZranStream(str(path)).read_into(0, memoryview(bytearray(len(data))))
    damaged = bytearray(whole)
    damaged[len(members[0]) // 4] ^= 0xFF  # inside the first member's deflate data
    path.write_bytes(bytes(damaged))
    with pytest.raises(CorruptImageError, match="the gzip stream is corrupt"):
        _zran.ZranStream(str(path)).read_into(0, memoryview(bytearray(len(data))), to_end=True)


def _slow_worker_plugin():
    """Each finished task held 0.1 s, so that a pass lasts long enough to kill a worker during it."""
    from distributed import WorkerPlugin

    class SlowTasks(WorkerPlugin):
        name = "lazymask-test-slow-gzip-tasks"

        def transition(self, key, start, finish, **kwargs):
            if finish == "memory":
                time.sleep(0.1)

    return SlowTasks()


@pytest.mark.parametrize("reader", ["isal", "zran"])
def test_a_worker_killed_mid_pass_gives_the_threaded_values(run, monkeypatch, reader):
    path, _, expected = run
    monkeypatch.setenv("LAZYMASK_GZIP_READER", reader)
    monkeypatch.setattr(_gzip, "_READER", reader)
    with _cluster() as cluster, distributed.Client(cluster) as client:
        client.register_plugin(_slow_worker_plugin())
        pids = client.run(os.getpid)
        future = client.compute(open_nifti(path, chunks=CHUNKS).mean("time").data)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until a worker holds results of this pass
            holding = [w for w, keys in client.has_what().items() if keys]
            if holding and not future.done():
                break
            time.sleep(0.02)
        assert holding and not future.done(), "the pass finished (or never started) before a worker could be killed"
        os.kill(pids[holding[0]], signal.SIGKILL)
        np.testing.assert_array_equal(future.result(timeout=120), expected)
        assert pids[holding[0]] not in client.run(os.getpid).values()  # that process is gone
