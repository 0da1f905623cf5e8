"""Read-side fault suite: hostile files, headers, arguments and files changed under a graph.

Each case asserts the error class and its message (file named, what was found) or the correct
result (the values nibabel reads, or the data that was written when nibabel cannot read the file).
"""

import gzip
import os
import shutil
import zlib

import nibabel as nib
import numpy as np
import pytest

from lazymask.exceptions import (
    CorruptImageError,
    DimensionError,
    ImageFileNotFoundError,
    ImageTooLargeError,
    LazymaskError,
    NotNiftiError,
    ParameterError,
    SourceChangedError,
)
from lazymask.io import open_nifti, to_zarr
from lazymask.storage import file_identity

SHAPE = (6, 7, 5, 9)
DATA = np.random.default_rng(7).integers(-300, 300, SHAPE).astype(np.int16)
AFFINE = np.diag([2.0, 2.0, 2.5, 1.0])


def header_bytes(**fields) -> bytes:
    """A single-file NIfTI-1 header (+ 4 extension bytes) for DATA, with ``fields`` overridden."""
    img = nib.Nifti1Image(DATA, AFFINE)
    header = img.header
    header.set_data_offset(352)
    for name, value in fields.items():
        header[name] = value
    return header.binaryblock + b"\x00" * 4


def nifti_bytes(data=DATA, **fields) -> bytes:
    return header_bytes(**fields) + np.asfortranarray(data).tobytes(order="F")


def write(path, content: bytes):
    path.write_bytes(content)
    return path


def gz(content: bytes, level=6) -> bytes:
    return gzip.compress(content, compresslevel=level)


def values(path, **kwargs):
    return open_nifti(path, **kwargs).values


# -- names and content disagree: content decides, suffix case is ignored ------------------------
@pytest.mark.parametrize("name", ["x.NII.GZ", "x.Nii.Gz", "x.nii.GZ"])
def test_upper_case_gzip_suffix_reads_like_nibabel(tmp_path, name):
    path = write(tmp_path / name, gz(nifti_bytes(), level=6))
    if name == "x.NII.GZ":  # nibabel reads an all-upper-case suffix (not a mixed-case one)
        np.testing.assert_array_equal(values(path, chunks=2), np.asanyarray(nib.load(path).dataobj))
    np.testing.assert_array_equal(values(path, chunks=2), DATA)
    np.testing.assert_array_equal(values(path), DATA)


def test_upper_case_plain_suffix(tmp_path):
    path = write(tmp_path / "x.NII", nifti_bytes())
    np.testing.assert_array_equal(values(path, chunks=4), DATA)


def test_gzip_content_named_nii(tmp_path):
    path = write(tmp_path / "x.nii", gz(nifti_bytes()))
    np.testing.assert_array_equal(values(path, chunks=3), DATA)  # nibabel cannot read this one


def test_plain_content_named_nii_gz(tmp_path):
    path = write(tmp_path / "x.nii.gz", nifti_bytes())
    np.testing.assert_array_equal(values(path, chunks=3), DATA)


def test_no_suffix_at_all(tmp_path):
    path = write(tmp_path / "run-1_bold", gz(nifti_bytes()))
    np.testing.assert_array_equal(values(path), DATA)


def test_nifti2_upper_case(tmp_path):
    path = tmp_path / "two.NII.GZ"
    nib.save(nib.Nifti2Image(DATA, AFFINE), tmp_path / "two.nii.gz")
    os.rename(tmp_path / "two.nii.gz", path)
    np.testing.assert_array_equal(values(path, chunks=2), DATA)
    np.testing.assert_array_equal(open_nifti(path).attrs["affine"], AFFINE)


# -- not an image ---------------------------------------------------------------------------------
def test_empty_file(tmp_path):
    with pytest.raises(NotNiftiError, match=r"empty\.nii: the file is empty \(0 bytes\)"):
        open_nifti(write(tmp_path / "empty.nii", b""))


def test_empty_gzip(tmp_path):
    with pytest.raises(CorruptImageError, match=r"e\.nii\.gz: the gzip stream ends after 0 bytes, inside the NIfTI header"):
        open_nifti(write(tmp_path / "e.nii.gz", gz(b"")))


