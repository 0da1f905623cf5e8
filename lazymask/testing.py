"""Helpers for tests: a scheduler that refuses to compute, a voxel-read counter, fake fMRI runs.

Imports no masker. Everything here is deterministic (seeded).
"""

from __future__ import annotations

import contextlib
import threading

import dask
import nibabel as nib
import numpy as np


class CountingScheduler:
    """A dask scheduler that counts its calls and raises once more than ``max_computes`` happen."""

    def __init__(self, max_computes: int = 0):
        self.total_computes = 0
        self.max_computes = max_computes

    def __call__(self, dsk, keys, **kwargs):
        self.total_computes += 1
        if self.total_computes > self.max_computes:
            raise RuntimeError(
                f"Too many dask computations were scheduled: {self.total_computes} "
                f"(max_computes={self.max_computes})"
            )
        return dask.get(dsk, keys, **kwargs)


@contextlib.contextmanager
def raise_if_dask_computes(max_computes: int = 0):
    """Within the block, any dask computation beyond ``max_computes`` raises ``RuntimeError``.

    Examples
    --------
    >>> with raise_if_dask_computes():
    ...     lazy = img.mean("time")   # building a graph: fine   # doctest: +SKIP
    """
    scheduler = CountingScheduler(max_computes)
    with dask.config.set(scheduler=scheduler):
        yield scheduler


def chunk_scheduler_cases(chunkings=(1, 7, -1), on_processes=7):
    """The ``(chunks, scheduler)`` pairs of an invariance test.

    Every chunking on the threaded and the synchronous schedulers, and one (``on_processes``) on
    the process pool: spawning workers is slow, and one chunking is enough to show it.

    Examples
    --------
    >>> chunk_scheduler_cases((1, 7))
    [(1, 'threads'), (1, 'sync'), (7, 'threads'), (7, 'processes'), (7, 'sync')]
    """
    return [(chunks, scheduler) for chunks in chunkings for scheduler in ("threads", "processes", "sync")
            if scheduler != "processes" or chunks == on_processes]


class ReadCounter:
    """Counts the voxel reads of :class:`lazymask.io._reader.VolumeReader` (calls and volumes)."""

    def __init__(self):
        self.calls = 0
        self.volumes = 0
        self._lock = threading.Lock()

    def record(self, n_volumes: int) -> None:
        with self._lock:
            self.calls += 1
            self.volumes += n_volumes


@contextlib.contextmanager
def count_voxel_reads():
    """Count every read of voxel data from a file in this process (threaded/sync schedulers).

    Yields a :class:`ReadCounter`; ``counter.calls == 0`` proves that nothing read voxels.
    """
    from lazymask.io import VolumeReader

    counter = ReadCounter()
    original = VolumeReader.read

    def counting_read(self, start, stop):
        counter.record(stop - start)
        return original(self, start, stop)

    VolumeReader.read = counting_read
    try:
        yield counter
    finally:
        VolumeReader.read = original


def fake_brain(shape=(20, 24, 20), seed=0):
    """A smooth brain-shaped 3D intensity (float64) and its brain mask, deterministic.

    The brain is an ellipsoid with white matter (dimmer core), grey matter (brighter shell) and
    CSF-like pockets, on a zero background.
    """
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    radius = np.sqrt((grid**2 / np.array([0.8, 0.85, 0.75])[:, None, None, None] ** 2).sum(0))
    wobble = 0.04 * np.sin(5 * grid[0] + rng.uniform(0, 6)) * np.cos(4 * grid[1] + rng.uniform(0, 6))
    radius = radius + wobble
    brain = radius < 1.0
    intensity = np.where(radius < 0.55, 700.0, 1000.0)  # white matter core, grey matter shell
    intensity = np.where((radius > 0.25) & (radius < 0.33), 1300.0, intensity)  # ventricle-like
    return np.where(brain, intensity, 0.0), brain


