"""Masker-level fault suite: bad arguments and inputs to the maskers, and a worker killed mid-job.

Each case asserts the error class and its message (the parameter or file named, what was found,
the fix), raised when the masker is fitted or its graph is built — never a scipy, pandas or numpy
error at compute time. The last test kills a worker process of a multi-process
``distributed.LocalCluster`` while a masker's job runs and checks the result is the uninterrupted one.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import warnings

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

import lazymask
from lazymask.exceptions import (
    DimensionError,
    ImageFileNotFoundError,
    ImageMismatchError,
    LazymaskError,
    NotFittedError,
    ParameterError,
)
from lazymask.maskers import (
    MultiNiftiMasker,
    NiftiLabelsMasker,
    NiftiMapsMasker,
    NiftiMasker,
    NiftiSpheresMasker,
    open_signals,
    save_signals,
)
from lazymask.testing import fake_fmri

SHAPE = (12, 14, 10)
N_VOLUMES = 24


# -- inputs -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Paths of a run, a short run, a 3D volume, atlases, masks and confounds files (all generated)."""
    root = tmp_path_factory.mktemp("masker_faults")
    run = fake_fmri(SHAPE, N_VOLUMES, t_r=2.0, seed=7)
    affine = run.affine
    paths = {"run": root / "bold.nii.gz", "short": root / "short.nii.gz", "vol3d": root / "vol3d.nii.gz"}
    nib.save(run, paths["run"])
    nib.save(fake_fmri(SHAPE, 10, t_r=2.0, seed=7), paths["short"])
    nib.save(nib.Nifti1Image(np.asarray(run.dataobj)[..., 0], affine), paths["vol3d"])
    labels = np.zeros(SHAPE, np.int16)
    labels[2:6, 2:7, 2:5] = 1
    labels[6:10, 7:12, 5:8] = 2
    mask = np.zeros(SHAPE, np.int8)
    mask[2:10, 2:12, 2:8] = 1
    images = {
        "labels": labels,
        "labels_float": labels.astype(np.float32) + 0.5,
        "labels_empty": np.zeros(SHAPE, np.int16),
        "maps": np.stack([labels == 1, labels == 2], -1).astype(np.float32),
        "maps_5d": np.zeros(SHAPE + (2, 2), np.float32),
        "mask": mask,
        "mask_small": np.ones((8, 8, 8), np.int8),
        "mask_empty": np.zeros(SHAPE, np.int8),
        "mask_values": np.arange(np.prod(SHAPE)).reshape(SHAPE).astype(np.float32),
    }
    for name, data in images.items():
        paths[name] = root / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(data, affine), paths[name])
    paths["confounds_20_rows"] = root / "confounds_20.tsv"
    pd.DataFrame(np.random.default_rng(0).random((20, 3)), columns=list("abc")).to_csv(
        paths["confounds_20_rows"], sep="\t", index=False)
    paths["confounds_empty"] = root / "empty.tsv"
    paths["confounds_empty"].write_text("")
    paths["confounds_text"] = root / "text.tsv"
    pd.DataFrame({"a": ["x"] * N_VOLUMES}).to_csv(paths["confounds_text"], sep="\t", index=False)
    paths["centre"] = tuple((affine @ [6, 7, 5, 1])[:3])
    return {k: (str(v) if not isinstance(v, tuple) else v) for k, v in paths.items()}


def _nan_in_the_middle():
    confounds = np.random.default_rng(1).random((N_VOLUMES, 2))
    confounds[10, 0] = np.nan
    return confounds


def _epi(**kwargs):
    return NiftiMasker(mask_strategy="epi", **kwargs)