def test_text_file(tmp_path):
    with pytest.raises(NotNiftiError, match=r"notes\.nii: not a readable NIfTI image .*b'hello"):
        open_nifti(write(tmp_path / "notes.nii", b"hello world\n" * 40))


def test_gzip_of_text(tmp_path):
    with pytest.raises(NotNiftiError, match=r"t\.nii\.gz: not a readable NIfTI image \(its first bytes \(after gzip"):
        open_nifti(write(tmp_path / "t.nii.gz", gz(b"hello world\n" * 40)))


def test_directory_named_nii(tmp_path):
    (tmp_path / "d.nii").mkdir()
    with pytest.raises(NotNiftiError, match=r"d\.nii is a directory, not a NIfTI file nor an image store"):
        open_nifti(tmp_path / "d.nii")


def test_missing_file(tmp_path):
    with pytest.raises(ImageFileNotFoundError, match=r"gone\.nii\.gz: no such file"):
        open_nifti(tmp_path / "gone.nii.gz")


def test_symlink_loop(tmp_path):
    os.symlink(tmp_path / "b.nii", tmp_path / "a.nii")
    os.symlink(tmp_path / "a.nii", tmp_path / "b.nii")
    with pytest.raises(ImageFileNotFoundError, match=r"a\.nii: a symbolic link whose target does not exist \(or a loop"):
        open_nifti(tmp_path / "a.nii")


def test_broken_symlink(tmp_path):
    os.symlink(tmp_path / "nowhere.nii", tmp_path / "link.nii")
    with pytest.raises(ImageFileNotFoundError, match=r"link\.nii: a symbolic link"):
        open_nifti(tmp_path / "link.nii")


def test_symlink_to_a_real_file_is_followed(tmp_path):
    write(tmp_path / "real.nii.gz", gz(nifti_bytes()))
    os.symlink(tmp_path / "real.nii.gz", tmp_path / "alias.nii.gz")
    np.testing.assert_array_equal(values(tmp_path / "alias.nii.gz"), DATA)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file(tmp_path):
    path = write(tmp_path / "secret.nii", nifti_bytes())
    path.chmod(0)
    try:
        with pytest.raises(ImageFileNotFoundError, match=r"secret\.nii: permission denied"):
            open_nifti(path)
    finally:
        path.chmod(0o600)


def test_unreadable_file_as_any_user(tmp_path, monkeypatch):
    """The same refusal, the permission error simulated (the suite may run as root)."""
    import builtins

    path = write(tmp_path / "locked.nii.gz", gz(nifti_bytes()))
    real_open = builtins.open

    def guarded(file, *args, **kwargs):
        if os.fspath(file) == str(path):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded)
    with pytest.raises(ImageFileNotFoundError, match=r"locked\.nii\.gz: permission denied"):
        open_nifti(path)


def test_nifti_pair_header(tmp_path):
    nib.save(nib.Nifti1Pair(DATA, AFFINE), tmp_path / "pair.hdr")
    with pytest.raises(NotNiftiError, match=r"pair\.hdr: the header of a NIfTI pair .*separate \.img"):
        open_nifti(tmp_path / "pair.hdr")


def test_analyze_header(tmp_path):
    nib.save(nib.AnalyzeImage(DATA, AFFINE), tmp_path / "old.img")
    with pytest.raises(NotNiftiError, match=r"old\.hdr: not a readable NIfTI image .*convert other formats"):
        open_nifti(tmp_path / "old.hdr")


def test_mgh_file(tmp_path):
    nib.save(nib.MGHImage(DATA.astype(np.float32), AFFINE), tmp_path / "brain.mgz")
    with pytest.raises(NotNiftiError, match=r"brain\.mgz: not a readable NIfTI image \(its first bytes \(after gzip"):
        open_nifti(tmp_path / "brain.mgz")


