"""The shared gzip stream: any sequence of range reads returns exactly the decompressed bytes."""

import gzip
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lazymask.exceptions import CorruptImageError
from lazymask.io import _gzip
from lazymask.storage import file_identity

PAYLOAD = np.random.default_rng(0).integers(0, 40, 300_000, dtype=np.uint8).tobytes()  # compressible


@pytest.fixture(scope="module")
def gz_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("gz") / "payload.gz"
    path.write_bytes(gzip.compress(PAYLOAD[:100_000]) + gzip.compress(PAYLOAD[100_000:]))  # 2 members
    return str(path)


reads = st.lists(
    st.tuples(st.integers(0, len(PAYLOAD) - 1), st.integers(1, 40_000)), min_size=1, max_size=12
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(reads=reads, step=st.sampled_from([1 << 12, 1 << 14, 1 << 16]))
def test_any_order_of_reads_returns_the_right_bytes(gz_file, monkeypatch, reads, step):
    monkeypatch.setattr(_gzip, "_STEP", step)
    stream = _gzip.GzipStream(gz_file)
    for offset, length in reads:
        length = min(length, len(PAYLOAD) - offset)
        out = bytearray(length)
        stream.read_into(offset, memoryview(out))
        assert bytes(out) == PAYLOAD[offset : offset + length]


def test_concurrent_readers_share_one_stream(gz_file):
    ranges = [(offset, 10_000) for offset in range(0, 290_000, 10_000)][::-1]
    results = {}

    def read(offset, length):
        out = bytearray(length)
        _gzip.read_gzip_range(file_identity(gz_file), offset, out)
        results[offset] = bytes(out)

    threads = [threading.Thread(target=read, args=r) for r in ranges]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(results[offset] == PAYLOAD[offset : offset + 10_000] for offset, _ in ranges)


def test_reading_past_the_end_names_the_file(gz_file):
    with pytest.raises(CorruptImageError, match=r"payload\.gz: the gzip stream ends after"):
        _gzip.read_gzip_range(file_identity(gz_file), len(PAYLOAD) - 10, bytearray(20))


def test_corrupt_stream_names_the_file(tmp_path):
    data = bytearray(gzip.compress(PAYLOAD))
    data[5000:5100] = b"\xff" * 100
    path = tmp_path / "broken.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptImageError, match=r"broken\.gz: the gzip stream is corrupt"):
        _gzip.read_gzip_range(file_identity(path), 0, bytearray(len(PAYLOAD)))


def test_forward_reads_use_isal_and_a_jump_back_takes_checkpoints(gz_file, monkeypatch):
    from isal import isal_zlib
    import zlib

    monkeypatch.setattr(_gzip, "_STEP", 1 << 14)
    stream = _gzip.GzipStream(gz_file)
    produced = []
    original = stream._produce
    monkeypatch.setattr(stream, "_produce", lambda n: (lambda c: (produced.append(len(c)), c)[1])(original(n)))
    for offset in range(0, 290_000, 10_000):  # a pass in order: ISA-L, no checkpoint (it cannot copy)
        out = bytearray(10_000)
        stream.read_into(offset, memoryview(out))
        assert bytes(out) == PAYLOAD[offset : offset + 10_000]
    assert stream._library is isal_zlib and not stream._checkpoints
    stream.read_into(0, memoryview(bytearray(100)))  # a new pass from the start: ISA-L again
    assert stream._library is isal_zlib
    stream.read_into(200_000, memoryview(bytearray(100)))
    out = bytearray(100)
    stream.read_into(150_000, memoryview(out))  # far back, no checkpoint: zlib, with checkpoints
    assert bytes(out) == PAYLOAD[150_000:150_100]
    assert stream._library is zlib and len(stream._checkpoints) >= 150_000 // (1 << 14) - 1
    produced.clear()
    for offset in (140_000, 20_000, 90_000):  # random access now resumes from checkpoints
        out = bytearray(1000)
        stream.read_into(offset, memoryview(out))
        assert bytes(out) == PAYLOAD[offset : offset + 1000]
    assert sum(produced) <= 3 * ((1 << 14) + 1000)


def test_a_finished_pass_keeps_no_reader(gz_file):
    """A stream stays cached between passes (16 per process) but holds no ISA-L reader -- whose
    input buffer takes memory malloc kept resident -- once a pass has read to the end, or failed:
    the next pass makes one, and reads the same bytes."""
    stream = _gzip.GzipStream(gz_file)
    assert stream._reader is None  # none until the first read
    for _ in range(2):
        out = bytearray(len(PAYLOAD))
        stream.read_into(0, memoryview(out), to_end=True)
        assert bytes(out) == PAYLOAD
        assert stream._reader is None and stream.position == 0
    with pytest.raises(CorruptImageError):
        stream.read_into(len(PAYLOAD) - 10, memoryview(bytearray(100)))  # past the end
    assert stream._reader is None
    part = bytearray(1000)
    stream.read_into(5000, memoryview(part))
    assert bytes(part) == PAYLOAD[5000:6000] and stream._reader is not None  # within a pass: kept


@pytest.mark.parametrize("reader", ["zlib", "isal"])
def test_same_bytes_with_either_forward_decompressor(gz_file, monkeypatch, reader):
    monkeypatch.setattr(_gzip, "_READER", reader)
    stream = _gzip.GzipStream(gz_file)
    out = bytearray(len(PAYLOAD))
    stream.read_into(0, memoryview(out), to_end=True)
    assert bytes(out) == PAYLOAD


def test_changed_file_is_refused(tmp_path):
    from lazymask.exceptions import SourceChangedError

    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(PAYLOAD))
    identity = file_identity(path)
    path.write_bytes(gzip.compress(PAYLOAD[::-1]))
    with pytest.raises(SourceChangedError, match=r"x\.gz: the file changed after it was opened"):
        _gzip.read_gzip_range(identity, 0, bytearray(10))
