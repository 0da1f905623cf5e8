"""Bundled demo data, generated locally and deterministically (no download, ever).

Examples
--------
>>> from lazymask.datasets import load_demo
>>> demo = load_demo()   # doctest: +SKIP
>>> demo.func, demo.confounds, demo.atlas, demo.atlas_lut, demo.t_r   # doctest: +SKIP
"""

from lazymask.datasets._demo import DemoRun, load_demo
from lazymask.datasets._synthetic import LazyRun, lazy_synthetic_run

__all__ = ["DemoRun", "load_demo", "LazyRun", "lazy_synthetic_run"]