def test_mixed_formats_in_one_list(tmp_path):
    path = write(tmp_path / "x.nii", nifti_bytes())
    to_zarr(open_nifti(path), tmp_path / "x.zarr")
    with pytest.raises(ParameterError, match=r"different formats .*x\.zarr is zarr image store"):
        open_nifti([tmp_path / "x.zarr", path])


# -- gzip corruption ------------------------------------------------------------------------------
@pytest.fixture
def good_gz():
    return bytearray(gz(nifti_bytes()))


@pytest.mark.parametrize("where, what", [(-8, "CRC"), (-4, "ISIZE")])
def test_gzip_trailer_corrupt(tmp_path, good_gz, where, what):
    good_gz[where] ^= 0x01
    path = write(tmp_path / f"{what}.nii.gz", bytes(good_gz))
    lazy = open_nifti(path, chunks=3)
    with pytest.raises(CorruptImageError, match=rf"{what}\.nii\.gz: the gzip stream is corrupt"):
        lazy.values


def test_gzip_flipped_bytes_in_the_data(tmp_path, good_gz):
    middle = len(good_gz) // 2
    good_gz[middle : middle + 8] = bytes(b ^ 0xFF for b in good_gz[middle : middle + 8])
    path = write(tmp_path / "flip.nii.gz", bytes(good_gz))
    with pytest.raises(CorruptImageError, match=r"flip\.nii\.gz: the gzip stream"):
        values(path, chunks=2)


def test_gzip_bad_deflate_method_byte(tmp_path, good_gz):
    good_gz[2] = 7  # compression method: not deflate
    with pytest.raises(CorruptImageError, match=r"m\.nii\.gz: starts like a gzip file but its stream is corrupt"):
        open_nifti(write(tmp_path / "m.nii.gz", bytes(good_gz)))


@pytest.mark.parametrize("keep", [5, 12, 60, 0.5, -12, -8, -1])
def test_gzip_truncated_at_every_stage(tmp_path, good_gz, keep):
    """Cut in the gzip header, in the NIfTI header, in the voxels, in the trailer: never silent."""
    keep = int(len(good_gz) * keep) if isinstance(keep, float) else keep
    path = write(tmp_path / "cut.nii.gz", bytes(good_gz[:keep]))
    with pytest.raises(CorruptImageError, match=r"cut\.nii\.gz: .*(truncated|corrupt)"):
        values(path, chunks=2)


def test_gzip_garbage_after_the_member(tmp_path, good_gz):
    path = write(tmp_path / "junk.nii.gz", bytes(good_gz) + b"not gzip at all")
    with pytest.raises(CorruptImageError, match=r"junk\.nii\.gz: the gzip stream is corrupt"):
        values(path)


def test_gzip_zero_padding_and_multi_member(tmp_path):
    raw = nifti_bytes()
    members = gz(raw[:1000], level=1) + gz(raw[1000:], level=9) + b"\x00" * 64
    np.testing.assert_array_equal(values(write(tmp_path / "mm.nii.gz", members), chunks=2), DATA)


def test_raw_deflate_without_gzip_wrapper(tmp_path):
    path = write(tmp_path / "z.nii.gz", zlib.compress(nifti_bytes()))  # zlib wrapper, not gzip
    with pytest.raises(NotNiftiError, match=r"z\.nii\.gz: not a readable NIfTI image"):
        open_nifti(path)


# -- headers --------------------------------------------------------------------------------------
@pytest.mark.parametrize("pixdim, problem", [([1, np.nan, 2, 2.5, 1, 0, 0, 0], "not finite"),
                                             ([1, 2, np.inf, 2.5, 1, 0, 0, 0], "not finite"),
                                             ([1, 2, 0, 2.5, 1, 0, 0, 0], "zero")])
def test_bad_pixdim_with_qform(tmp_path, pixdim, problem):
    path = write(tmp_path / "pix.nii", nifti_bytes(pixdim=pixdim, sform_code=0, qform_code=1))
    with pytest.raises(CorruptImageError, match=rf"pix\.nii: the header's voxel sizes pixdim\[1:4\] = .* are {problem}"):
        open_nifti(path)


