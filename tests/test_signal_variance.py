"""lazymask.signal.high_variance_confounds against nilearn, and the lazy block planning."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from nilearn import signal as nilearn_signal

from lazymask.exceptions import ParameterError
from lazymask.signal import clean, high_variance_confounds
from lazymask.signal._lazy import feature_chunks
from lazymask.testing import raise_if_dask_computes


@pytest.fixture(scope="module")
def series():
    rng = np.random.default_rng(3)
    latent = rng.standard_normal((60, 4))
    loadings = rng.standard_normal((4, 500)) * rng.uniform(0.1, 5, 500)
    return (latent @ loadings + rng.standard_normal((60, 500)) + np.linspace(0, 2, 60)[:, None]).astype(np.float32)


def assert_same_up_to_sign(actual, expected):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape
    signs = np.sign((actual * expected).sum(axis=0))
    np.testing.assert_allclose(actual * signs, expected, atol=1e-4)


@pytest.mark.parametrize("detrend", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_nilearn(detrend, dtype, series):
    data = series.astype(dtype)
    expected = nilearn_signal.high_variance_confounds(data, n_confounds=4, percentile=5, detrend=detrend)
    eager = high_variance_confounds(data, n_confounds=4, percentile=5, detrend=detrend)
    assert eager.dtype == expected.dtype == dtype
    assert_same_up_to_sign(eager, expected)
    for chunks in [(60, 100), (13, 500), (17, 77)]:
        with raise_if_dask_computes():
            lazy = high_variance_confounds(da.from_array(data, chunks=chunks), n_confounds=4, percentile=5,
                                           detrend=detrend)
        assert lazy.dtype == dtype and lazy.shape == (60, 4)
        assert_same_up_to_sign(lazy.compute(), expected)


def test_dataarray_and_use_as_confounds(series):
    array = xr.DataArray(da.from_array(series, chunks=(20, 250)), dims=("time", "voxel"),
                         coords={"time": np.arange(60) * 2.0})
    with raise_if_dask_computes():
        hv = high_variance_confounds(array, n_confounds=3)
        cleaned = clean(array, confounds=hv, t_r=2.0)
    assert hv.dims == ("time", "confound")
    np.testing.assert_array_equal(hv["time"], array["time"])
    expected = nilearn_signal.clean(series, confounds=nilearn_signal.high_variance_confounds(series, n_confounds=3))
    np.testing.assert_allclose(cleaned.values, expected, atol=2e-5 * np.abs(expected).max())


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"n_confounds": 0}, "n_confounds must be a positive integer; got 0"),
    ({"percentile": 120}, "percentile must be between 0 and 100; got 120"),
])
def test_bad_parameters(kwargs, match, series):
    with pytest.raises(ParameterError, match=match):
        high_variance_confounds(series, **kwargs)


@pytest.mark.parametrize(("n_time", "chunks", "expected"), [
    (1200, (1000, 1000), (1000, 1000)),  # small whole-time blocks: kept as they came
    (1200, (50000,), (6250,) * 8),  # one huge block: as many as 32 MiB blocks (a zarr chunk's), even
    (200, (219454,), (36576,) * 5 + (36574,)),  # not 5 full blocks and a quarter of one
    (100, (7, 7, 3), (7, 7, 3)),
])
def test_feature_chunks(n_time, chunks, expected):
    assert feature_chunks(n_time, chunks, 4) == expected
    assert sum(feature_chunks(n_time, chunks, 4)) == sum(chunks)


def test_time_chunked_input_is_rechunked_to_bounded_blocks():
    signals = da.zeros((1200, 50000), dtype=np.float32, chunks=(100, 50000))
    cleaned = clean(signals, standardize=None, detrend=False)
    assert cleaned.chunks[0] == (1200,)
    assert max(cleaned.chunks[1]) * 1200 * 4 <= 128 * 2**20