# (id, build and run the failing call from the files, error class, message pattern)
CASES = [
    # cleaning parameters the header already tells are impossible
    ("band-pass longer than a 10-volume run",
     lambda f: NiftiMasker(low_pass=0.1, high_pass=0.01, t_r=2.0, mask_img=f["mask"]).fit_transform(f["short"]),
     ParameterError, r"Butterworth filter of order 5 \(low_pass=0.1 Hz, high_pass=0.01 Hz, t_r=2 s\) pads each "
                     r"series by 33 time points and needs more than 33, but the signals have 10 time point\(s\)"),
    ("band-pass on a 3D image",
     lambda f: NiftiMasker(low_pass=0.1, t_r=2.0, mask_img=f["mask"]).fit_transform(f["vol3d"]),
     ParameterError, r"pads each series by \d+ time points and needs more than \d+, but the signals have 1 "
                     r"time point\(s\)"),
    ("high_pass above low_pass", lambda f: _epi(t_r=2, low_pass=0.05, high_pass=0.1).fit_transform(f["run"]),
     ParameterError, r"High pass cutoff frequency \(0.1\) is greater than or equal to low pass filter frequency \(0.05\)"),
    ("negative t_r", lambda f: _epi(t_r=-2, high_pass=0.01).fit_transform(f["run"]),
     LazymaskError, r"'t_r' parameter of NiftiMasker must be None or a float in the range \(0.0, inf\). Got -2"),
    ("unknown standardize", lambda f: _epi(standardize="bogus").fit_transform(f["run"]),
     LazymaskError, r"'standardize' parameter of NiftiMasker must be .*Got 'bogus'"),
    ("negative smoothing_fwhm", lambda f: _epi(smoothing_fwhm=-3).fit_transform(f["run"]),
     LazymaskError, r"'smoothing_fwhm' parameter of NiftiMasker .*Got -3"),
    # confounds and sample masks
    ("empty confounds file", lambda f: _epi().fit_transform(f["run"], confounds=f["confounds_empty"]),
     ParameterError, r"confounds file '.*empty.tsv' is empty \(no header, no values\)"),
    ("confounds file with 20 rows for 24 volumes",
     lambda f: _epi().fit_transform(f["run"], confounds=f["confounds_20_rows"]),
     ParameterError, r"confounds \(file '.*confounds_20.tsv'\) has 20 rows but the signals have 24 time points"),
    ("confounds array with 5 rows", lambda f: _epi().fit_transform(f["run"], confounds=np.ones((5, 2))),
     ParameterError, r"confounds has 5 rows but the signals have 24 time points"),
    ("confounds file missing", lambda f: _epi().fit_transform(f["run"], confounds=f["run"] + ".tsv"),
     ParameterError, r"confounds file '.*bold.nii.gz.tsv' does not exist"),
    ("confounds with text", lambda f: _epi().fit_transform(f["run"], confounds=f["confounds_text"]),
     ParameterError, r"confounds file '.*text.tsv' holds non-numeric columns"),
    ("confounds with a NaN mid-run", lambda f: _epi().fit_transform(f["run"], confounds=_nan_in_the_middle()),
     ParameterError, r"confounds hold 1 non-finite value\(s\) \(NaN or inf\), first at row 10, column 0"),
    ("sample_mask index out of range", lambda f: _epi().fit_transform(f["run"], sample_mask=np.array([0, 1, 100])),
     ParameterError, r"sample_mask \(run 1 of 1, 24 volumes\) holds indices out of range: \[100\]"),
    ("sample_mask negative index", lambda f: _epi().fit_transform(f["run"], sample_mask=np.array([-30, 1])),
     ParameterError, r"holds indices out of range: \[-30\]; indices must be in \[0, 23\]"),
    ("boolean sample_mask of the wrong length", lambda f: _epi().fit_transform(f["run"], sample_mask=np.ones(5, bool)),
     ParameterError, r"is a boolean mask of shape \(5,\); a boolean mask needs one value per volume, shape \(24,\)"),
    ("one confounds entry for two runs",
     lambda f: MultiNiftiMasker(mask_strategy="epi").fit_transform([f["run"], f["run"]], confounds=[None]),
     ParameterError, r"number of confounds \(1\) unequal to number of images \(2\)"),
    # masks
    ("empty mask from mask_args, no target",
     lambda f: _epi(mask_args=dict(lower_cutoff=0.99, upper_cutoff=1.0)).fit(f["run"]),
     ParameterError, r"the mask computed with mask_strategy='epi' and mask_args=\{'lower_cutoff': 0.99, "
                     r"'upper_cutoff': 1.0\} is empty \(no voxel on\); loosen mask_args"),
    ("empty mask from mask_args (multi masker)",
     lambda f: MultiNiftiMasker(mask_strategy="epi", mask_args=dict(lower_cutoff=0.99, upper_cutoff=1.0))
     .fit_transform([f["run"], f["run"]]),  # fit accepts the empty mask (as nilearn's), transform refuses it
     ParameterError, r"The mask is invalid as it is empty: it masks all data \(mask_img: every voxel is 0\)"),
    ("empty mask_img", lambda f: NiftiMasker(mask_img=f["mask_empty"]).fit(f["run"]),
     ParameterError, r"The mask is invalid as it is empty: it masks all data. mask_img has no non-zero voxel"),
    # a 4D mask_img is the voxels on in every volume (nilearn's maskers): here none
    ("4D mask_img, no voxel on in every volume", lambda f: NiftiMasker(mask_img=f["maps"]).fit(f["run"]),
     ParameterError, r"The mask is invalid as it is empty: it masks all data. mask_img has no non-zero voxel"),
    ("target_shape without target_affine", lambda f: _epi(target_shape=(3, 3, 3)).fit(f["run"]),
     ParameterError, r"target_shape=\(3, 3, 3\) was given without target_affine"),
    ("target_affine of shape (2, 2)", lambda f: _epi(target_affine=np.eye(2)).fit(f["run"]),
     ParameterError, r"target_affine has shape \(2, 2\); expected a 3x3 or 4x4 matrix"),
    ("target grid away from the data",
     lambda f: NiftiMasker(mask_img=f["mask"], target_affine=np.diag([3.0, 3, 3, 1]) + np.diag([0.0] * 4)
                           + np.pad(np.full((3, 1), 500.0), ((0, 1), (3, 0))), target_shape=(3, 3, 3)).fit(f["run"]),
     ParameterError, r"field of view of target_affine contains none of the image's data"),
    # labels and maps
    ("labels_img with floats", lambda f: NiftiLabelsMasker(f["labels_float"]).fit_transform(f["run"]),
     ParameterError, r"labels_img holds non-integer values \(e.g. \[0.5, 1.5, 2.5\]\)"),
    ("labels_img all background", lambda f: NiftiLabelsMasker(f["labels_empty"]).fit_transform(f["run"]),
     ParameterError, r"Image has no label: every voxel of labels_img is background_label=0"),
    ("4D labels_img", lambda f: NiftiLabelsMasker(f["maps"]).fit_transform(f["run"]),
     DimensionError, r"labels_img is a 4D image of shape \(12, 14, 10, 2\); expected a 3D image"),
    ("labels on another grid without resampling",
     lambda f: NiftiLabelsMasker(f["mask_small"], resampling_target=None).fit_transform(f["run"]),
     ImageMismatchError, r"Following field of view errors were detected:\n- labels_img and imgs do not have the same shape"),
    ("empty lut file", lambda f: NiftiLabelsMasker(f["labels"], lut=f["confounds_empty"]).fit_transform(f["run"]),
     ParameterError, r"lut='.*empty.tsv': cannot read a look-up table \(Error: Could not determine delimiter\)"),
    ("empty fMRIPrep confounds table",
     lambda f: __import__("lazymask.interfaces.fmriprep").interfaces.fmriprep.read_confounds_table(f["confounds_empty"]),
     ParameterError, r"confounds file '.*empty.tsv' is not a readable tab-separated table \(EmptyDataError"),
    ("unknown labels strategy", lambda f: NiftiLabelsMasker(f["labels"], strategy="nope").fit_transform(f["run"]),
     LazymaskError, r"'strategy' must be one of .*\n'nope' was provided"),
    ("5D maps_img", lambda f: NiftiMapsMasker(f["maps_5d"]).fit_transform(f["run"]),
     DimensionError, r"maps_5d.nii.gz: a 5D image of shape \(12, 14, 10, 2, 2\)"),
    # spheres
    ("NaN seed", lambda f: NiftiSpheresMasker([(np.nan, 0, 0)], radius=4).fit_transform(f["run"]),
     ParameterError, r"seeds\[0\]=\[nan, 0, 0\] holds a non-finite coordinate"),
    ("seed of 2 coordinates", lambda f: NiftiSpheresMasker([(1, 2)], radius=4).fit_transform(f["run"]),
     ParameterError, r"Seeds must be a list of triplets .* seeds\[0\]=\(1, 2\), expected 3 coordinates \(x, y, z\) in mm"),
    ("seeds array of shape (2, 2, 2)", lambda f: NiftiSpheresMasker(np.ones((2, 2, 2)), radius=4).fit_transform(f["run"]),
     ParameterError, r"seeds\[0\]=array\(\[\[1., 1.\]"),
    ("negative radius", lambda f: NiftiSpheresMasker([f["centre"]], radius=-1).fit_transform(f["run"]),
     LazymaskError, r"'radius' parameter of NiftiSpheresMasker must be None or a float in the range \[0.0, inf\). "
                    r"Got -1"),
    ("NaN radius", lambda f: NiftiSpheresMasker([f["centre"]], radius=np.nan).fit_transform(f["run"]),
     LazymaskError, r"'radius' parameter .*Got nan"),
    ("seed outside the image", lambda f: NiftiSpheresMasker([(1000, 1000, 1000)], radius=4).fit_transform(f["run"]),
     ParameterError, r"1 sphere\(s\) hold no voxel: seeds #0 \[1000.0, 1000.0, 1000.0\]"),
    # use
    ("transform before fit", lambda f: NiftiMasker().transform(f["run"]),
     NotFittedError, r"This NiftiMasker instance is not fitted yet"),
    ("inverse_transform of the wrong width",
     lambda f: (lambda m: m.inverse_transform(np.ones((3, m.n_elements_ + 2))))(_epi().fit(f["run"])),
     ParameterError, r"Input to 'inverse_transform' has wrong shape"),
    ("image file missing", lambda f: _epi().fit_transform(f["run"] + ".missing.nii.gz"),
     ImageFileNotFoundError, r"bold.nii.gz.missing.nii.gz: no such file"),
]