def test_bad_pixdim_without_any_form(tmp_path):
    path = write(tmp_path / "pix0.nii", nifti_bytes(pixdim=[1, np.nan, 2, 2, 1, 0, 0, 0], sform_code=0, qform_code=0))
    with pytest.raises(CorruptImageError, match=r"pix0\.nii: the header's voxel sizes .* not finite"):
        open_nifti(path)


def test_nan_pixdim_ignored_when_the_sform_places_the_voxels(tmp_path):
    path = write(tmp_path / "ok.nii", nifti_bytes(pixdim=[1, np.nan, 2, 2.5, 1, 0, 0, 0], sform_code=1))
    np.testing.assert_array_equal(open_nifti(path).attrs["affine"], nib.load(path).affine)


def test_nan_sform(tmp_path):
    path = write(tmp_path / "s.nii", nifti_bytes(srow_x=[np.nan, 0, 0, 0], sform_code=1))
    with pytest.raises(CorruptImageError, match=r"s\.nii: the voxel-to-world affine from the sform .* is not finite"):
        open_nifti(path)


def test_singular_sform(tmp_path):
    path = write(tmp_path / "flat.nii", nifti_bytes(srow_z=[0, 0, 0, 5], sform_code=1))
    with pytest.raises(CorruptImageError, match=r"flat\.nii: .*sform .* is singular"):
        open_nifti(path)


def test_nan_affine_of_a_nibabel_image(tmp_path):
    path = write(tmp_path / "nanpix.nii", nifti_bytes(pixdim=[1, np.nan, 2, 2.5, 1, 0, 0, 0], sform_code=0, qform_code=1))
    image = nib.load(path)  # nibabel opens it, with a NaN affine
    assert np.isnan(image.affine).any()
    with pytest.raises(CorruptImageError, match=r"nanpix\.nii: the voxel-to-world affine from the image's affine is not finite"):
        open_nifti(image)


def test_negative_dimension(tmp_path):
    path = write(tmp_path / "neg.nii", nifti_bytes(dim=[4, 6, -7, 5, 9, 1, 1, 1]))
    with pytest.raises(CorruptImageError, match=r"neg\.nii: the header declares an image of shape \(6, -7, 5, 9\) .*negative"):
        open_nifti(path)


def test_zero_dimension(tmp_path):
    path = write(tmp_path / "zero.nii", nifti_bytes(dim=[4, 6, 7, 0, 9, 1, 1, 1]))
    with pytest.raises(CorruptImageError, match=r"zero\.nii: .*shape \(6, 7, 0, 9\) .*empty"):
        open_nifti(path)


@pytest.mark.parametrize("n_dims", [0, 9, -1])
def test_dim0_out_of_range(tmp_path, n_dims):
    path = write(tmp_path / "d0.nii", nifti_bytes(dim=[n_dims, *SHAPE, 1, 1, 1]))
    with pytest.raises(CorruptImageError, match=rf"d0\.nii: the header's dim\[0\] \(the number of dimensions\) is {n_dims}, not 1 to 7"):
        open_nifti(path)


def test_big_endian_file(tmp_path):
    header = nib.Nifti1Header(endianness=">")
    header.set_data_shape(SHAPE)
    header.set_data_dtype(">i2")
    header.set_qform(AFFINE, 1)
    header.set_data_offset(352)
    path = write(tmp_path / "be.nii", header.binaryblock + b"\x00" * 4 + DATA.astype(">i2").tobytes(order="F"))
    np.testing.assert_array_equal(values(path, chunks=2), DATA)
    np.testing.assert_array_equal(values(path), np.asanyarray(nib.load(path).dataobj))


def test_infinite_intercept(tmp_path):
    path = write(tmp_path / "inter.nii", nifti_bytes(scl_slope=2, scl_inter=np.inf))
    with pytest.raises(CorruptImageError, match=r"inter\.nii: the NIfTI header is invalid \(Valid slope but invalid intercept inf"):
        open_nifti(path)


@pytest.mark.parametrize("slope", [np.inf, np.nan, 0])
def test_unusable_slope_means_no_scaling_as_in_nibabel(tmp_path, slope):
    path = write(tmp_path / "slope.nii", nifti_bytes(scl_slope=slope, scl_inter=3))
    np.testing.assert_array_equal(values(path), np.asanyarray(nib.load(path).dataobj))


