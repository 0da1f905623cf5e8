"""HTML reports of the maskers: figures (matplotlib, Agg) and tables in one standalone page.

:func:`report_for` builds the report of a fitted masker from its public fitted attributes (what
``generate_report`` returns); the builders take plain data (numpy arrays, 4x4 affines, dicts of
parameters) and return a :class:`Report`. This package imports no masker.
"""

from lazymask.reporting._builders import labels_report, maps_report, mask_report, spheres_report
from lazymask.reporting._figures import Volume  # the geometry of a drawn volume, reused by lazymask.plotting
from lazymask.reporting._from_masker import fit_report_data, new_report_content, report_for
from lazymask.reporting._from_masker import generate as generate_report
from lazymask.reporting._report import HTMLReport, Report

__all__ = ["HTMLReport", "Report", "Volume", "fit_report_data", "generate_report", "labels_report", "maps_report", "mask_report", "new_report_content", "report_for", "spheres_report"]
