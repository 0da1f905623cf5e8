"""nilearn's plotting functions for lazymask images, drawn with matplotlib (no nilearn needed).

``plot_epi``, ``plot_roi``, ``plot_stat_map``, ``plot_img`` draw cuts of a 3D image (ortho views with
L/R letters and cut coordinates, as nilearn's figures); ``plot_carpet`` draws a whole 4D run in one
pass over the data; ``show`` shows the figures. Each takes lazymask DataArrays, paths or nibabel
images, with nilearn's names and main parameters.

Examples
--------
>>> from lazymask import image                                 # doctest: +SKIP
>>> from lazymask.plotting import plot_epi, plot_roi, show     # doctest: +SKIP
>>> mean = image.mean_img("bold.nii.gz")                       # doctest: +SKIP
>>> plot_epi(mean, title="Mean EPI image"); show()             # doctest: +SKIP
"""

from lazymask.plotting._carpet import plot_carpet
from lazymask.plotting._display import Display
from lazymask.plotting._plots import MNI152TEMPLATE, plot_epi, plot_img, plot_roi, plot_stat_map, show

__all__ = ["Display", "MNI152TEMPLATE", "plot_carpet", "plot_epi", "plot_img", "plot_roi", "plot_stat_map", "show"]
