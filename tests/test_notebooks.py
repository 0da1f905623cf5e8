"""Every notebook in ``notebooks/`` runs top to bottom without error (so they cannot rot)."""

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    notebook = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), (
        f"{path.name} is committed with outputs; clear them")
    nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the plot was drawn


# -- 02_mask_computation: the masks it shows are nilearn's ---------------------------------------
MASK_SETTINGS = [
    ("masked", {}),
    ("raw", {}),
    ("raw", {"mask_strategy": "epi"}),
    ("raw", {"mask_strategy": "epi", "mask_args": {"opening": 10}}),
    ("raw", {"mask_strategy": "epi", "mask_args": {"upper_cutoff": 0.9, "lower_cutoff": 0.8, "opening": False}}),
    ("masked", {"mask_strategy": "whole-brain-template"}),
    ("masked", {"mask_strategy": "epi", "target_affine": "8 mm"}),
]


@pytest.fixture(scope="module")
def notebook_runs():
    from lazymask.datasets import make_masked_epi, make_raw_epi

    return {"masked": make_masked_epi(), "raw": make_raw_epi()}  # the notebook's data (same defaults)


@pytest.mark.parametrize(("run", "kwargs"), MASK_SETTINGS, ids=[f"{r}-{k}" for r, k in MASK_SETTINGS])
def test_notebook_02_masks_equal_nilearn(notebook_runs, run, kwargs):
    import numpy as np

    nilearn_maskers = pytest.importorskip("nilearn.maskers")
    from lazymask.maskers import NiftiMasker

    kwargs = dict(kwargs)
    if kwargs.get("target_affine") == "8 mm":
        kwargs["target_affine"] = np.eye(3) * 8
    ours = NiftiMasker(**kwargs).fit(notebook_runs[run])
    theirs = nilearn_maskers.NiftiMasker(**kwargs).fit(notebook_runs[run])
    expected = np.asarray(theirs.mask_img_.dataobj) != 0
    mask = np.asarray(ours.mask_img_.values) != 0
    assert mask.sum() == expected.sum()
    np.testing.assert_array_equal(mask, expected)
    np.testing.assert_allclose(ours.mask_img_.nifti.affine, theirs.mask_img_.affine)


def test_notebook_02_data_show_what_the_example_shows(notebook_runs):
    """The background strategy finds the brain of the masked run, and fails on the raw run."""
    import numpy as np

    from lazymask.maskers import NiftiMasker

    masked = NiftiMasker().fit(notebook_runs["masked"]).mask_img_.values
    assert np.array_equal(masked, np.asanyarray(notebook_runs["masked"].dataobj)[..., 0] != 0)
    raw = NiftiMasker().fit(notebook_runs["raw"]).mask_img_.values
    epi = NiftiMasker(mask_strategy="epi").fit(notebook_runs["raw"]).mask_img_.values
    assert raw.mean() > 0.95 and 0.2 < epi.mean() < 0.6  # the whole grid vs the brain
