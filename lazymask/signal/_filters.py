"""Temporal filters on ``(time, features)`` arrays: Butterworth (zero-phase) and cosine drifts.

The Butterworth filter is applied to all the columns of a block in one vectorised
``scipy.signal.sosfiltfilt`` call per batch of columns (nilearn calls it once per column), on a
``(features, time)`` copy so that the filter runs along contiguous memory.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import signal as sp_signal

from lazymask import config

__all__ = ["butterworth_sos", "butterworth_filter", "cosine_drift", "add_cosine_drift"]

#: Columns filtered per ``sosfiltfilt`` call (bounds the float64 temporaries to ~80 MB at 1200 points).
FILTER_BATCH_BYTES = config.get("filter_batch_bytes")  # the default: kernels run inside tasks, which read no settings


def butterworth_sos(t_r: float, low_pass: float | None, high_pass: float | None, order: int = 5) -> np.ndarray:
    """Second-order sections of a Butterworth low-, high- or band-pass filter for sampling ``1/t_r``.

    Examples
    --------
    >>> butterworth_sos(2.0, low_pass=0.1, high_pass=0.01).shape
    (5, 6)
    """
    if low_pass is not None and high_pass is not None:
        btype, cutoff = "bandpass", [high_pass, low_pass]
    elif low_pass is not None:
        btype, cutoff = "lowpass", low_pass
    else:
        btype, cutoff = "highpass", high_pass
    return sp_signal.butter(N=order, Wn=cutoff, btype=btype, output="sos", fs=1.0 / t_r)


def butterworth_filter(signals: np.ndarray, sos: np.ndarray, padtype="odd", padlen=None) -> np.ndarray:
    """Zero-phase filter every column of ``signals`` (time along axis 0); same dtype, new array."""
    n_time, n_features = signals.shape
    out = np.empty_like(signals)
    batch = max(1, FILTER_BATCH_BYTES // (8 * max(n_time, 1)))
    for start in range(0, n_features, batch):
        columns = np.ascontiguousarray(signals[:, start : start + batch].T)
        filtered = sp_signal.sosfiltfilt(sos, columns, axis=-1, padtype=padtype, padlen=padlen)
        out[:, start : start + batch] = filtered.T
    return out


def cosine_drift(high_pass: float, t_r: float, n_time: int) -> np.ndarray:
    """DCT-II drift regressors of frequency up to ``high_pass`` Hz, without the constant column.

    Same basis as nilearn's ``create_cosine_drift`` (its constant column dropped, since the signals
    are centred anyway): column ``k`` is ``sqrt(2/n) cos(pi k (t + 1/2) / n)``, ``k = 1 .. order``.
    """
    if high_pass * t_r >= 0.5:
        warnings.warn(
            f"high_pass={high_pass} Hz spans all the frequencies a signal sampled every {t_r} s "
            "can hold: the cosine drifts saturate the design. Lower high_pass.",
            UserWarning,
            stacklevel=2,
        )
    order = min(n_time - 1, int(np.floor(2 * n_time * high_pass * t_r)))
    times = np.arange(n_time)[:, None] + 0.5
    k = np.arange(1, order + 1)[None, :]
    return np.sqrt(2.0 / n_time) * np.cos(np.pi / n_time * times * k)


def add_cosine_drift(confounds: np.ndarray | None, drift: np.ndarray) -> np.ndarray | None:
    """Append ``drift`` to ``confounds`` unless the user's confounds already hold cosine drifts.

    As nilearn does: drifts are considered present when one of them correlates above 0.9 with a
    confound (then the user's confounds are used alone).
    """
    if drift.shape[1] == 0:
        warnings.warn(
            "No cosine drift fits in this run for this high_pass: the run is too short or "
            "high_pass too low. Drifts are not removed.",
            UserWarning,
            stacklevel=2,
        )
        return confounds
    if confounds is None:
        return drift
    correlation = np.corrcoef(drift.T, confounds.T)
    np.fill_diagonal(correlation, 0)
    if (correlation[: drift.shape[1]] > 0.9).any():
        warnings.warn(
            "The confounds already hold cosine drift regressors; no other drift term is added.",
            UserWarning,
            stacklevel=2,
        )
        return confounds
    return np.hstack([confounds, drift.astype(confounds.dtype)])
