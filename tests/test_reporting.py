"""Tests of lazymask.reporting: standalone escaped HTML, numbers of the summaries, orientation."""

import base64
import io
import re
import subprocess
import sys

import matplotlib.image
import nibabel as nib
import numpy as np
import pytest

from lazymask.exceptions import DimensionError, ImageMismatchError, ParameterError
from lazymask.reporting import Report, labels_report, maps_report, mask_report, spheres_report
from lazymask.reporting._figures import to_ras
from lazymask.reporting._report import PNG_SIGNATURE

pytestmark = pytest.mark.filterwarnings("error")

SHAPE = (20, 20, 20)
# LAS storage: voxel i grows towards the subject's left; world x from +19 (i=0) to -19 (i=19)
LAS_AFFINE = np.array([[-2.0, 0, 0, 19], [0, 2, 0, -19], [0, 0, 2, -19], [0, 0, 0, 1]])
LEFT_SEEDS = [(-10.0, 0.0, 0.0), (-12.0, 4.0, 0.0)]


def _world_x(affine=LAS_AFFINE, shape=SHAPE):
    i = np.arange(shape[0])
    return (affine[0, 0] * i + affine[0, 3])[:, None, None] * np.ones(shape)


@pytest.fixture(scope="module")
def mean_img():
    rng = np.random.default_rng(0)
    return (100 + 10 * rng.standard_normal(SHAPE)).astype(np.float32)


@pytest.fixture(scope="module")
def left_mask():
    """A box on the subject's left (world x < 0) of the LAS grid."""
    mask = np.zeros(SHAPE, dtype=bool)
    mask[12:18, 6:14, 6:14] = True
    assert np.all(_world_x()[mask] < 0)
    return mask


@pytest.fixture(scope="module")
def left_labels(left_mask):
    labels = np.zeros(SHAPE, dtype=np.int16)
    labels[left_mask] = 3
    labels[12:18, 6:10, 6:14] = 7
    return labels


def _report_of(kind, mean, affine, mask, labels, **kwargs):
    """Build one report kind with overlays derived from a mask and an atlas (on ``affine``)."""
    if kind == "mask":
        return mask_report(mean, mask, affine, **kwargs)
    if kind == "labels":
        return labels_report(mean, labels, affine, **kwargs)
    if kind == "maps":
        maps = np.stack([labels == 3, labels == 7, mask * 0.5], axis=-1).astype(np.float32)
        return maps_report(mean, maps, affine, **kwargs)
    return spheres_report(mean, affine, seeds=LEFT_SEEDS, radius=5, **kwargs)


KINDS = ["mask", "labels", "maps", "spheres"]


def _decode(png: bytes) -> np.ndarray:
    return matplotlib.image.imread(io.BytesIO(png), format="png")


@pytest.fixture
def png_figures(monkeypatch):
    """Figures rendered as PNG (Agg), so that their pixels can be read."""
    from lazymask.reporting import _figures

    monkeypatch.setattr(_figures, "FIGURE_FORMAT", "png")


def test_png_figures_when_asked(monkeypatch, mean_img, left_mask):
    from lazymask.reporting import _figures

    monkeypatch.setattr(_figures, "FIGURE_FORMAT", "png")
    figure = mask_report(mean_img, left_mask, LAS_AFFINE).figures[0][0]
    assert figure.startswith(PNG_SIGNATURE)
    assert "data:image/png;base64," in mask_report(mean_img, left_mask, LAS_AFFINE).get_html()


# -- HTML --------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("with_image", [True, False])
def test_each_report_is_standalone_html(kind, with_image, mean_img, left_mask, left_labels):
    mean = mean_img if with_image else None
    report = _report_of(kind, mean, LAS_AFFINE, left_mask, left_labels,
                        parameters={"smoothing_fwhm": 6.0})
    html = report.get_html()
    assert html.startswith("<!DOCTYPE html>")
    assert "http" not in html and "<script" not in html.lower() and "<link" not in html
    sources = re.findall(r'src="([^"]*)"', html)
    assert len(sources) == len(report.figures) >= 1
    for source in sources:  # the figures are SVG (as nilearn's), embedded as base64
        prefix = "data:image/svg+xml;base64,"
        assert source.startswith(prefix)
        assert b"<svg" in base64.b64decode(source[len(prefix):])
    assert report.sentences[0] in html
    assert ("No image was given at fit time" in html) is (not with_image)
    assert "smoothing_fwhm" in html
    assert report._repr_html_() in html


