"""lazymask's tunable sizes, in one place: chunk budgets and the memory budget.

Every block size the library chooses is named here, with what was measured to choose it, so that
a newcomer finds them together and a user can change them for one job::

    with lazymask.config.set(memory_budget=4 * 2**30):
        masker.fit_transform(img)

Values are read when a graph is *built*, never when it runs, so a graph sent to a cluster does not
depend on the workers' settings.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from lazymask.exceptions import ParameterError

MiB = 2**20

_DEFAULTS: dict[str, int] = {
    # open_nifti(chunks="auto"): whole volumes adding up to at most this. Measured on a 2 mm int16
    # run of 1200 volumes (bench_io, mean over time): 29 MiB chunks read the .nii.gz in 7.6 s against
    # 8.1 s for 64 MiB ones; for a .nii 64 MiB was faster (0.9 s vs 1.2 s); same peak memory.
    "auto_chunk_bytes": 30 * MiB,
    # zarr chunks of images and signals: within the 16-64 MiB that suits object stores and workers.
    "zarr_chunk_bytes": 32 * MiB,
    # apply_mask/unmask: time chunks of the (time x voxel) output are at most this.
    "mask_chunk_bytes": 64 * MiB,
    # signal.clean: a (all time x some features) block is kept as it came below the first, else
    # features are rechunked to blocks of about the second: as wide as a stored zarr chunk, so that
    # save_signals needs no rechunk (bench_scale, 1200 x 207k band-passed to zarr: 24 MiB blocks
    # re-cut into 32 MiB chunks peaked at 0.94 GB, 32 MiB blocks at 0.46 GB).
    "clean_max_block_bytes": 32 * MiB,
    "clean_target_block_bytes": 32 * MiB,
    # Butterworth filtering: columns filtered in one vectorised sosfiltfilt call.
    "filter_batch_bytes": 16 * MiB,
    # confound projections etc.: column batches of one numpy kernel call.
    "kernel_batch_bytes": 8 * MiB,
    # the all-to-all step (time chunks -> voxel blocks) stays in memory below this, else goes
    # through an on-disk intermediate. Default 2 GiB, a fraction of a typical worker's memory.
    "memory_budget": 2 * 2**30,
}

_local = threading.local()


def _settings() -> dict[str, int]:
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = [dict(_DEFAULTS)]
    return stack[-1]


def get(name: str) -> int:
    """The current value of a setting.

    Parameters
    ----------
    name : str
        One of the names in :data:`_DEFAULTS` (for example ``"auto_chunk_bytes"``).

    Returns
    -------
    int
        Its value in bytes.

    Examples
    --------
    >>> from lazymask import config
    >>> config.get("auto_chunk_bytes") == 30 * 2**20
    True
    """
    settings = _settings()
    if name not in settings:
        raise ParameterError(f"unknown lazymask setting {name!r}; known settings: {sorted(settings)}.")
    return settings[name]


@contextlib.contextmanager
def set(**values: int) -> Iterator[None]:  # noqa: A001 - the name dask.config uses
    """Change settings within a ``with`` block (this thread only).

    Parameters
    ----------
    **values : int
        Settings to change, in bytes; each must be a positive integer.

    Examples
    --------
    >>> from lazymask import config
    >>> with config.set(memory_budget=2**30):
    ...     config.get("memory_budget")
    1073741824
    >>> config.get("memory_budget") == 2 * 2**30
    True
    """
    current = dict(_settings())
    for name, value in values.items():
        if name not in current:
            raise ParameterError(f"unknown lazymask setting {name!r}; known settings: {sorted(current)}.")
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ParameterError(f"lazymask setting {name}={value!r}: expected a positive integer (bytes).")
        current[name] = value
    _local.stack = [*getattr(_local, "stack", [dict(_DEFAULTS)]), current]
    try:
        yield
    finally:
        _local.stack.pop()
