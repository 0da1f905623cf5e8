"""lazymask.plotting: what is drawn (cuts, labels, outlines, colours), rendered with Agg."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.contour import ContourSet  # noqa: E402
from matplotlib.image import AxesImage  # noqa: E402

from lazymask import image, open_nifti  # noqa: E402
from lazymask.exceptions import DimensionError, ImageMismatchError, ParameterError  # noqa: E402
from lazymask.plotting import plot_carpet, plot_epi, plot_img, plot_roi, plot_stat_map, show  # noqa: E402
from lazymask.testing import count_voxel_reads, fake_fmri  # noqa: E402

AFFINE = np.array([[2.0, 0, 0, -20], [0, 2, 0, -30], [0, 0, 2, -10], [0, 0, 0, 1]])


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def cube_mask():
    mask = np.zeros((20, 24, 16), np.uint8)
    mask[4:9, 10:15, 6:12] = 1  # voxel centre of mass (6, 12, 8.5)
    return nib.Nifti1Image(mask, AFFINE)


def texts(display):
    return [[t.get_text() for t in ax.texts] for ax in display.axes]


def test_plot_roi_cuts_through_the_roi_with_labels_and_outline(cube_mask):
    display = plot_roi(cube_mask, bg_img=None, title="a cube")
    assert [letter for letter, _ in display.cuts] == ["x", "y", "z"]
    np.testing.assert_allclose(display.cut_coords, AFFINE[:3, :3] @ [6, 12, 8.5] + AFFINE[:3, 3])
    sagittal, coronal, axial = texts(display)
    assert sagittal == ["x=-8"]  # no L/R on a sagittal view
    assert coronal == ["y=-6", "L", "R"] and axial[0] == "z=7" and axial[1:] == ["L", "R"]
    for ax in display.axes:
        assert any(isinstance(c, ContourSet) for c in ax.get_children()), "no ROI outline"
        assert any(isinstance(i, AxesImage) for i in ax.images), "no filled ROI"
        assert len(ax.lines) == 2  # the cross
    outline = next(c for c in display.axes[2].get_children() if isinstance(c, ContourSet))
    vertices = np.concatenate([path.vertices for path in outline.get_paths()])
    # the outline runs along the voxels' edges: i 4..8 -> x -13..-3 mm, j 10..14 -> y -11..-1 mm
    np.testing.assert_allclose([vertices[:, 0].min(), vertices[:, 0].max()], [-13, -3])
    np.testing.assert_allclose([vertices[:, 1].min(), vertices[:, 1].max()], [-11, -1])
    assert any(t.get_text() == "a cube" for t in display.figure.texts)
    assert display.figure.get_facecolor()[:3] == (0, 0, 0)


def test_plot_roi_contours_only_and_radiological(cube_mask):
    display = plot_roi(cube_mask, bg_img=None, view_type="contours", radiological=True, draw_cross=False)
    axial = display.axes[2]
    assert len(axial.images) == 0 and len(axial.lines) == 0
    assert [t.get_text() for t in axial.texts][1:] == ["R", "L"]
    left, right = axial.get_xlim()
    assert left > right  # radiological: world x decreases to the right
    with pytest.raises(ParameterError, match="view_type='outline'"):
        plot_roi(cube_mask, view_type="outline")


def test_roi_over_a_background_on_another_grid_is_placed_in_world_mm(cube_mask):
    background = nib.Nifti1Image(np.random.default_rng(0).random((40, 48, 32)).astype(np.float32),
                                 np.diag([1.0, 1, 1, 1]) @ np.array([[1, 0, 0, -21], [0, 1, 0, -31], [0, 0, 1, -11],
                                                                     [0, 0, 0, 1.0]]))
    display = plot_roi(cube_mask, bg_img=background)
    background_image, roi_image = display.axes[2].images[:2]
    np.testing.assert_allclose(background_image.get_extent(), [-21.5, 18.5, -31.5, 16.5])
    np.testing.assert_allclose(roi_image.get_extent(), [-21, 19, -31, 17])


def test_plot_epi_lazy_mean_black_background_and_colorbar(tmp_path):
    run_path = tmp_path / "run.nii.gz"
    fake_fmri(n_volumes=6).to_filename(run_path)
    mean = image.mean_img(str(run_path))
    display = plot_epi(mean, title="Mean EPI image", cut_coords=(0, 3, -3))
    assert display.black_bg and display.cut_coords == (0.0, 3.0, -3.0)
    assert [t[0] for t in texts(display)] == ["x=0", "y=3", "z=-3"]
    assert display.axes[0].images[0].get_cmap().name == "gray"
    assert any(ax.get_label() == "colorbar" for ax in display.figure.axes)


@pytest.mark.parametrize(("mode", "cut_coords", "expected"), [
    ("z", [-5, 0, 5], [("z", -5.0), ("z", 0.0), ("z", 5.0)]),
    ("x", 3, None),
    ("yz", None, None),
    ("xz", (1, 2, 3), [("x", 1.0), ("z", 3.0)]),
])
def test_display_modes(cube_mask, mode, cut_coords, expected):
    display = plot_img(cube_mask, display_mode=mode, cut_coords=cut_coords)
    letters = [letter for letter, _ in display.cuts]
    assert set(letters) == set(mode) and len(display.axes) == len(display.cuts)
    if expected is not None:
        assert display.cuts == expected
    if mode == "x":
        positions = [p for _, p in display.cuts]
        assert len(positions) == 3 and positions == sorted(positions)
        assert -12 <= positions[0] and positions[-1] <= -4  # inside the cube's x extent (-12 .. -4 mm)
    with pytest.raises(ParameterError, match="display_mode='mosaic'"):
        plot_img(cube_mask, display_mode="mosaic")


def test_plot_stat_map_threshold_hides_small_values_and_saves(tmp_path):
    stat = np.zeros((12, 12, 12), np.float32)
    stat[2:5, 2:5, 2:5] = 5.0
    stat[8:10, 8:10, 8:10] = -3.0
    stat[6, 6, 6] = 0.5
    img = nib.Nifti1Image(stat, np.eye(4))
    display = plot_stat_map(img, bg_img=None, threshold=1.0, cut_coords=(6, 6, 6))
    drawn = display.axes[2].images[-1].get_array()
    assert np.ma.is_masked(drawn) and drawn.mask[6, 6]  # 0.5 < threshold: transparent
    norm = display.axes[2].images[-1].norm
    assert (norm.vmin, norm.vmax) == (-5.0, 5.0)
    out = tmp_path / "stat.png"
    assert plot_stat_map(img, bg_img=None, output_file=out) is None
    assert out.stat().st_size > 1000 and out.read_bytes()[:4] == b"\x89PNG"


def test_inputs_paths_nibabel_dataarrays_and_errors(cube_mask, tmp_path):
    path = tmp_path / "mask.nii.gz"
    cube_mask.to_filename(path)
    for img in (str(path), cube_mask, open_nifti(str(path))):
        assert plot_roi(img, bg_img=None).cut_coords == pytest.approx((-8.0, -6.0, 7.0))
    with pytest.raises(DimensionError, match="plotting draws 3D images"):
        plot_epi(fake_fmri(n_volumes=3))
    with pytest.raises(ParameterError, match="needs 3 coordinates"):
        plot_img(cube_mask, cut_coords=(1, 2))


def test_plot_carpet_reads_the_run_once_and_draws_every_mask_voxel(tmp_path):
    run = fake_fmri(shape=(10, 12, 10), n_volumes=30, dtype="float32")
    path = tmp_path / "run.nii"
    run.to_filename(path)
    mask = np.zeros((10, 12, 10), np.uint8)
    mask[2:8, 3:9, 2:8] = 1
    mask_img = nib.Nifti1Image(mask, run.affine)
    with count_voxel_reads() as reads:
        figure = plot_carpet(str(path), mask_img=mask_img, title="carpet")
    assert reads.volumes == 30  # one pass
    carpet = figure.axes[0].images[0].get_array()
    assert carpet.shape == (int(mask.sum()), 30)
    assert figure.axes[0].get_xlabel() == "time (s)" and figure.axes[0].get_title() == "carpet"
    with count_voxel_reads() as reads:
        figure = plot_carpet(str(path))  # the EPI mask, from the same pass
    assert reads.volumes == 30
    with pytest.raises(ImageMismatchError):
        plot_carpet(str(path), mask_img=nib.Nifti1Image(mask[:9], run.affine))


def test_plot_carpet_equals_nilearn_data(tmp_path):
    nilearn_plotting = pytest.importorskip("nilearn.plotting")
    run = fake_fmri(shape=(10, 12, 10), n_volumes=30, dtype="float32")
    mask = np.zeros((10, 12, 10), np.uint8)
    mask[2:8, 3:9, 2:8] = 1
    mask_img = nib.Nifti1Image(mask, run.affine)
    ours = plot_carpet(run, mask_img=mask_img).axes[0].images[0]
    theirs = nilearn_plotting.plot_carpet(run, mask_img=mask_img).axes[0].images[0]
    np.testing.assert_allclose(ours.get_array(), theirs.get_array(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ours.get_clim(), theirs.get_clim(), rtol=1e-4)
    ours_default = plot_carpet(run).axes[0].images[0].get_array()
    theirs_default = nilearn_plotting.plot_carpet(run).axes[0].images[0].get_array()
    assert ours_default.shape == theirs_default.shape


def test_plot_carpet_labels_strip_and_row_cap():
    run = fake_fmri(shape=(10, 12, 10), n_volumes=20, dtype="float32")
    labels = np.zeros((10, 12, 10), np.int16)
    labels[2:5, 3:9, 2:8] = 2
    labels[5:8, 3:9, 2:8] = 1
    figure = plot_carpet(run, mask_img=nib.Nifti1Image(labels, run.affine), mask_labels={"one": 1, "two": 2})
    strip, carpet = figure.axes
    assert [t.get_text() for t in strip.get_yticklabels()] == ["one", "two"]
    assert carpet.images[0].get_array().shape == (int((labels > 0).sum()), 20)
    capped = plot_carpet(run, mask_img=nib.Nifti1Image(labels, run.affine), max_rows=50)
    assert capped.axes[-1].images[0].get_array().shape[0] <= 50


def test_show_calls_pyplot(monkeypatch):
    called = []
    monkeypatch.setattr(plt, "show", lambda: called.append(True))
    show()
    assert called == [True]
