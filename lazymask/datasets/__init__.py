"""Bundled demo data, generated locally and deterministically (no download, ever).

Examples
--------
>>> from lazymask.datasets import load_demo
>>> demo = load_demo()   # doctest: +SKIP
>>> demo.func, demo.confounds, demo.atlas, demo.atlas_lut, demo.t_r   # doctest: +SKIP
>>> masked, raw = make_masked_epi(), make_raw_epi()   # two small runs (nibabel images)  # doctest: +SKIP
"""

from lazymask.datasets._demo import DemoRun, load_demo
from lazymask.datasets._epi import make_masked_epi, make_raw_epi
from lazymask.datasets._fmriprep import make_fmriprep_dataset
from lazymask.datasets._synthetic import LazyRun, lazy_synthetic_run

__all__ = ["DemoRun", "LazyRun", "lazy_synthetic_run", "load_demo", "make_fmriprep_dataset", "make_masked_epi",
           "make_raw_epi"]