def test_user_strings_are_escaped(left_mask, left_labels):
    report = labels_report(
        None, left_labels, LAS_AFFINE, region_names=["<b>bold</b>", "a & b"],
        parameters={"<p>": "<script>alert(1)</script>", "target_affine": np.eye(4)},
        title="<i>title</i>",
    )
    html = report.get_html()
    assert "<script>" not in html and "<b>bold" not in html and "<i>title" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;b&gt;bold&lt;/b&gt;" in html and "a &amp; b" in html
    assert "&lt;p&gt;" in html and "&lt;i&gt;title&lt;/i&gt;" in html


def test_save_as_html_writes_the_same_html(tmp_path, mean_img, left_mask):
    report = mask_report(mean_img, left_mask, LAS_AFFINE, parameters={"a": 1})
    path = report.save_as_html(tmp_path / "report.html")
    assert path.read_text(encoding="utf-8") == report.get_html()


def test_svg_figures_are_embedded_base64_and_bad_figures_refused():
    svg = '<svg xmlns="http://www.w3.org/2000/svg"><text>&lt;x&gt;</text></svg>'
    report = Report("svg", figures=[svg])
    html = report.get_html()
    assert "<svg" not in html and "data:image/svg+xml;base64," in html
    with pytest.raises(ParameterError, match="PNG signature"):
        report.add_figure(b"GIF89a...")
    with pytest.raises(ParameterError, match="expected PNG bytes or SVG text"):
        report.add_figure(3)


def test_repr_and_tables():
    report = Report("NiftiMasker", sentences=["one"], parameters={"a": 1, "b": None})
    assert repr(report) == "<Report 'NiftiMasker': 0 figures, 1 sentence, 2 parameters, 0 tables>"
    assert str(report) == report.body == report._repr_html_()  # nilearn's HTMLReport: the fragment
    with pytest.raises(ParameterError, match="columns of different lengths"):
        report.add_table("Regions", {"id": [1, 2], "name": ["a"]})


# -- numbers of the summaries ------------------------------------------------------------------
@pytest.mark.parametrize("n_voxels", [1, 125, 999])
def test_mask_sentence_matches_nilearn(n_voxels):
    from nilearn.maskers import NiftiMasker

    mask = np.zeros((10, 10, 10), dtype=bool)
    mask.flat[:n_voxels] = True
    report = mask_report(None, mask, np.eye(4))
    masker = NiftiMasker(mask_img=nib.Nifti1Image(mask.astype(np.uint8), np.eye(4))).fit()
    coverage = masker._report_content["coverage"]
    expected = f"The mask includes {masker.n_elements_} voxels ({coverage:0.1f} %) of the image."
    assert report.sentences == [expected]
    assert report.sentences[0] == (
        f"The mask includes {n_voxels} voxels ({n_voxels / 10:0.1f} %) of the image."
    )


def test_original_mask_adds_a_second_figure(mean_img, left_mask):
    original = np.zeros((10, 10, 10), dtype=bool)
    original[5:9, 3:7, 3:7] = True
    original_affine = LAS_AFFINE.copy()
    original_affine[:3, :3] *= 2
    report = mask_report(mean_img, left_mask, LAS_AFFINE, original_mask=original,
                         original_affine=original_affine)
    assert len(report.figures) == 2
    assert report.figures[0][0] != report.figures[1][0]


