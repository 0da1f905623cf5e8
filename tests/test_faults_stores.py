"""The store-side fault suite: hostile targets, killed writes, damaged and hostile stores.

Each case asserts the error class and its message (what was found, where). Cases by kind:
writes onto existing paths (nothing lazymask did not write is ever removed or replaced), writes
killed with SIGKILL in a subprocess (the old store intact or nothing published; the next run
cleans), damaged stores (missing, truncated, altered chunks -> CorruptStoreError naming the
store, the array and the chunk, never fill values), and hostile metadata (wrong shapes, deep
nesting, wrong types, huge attributes, paths and names that must not be followed).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import xarray as xr
import zarr

import lazymask
from lazymask.datasets import load_demo
from lazymask.exceptions import (
    CorruptImageError,
    CorruptStoreError,
    LazymaskError,
    NotNiftiError,
    ParameterError,
    UnsafeTargetError,
)
from lazymask.io import is_complete, open_zarr, to_nifti, to_zarr, verify
from lazymask.maskers import NiftiLabelsMasker, NiftiMasker, load_masker, open_signals, save_signals
from lazymask.testing import fake_fmri

ROOT = Path(__file__).resolve().parents[1]


# -- fixtures -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("faults") / "bold.nii.gz"
    nib.save(fake_fmri((12, 14, 10), 24, t_r=2.0, seed=7), path)
    return path


@pytest.fixture(scope="module")
def fitted(run_path):
    masker = NiftiMasker(mask_strategy="epi")
    return masker, masker.fit_transform(str(run_path))


def _image(run_path):
    with lazymask.config.set(zarr_chunk_bytes=12 * 14 * 10 * 2 * 4):  # 4 volumes per stored chunk
        img = lazymask.open_nifti(run_path, chunks=4)
    return img


def _write_image(run_path, store):
    with lazymask.config.set(zarr_chunk_bytes=12 * 14 * 10 * 2 * 4):
        to_zarr(lazymask.open_nifti(run_path, chunks=4), store)
    return store


def _signals_store(fitted, store, group=None):
    masker, signals = fitted
    save_signals(signals, store, group, masker=masker)
    return store


def _foreign_dir(path: Path) -> Path:
    path.mkdir()
    (path / "important.txt").write_text("years of work")
    (path / "sub").mkdir()
    (path / "sub" / "notes.md").write_text("more work")
    return path


def _tree(path: Path) -> list:
    return sorted((str(p.relative_to(path)), p.read_bytes() if p.is_file() else None) for p in path.rglob("*"))


def _edit_json(path: Path, edit) -> None:
    document = json.loads(path.read_text())
    edit(document)
    path.write_text(json.dumps(document))


def _chunks(array_dir: Path) -> list[Path]:
    return sorted(p for p in (array_dir / "c").rglob("*") if p.is_file())


# -- writes onto existing paths -------------------------------------------------------------------
@pytest.mark.parametrize("overwrite", [False, True])
def test_to_zarr_refuses_a_foreign_directory(run_path, tmp_path, overwrite):
    mydata = _foreign_dir(tmp_path / "mydata")
    before = _tree(mydata)
    with pytest.raises(UnsafeTargetError, match=r"mydata.*holds a directory lazymask did not write \(2 entries: "
                                                r"important.txt, sub\).*whatever overwrite says"):
        to_zarr(_image(run_path), mydata, overwrite=overwrite)
    assert _tree(mydata) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mydata"]  # no staging, no hidden copy


@pytest.mark.parametrize("overwrite", [False, True])
def test_save_signals_refuses_a_foreign_directory(fitted, tmp_path, overwrite):
    mydata = _foreign_dir(tmp_path / "mydata")
    before = _tree(mydata)
    masker, signals = fitted
    with pytest.raises(UnsafeTargetError, match="holds a directory lazymask did not write"):
        save_signals(signals, mydata, masker=masker, overwrite=overwrite)
    assert _tree(mydata) == before


def test_save_signals_group_refuses_a_foreign_root(fitted, tmp_path):
    mydata = _foreign_dir(tmp_path / "mydata")
    (mydata / "run1").mkdir()
    (mydata / "run1" / "important.txt").write_text("keep")
    before = _tree(mydata)
    masker, signals = fitted
    for overwrite in (False, True):
        with pytest.raises(UnsafeTargetError, match="run1.*holds a directory lazymask did not write"):
            save_signals(signals, mydata, "run1", masker=masker, overwrite=overwrite)
        with pytest.raises(UnsafeTargetError, match="writes a group only into a store it created"):
            save_signals(signals, mydata, "run2", masker=masker, overwrite=overwrite)
    assert _tree(mydata) == before  # no zarr.json added, nothing deleted
    assert not (mydata / "zarr.json").exists()


def test_group_refused_under_a_zarr_store_lazymask_did_not_write(tmp_path, fitted):
    zarr.open_group(tmp_path / "theirs.zarr", mode="w").create_array("x", shape=(3,), dtype="f4")
    before = _tree(tmp_path / "theirs.zarr")
    with pytest.raises(UnsafeTargetError, match="holds a zarr store lazymask did not write.*store it created"):
        to_zarr(fitted[1], tmp_path / "theirs.zarr", group="run-1")
    assert _tree(tmp_path / "theirs.zarr") == before


@pytest.mark.parametrize("overwrite", [False, True])
def test_regular_file_is_never_replaced(run_path, tmp_path, overwrite, fitted):
    target = tmp_path / "out.zarr"
    target.write_text("a file, not a store")
    with pytest.raises(UnsafeTargetError, match="out.zarr.*holds a regular file"):
        to_zarr(_image(run_path), target, overwrite=overwrite)
    with pytest.raises(UnsafeTargetError, match="holds a regular file"):
        save_signals(fitted[1], target, masker=fitted[0], overwrite=overwrite)
    assert target.read_text() == "a file, not a store"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.zarr"]  # no -tmp-old- copy


def test_empty_directory_and_symlink_are_refused(run_path, tmp_path):
    (tmp_path / "empty.zarr").mkdir()
    with pytest.raises(UnsafeTargetError, match="an empty directory lazymask did not create"):
        to_zarr(_image(run_path), tmp_path / "empty.zarr", overwrite=True)
    store = _write_image(run_path, tmp_path / "real.zarr")
    (tmp_path / "link.zarr").symlink_to(store)
    with pytest.raises(UnsafeTargetError, match="a symbolic link"):
        to_zarr(_image(run_path), tmp_path / "link.zarr", overwrite=True)
    assert (tmp_path / "link.zarr").is_symlink() and is_complete(store)


def test_lazymask_store_with_a_foreign_file_inside_is_not_replaced(run_path, tmp_path):
    store = _write_image(run_path, tmp_path / "s.zarr")
    (store / "my_notes.txt").write_text("keep")
    with pytest.raises(UnsafeTargetError, match=r"with files lazymask did not write inside \(my_notes.txt\)"):
        to_zarr(_image(run_path), store, overwrite=True)
    assert (store / "my_notes.txt").read_text() == "keep" and is_complete(store)


def test_store_of_another_kind_is_not_replaced(fitted, tmp_path, run_path):
    store = _signals_store(fitted, tmp_path / "signals.zarr")
    with pytest.raises(UnsafeTargetError, match="lazymask signals group.*another kind"):
        to_zarr(_image(run_path), store, overwrite=True)
    assert is_complete(store)
    image_store = _write_image(run_path, tmp_path / "img.zarr")
    with pytest.raises(UnsafeTargetError, match="DataArray store.*another kind"):
        save_signals(fitted[1], image_store, masker=fitted[0], overwrite=True)


def test_complete_store_needs_overwrite(run_path, tmp_path):
    store = _write_image(run_path, tmp_path / "s.zarr")
    with pytest.raises(UnsafeTargetError, match="already holds a complete lazymask zarr DataArray store.*overwrite=True"):
        to_zarr(_image(run_path), store)


def test_intermediate_path_that_is_a_file_is_refused(fitted, tmp_path):
    store = _signals_store(fitted, tmp_path / "archive.zarr", "sub-01/run-1")
    (store / "sub-02").write_text("not a group")
    with pytest.raises(UnsafeTargetError, match="sub-02.*not a zarr group lazymask created"):
        save_signals(fitted[1], store, "sub-02/run-1", masker=fitted[0])
    assert (store / "sub-02").read_text() == "not a group"


@pytest.mark.parametrize("content", [b"plain text notes", b"\x1f\x8b not really gzip"])
def test_to_nifti_never_replaces_a_file_that_is_not_nifti(run_path, tmp_path, content):
    target = tmp_path / "notes.nii.gz"
    target.write_bytes(content)
    with pytest.raises(UnsafeTargetError, match=r"notes.nii.gz holds a file that is not a NIfTI image"):
        to_nifti(_image(run_path), target, overwrite=True)
    assert target.read_bytes() == content


def test_to_nifti_replaces_a_nifti_file_only_with_overwrite(run_path, tmp_path):
    img = _image(run_path)
    target = to_nifti(img, tmp_path / "out.NII.GZ")  # upper-case suffix: gzip, any case
    with pytest.raises(UnsafeTargetError, match="already holds a NIfTI image file; pass overwrite=True"):
        to_nifti(img * 2, target)
    to_nifti((img * 2).astype("int16", keep_attrs=True), target, overwrite=True)
    np.testing.assert_array_equal(np.asanyarray(nib.load(target).dataobj), (img * 2).values)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.NII.GZ"]  # no hidden -tmp-old- copy


def test_to_nifti_refuses_a_directory(run_path, tmp_path):
    _foreign_dir(tmp_path / "x.nii")
    with pytest.raises(UnsafeTargetError, match="x.nii holds a directory"):
        to_nifti(_image(run_path), tmp_path / "x.nii", overwrite=True)
    assert (tmp_path / "x.nii" / "important.txt").exists()


def test_demo_cache_with_foreign_files_is_not_touched(tmp_path):
    cache = tmp_path / "demo-v1"
    cache.mkdir()
    (cache / "my_thesis.tex").write_text("keep")
    with pytest.raises(UnsafeTargetError, match=r"files the demo does not write \(my_thesis.tex\)"):
        load_demo(tmp_path)
    assert [p.name for p in cache.iterdir()] == ["my_thesis.tex"]


def test_masking_cache_location_that_is_a_file_is_refused(tmp_path, run_path):
    (tmp_path / "lazymask_masking").write_text("not a directory")
    with pytest.raises(UnsafeTargetError, match="exists and is not a directory"):
        lazymask.masking.compute_epi_mask(str(run_path), memory=str(tmp_path))
    assert (tmp_path / "lazymask_masking").read_text() == "not a directory"


# -- killed writes ----------------------------------------------------------------------------------
_SLOW_WRITER = textwrap.dedent("""
    import sys, time
    import dask.array as da, numpy as np
    import lazymask

    def slow(block):
        time.sleep(0.15)
        return block

    target, value, overwrite = sys.argv[1], float(sys.argv[2]), sys.argv[3] == "1"
    data = da.full((6, 7, 8, 60), value, dtype="float32", chunks=(6, 7, 8, 1)).map_blocks(slow, dtype="float32")
    img = lazymask.io.image_dataarray(data, np.eye(4), t_r=1.0)
    with lazymask.config.set(zarr_chunk_bytes=6 * 7 * 8 * 4):
        if target.endswith(".zarr"):
            lazymask.to_zarr(img, target, overwrite=overwrite)
        else:
            lazymask.to_nifti(img, target, overwrite=overwrite)