def test_scaled_gzip_named_upper_case(tmp_path):
    path = write(tmp_path / "scaled.NII.GZ", gz(nifti_bytes(scl_slope=0.5, scl_inter=-2)))
    expected = np.asanyarray(nib.load(path).dataobj)
    got = values(path, chunks=4)
    assert got.dtype == expected.dtype and expected.dtype.kind == "f"
    np.testing.assert_array_equal(got, expected)


def test_not_a_regular_file(tmp_path):
    os.mkfifo(tmp_path / "pipe.nii")
    with pytest.raises(NotNiftiError, match=r"pipe\.nii is not a regular file"):
        open_nifti(tmp_path / "pipe.nii")


def test_unknown_datatype_code(tmp_path):
    path = write(tmp_path / "dt.nii", nifti_bytes(datatype=1234))
    with pytest.raises(CorruptImageError, match=r"dt\.nii: the NIfTI header is invalid \(data code 1234"):
        open_nifti(path)


def test_complex_voxels_unsupported(tmp_path):
    nib.save(nib.Nifti1Image(DATA.astype(np.complex64), AFFINE), tmp_path / "c.nii")
    with pytest.raises(NotNiftiError, match=r"c\.nii: voxels of dtype complex64 are not supported"):
        open_nifti(tmp_path / "c.nii")


def test_vox_offset_beyond_the_file(tmp_path):
    path = write(tmp_path / "far.nii", nifti_bytes(vox_offset=10**9))
    with pytest.raises(CorruptImageError, match=r"far\.nii: the header's vox_offset puts the voxel data at byte 1000000000"):
        open_nifti(path)


def test_negative_vox_offset(tmp_path):
    path = write(tmp_path / "vneg.nii", nifti_bytes(vox_offset=-10))
    with pytest.raises(CorruptImageError, match=r"vneg\.nii: the NIfTI header is invalid \(vox offset -10"):
        open_nifti(path)


def test_truncated_plain_file(tmp_path):
    path = write(tmp_path / "short.nii", nifti_bytes()[:-100])
    with pytest.raises(CorruptImageError, match=r"short\.nii: .*the file is truncated"):
        open_nifti(path)


def test_truncated_inside_the_header(tmp_path):
    path = write(tmp_path / "h.nii", nifti_bytes()[:200])
    with pytest.raises(CorruptImageError, match=r"h\.nii: the file ends after 200 bytes, inside its 348-byte NIfTI header"):
        open_nifti(path)


def test_five_dimensions(tmp_path):
    path = write(tmp_path / "five.nii", nifti_bytes(data=DATA[..., None].repeat(2, 4), dim=[5, *SHAPE, 2, 1, 1]))
    with pytest.raises(DimensionError, match=r"five\.nii: a 5D image"):
        open_nifti(path)


def test_absurd_dimensions(tmp_path):
    path = write(tmp_path / "huge.nii", nifti_bytes(dim=[4, 30000, 30000, 30000, 30000, 1, 1, 1]))
    with pytest.raises(ImageTooLargeError, match=r"huge\.nii: .*TiB of voxels"):
        open_nifti(path)


def nifti2_bytes(dims, *, datatype=4, bitpix=16, n_data_bytes=64) -> bytes:
    """A single-file NIfTI-2 header written field by field (not by nibabel), ``dims`` as given."""
    import struct

    header = bytearray(540)
    struct.pack_into("<i8s", header, 0, 540, b"n+2\0\r\n\x1a\n")
    struct.pack_into("<hh", header, 12, datatype, bitpix)
    struct.pack_into("<8q", header, 16, len(dims), *dims, *[1] * (7 - len(dims)))
    struct.pack_into("<8d", header, 104, 1.0, 2.0, 2.0, 2.0, 1.0, 1.0, 1.0, 1.0)  # pixdim
    struct.pack_into("<qdd", header, 168, 544, 1.0, 0.0)  # vox_offset, scl_slope, scl_inter
    struct.pack_into("<i", header, 500, 10)  # xyzt_units: mm, s
    return bytes(header) + b"\0" * 4 + b"\0" * n_data_bytes