def test_labels_table(left_labels):
    affine = LAS_AFFINE  # 8 mm³ voxels
    report = labels_report(None, left_labels, affine, region_ids=[3, 7, 9],
                           region_names=["a", "b", "absent"])
    table = report.tables["Regions summary"]
    n3, n7 = np.count_nonzero(left_labels == 3), np.count_nonzero(left_labels == 7)
    assert table["label value"] == [3, 7, 9]
    assert table["size (voxels)"] == [n3, n7, 0]
    np.testing.assert_allclose(table["size (in mm^3)"], [8 * n3, 8 * n7, 0])
    assert table["relative size (in %)"] == [round(100 * n3 / (n3 + n7), 2),
                                             round(100 * n7 / (n3 + n7), 2), 0.0]
    assert report.sentences == ["The masker has 3 different non-overlapping regions."]
    default = labels_report(None, left_labels, affine).tables["Regions summary"]
    assert default["label value"] == [3, 7] and default["region name"] == ["3", "7"]
    with pytest.raises(ParameterError, match="region_names has 1 names but there are 2"):
        labels_report(None, left_labels, affine, region_names=["only one"])


def test_maps_report_is_fast_for_many_maps():
    rng = np.random.default_rng(1)
    maps = rng.random((16, 18, 14, 1000), dtype=np.float32)
    report = maps_report(None, maps, np.eye(4))
    assert report.sentences == ["The masker has 1000 spatial maps in total."]


def test_spheres_table_and_bad_seeds():
    report = spheres_report(None, np.eye(4), seeds=LEFT_SEEDS, radius=5)
    table = report.tables["Seeds"]
    assert table["x (mm)"] == [-10.0, -12.0] and table["y (mm)"] == [0.0, 4.0]
    assert table["size (mm³)"] == [round(4 / 3 * np.pi * 125, 2)] * 2
    assert report.sentences == ["The masker has 2 spheres in total."]
    assert spheres_report(None, np.eye(4), seeds=LEFT_SEEDS).tables["Seeds"]["size (mm³)"][0] == (
        "one voxel"
    )
    with pytest.raises(ParameterError, match=r"seeds has shape \(2, 2\)"):
        spheres_report(None, np.eye(4), seeds=[(0, 0), (1, 1)])
    with pytest.raises(ParameterError, match="radius must be None or a non-negative"):
        spheres_report(None, np.eye(4), seeds=LEFT_SEEDS, radius=-1)


def test_bad_inputs_are_named(mean_img, left_mask):
    with pytest.raises(ImageMismatchError, match=r"mean_img has shape \(20, 20, 19\) but mask"):
        mask_report(mean_img[..., :-1], left_mask, LAS_AFFINE)
    with pytest.raises(DimensionError, match="mask has 4 dimensions"):
        mask_report(None, left_mask[..., None], LAS_AFFINE)
    with pytest.raises(DimensionError, match="maps has 3 dimensions"):
        maps_report(None, left_mask, LAS_AFFINE)
    with pytest.raises(ParameterError, match="affine must be a finite 4x4 array"):
        mask_report(None, left_mask, np.eye(3))


# -- orientation -------------------------------------------------------------------------------
def test_to_ras_flips_a_las_image():
    data = np.arange(np.prod(SHAPE)).reshape(SHAPE)
    ras_data, ras_affine = to_ras(data, LAS_AFFINE)
    np.testing.assert_array_equal(ras_data, data[::-1])
    expected_affine = np.diag([2.0, 2, 2, 1])
    expected_affine[:3, 3] = -19
    np.testing.assert_allclose(ras_affine, expected_affine)
    canonical = nib.as_closest_canonical(nib.Nifti1Image(data.astype(np.int32), LAS_AFFINE))
    np.testing.assert_array_equal(ras_data, np.asarray(canonical.dataobj))
    np.testing.assert_allclose(ras_affine, canonical.affine)
    # an image already in RAS is returned as is
    assert to_ras(ras_data, ras_affine)[0] is ras_data