""")


def _kill_mid_write(target: Path, value: float, overwrite: bool) -> list[Path]:
    """Start a slow write in a subprocess, SIGKILL it once staging holds data; return the staging left."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, str(target), str(value), str(int(overwrite))],
                               env=env)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            staging = [p for p in target.parent.iterdir() if p.name.startswith(f".{target.name}.lazymask-tmp-")]
            written = [p for s in staging for p in (s.rglob("*") if s.is_dir() else [s]) if p.is_file()]
            if len(written) >= 6 or process.poll() is not None:
                break
            time.sleep(0.05)
        assert process.poll() is None, "the writer finished before it could be killed"
        os.kill(process.pid, signal.SIGKILL)
        process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
    return [p for p in target.parent.iterdir() if p.name.startswith(f".{target.name}.lazymask-tmp-")]


def _small(value: float) -> xr.DataArray:
    return lazymask.io.image_dataarray(np.full((6, 7, 8, 60), value, dtype="float32"), np.eye(4), t_r=1.0)


def test_sigkill_during_a_first_write_publishes_nothing_and_the_next_run_cleans(tmp_path):
    target = tmp_path / "s.zarr"
    left = _kill_mid_write(target, 1.0, overwrite=False)
    assert left and not target.exists()  # staging left behind, nothing under the target's name
    assert not is_complete(target)
    to_zarr(_small(2.0), target)
    assert [p.name for p in tmp_path.iterdir()] == ["s.zarr"]  # the stale staging was removed
    np.testing.assert_array_equal(open_zarr(target).values, 2.0)