INT64_MAX = 2**63 - 1


@pytest.mark.parametrize("dims", [
    (2**40, 2**40, 2**40, 2**20),      # 2**140 voxels: 0 in int64
    (2**21, 2**21, 2**21),             # 3D, 2**63 voxels: int64's min
    (3037000500, 3037000500, 1),       # voxels just over int64's max
    (INT64_MAX, 2, 1),                 # a dim at int64's max
    (2**31, 2**31, 2, 2),              # 2**64 bytes of int16: 0 in int64
])
def test_nifti2_dims_whose_product_overflows_int64(tmp_path, dims):
    from lazymask.cli import main

    path = write(tmp_path / "huge2.nii", nifti2_bytes(dims))
    assert nib.load(path).shape[:len(dims)] == dims  # nibabel reads the header as written
    shown = " x ".join(map(str, dims))
    with pytest.raises(ImageTooLargeError, match=rf"huge2\.nii: the header declares dimensions {shown} of int16, "
                                                 r"i\.e\. .* TiB of voxels .*header's dim field is corrupt\. "
                                                 r"Re-create the file, or repair its dims"):
        open_nifti(path)
    assert main(["info", str(path)]) == 2


def test_nifti2_overflow_is_one_line_from_the_cli(tmp_path, capsys):
    from lazymask.cli import main

    path = write(tmp_path / "huge2.nii.gz", gz(nifti2_bytes((2**40, 2**40, 2**40, 2**20))))
    assert main(["info", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith("lazymask: error: ")
    assert "huge2.nii.gz: the header declares dimensions 1099511627776 x 1099511627776 x 1099511627776 x 1048576" \
        in captured.err and "TiB of voxels" in captured.err


@pytest.mark.parametrize(("dims", "problem"), [
    ((6, -7, 5, 9), r"\(6, -7, 5, 9\) .*negative"),
    ((-(2**62), 2**62, 4), "negative"),
    ((6, 7, 0, 9), r"\(6, 7, 0, 9\) .*empty"),
    ((0, 2**40, 2**40), "empty"),                   # a zero times huge dims: not a small image either
])
def test_nifti2_negative_and_zero_dims(tmp_path, dims, problem):
    from lazymask.cli import main

    path = write(tmp_path / "bad2.nii", nifti2_bytes(dims))
    with pytest.raises(CorruptImageError, match=rf"bad2\.nii: the header declares an image of shape .*{problem}"):
        open_nifti(path)
    assert main(["info", str(path)]) == 2


def test_absurd_3d_dimensions_in_nifti1(tmp_path):
    path = write(tmp_path / "huge3.nii", nifti_bytes(dim=[3, 32767, 32767, 32767, 1, 1, 1, 1]))
    with pytest.raises(ImageTooLargeError, match=r"huge3\.nii: the header declares dimensions 32767 x 32767 x 32767 "
                                                 r"of int16, i\.e\. 64\.0 TiB"):
        open_nifti(path)


# -- arguments ------------------------------------------------------------------------------------
@pytest.mark.parametrize("chunks, message", [
    (2.5, r"chunks=2\.5 \(float\): expected 'auto', a positive int"),
    (True, r"chunks=True \(bool\)"),
    ("big", r"chunks='big': unknown string"),
    (0, r"chunks=0: the number of volumes per chunk must be >= 1"),
    (-3, r"chunks=-3: the number of volumes per chunk must be >= 1"),
    ((2.5, 6.5), r"chunks=\(2\.5, 6\.5\) \(tuple\)"),
    ((4, 4), r"add up to the 9 volumes"),
    ((9, 0), r"chunk lengths must be positive"),
    ({"time": 2.5}, r"chunks=\{'time': 2\.5\} \(float\)"),
    ({"x": 2}, r"unknown dims \['x'\]"),
    ({"i": 3}, r"along 'time' only"),
    ([], r"chunks=\[\]: chunk lengths must be positive"),
])
def test_bad_chunks(tmp_path, chunks, message):
    path = write(tmp_path / "c.nii.gz", gz(nifti_bytes()))
    with pytest.raises(ParameterError, match=message):
        open_nifti(path, chunks=chunks)


def test_bad_chunks_refused_before_the_file_is_looked_at(tmp_path):
    with pytest.raises(ParameterError, match=r"chunks=2\.5"):
        open_nifti(tmp_path / "does-not-exist.nii", chunks=2.5)


@pytest.mark.parametrize("chunks", [np.int64(4), (np.int32(4), 5), [3, 3, 3], {"time": -1}, None, -1])
def test_good_chunks(tmp_path, chunks):
    path = write(tmp_path / "c.nii.gz", gz(nifti_bytes()))
    np.testing.assert_array_equal(values(path, chunks=chunks), DATA)


def test_not_a_path():
    with pytest.raises(ParameterError, match="cannot open 'int'"):
        open_nifti(42)


# -- files that change after open ---------------------------------------------------------------
@pytest.mark.parametrize("name", ["r.nii", "r.nii.gz"])
def test_file_replaced_after_open(tmp_path, name):
    encode = gz if name.endswith(".gz") else (lambda b: b)
    path = write(tmp_path / name, encode(nifti_bytes()))
    lazy = open_nifti(path, chunks=3)
    other = np.zeros((8, 8, 8, 2), np.int16)
    write(tmp_path / "new", encode(nifti_bytes(data=other, dim=[4, 8, 8, 8, 2, 1, 1, 1])))
    os.replace(tmp_path / "new", path)  # same path, other content and shape
    with pytest.raises(SourceChangedError, match=rf"{name.replace('.', '[.]')}: the file changed after it was opened \(.*inode"):
        lazy.values
    np.testing.assert_array_equal(values(path), other)  # opened again: the new content


def test_file_rewritten_in_place_after_open(tmp_path):
    path = write(tmp_path / "w.nii", nifti_bytes())
    lazy = open_nifti(path)
    with open(path, "r+b") as f:  # same inode, same size, other voxels
        f.seek(400)
        f.write(b"\x7f" * 100)
    os.utime(path, ns=(0, 10**18))  # the mtime moves (as any write does)
    with pytest.raises(SourceChangedError, match=r"w\.nii: the file changed after it was opened \(.*mtime_ns"):
        lazy.values


def test_file_truncated_after_open(tmp_path):
    path = write(tmp_path / "t.nii.gz", gz(nifti_bytes()))
    lazy = open_nifti(path, chunks=2)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(SourceChangedError, match=r"t\.nii\.gz: the file changed after it was opened \(size"):
        lazy.values


def test_file_deleted_after_open(tmp_path):
    path = write(tmp_path / "del.nii.gz", gz(nifti_bytes()))
    lazy = open_nifti(path)
    path.unlink()
    with pytest.raises(ImageFileNotFoundError, match=r"del\.nii\.gz: the file no longer exists"):
        lazy.values


def test_change_between_chunks_of_one_pass(tmp_path):
    """Every read task checks: a file replaced midway through a pass fails the pass."""
    path = write(tmp_path / "mid.nii", nifti_bytes())
    lazy = open_nifti(path, chunks=1)
    first = lazy.isel(time=0).values  # one chunk read fine
    np.testing.assert_array_equal(first, DATA[..., 0])
    write(tmp_path / "new", nifti_bytes(data=DATA + 1))
    os.replace(tmp_path / "new", path)
    with pytest.raises(SourceChangedError, match=r"mid\.nii"):
        lazy.isel(time=5).values


def test_identity_fields(tmp_path):
    path = write(tmp_path / "id.nii", nifti_bytes())
    identity = file_identity(path)
    stat = os.stat(path)
    assert identity == (str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_ctime_ns)
    shutil.copy(path, tmp_path / "copy.nii")
    os.replace(tmp_path / "copy.nii", path)
    assert file_identity(path) != identity


def test_every_error_is_a_lazymask_error():
    assert all(issubclass(e, LazymaskError) for e in (SourceChangedError, CorruptImageError, NotNiftiError))