def _ras_copy(array, affine):
    """The same image stored in RAS order: flip the first axis and its affine column."""
    flipped_affine = affine.copy()
    flipped_affine[:3, 3] = affine[:3, :3] @ [array.shape[0] - 1, 0, 0] + affine[:3, 3]
    flipped_affine[:3, 0] *= -1
    return np.ascontiguousarray(array[::-1]), flipped_affine


@pytest.mark.parametrize("kind", KINDS)
def test_figures_do_not_depend_on_storage_order(kind, mean_img, left_mask, left_labels, png_figures):
    las = _report_of(kind, mean_img, LAS_AFFINE, left_mask, left_labels)
    ras_mean, ras_affine = _ras_copy(mean_img, LAS_AFFINE)
    np.testing.assert_allclose(ras_affine[0, 0], 2.0)
    ras = _report_of(kind, ras_mean, ras_affine, _ras_copy(left_mask, LAS_AFFINE)[0],
                     _ras_copy(left_labels, LAS_AFFINE)[0])
    np.testing.assert_array_equal(_decode(las.figures[0][0]), _decode(ras.figures[0][0]))


@pytest.mark.parametrize("kind", KINDS)
def test_overlay_on_the_left_is_drawn_on_the_left_of_the_axial_view(
    kind, mean_img, left_mask, left_labels, png_figures
):
    report = _report_of(kind, mean_img, LAS_AFFINE, left_mask, left_labels)
    pixels = _decode(report.figures[0][0])[..., :3]
    width = pixels.shape[1]
    # the grid is a cube: three views of equal width, the axial one last, centred on x = 0
    axial = pixels[:, 2 * width // 3:]
    # the background is grey and the text white: only the overlay has saturated colours
    coloured = axial.max(axis=-1) - axial.min(axis=-1) > 0.3
    columns = np.nonzero(coloured.any(axis=0))[0]
    assert columns.size > 0, "the overlay is not drawn in the axial view"
    assert columns.max() < axial.shape[1] / 2


# -- report_for: the report of a fitted masker, from its public attributes ---------------------------------
class _Fitted:
    """Any object with a masker's public fitted attributes (reporting knows no masker class)."""

    def __init__(self, params=None, **fitted):
        self._params = params or {"smoothing_fwhm": None}
        vars(self).update(fitted)

    def get_params(self, deep=False):
        return dict(self._params)


def _image(values, affine=LAS_AFFINE):
    from lazymask.io import image_dataarray

    return image_dataarray(values, affine)


def test_reporting_imports_no_masker():
    code = ("import sys, lazymask.reporting; "
            "print(sorted(m for m in sys.modules if m.startswith('lazymask.maskers')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_report_for_dispatches_on_fitted_attributes(mean_img, left_mask, left_labels):
    from lazymask.reporting import report_for

    params = {"smoothing_fwhm": None}
    mean = _image(mean_img)
    cases = {
        "mask": (_Fitted(mask_img_=_image(left_mask.astype(np.int8)), mean_img_=mean),
                 mask_report(mean_img, left_mask, LAS_AFFINE, parameters=params, title="_Fitted")),
        "labels": (_Fitted(labels_img_=_image(left_labels), mean_img_=mean, background_label=0,
                           region_ids_={"background": 0, 0: 3, 1: 7}, region_names_={0: "three", 1: "seven"}),
                   labels_report(mean_img, left_labels, LAS_AFFINE, region_ids=[3, 7],
                                 region_names=["three", "seven"], parameters=params, title="_Fitted")),
        "maps": (_Fitted(maps_img_=_image(np.stack([left_mask, ~left_mask], -1).astype(np.float32)),
                         mask_img_=None, mean_img_=None),
                 maps_report(None, np.stack([left_mask, ~left_mask], -1).astype(np.float32), LAS_AFFINE,
                             parameters=params, title="_Fitted")),
        "spheres": (_Fitted({"radius": 5}, seeds_=LEFT_SEEDS, mask_img_=None, mean_img_=mean),
                    spheres_report(mean_img, LAS_AFFINE, seeds=LEFT_SEEDS, radius=5, parameters={"radius": 5},
                                   title="_Fitted")),
    }
    for kind, (fitted, expected) in cases.items():
        assert report_for(fitted)._repr_html_() == expected._repr_html_(), kind
    # without any image (as nilearn): the spheres on a 1 mm grid around the seeds
    bare = report_for(_Fitted({"radius": 5}, seeds_=LEFT_SEEDS, mask_img_=None, mean_img_=None))
    assert bare._repr_html_() == spheres_report(None, np.eye(4), seeds=LEFT_SEEDS, radius=5, parameters={"radius": 5},
                                                title="_Fitted")._repr_html_()
    assert report_for(_Fitted({"radius": 5}, seeds_=LEFT_SEEDS, mask_img_=None, mean_img_=None),
                      title="Seeds", displayed=[]).title == "Seeds"


def test_report_for_resamples_the_mean_onto_the_overlay_and_keeps_it_lazy(mean_img, left_mask):
    import dask.array as da

    from lazymask.image import resample_img
    from lazymask.reporting import report_for

    coarse_affine = LAS_AFFINE @ np.diag([2.0, 2.0, 2.0, 1.0])
    lazy_mean = _image(da.from_array(mean_img, chunks=5))
    mask = _image(left_mask[::2, ::2, ::2].astype(np.int8), coarse_affine)
    fitted = _Fitted(mask_img_=mask, mean_img_=lazy_mean)
    expected_mean = resample_img(_image(mean_img.astype(np.float64)), target_affine=coarse_affine,
                                 target_shape=mask.shape).values
    expected = mask_report(expected_mean, left_mask[::2, ::2, ::2], coarse_affine,
                           parameters={"smoothing_fwhm": None}, title="_Fitted")
    assert report_for(fitted)._repr_html_() == expected._repr_html_()
    assert fitted.mean_img_ is lazy_mean and isinstance(fitted.mean_img_.data, da.Array)


def test_generate_report_is_report_for_of_the_fitted_masker(tmp_path):
    from lazymask.maskers import NiftiMasker
    from lazymask.reporting import report_for
    from lazymask.testing import fake_fmri

    img = fake_fmri((12, 14, 12), 10, dtype="int16", seed=2)
    masker = NiftiMasker(mask_strategy="epi", target_affine=np.diag([4.0, 4.0, 4.0])).fit(img)
    report = masker.generate_report()
    direct = report_for(masker)
    assert (report.figures, report.sentences, report.tables) == (direct.figures, direct.sentences, direct.tables)
    assert 'id="sk-container-id' in report.body  # generate_report adds scikit-learn's view of the masker
    original = masker.mask_img_before_resampling_
    mean = np.asarray(img.dataobj, dtype=np.float32).mean(axis=-1)  # the fitted run's mean, with numpy
    from lazymask.image import resample_img

    mask_affine = np.asarray(masker.mask_img_.attrs["affine"])
    on_mask = resample_img(_image(mean.astype(np.float64), img.affine), target_affine=mask_affine,
                           target_shape=masker.mask_img_.shape).values
    expected = mask_report(on_mask, np.asarray(masker.mask_img_) != 0, mask_affine,
                           original_mask=np.asarray(original) != 0, original_affine=img.affine,
                           parameters=masker.json_parameters(), title="NiftiMasker")
    assert report.sentences == expected.sentences
    np.testing.assert_allclose(masker.mean_img_.values, mean, rtol=1e-6)


def test_fitting_a_masker_imports_no_plotting_library(tmp_path):
    """fit records what a report needs without importing matplotlib (~0.5-1 s of every first fit);
    drawing a report imports it."""
    from lazymask.testing import fake_fmri

    run = tmp_path / "bold.nii.gz"
    fake_fmri(n_volumes=5).to_filename(run)
    code = ("import sys\nfrom lazymask.maskers import NiftiMasker\n"
            f"masker = NiftiMasker(mask_strategy='epi').fit({str(run)!r})\n"
            "print('matplotlib' in sys.modules)\n"
            "masker.generate_report().get_iframe()\n"
            "print('matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]