def test_sigkill_during_an_overwrite_keeps_the_old_store(tmp_path):
    target = tmp_path / "s.zarr"
    to_zarr(_small(5.0), target)
    left = _kill_mid_write(target, 1.0, overwrite=True)
    assert left
    np.testing.assert_array_equal(open_zarr(target, verify=True).values, 5.0)  # old store intact
    assert verify(target)["groups"] == 1
    to_zarr(_small(6.0), target, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["s.zarr"]
    np.testing.assert_array_equal(open_zarr(target).values, 6.0)


def test_sigkill_during_a_nifti_overwrite_keeps_the_old_file(tmp_path):
    target = tmp_path / "out.nii.gz"
    to_nifti(_small(5.0), target)
    before = target.read_bytes()
    assert _kill_mid_write(target, 1.0, overwrite=True)
    assert target.read_bytes() == before
    to_nifti(_small(7.0), target, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["out.nii.gz"]
    np.testing.assert_array_equal(nib.load(target).get_fdata(), 7.0)


def test_replacement_cut_between_its_two_renames_is_restored(run_path, tmp_path):
    store = _write_image(run_path, tmp_path / "s.zarr")
    aside = tmp_path / ".s.zarr.lazymask-tmp-old-0123456789ab"
    os.rename(store, aside)  # what a kill between "old aside" and "new in place" leaves
    with pytest.raises(UnsafeTargetError, match="already holds a complete"):
        to_zarr(_image(run_path), store)  # the next run first puts the old store back
    assert is_complete(store) and not aside.exists()
    np.testing.assert_array_equal(open_zarr(store).values, np.asanyarray(nib.load(run_path).dataobj))


def test_a_cut_replacement_followed_by_a_write_of_another_kind_restores_the_old_store(run_path, tmp_path):
    from lazymask.maskers import NiftiMasker, save_signals

    store = _write_image(run_path, tmp_path / "s.zarr")
    aside = tmp_path / ".s.zarr.lazymask-tmp-old-0123456789ab"
    os.rename(store, aside)  # a kill between "old aside" and "new in place"
    masker = NiftiMasker().fit(run_path)
    with pytest.raises(UnsafeTargetError, match="another kind of lazymask result"):
        save_signals(masker.transform(run_path), store, masker=masker)
    assert is_complete(store) and not aside.exists()  # put back, then refused: never deleted
    np.testing.assert_array_equal(open_zarr(store).values, np.asanyarray(nib.load(run_path).dataobj))


def test_a_cut_nifti_replacement_followed_by_a_zarr_write_restores_the_old_file(run_path, tmp_path):
    target = tmp_path / "out.nii.gz"
    to_nifti(_small(5.0), target)
    before = target.read_bytes()
    aside = tmp_path / ".out.nii.gz.lazymask-tmp-old-0123456789ab"
    os.rename(target, aside)
    with pytest.raises(UnsafeTargetError, match="a regular file"):
        to_zarr(_image(run_path), target)
    assert target.read_bytes() == before and not aside.exists()


# -- damaged stores: never fill values ----------------------------------------------------------------
def test_deleted_image_chunk_is_an_error_naming_store_array_and_chunk(run_path, tmp_path):
    store = _write_image(run_path, tmp_path / "s.zarr")
    _chunks(store / "0")[2].unlink()
    img = open_zarr(store)  # metadata only: opens
    with pytest.raises(CorruptStoreError, match=r"s.zarr.*chunk '2/0/0/0' of array '0' is missing.*deleted"):
        img.values
    with pytest.raises(CorruptStoreError, match="is missing"):
        verify(store)
    with pytest.raises(CorruptStoreError, match="is missing"):
        open_zarr(store, verify=True)
    with pytest.raises(CorruptStoreError, match="is missing"):
        lazymask.open_nifti(store).values  # the same through open_nifti


def test_deleted_signals_chunk_is_not_nan(fitted, tmp_path):
    store = _signals_store(fitted, tmp_path / "out.zarr")
    _chunks(store / "signals" / "data")[0].unlink()
    signals = open_signals(store)
    with pytest.raises(CorruptStoreError, match=r"chunk '0/0' of array 'data' is missing"):
        signals.values
    with pytest.raises(CorruptStoreError, match="array 'data' is missing|'data' is missing"):
        open_signals(store, verify=True)


def test_truncated_chunk(run_path, tmp_path):
    store = _write_image(run_path, tmp_path / "s.zarr")
    chunk = _chunks(store / "0")[1]
    chunk.write_bytes(chunk.read_bytes()[:-100])
    with pytest.raises(CorruptStoreError, match=r"chunk '1/0/0/0' of array '0' is corrupt.*truncated or altered"):
        open_zarr(store).values


def test_flipped_byte_in_a_chunk(run_path, tmp_path):
    store = _write_image(run_path, tmp_path / "s.zarr")
    chunk = _chunks(store / "0")[0]
    data = bytearray(chunk.read_bytes())
    data[len(data) // 3] ^= 0x01
    chunk.write_bytes(bytes(data))
    with pytest.raises(CorruptStoreError, match=r"chunk '0/0/0/0' of array '0' is corrupt \(its bytes have crc32c"):
        open_zarr(store).isel(time=0).values
    np.testing.assert_array_equal(open_zarr(store).isel(time=slice(4, 8)).values,  # other chunks still read
                                  np.asanyarray(nib.load(run_path).dataobj)[..., 4:8])


def test_chunk_swapped_for_another_valid_chunk(run_path, tmp_path):
    store = _write_image(run_path, tmp_path / "s.zarr")
    first, second = _chunks(store / "0")[:2]
    first.write_bytes(second.read_bytes())  # a valid chunk, with a valid checksum, in the wrong place
    with pytest.raises(CorruptStoreError, match="chunk '0/0/0/0' of array '0' is corrupt.*was recorded"):
        open_zarr(store).values


def test_decoder_error_becomes_a_corrupt_store_error(run_path, tmp_path):
    import google_crc32c

    store = _write_image(run_path, tmp_path / "s.zarr")
    chunk = _chunks(store / "0")[0]
    garbage = b"\x02\x01\x21\x02" + b"\xff" * 60  # a blosc header over garbage
    crc = google_crc32c.value(garbage)
    chunk.write_bytes(garbage + crc.to_bytes(4, "little"))

    def record(document):  # the attacker also fixes the manifest: only the decoder can tell
        document["attributes"]["lazymask_manifest"]["arrays"]["0"]["crc32c"]["c/0/0/0/0"] = crc

    _edit_json(store / "zarr.json", record)
    with pytest.raises(CorruptStoreError, match=r"chunk \(0, 0, 0, 0\) of array '0' cannot be decoded"):
        open_zarr(store).values


def test_deleted_coordinate_chunks(fitted, tmp_path):
    store = _signals_store(fitted, tmp_path / "out.zarr")
    _chunks(store / "signals" / "i")[0].unlink()  # a voxel coordinate: read lazily
    signals = open_signals(store)
    with pytest.raises(CorruptStoreError, match="of array 'i' is missing"):
        signals["i"].values
    (store / "signals" / "time" / "c" / "0").unlink()  # an index coordinate: read at open
    with pytest.raises(CorruptStoreError, match="of array 'time' is missing"):
        open_signals(store)


def test_deleted_mask_chunk_says_corrupt_not_empty_mask(fitted, tmp_path):
    store = _signals_store(fitted, tmp_path / "out.zarr")
    for chunk in _chunks(store / "mask" / "0"):
        chunk.unlink()
    with pytest.raises(CorruptStoreError, match=r"out.zarr', group 'mask'.*array '0' is missing"):
        load_masker(store)


def test_deleted_member_group(fitted, tmp_path):
    import shutil

    store = _signals_store(fitted, tmp_path / "out.zarr")
    shutil.rmtree(store / "mask")
    with pytest.raises(CorruptStoreError, match="member group 'mask' was recorded.*missing"):
        load_masker(store)
    with pytest.raises(CorruptStoreError, match="member group 'mask'"):
        verify(store)


def test_manifest_removed_from_a_complete_store(run_path, tmp_path):
    store = _write_image(run_path, tmp_path / "s.zarr")
    _edit_json(store / "zarr.json", lambda d: d["attributes"].pop("lazymask_manifest"))
    assert not is_complete(store)
    with pytest.raises(CorruptStoreError, match="'lazymask_manifest' attribute is missing or malformed"):
        open_zarr(store)


def test_unfinished_group_is_refused(run_path, tmp_path):
    store = _write_image(run_path, tmp_path / "s.zarr")
    _edit_json(store / "zarr.json", lambda d: d["attributes"].update(lazymask_complete=False))
    with pytest.raises(CorruptImageError, match="not complete: its write did not finish"):
        open_zarr(store)


# -- hostile metadata ------------------------------------------------------------------------------------
def test_enlarged_shape_in_zarr_json(fitted, tmp_path):
    store = _signals_store(fitted, tmp_path / "out.zarr")
    _edit_json(store / "signals" / "data" / "zarr.json", lambda d: d.update(shape=[d["shape"][0] * 2, d["shape"][1]]))
    with pytest.raises(CorruptStoreError, match=r"array 'data' has shape \(48, \d+\) in its zarr.json, but \(24, \d+\) "
                                                r"was written"):
        open_signals(store)
    with pytest.raises(CorruptStoreError, match="has shape"):
        verify(store)


# -- a changed decoding description: same chunk bytes, other values ------------------------------------
def _flip_endian(document):
    assert document["codecs"][0] == {"name": "bytes", "configuration": {"endian": "little"}}
    document["codecs"][0]["configuration"]["endian"] = "big"


def _add_transpose(document):
    document["codecs"].insert(0, {"name": "transpose",
                                  "configuration": {"order": list(range(len(document["shape"])))[::-1]}})


def _change_fill_value(document):
    document["fill_value"] = 7 if document["data_type"].startswith("int") else 7.0


def _change_compressor(document):
    document["codecs"][1]["configuration"]["shuffle"] = "noshuffle"


CODEC_EDITS = {
    "endian": (_flip_endian, r"its codecs changed since it was written \(bytes endian little -> big\)"),
    "transpose": (_add_transpose, r"its codecs changed since it was written \(bytes, blosc, crc32c -> "
                                  r"transpose, bytes, blosc, crc32c\)"),
    "fill_value": (_change_fill_value, r"its fill value changed since it was written \(fill value (0|\"NaN\") -> 7"),
    "compressor": (_change_compressor, r"its codecs changed since it was written \(blosc shuffle shuffle -> noshuffle\)"),
}


def _labelled_store(store):
    array = xr.DataArray(np.arange(24.0, dtype=np.float32).reshape(6, 4), dims=("time", "region"),
                         coords={"region": [1, 2, 5, 9], "region_name": ("region", list("abcd"))})
    to_zarr(array, store)
    return store


STORE_KINDS = {  # how to write it, the array edited, how it is opened
    "image": (lambda ctx, store: _write_image(ctx[0], store), ("0",), lambda store: open_zarr(store)),
    "labelled array": (lambda ctx, store: _labelled_store(store), ("data",), lambda store: open_zarr(store)),
    "signals group": (lambda ctx, store: _signals_store(ctx[1], store), ("signals", "data"),
                      lambda store: open_signals(store)),
}


@pytest.mark.parametrize("edit", sorted(CODEC_EDITS))
@pytest.mark.parametrize("kind", sorted(STORE_KINDS))
def test_changed_decoding_is_refused_by_open_verify_and_the_cli(run_path, fitted, tmp_path, capsys, kind, edit):
    from lazymask.cli import main

    write, array_path, read = STORE_KINDS[kind]
    change, message = CODEC_EDITS[edit]
    store = write((run_path, fitted), tmp_path / "s.zarr")
    read(store)  # intact: opens
    _edit_json(store.joinpath(*array_path, "zarr.json"), change)
    pattern = rf"s\.zarr.*array '{array_path[-1]}': {message}.*zarr\.json was altered"
    with pytest.raises(CorruptStoreError, match=pattern):
        read(store)
    with pytest.raises(CorruptStoreError, match=pattern):
        verify(store)
    capsys.readouterr()
    assert main(["verify", str(store)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lazymask: error:") and "changed since it was written" in err


def test_changed_decoding_of_a_mask_refuses_load_masker(fitted, tmp_path):
    store = _signals_store(fitted, tmp_path / "out.zarr")
    _edit_json(store / "mask" / "0" / "zarr.json", _add_transpose)
    with pytest.raises(CorruptStoreError, match=r"group 'mask'.*array '0': its codecs changed since it was written"):
        load_masker(store)
    with pytest.raises(CorruptStoreError, match="its codecs changed"):
        open_signals(store, verify=True)


def test_store_without_a_decoding_description_stays_readable(run_path, tmp_path):
    """A manifest written before the decoding description was recorded: checked for the rest."""
    store = _write_image(run_path, tmp_path / "s.zarr")

    def drop(document):
        for entry in document["attributes"]["lazymask_manifest"]["arrays"].values():
            entry.pop("decoding", None)

    _edit_json(store / "zarr.json", drop)
    np.testing.assert_array_equal(open_zarr(store).values, np.asanyarray(nib.load(run_path).dataobj))
    assert verify(store)["groups"] == 1


def test_deep_nesting(run_path, tmp_path):
    store = _write_image(run_path, tmp_path / "s.zarr")
    raw = (store / "zarr.json").read_text()
    deep = '{"attributes": {"x": ' + "[" * 100_000 + "]" * 100_000 + "}, " + raw.lstrip()[1:]
    (store / "zarr.json").write_text(deep)
    with pytest.raises(CorruptStoreError, match=r"s.zarr.*'zarr.json' is nested too deeply"):
        open_zarr(store)
    assert not is_complete(store)


def test_moderate_nesting_beyond_the_bound(run_path, tmp_path):
    store = _write_image(run_path, tmp_path / "s.zarr")
    nested = []
    for _ in range(200):
        nested = [nested]
    _edit_json(store / "zarr.json", lambda d: d["attributes"]["lazymask"]["attrs"].update(x=nested))
    with pytest.raises(CorruptStoreError, match=r"nested more than 64 levels deep \(at .attributes.lazymask.attrs.x"):
        open_zarr(store)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("coords", ["time"], r"attribute 'lazymask.coords' is a list, expected an object of coordinates"),
    ("dims", "ijk", r"attribute 'lazymask.dims' is a str, expected a list"),
    ("dtype", "O", r"attribute 'lazymask.dtype' = 'O' is not a dtype lazymask stores"),
    ("attrs", 7, r"attribute 'lazymask.attrs' is a int, expected an object"),
    ("kind", "pickle", r"'lazymask.kind' is 'pickle'"),
])
def test_wrong_types_in_attributes(run_path, tmp_path, key, value, message):
    store = _write_image(run_path, tmp_path / "s.zarr")
    _edit_json(store / "zarr.json", lambda d: d["attributes"]["lazymask"].update({key: value}))
    with pytest.raises(LazymaskError, match=message):
        open_zarr(store)


def test_coordinate_info_of_the_wrong_type(run_path, tmp_path):
    store = _write_image(run_path, tmp_path / "s.zarr")
    _edit_json(store / "zarr.json", lambda d: d["attributes"]["lazymask"]["coords"].update(time="seconds"))
    with pytest.raises(CorruptStoreError, match=r"attribute 'lazymask.coords.time' is a str, expected an object"):
        open_zarr(store)


def test_attributes_that_are_not_an_object(run_path, tmp_path):
    store = _write_image(run_path, tmp_path / "s.zarr")
    _edit_json(store / "zarr.json", lambda d: d.update(attributes=[1, 2]))
    with pytest.raises(CorruptStoreError, match="'attributes' in zarr.json is a list"):
        open_zarr(store)
    (store / "zarr.json").write_text("{not json")
    with pytest.raises(CorruptStoreError, match="'zarr.json' is not valid JSON"):
        open_zarr(store)


def test_parameters_of_the_wrong_type(fitted, tmp_path):
    store = _signals_store(fitted, tmp_path / "out.zarr")
    _edit_json(store / "zarr.json", lambda d: d["attributes"]["lazymask"].update(parameters=7))
    with pytest.raises(CorruptStoreError, match=r"attribute 'lazymask.parameters' is a int, expected an object"):
        load_masker(store)
    with pytest.raises(CorruptStoreError, match="lazymask.parameters"):
        open_signals(store)


def test_huge_attributes(run_path, tmp_path):
    store = _write_image(run_path, tmp_path / "s.zarr")
    _edit_json(store / "zarr.json", lambda d: d["attributes"].update(blob="x" * (17 * 2**20)))
    with pytest.raises(CorruptStoreError, match=r"'zarr.json' is larger than 16 MiB"):
        open_zarr(store)


def test_lut_path_in_parameters_is_never_opened(run_path, tmp_path, monkeypatch):
    img = lazymask.open_nifti(run_path)
    labels = lazymask.io.image_dataarray((np.arange(12 * 14 * 10).reshape(12, 14, 10) % 3).astype("int16"),
                                         img.nifti.affine)
    masker = NiftiLabelsMasker(labels)
    signals = masker.fit_transform(img)
    save_signals(signals, tmp_path / "out.zarr", masker=masker)
    secret = tmp_path / "passwd"
    secret.write_text("root:SECRET-FIRST-LINE\n")
    _edit_json(tmp_path / "out.zarr" / "zarr.json",
               lambda d: d["attributes"]["lazymask"]["parameters"].update(lut=str(secret), memory=str(tmp_path / "c")))
    opened = []
    real_open = open

    def spying_open(file, *args, **kwargs):
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", spying_open)
    with pytest.warns(UserWarning, match=r"stored parameter\(s\) (lut, )?memory not used: lazymask never opens a path"):
        rebuilt = load_masker(tmp_path / "out.zarr")
    assert str(secret) not in opened and not (tmp_path / "c").exists()
    assert rebuilt.n_elements_ == masker.n_elements_


def test_unknown_masker_name_is_not_imported(fitted, tmp_path):
    store = _signals_store(fitted, tmp_path / "out.zarr")
    _edit_json(store / "zarr.json", lambda d: d["attributes"]["lazymask"].update(masker="os.system"))
    with pytest.raises(NotNiftiError, match=r"written by an unknown masker 'os.system'; this lazymask knows"):
        load_masker(store)


def test_group_names_that_escape_the_store(tmp_path, fitted):
    with pytest.raises(ParameterError, match="may not be '.', '..'"):
        save_signals(fitted[1], tmp_path / "out.zarr", "../outside", masker=fitted[0])
    store = _signals_store(fitted, tmp_path / "out.zarr")
    _edit_json(store / "zarr.json", lambda d: d["attributes"]["lazymask"].update(spatial=["../../etc"]))
    with pytest.raises(CorruptStoreError, match=r"'lazymask.spatial' names '../../etc', not a group name"):
        load_masker(store)
    assert not (tmp_path / "outside").exists()