def fake_fmri(
    shape=(20, 24, 20),
    n_volumes=30,
    *,
    t_r=2.0,
    voxel_size=3.0,
    dtype="int16",
    background="noisy",
    activation=True,
    seed=0,
):
    """A deterministic synthetic EPI run as a ``nibabel.Nifti1Image``.

    Parameters
    ----------
    shape : tuple of 3 int
        Spatial shape.
    n_volumes : int
        Number of volumes.
    t_r : float
        Repetition time in seconds (stored in the header).
    voxel_size : float
        Isotropic voxel size in mm; the affine centres the grid on the origin.
    dtype : str
        On-disk dtype (``"int16"`` like a scanner, or a float type).
    background : {"noisy", "zero", "nan"}
        Raw-EPI-like noise outside the brain, an exact-zero background (an already-masked run),
        or NaN outside the brain.
    activation : bool
        Add a block-design activation in a blob.
    seed : int
        Seed of the noise.

    Returns
    -------
    nibabel.Nifti1Image
    """
    rng = np.random.default_rng(seed)
    base, brain = fake_brain(shape, seed)
    time = np.arange(n_volumes)
    drift = 1.0 + 0.02 * time / max(n_volumes - 1, 1) + 0.005 * np.sin(2 * np.pi * time / 40.0)
    data = base[..., None] * drift
    if activation:
        blocks = ((time // 8) % 2).astype(float)
        centre = np.array(shape) // 3
        blob = np.exp(-((np.indices(shape) - centre[:, None, None, None]) ** 2).sum(0) / 8.0)
        data = data + 40.0 * blob[..., None] * blocks * brain[..., None]
    data = data + rng.normal(0.0, 15.0, data.shape) * brain[..., None]
    if background == "noisy":
        data = data + np.abs(rng.normal(0.0, 25.0, data.shape)) * ~brain[..., None]
    elif background == "nan":
        data = np.where(brain[..., None], data, np.nan)
    elif background != "zero":
        raise ValueError(f"background={background!r}: expected 'noisy', 'zero' or 'nan'")
    if np.dtype(dtype).kind in "iu":
        data = np.round(data)
    affine = np.diag([voxel_size, voxel_size, voxel_size, 1.0])
    affine[:3, 3] = -voxel_size * (np.array(shape) - 1) / 2.0
    img = nib.Nifti1Image(data.astype(dtype), affine)
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_zooms((voxel_size,) * 3 + (t_r,))
    return img


class S3TestServer:
    """A real S3 API server (moto's server mode) on loopback, for tests and benchmarks.

    Started by :func:`s3_test_server`; ``endpoint_url`` is where it listens and
    :attr:`storage_options` are the fsspec options that reach it (fake credentials, path-style).
    :meth:`bucket` makes a fresh, empty bucket and returns its ``s3://`` URL.
    """

    def __init__(self, endpoint_url: str):
        self.endpoint_url = endpoint_url
        self._buckets = 0

    @property
    def storage_options(self) -> dict:
        return {"endpoint_url": self.endpoint_url, "key": "lazymask-test", "secret": "lazymask-test",
                "client_kwargs": {"region_name": "us-east-1"}}

    def client(self):
        """A boto3 client of the server (to make buckets, inject faults, list keys)."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, aws_access_key_id="lazymask-test",
                            aws_secret_access_key="lazymask-test", region_name="us-east-1")

    def bucket(self, prefix: str = "lazymask-test", *, versioned: bool = False, public: bool = False) -> str:
        """A new empty bucket; its URL (``s3://<name>``). ``public``: anyone may list and read it."""
        self._buckets += 1
        name = f"{prefix}-{self._buckets}-{threading.get_ident() % 10_000}"
        client = self.client()
        client.create_bucket(Bucket=name)
        if versioned:
            client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        if public:
            import json

            # S3 lets s3:GetObject answer HEAD requests too; moto checks HEAD as "s3:HeadObject"
            statement = {"Effect": "Allow", "Principal": "*",
                         "Action": ["s3:GetObject", "s3:HeadObject", "s3:ListBucket"],
                         "Resource": [f"arn:aws:s3:::{name}", f"arn:aws:s3:::{name}/*"]}
            client.put_bucket_policy(Bucket=name, Policy=json.dumps({"Version": "2012-10-17",
                                                                     "Statement": [statement]}))
        return f"s3://{name}"

    def icechunk_storage(self, url: str):
        """icechunk's storage for the prefix ``url`` (``s3://bucket/prefix``) of this server."""
        import icechunk

        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        return icechunk.s3_storage(bucket=bucket, prefix=prefix or None, endpoint_url=self.endpoint_url,
                                   allow_http=True, region="us-east-1", access_key_id="lazymask-test",
                                   secret_access_key="lazymask-test", force_path_style=True)


@contextlib.contextmanager
def s3_test_server():
    """Start moto's S3 server on 127.0.0.1 (a free port) for the block; yields an :class:`S3TestServer`.

    Needs the test dependency ``moto[server]``. The server answers on loopback only and stops at
    the end of the block.

    Examples
    --------
    >>> with s3_test_server() as server:                                   # doctest: +SKIP
    ...     url = server.bucket()
    ...     lazymask.to_zarr(img, f"{url}/img.zarr", storage_options=server.storage_options)
    """
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield S3TestServer(f"http://{host}:{port}")
    finally:
        server.stop()
