"""lazymask.signal.clean against nilearn.signal.clean, on numpy, dask and xarray input."""

from __future__ import annotations

import warnings

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from nilearn import signal as nilearn_signal
from scipy.interpolate import CubicSpline

from lazymask.exceptions import AllVolumesRemovedError, DimensionError, ParameterError
from lazymask.signal import SampleMaskError, clean
from lazymask.testing import raise_if_dask_computes

N_TIME, N_FEATURES = 80, 24
T_R = 2.0


@pytest.fixture(scope="module")
def signals():
    rng = np.random.default_rng(0)
    trend = np.linspace(0, 3, N_TIME)[:, None]
    slow = np.sin(np.arange(N_TIME) / 9.0)[:, None] * rng.uniform(0.5, 2, N_FEATURES)
    noise = rng.standard_normal((N_TIME, N_FEATURES)) * rng.uniform(0.5, 3, N_FEATURES)
    return (100 + rng.uniform(-20, 20, N_FEATURES) + trend + slow + noise).astype(np.float64)


@pytest.fixture(scope="module")
def confounds():
    rng = np.random.default_rng(1)
    return rng.standard_normal((N_TIME, 3)) + np.linspace(0, 1, N_TIME)[:, None]


def nilearn_clean(signals, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return nilearn_signal.clean(signals, **kwargs)


def lazymask_clean(signals, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return clean(signals, **kwargs)


def assert_float32_close(actual, expected):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(actual, expected, rtol=2e-5, atol=2e-5 * scale)


def kept_mask(censored, n=N_TIME):
    mask = np.ones(n, dtype=bool)
    mask[list(censored)] = False
    return mask


# Censored volumes whose mirror images (n - 1 - i) are all kept: the only scrubbing nilearn 0.14
# interpolates correctly (see test_censored_volumes_are_the_interpolated_ones).
MIRROR_SAFE_MASK = kept_mask([0, 1, 17, 18, 40, 66])

CASES = {
    "defaults": {},
    "no detrend": {"detrend": False},
    "zscore_sample": {"standardize": "zscore_sample"},
    "standardize True": {"standardize": True},
    "standardize False": {"standardize": False},
    "standardize None": {"standardize": None},
    "psc": {"standardize": "psc"},
    "psc no detrend": {"standardize": "psc", "detrend": False},
    "psc high-pass no detrend": {"standardize": "psc", "detrend": False, "high_pass": 0.02, "t_r": T_R},
    "psc low-pass no detrend": {"standardize": "psc", "detrend": False, "low_pass": 0.1, "t_r": T_R},
    "confounds": {"confounds": "array"},
    "confounds not standardized": {"confounds": "array", "standardize_confounds": False},
    "confounds dataframe": {"confounds": "dataframe"},
    "confounds tsv": {"confounds": "tsv"},
    "confounds csv without header": {"confounds": "csv"},
    "confounds list": {"confounds": "list"},
    "confounds no detrend": {"confounds": "array", "detrend": False},
    "low-pass": {"low_pass": 0.1, "t_r": T_R},
    "high-pass": {"high_pass": 0.02, "t_r": T_R},
    "band-pass confounds": {"low_pass": 0.1, "high_pass": 0.02, "t_r": T_R, "confounds": "array"},
    "butterworth order 3, even pad": {"low_pass": 0.1, "t_r": T_R, "butterworth__order": 3,
                                      "butterworth__padtype": "even"},
    "cosine": {"filter": "cosine", "high_pass": 0.01, "t_r": T_R},
    "cosine confounds": {"filter": "cosine", "high_pass": 0.02, "t_r": T_R, "confounds": "array"},
    "no filter with cutoffs": {"filter": False, "low_pass": 0.1, "t_r": T_R},
    "sample_mask": {"sample_mask": MIRROR_SAFE_MASK, "confounds": "array"},
    "sample_mask indices": {"sample_mask": np.flatnonzero(MIRROR_SAFE_MASK)},
    "sample_mask band-pass": {"sample_mask": MIRROR_SAFE_MASK, "low_pass": 0.1, "high_pass": 0.02,
                              "t_r": T_R, "confounds": "array"},
    "sample_mask indices low-pass": {"sample_mask": np.flatnonzero(MIRROR_SAFE_MASK), "low_pass": 0.1,
                                     "t_r": T_R},
    "sample_mask extrapolate": {"sample_mask": MIRROR_SAFE_MASK, "low_pass": 0.1, "t_r": T_R,
                                "extrapolate": True},
    "sample_mask cosine": {"sample_mask": MIRROR_SAFE_MASK, "filter": "cosine", "high_pass": 0.01,
                           "t_r": T_R, "confounds": "array"},
    "runs": {"runs": np.repeat([0, 1], N_TIME // 2), "confounds": "array", "low_pass": 0.1, "t_r": T_R},
    "runs unsorted labels": {"runs": np.repeat([3, 1], N_TIME // 2), "standardize": "psc"},
    "runs sample_mask": {"runs": np.repeat([0, 1], N_TIME // 2), "high_pass": 0.02, "t_r": T_R,
                         "sample_mask": [kept_mask([3, 10], 40), kept_mask([0, 20, 21], 40)]},
}


def _resolve_confounds(kind, confounds, tmp_path):
    if kind == "array":
        return confounds
    if kind == "dataframe":
        return pd.DataFrame(confounds, columns=["a", "b", "c"])
    if kind == "tsv":
        path = tmp_path / "confounds.tsv"
        pd.DataFrame(confounds, columns=["a", "b", "c"]).to_csv(path, sep="\t", index=False)
        return str(path)
    if kind == "csv":
        path = tmp_path / "confounds.csv"
        np.savetxt(path, confounds, delimiter=",")
        return path
    return [confounds[:, :1], pd.DataFrame(confounds[:, 1:])]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", list(CASES))
def test_matches_nilearn(case, dtype, signals, confounds, tmp_path):
    kwargs = dict(CASES[case])
    if "confounds" in kwargs:
        kwargs["confounds"] = _resolve_confounds(kwargs["confounds"], confounds, tmp_path)
    data = signals.astype(dtype)
    expected = nilearn_clean(data, **kwargs)
    ours = lazymask_clean(data, **kwargs)
    assert isinstance(ours, np.ndarray) and ours.dtype == expected.dtype == dtype
    assert_float32_close(ours, expected)
    lazy = lazymask_clean(da.from_array(data, chunks=(N_TIME // 3, 7)), **kwargs)
    assert isinstance(lazy, da.Array) and lazy.dtype == dtype
    assert_float32_close(lazy.compute(), expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_non_finite_values_with_ensure_finite(dtype, signals):
    data = signals.astype(dtype)
    data[5, 3], data[10, 7], data[0, 0] = np.nan, np.inf, -np.inf
    expected = nilearn_clean(data, ensure_finite=True, low_pass=0.1, t_r=T_R)
    assert np.isfinite(expected).all()
    assert_float32_close(lazymask_clean(data, ensure_finite=True, low_pass=0.1, t_r=T_R), expected)
    lazy = lazymask_clean(da.from_array(data, chunks=(40, 5)), ensure_finite=True, low_pass=0.1, t_r=T_R)
    assert_float32_close(lazy.compute(), expected)


@pytest.mark.parametrize(("dtype", "expected_dtype"), [(np.int16, np.float32), (np.int64, np.float64)])
def test_integer_input_dtype(dtype, expected_dtype, signals):
    data = signals.astype(dtype)
    expected = nilearn_clean(data)
    ours = clean(data)
    assert ours.dtype == expected.dtype == expected_dtype
    assert_float32_close(ours, expected)


def test_zscore_uses_ddof_0(signals):
    sample = clean(signals, standardize="zscore_sample")
    population = clean(signals, standardize="zscore")
    np.testing.assert_allclose(population, sample * np.sqrt(N_TIME / (N_TIME - 1)), rtol=1e-10)
    np.testing.assert_allclose(population.std(axis=0), 1.0, rtol=1e-10)


def test_fmriprep_leading_na_in_confounds(signals, confounds, tmp_path):
    path = tmp_path / "desc-confounds_timeseries.tsv"
    frame = pd.DataFrame(confounds, columns=["trans_x", "trans_x_derivative1", "trans_x_power2"])
    frame.iloc[0, 1] = np.nan
    frame.to_csv(path, sep="\t", index=False, na_rep="n/a")
    assert "n/a" in path.read_text()
    filled = frame.to_numpy().copy()
    filled[0, 1] = filled[1, 1]  # what nilearn's load_confounds does before clean
    expected = nilearn_clean(signals, confounds=filled)
    assert_float32_close(clean(signals, confounds=path), expected)
    assert_float32_close(clean(signals, confounds=pd.read_csv(path, sep="\t")), expected)


# --- the two nilearn 0.14 bugs -------------------------------------------------------------------

RUNS = np.repeat([0, 1], N_TIME // 2)
PER_RUN_OPTIONS = {
    "standardize_confounds": {"confounds": "array", "standardize_confounds": False, "detrend": False},
    "extrapolate": {"low_pass": 0.1, "t_r": T_R, "extrapolate": True,
                    "sample_mask": [kept_mask([0, 1, 12], 40), kept_mask([5, 38, 39], 40)]},
    "butterworth options": {"low_pass": 0.1, "t_r": T_R, "butterworth__order": 2,
                            "butterworth__padtype": "constant"},
}


@pytest.mark.parametrize("option", list(PER_RUN_OPTIONS))
def test_runs_forward_every_option(option, signals, confounds):
    kwargs = dict(PER_RUN_OPTIONS[option])
    if kwargs.get("confounds") == "array":
        kwargs["confounds"] = confounds
    masks = kwargs.pop("sample_mask", [None, None])
    per_run = []
    for label, mask in zip((0, 1), masks):
        rows = RUNS == label
        run_kwargs = {**kwargs, "sample_mask": mask}
        if "confounds" in kwargs:
            run_kwargs["confounds"] = kwargs["confounds"][rows]
        per_run.append(nilearn_clean(signals[rows], **run_kwargs))
    expected = np.vstack(per_run)
    ours = lazymask_clean(signals, runs=RUNS, sample_mask=masks if masks[0] is not None else None, **kwargs)
    assert_float32_close(ours, expected)
    nilearn_runs = nilearn_clean(signals, runs=RUNS, sample_mask=masks if masks[0] is not None else None, **kwargs)
    assert not np.allclose(nilearn_runs, expected, atol=1e-3), "nilearn drops this option per run"


def test_censored_volumes_are_the_interpolated_ones(signals):
    censored = [30, 49]  # mirror images of each other: nilearn 0.14 interpolates neither
    mask = kept_mask(censored)
    kept = np.flatnonzero(mask)
    times = np.arange(N_TIME) * T_R
    interpolated = signals.copy()
    interpolated[censored] = CubicSpline(times[kept], signals[kept], axis=0)(times[censored])
    options = {"low_pass": 0.1, "t_r": T_R, "standardize": None}  # censoring comes before scaling
    expected = nilearn_clean(interpolated, **options)[mask]
    for sample_mask in (mask, kept):
        assert_float32_close(clean(signals, sample_mask=sample_mask, **options), expected)
    assert not np.allclose(nilearn_clean(signals, sample_mask=mask, **options), expected, atol=1e-3)


# --- laziness, chunking, xarray ------------------------------------------------------------------


def test_lazy_builds_without_computing(signals, confounds):
    lazy_signals = da.from_array(signals.astype(np.float32), chunks=(10, 24))
    lazy_confounds = da.from_array(confounds, chunks=(20, 3))
    with raise_if_dask_computes():
        cleaned = clean(lazy_signals, confounds=lazy_confounds, low_pass=0.1, t_r=T_R,
                        sample_mask=MIRROR_SAFE_MASK, standardize="psc")
    assert cleaned.shape == (MIRROR_SAFE_MASK.sum(), N_FEATURES)
    assert cleaned.dtype == np.float32 and cleaned.chunks[0] == (MIRROR_SAFE_MASK.sum(),)
    expected = nilearn_clean(signals.astype(np.float32), confounds=confounds, low_pass=0.1, t_r=T_R,
                             sample_mask=MIRROR_SAFE_MASK, standardize="psc")
    assert_float32_close(cleaned.compute(), expected)


@pytest.mark.parametrize("chunks", [(80, 1), (80, 5), (7, 24), (13, 10), (80, 24)])
def test_chunk_invariance(chunks, signals, confounds):
    kwargs = {"confounds": confounds, "low_pass": 0.1, "high_pass": 0.02, "t_r": T_R,
              "runs": RUNS, "sample_mask": [kept_mask([3], 40), kept_mask([7, 8], 40)]}
    reference = clean(signals, **kwargs)
    cleaned = clean(da.from_array(signals, chunks=chunks), **kwargs)
    assert cleaned.chunks[0] == (reference.shape[0],)
    np.testing.assert_allclose(cleaned.compute(), reference, rtol=1e-12, atol=1e-12)


def test_dataarray_keeps_coords_and_attrs(signals):
    array = xr.DataArray(
        da.from_array(signals, chunks=(20, 12)), dims=("time", "voxel"),
        coords={"time": np.arange(N_TIME) * T_R, "i": ("voxel", np.arange(N_FEATURES))},
        attrs={"t_r": T_R, "source": "test"}, name="bold",
    )
    with raise_if_dask_computes():
        cleaned = clean(array, sample_mask=MIRROR_SAFE_MASK, t_r=T_R)
    assert isinstance(cleaned, xr.DataArray) and isinstance(cleaned.data, da.Array)
    assert cleaned.dims == ("time", "voxel") and cleaned.attrs == array.attrs and cleaned.name == "bold"
    np.testing.assert_array_equal(cleaned["time"], array["time"][MIRROR_SAFE_MASK])
    np.testing.assert_array_equal(cleaned["i"], array["i"])
    assert_float32_close(cleaned.values, nilearn_clean(signals, sample_mask=MIRROR_SAFE_MASK))
    eager = clean(array.compute())
    assert isinstance(eager.data, np.ndarray)


def test_runs_output_in_sorted_label_order(signals):
    runs = np.repeat([5, 2], N_TIME // 2)
    array = xr.DataArray(signals, dims=("time", "voxel"), coords={"time": np.arange(N_TIME)})
    cleaned = clean(array, runs=runs)
    np.testing.assert_array_equal(cleaned["time"], np.r_[np.arange(40, 80), np.arange(40)])


# --- bad input -----------------------------------------------------------------------------------

BAD_INPUT = [
    ({"confounds": np.zeros((N_TIME - 1, 2))}, ParameterError, r"confounds has 79 rows but the signals have 80"),
    ({"confounds": [np.zeros(N_TIME), np.zeros(3)]}, ParameterError, r"confounds\[1\] has 3 rows"),
    ({"low_pass": 0.1, "t_r": None}, ParameterError, r"Repetition time \(t_r\) must be specified for butterworth filtering.*got t_r=None"),
    ({"filter": "cosine", "high_pass": None}, ParameterError, r"filter='cosine' needs"),
    ({"low_pass": 0.01, "high_pass": 0.1}, ParameterError, r"High pass cutoff frequency \(0.1\) is greater than or equal to low pass filter frequency \(0.01\)"),
    ({"sample_mask": np.array([0, 5, 80])}, SampleMaskError, r"out of range: \[80\]; indices must be in \[0, 79\]"),
    ({"sample_mask": np.ones(70, bool)}, SampleMaskError, r"boolean mask of shape \(70,\)"),
    ({"sample_mask": np.array([-1, 3])}, IndexError, r"out of range: \[-1\]"),
    ({"sample_mask": np.zeros(N_TIME, bool)}, AllVolumesRemovedError, r"The size of the sample mask is 0.* removes every volume"),
    ({"runs": np.zeros(N_TIME - 2)}, ParameterError, r"80 time points but runs has shape \(78,\)"),
    ({"runs": RUNS, "sample_mask": kept_mask([1])}, ParameterError, r"got 1 mask\(s\) for 2 run\(s\)"),
    ({"standardize": "zscores"}, ParameterError, r"standardize='zscores' is not a known strategy"),
    ({"filter": "bessel"}, ParameterError, r"filter='bessel' is not a known filter"),
    ({"butterworth__orders": 3}, ParameterError, r"unknown keyword argument 'butterworth__orders'"),
    ({"confounds": "/nonexistent/confounds.tsv"}, ParameterError, r"does not exist"),
    ({"confounds": np.full((N_TIME, 1), np.nan)}, ParameterError, r"non-finite value"),
    ({"low_pass": 0.1, "butterworth__padlen": N_TIME}, ParameterError,
     r"order 5 \(low_pass=0.1 Hz, t_r=2.5 s\) pads each series by 80 time points and needs more than 80, but "
     r"the signals have 80 time point\(s\) to filter\. Use a longer run, a smaller butterworth__padlen"),
    ({"low_pass": 0.1, "high_pass": 0.01, "t_r": T_R, "runs": np.repeat([0, 1], [70, 10])}, ParameterError,
     r"pads each series by 33 time points .* but run 2 of 2 has 10 time point\(s\)"),
]


@pytest.mark.parametrize(("kwargs", "error", "match"), BAD_INPUT)
def test_bad_input_is_a_clear_error(kwargs, error, match, signals):
    with pytest.raises(error, match=match):
        clean(signals, **kwargs)
    if "confounds" not in kwargs:  # raised while building the graph, before any compute
        with raise_if_dask_computes(), pytest.raises(error, match=match):
            clean(da.from_array(signals), **kwargs)


def test_signals_must_be_2d(signals):
    with pytest.raises(DimensionError, match=r"must be 2D \(time, features\); got shape \(80,\)"):
        clean(signals[:, 0])


def test_kernel_batches_columns_without_changing_results(signals, confounds, monkeypatch):
    kwargs = {"confounds": confounds, "low_pass": 0.1, "t_r": T_R, "sample_mask": MIRROR_SAFE_MASK,
              "standardize": "psc"}
    reference = clean(signals, **kwargs)
    monkeypatch.setattr("lazymask.signal._clean.BATCH_BYTES", 8 * N_TIME * 5)  # 5 columns per batch
    np.testing.assert_allclose(clean(signals, **kwargs), reference, rtol=1e-12, atol=1e-12)


def test_dataarray_with_time_last_is_an_error(signals):
    array = xr.DataArray(signals.T, dims=("voxel", "time"))
    with pytest.raises(DimensionError, match=r"time must come first.*transpose\('time', \.\.\.\)"):
        clean(array)


def test_same_result_with_the_processes_scheduler(signals, confounds):
    import dask

    lazy = clean(da.from_array(signals, chunks=(40, 8)), confounds=confounds, runs=RUNS, low_pass=0.1, t_r=T_R)
    with dask.config.set(scheduler="processes", num_workers=2):
        in_processes = lazy.compute()
    np.testing.assert_array_equal(in_processes, lazy.compute(scheduler="sync"))


@settings(max_examples=12, deadline=None)
@given(time_chunk=st.integers(1, N_TIME), feature_chunk=st.integers(1, N_FEATURES),
       standardize=st.sampled_from(["zscore_sample", "zscore", "psc", None]))
def test_property_any_chunking_gives_the_eager_result(time_chunk, feature_chunk, standardize):
    rng = np.random.default_rng(time_chunk * 100 + feature_chunk)
    data = rng.standard_normal((N_TIME, N_FEATURES)) + 50
    kwargs = {"standardize": standardize, "high_pass": 0.02, "t_r": T_R, "sample_mask": MIRROR_SAFE_MASK}
    eager = clean(data, **kwargs)
    lazy = clean(da.from_array(data, chunks=(time_chunk, feature_chunk)), **kwargs)
    np.testing.assert_allclose(lazy.compute(), eager, rtol=1e-10, atol=1e-10)


def test_blas_threads_are_restored_after_cleaning(signals, confounds):
    from threadpoolctl import threadpool_info

    before = [(lib["filepath"], lib["num_threads"]) for lib in threadpool_info() if lib["user_api"] == "blas"]
    clean(signals, confounds=confounds)
    clean(da.from_array(signals, chunks=(80, 4)), confounds=confounds).compute(scheduler="threads")
    after = [(lib["filepath"], lib["num_threads"]) for lib in threadpool_info() if lib["user_api"] == "blas"]
    assert after == before


# --- parity with nilearn where lazymask used to be stricter (issue 14) -----------------------------

NYQUIST_CASES = {
    "low_pass above Nyquist": {"low_pass": 0.3},
    "high_pass at Nyquist": {"high_pass": 0.25},
    "band-pass, low_pass above Nyquist": {"low_pass": 0.3, "high_pass": 0.01},
    "both cutoffs above Nyquist": {"low_pass": 0.4, "high_pass": 0.3},
}


@pytest.mark.parametrize("case", list(NYQUIST_CASES))
def test_cutoff_above_nyquist_warns_and_matches_nilearn(case, signals):
    kwargs = {**NYQUIST_CASES[case], "t_r": T_R}
    expected = nilearn_clean(signals, **kwargs)
    with pytest.warns(UserWarning, match=r"at or above the Nyquist frequency 0.25 Hz of t_r=2.0 s.*lowered to 0.2499"):
        eager = clean(signals, **kwargs)
    lazy = lazymask_clean(da.from_array(signals, chunks=(13, 5)), **kwargs).compute()
    assert_float32_close(eager, expected)
    assert_float32_close(lazy, expected)


def test_both_cutoffs_above_nyquist_leave_the_signals_unfiltered(signals):
    with pytest.warns(UserWarning, match=r"the band-pass is empty: the signals are not filtered"):
        cleaned = clean(signals, low_pass=0.4, high_pass=0.3, t_r=T_R)
    np.testing.assert_allclose(cleaned, clean(signals, t_r=T_R), rtol=1e-12)


def test_dataarray_without_coordinates(signals, confounds):
    bare = xr.DataArray(da.from_array(signals, chunks=(20, 8)), dims=("time", "voxel"))
    cleaned = clean(bare, confounds=confounds, sample_mask=kept_mask([3, 4]))
    assert cleaned.dims == ("time", "voxel") and not cleaned.coords
    assert_float32_close(cleaned.compute(), nilearn_clean(signals, confounds=confounds, sample_mask=kept_mask([3, 4])))


def test_dataarray_with_a_non_dimension_time_coordinate(signals):
    labelled = xr.DataArray(signals, dims=("time", "voxel"), coords={"acq": ("time", np.arange(N_TIME) * 2.0)})
    cleaned = clean(labelled, sample_mask=kept_mask([0, 1]))
    np.testing.assert_array_equal(cleaned["acq"], np.arange(2, N_TIME) * 2.0)


def test_a_run_shorter_than_the_filter_padding_is_refused_before_any_compute():
    short = da.zeros((10, 4), chunks=(5, 4))
    with raise_if_dask_computes(), pytest.raises(
        ParameterError, match=r"pads each series by 33 time points and needs more than 33, but the signals have 10"
    ):
        clean(short, low_pass=0.1, high_pass=0.01, t_r=T_R)


def test_a_short_run_filters_when_the_padding_fits(signals):
    kwargs = {"low_pass": 0.1, "t_r": T_R, "butterworth__padlen": 9}
    assert_float32_close(clean(signals[:10], **kwargs), nilearn_clean(signals[:10], **kwargs))


@pytest.mark.parametrize("content", ["", "\n\n"])
def test_an_empty_confounds_file_is_named(content, signals, tmp_path):
    path = tmp_path / "desc-confounds_timeseries.tsv"
    path.write_text(content)
    with pytest.raises(ParameterError, match=r"confounds file '.*desc-confounds_timeseries.tsv' is empty"):
        clean(signals, confounds=path)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("padding", [{}, {"padtype": "even", "padlen": 10}, {"padtype": None}])
def test_butterworth_as_a_matrix_is_the_filter(dtype, padding, monkeypatch):
    """Short runs are filtered by one matrix product: sosfiltfilt's numbers, up to rounding."""
    from scipy import signal as sp_signal

    from lazymask.signal import _filters

    signals = np.random.default_rng(3).normal(0, 16, (120, 40)).astype(dtype)
    sos = _filters.butterworth_sos(0.8, low_pass=0.1, high_pass=0.01)
    reference = sp_signal.sosfiltfilt(sos, signals.astype(np.float64), axis=0, **padding)
    by_matrix = _filters.butterworth_filter(signals, sos, **padding)
    monkeypatch.setattr(_filters, "MATRIX_MAX_TIME", 100)  # the long-run path: column by column
    by_columns = _filters.butterworth_filter(signals, sos, **padding)
    assert by_matrix.dtype == by_columns.dtype == dtype
    scale = np.abs(reference).max()
    tolerance = 1e-12 if dtype == np.float64 else 3e-6
    np.testing.assert_allclose(by_matrix, reference, rtol=0, atol=tolerance * scale)
    np.testing.assert_allclose(by_columns, reference, rtol=0, atol=max(tolerance, 1e-7) * scale)


def test_concurrent_kernels_each_run_on_one_blas_thread_and_the_setting_comes_back():
    """Every thread inside a kernel sees one BLAS thread, whatever order concurrent kernels end in."""
    import threading

    from threadpoolctl import threadpool_info

    from lazymask._blas import single_threaded_blas

    def blas_threads():
        return sorted({lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"})

    before = blas_threads()
    seen, entered, leave_first = [], threading.Barrier(2), threading.Event()

    def kernel(first: bool):
        with single_threaded_blas():
            entered.wait()
            if not first:
                leave_first.set()
                entered.wait()  # hold on while the first kernel ends
            seen.append(blas_threads())
            if first:
                leave_first.wait()
        if first:
            entered.wait()

    threads = [threading.Thread(target=kernel, args=(first,)) for first in (True, False)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == [[1], [1]]
    assert blas_threads() == before


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kwargs", [
    {"detrend": True, "standardize": "zscore_sample", "confounds": True},
    {"detrend": False, "standardize": "zscore", "confounds": True, "standardize_confounds": False},
    {"detrend": True, "standardize": None, "confounds": False},
    {"detrend": False, "standardize": None, "confounds": True},
    {"detrend": True, "standardize": "zscore_sample", "confounds": True, "low_pass": 0.1, "high_pass": 0.02},
    {"detrend": False, "standardize": "zscore_sample", "confounds": False, "high_pass": 0.02, "filter": "cosine"},
    {"detrend": True, "standardize": "zscore_sample", "confounds": True, "high_pass": 0.03, "filter": "cosine"},
    {"detrend": True, "standardize": "zscore_sample", "confounds": True, "ensure_finite": True},
    {"detrend": False, "standardize": None, "confounds": False, "low_pass": 0.1, "step_by_step": True},
])
def test_one_matrix_kernel_is_the_step_by_step_kernel(kwargs, dtype, signals, confounds, monkeypatch):
    """With one run and nothing censored the kernel applies the linear steps as one matrix
    (LinearMap, low-rank when it is a projection); same values as each step in turn, and as nilearn."""
    from lazymask.signal import _clean

    kwargs = dict(kwargs)
    step_by_step = kwargs.pop("step_by_step", False)  # a band-pass that keeps the mean: no one-matrix kernel
    data = signals.astype(dtype)
    if kwargs.get("ensure_finite"):
        data = data.copy()
        data[3, 2], data[7, 5] = np.nan, np.inf
    options = {**kwargs, "confounds": confounds if kwargs["confounds"] else None, "t_r": T_R}
    used = []
    original = _clean.LinearMap.of.__func__
    monkeypatch.setattr(_clean.LinearMap, "of", classmethod(lambda cls, *a: used.append(original(cls, *a)) or used[-1]))
    fused = lazymask_clean(data, **options)
    assert used and all((m is None) == step_by_step for m in used)
    if step_by_step:
        return
    band_pass = ("low_pass" in kwargs or "high_pass" in kwargs) and kwargs.get("filter") != "cosine"
    assert all(m.basis is None for m in used) == band_pass  # else a low-rank projection
    monkeypatch.setattr(_clean.LinearMap, "of", classmethod(lambda cls, *a: None))
    stepwise = lazymask_clean(data, **options)
    assert fused.dtype == stepwise.dtype
    if dtype == np.float64:
        np.testing.assert_allclose(fused, stepwise, rtol=1e-9, atol=1e-9)
    else:
        assert_float32_close(fused, stepwise)
    if options["standardize"] != "zscore":  # nilearn 0.14 no longer takes "zscore" (lazymask still does)
        assert_float32_close(fused, nilearn_clean(data.astype(np.float64), **options))


def test_the_one_matrix_is_found_once_per_plan_and_warnings_stay(signals, confounds, recwarn):
    """The map is cached per (plan, confounds) in the process (finding it costs 0.1-0.5 s at 1200
    volumes, once per block otherwise); a map whose steps warn is not cached, so every call warns."""
    from lazymask.signal import _clean

    _clean._MAPS.clear()
    first = lazymask_clean(signals, confounds=confounds, t_r=T_R)
    assert len(_clean._MAPS) == 1
    np.testing.assert_array_equal(lazymask_clean(signals, confounds=confounds, t_r=T_R), first)
    assert len(_clean._MAPS) == 1
    short = signals[:6]  # too short for any cosine drift at this high_pass: nilearn's warning, each call
    for _ in range(2):
        with pytest.warns(UserWarning, match="No cosine drift"):
            clean(short, filter="cosine", high_pass=0.001, t_r=T_R)


@pytest.mark.parametrize("kwargs", [
    {"confounds": True},  # the one-matrix kernel
    {"confounds": True, "runs": True},  # step by step, run by run
    {"confounds": False, "sample_mask": True},  # fewer rows out: a new block
])
def test_a_block_cleaned_in_place_holds_what_a_new_block_would(kwargs, signals, confounds):
    """clean_block(overwrite=True) writes into the block when it can hold the result (a masker's
    gathered block, its task's own: no second block allocated), else returns a new one."""
    from lazymask.signal._clean import clean_block
    from lazymask.signal._params import make_plan

    n_time = len(signals)
    plan = make_plan(n_time, t_r=T_R, runs=np.repeat([0, 1], [n_time // 2, n_time - n_time // 2]) if kwargs.get("runs") else None,
                     sample_mask=np.arange(2, n_time) if kwargs.get("sample_mask") else None)
    regressors = np.asarray(confounds, dtype=float) if kwargs["confounds"] else None
    expected = clean_block(signals.astype(np.float32), plan, regressors)
    block = signals.astype(np.float32)
    cleaned = clean_block(block, plan, regressors, overwrite=True)
    np.testing.assert_array_equal(cleaned, expected)
    if kwargs.get("sample_mask"):
        assert cleaned is not block and cleaned.shape[0] == n_time - 2
        np.testing.assert_array_equal(block, signals.astype(np.float32))  # left as it was
    else:
        assert cleaned is block
    read_only = signals.astype(np.float32)
    read_only.flags.writeable = False
    np.testing.assert_array_equal(clean_block(read_only, plan, regressors, overwrite=True), expected)
    integers = np.round(signals * 100).astype(np.int16)  # cleaned as float32: a new block
    assert clean_block(integers, plan, regressors, overwrite=True).dtype == np.float32
