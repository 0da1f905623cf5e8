"""nilearn's ``nilearn.reporting`` face: the report a masker's ``generate_report()`` returns.

:class:`HTMLReport` is lazymask's report (:class:`lazymask.reporting.HTMLReport`): it has nilearn's
interface (``body``, ``str(report)``, ``_repr_html_``, ``get_iframe``, ``resize``, ``width`` /
``height``, ``save_as_html``, ``open_in_browser``) and lazymask's own figures (matplotlib, SVG).

Examples
--------
>>> import numpy as np, nibabel as nib
>>> from lazymask.nilearn.maskers import NiftiMasker
>>> from lazymask.nilearn.reporting import HTMLReport
>>> mask = nib.Nifti1Image(np.pad(np.ones((3, 3, 3), "i1"), 2), np.eye(4))
>>> import warnings
>>> with warnings.catch_warnings():
...     warnings.simplefilter("ignore")  # "No image provided to fit in NiftiMasker. ..."
...     report = NiftiMasker(mask_img=mask).fit().generate_report()
>>> isinstance(report, HTMLReport), "NiftiMasker" in str(report)
(True, True)
"""

from lazymask.reporting import HTMLReport

__all__ = ["HTMLReport"]