@pytest.mark.parametrize(("call", "error", "message"), [case[1:] for case in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_a_clear_lazymask_error(files, call, error, message):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # warnings are not what these cases test
        with pytest.raises(error, match=message) as raised:
            call(files)
    assert isinstance(raised.value, LazymaskError)


def test_band_pass_check_is_made_at_graph_build_time(files):
    """The padding check reads no voxel: it fails while the graph is built, before any compute."""
    masker = NiftiMasker(low_pass=0.1, high_pass=0.01, t_r=2.0, mask_img=files["mask"]).fit()
    with lazymask.testing.raise_if_dask_computes(), pytest.raises(ParameterError, match="pads each series by 33 time points"):
        masker.transform(files["short"])


def test_band_pass_padding_options_are_honoured(files):
    """With butterworth__padlen below the run's length the filter runs, and matches nilearn's clean."""
    from nilearn.signal import clean as nilearn_clean

    signals = np.random.default_rng(3).standard_normal((10, 4))
    ours = lazymask.signal.clean(signals, low_pass=0.1, high_pass=0.01, t_r=2.0, butterworth__padlen=5)
    theirs = nilearn_clean(signals, low_pass=0.1, high_pass=0.01, t_r=2.0, butterworth__padlen=5)
    np.testing.assert_allclose(np.asarray(ours), theirs, rtol=1e-5, atol=1e-6)
    with pytest.raises(ParameterError, match=r"pads each series by 12 time points and needs more than 12, but the signals have 10"):
        lazymask.signal.clean(signals, low_pass=0.1, t_r=2.0, butterworth__padlen=12)


def test_band_pass_with_censored_edges_counts_the_interpolated_span():
    """With a sample mask (no extrapolation) the filter sees the span from the first to the last kept volume."""
    signals = np.random.default_rng(4).standard_normal((40, 3))
    kept = np.zeros(40, bool)
    kept[20:30] = True
    with pytest.raises(ParameterError, match=r"pads each series by 33 time points and needs more than 33, but the signals have 10 time point"):
        lazymask.signal.clean(signals, low_pass=0.1, high_pass=0.01, t_r=2.0, sample_mask=kept)
    lazymask.signal.clean(signals, low_pass=0.1, high_pass=0.01, t_r=2.0, sample_mask=kept, extrapolate=True)


# -- a worker killed mid-job -------------------------------------------------------------------------
def _slow_worker_plugin():
    """A worker plugin that holds each finished task 0.15 s, so that a job lasts long enough to be cut.

    Defined in a function so that cloudpickle ships the class by value to the worker processes.
    """
    from distributed import WorkerPlugin

    class SlowTasks(WorkerPlugin):
        name = "lazymask-test-slow-tasks"

        def transition(self, key, start, finish, **kwargs):
            if finish == "memory":
                time.sleep(0.15)

    return SlowTasks()


def test_worker_killed_mid_job_gives_the_identical_result(files, tmp_path):
    distributed = pytest.importorskip("distributed")
    run = tmp_path / "long.nii"  # plain .nii: any worker can read any chunk
    nib.save(fake_fmri(SHAPE, 48, t_r=2.0, seed=11), run)
    masker = NiftiMasker(mask_img=files["mask"], detrend=True, standardize="zscore_sample", high_pass=0.01, t_r=2.0)
    with lazymask.config.set(auto_chunk_bytes=int(np.prod(SHAPE)) * 2 * 4):  # 4 volumes per chunk: 12 chunks
        image = lazymask.open_nifti(run)
    assert image.chunks is not None and len(image.chunks[-1]) >= 6
    save_signals(masker.fit_transform(image).compute(scheduler="sync"), tmp_path / "expected.zarr", masker=masker)

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  worker_dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        client.register_plugin(_slow_worker_plugin())
        pids = client.run(os.getpid)
        signals = masker.transform(image)
        outcome = {}
        job = threading.Thread(target=lambda: outcome.update(
            store=save_signals(signals, tmp_path / "killed.zarr", masker=masker)))
        job.start()
        deadline = time.monotonic() + 20
        # wait until the job runs on the cluster and a worker holds results, then kill that worker
        while time.monotonic() < deadline:
            holding = [w for w, keys in client.has_what().items() if keys]
            if holding and job.is_alive():
                break
            time.sleep(0.02)
        assert holding and job.is_alive(), "the job finished (or never started) before a worker could be killed"
        os.kill(pids[holding[0]], signal.SIGKILL)
        job.join(timeout=60)
        assert not job.is_alive()
        assert pids[holding[0]] not in client.run(os.getpid).values()  # that process is gone
    expected = open_signals(tmp_path / "expected.zarr")
    got = open_signals(tmp_path / "killed.zarr")
    np.testing.assert_array_equal(got.values, expected.values)
    assert got.attrs == expected.attrs
