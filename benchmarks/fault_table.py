"""The fault table: every hostile input of issue 10 (and the masker-level bad inputs), run on this
checkout, with the outcome: the error class and the first line of its message, or the correct result.

Usage: python benchmarks/fault_table.py   (about 10 s; the tests pinning each case are
tests/test_faults_maskers.py, tests/test_faults_reads.py, tests/test_faults_stores.py)
"""
import os, sys, json, shutil, tempfile, traceback, warnings
from pathlib import Path
import numpy as np, nibabel as nib, pandas as pd
warnings.simplefilter("ignore")
import lazymask
from lazymask.exceptions import LazymaskError
from lazymask.testing import fake_fmri
from lazymask.maskers import *
from lazymask.io import open_nifti, to_zarr, open_zarr

tmp = Path(tempfile.mkdtemp())
run = tmp / "bold.nii.gz"; nib.save(fake_fmri((12, 14, 10), 24, t_r=2.0, seed=7), run)
short = tmp / "short.nii.gz"; nib.save(fake_fmri((12, 14, 10), 10, t_r=2.0, seed=7), short)
img = nib.load(run); aff = img.affine
vol3 = tmp / "vol3.nii.gz"; nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[..., 0], aff), vol3)
labels = np.zeros((12, 14, 10), np.int16); labels[2:6, 2:7, 2:5] = 1; labels[6:10, 7:12, 5:8] = 2
lab = tmp / "labels.nii.gz"; nib.save(nib.Nifti1Image(labels, aff), lab)
labf = tmp / "labelsf.nii.gz"; nib.save(nib.Nifti1Image(labels.astype(np.float32) + 0.5, aff), labf)
maps4 = tmp / "maps.nii.gz"; nib.save(nib.Nifti1Image(np.stack([labels == 1, labels == 2], -1).astype(np.float32), aff), maps4)
maps5 = tmp / "maps5.nii.gz"; nib.save(nib.Nifti1Image(np.zeros((12, 14, 10, 2, 2), np.float32), aff), maps5)
other_grid = tmp / "mask_other.nii.gz"; nib.save(nib.Nifti1Image(np.ones((8, 8, 8), np.int8), aff), other_grid)
mask_ok = tmp / "mask.nii.gz"; m = np.zeros((12, 14, 10), np.int8); m[2:10, 2:12, 2:8] = 1; nib.save(nib.Nifti1Image(m, aff), mask_ok)
conf_bad = tmp / "conf_bad.tsv"; pd.DataFrame(np.random.rand(20, 3), columns=list("abc")).to_csv(conf_bad, sep="\t", index=False)
conf_empty = tmp / "conf_empty.tsv"; conf_empty.write_text("")
centre = (aff @ [6, 7, 5, 1])[:3]

def c(name, f):
    try:
        out = f()
        if hasattr(out, "compute"): out = out.compute()
        print(f"{name:45s} | OK (no error) {type(out).__name__}")
    except LazymaskError as e:
        print(f"{name:45s} | {type(e).__name__}: {str(e).splitlines()[0][:150]}")
    except Exception as e:
        print(f"{name:45s} | **NOT LAZYMASK** {type(e).__name__}: {str(e).splitlines()[0][:150] if str(e) else ''}")

R = str(run)
c("spheres NaN seed", lambda: NiftiSpheresMasker([(np.nan, 0, 0)], radius=4).fit_transform(R))
c("bandpass padlen 10 vols", lambda: NiftiMasker(low_pass=0.1, high_pass=0.01, t_r=2.0, mask_strategy="epi").fit_transform(str(short)))
c("bandpass 3D image", lambda: NiftiMasker(low_pass=0.1, high_pass=0.01, t_r=2.0, mask_img=str(mask_ok)).fit_transform(str(vol3)))
c("empty confounds file", lambda: NiftiMasker(mask_strategy="epi").fit_transform(R, confounds=str(conf_empty)))
c("chunks=2.5", lambda: open_nifti(R, chunks=2.5))
c("upper-case .NII.GZ", lambda: (shutil.copy(run, tmp / "UP.NII.GZ"), np.testing.assert_array_equal(open_nifti(tmp / "UP.NII.GZ").values, np.asarray(img.dataobj)))[1])
c("empty mask after mask_args (no target)", lambda: NiftiMasker(mask_strategy="epi", mask_args=dict(lower_cutoff=0.99, upper_cutoff=1.0)).fit(R))
c("empty mask, background strategy", lambda: NiftiMasker(mask_strategy="background", mask_args=dict(border_size=100)).fit(R))
# masker-level
c("confounds wrong shape", lambda: NiftiMasker(mask_strategy="epi").fit_transform(R, confounds=str(conf_bad)))
c("confounds array wrong rows", lambda: NiftiMasker(mask_strategy="epi").fit_transform(R, confounds=np.ones((5, 2))))
c("sample_mask out of range", lambda: NiftiMasker(mask_strategy="epi").fit_transform(R, sample_mask=np.array([0, 1, 100])))
c("sample_mask bool wrong length", lambda: NiftiMasker(mask_strategy="epi").fit_transform(R, sample_mask=np.ones(5, bool)))
c("sample_mask negative", lambda: NiftiMasker(mask_strategy="epi").fit_transform(R, sample_mask=np.array([-30, 1])))
c("3D to NiftiMasker.transform", lambda: NiftiMasker(mask_img=str(mask_ok)).fit_transform(str(vol3)))
c("mask/image grid mismatch", lambda: NiftiMasker(mask_img=str(other_grid)).fit_transform(R))
c("labels_img floats", lambda: NiftiLabelsMasker(str(labf)).fit_transform(R))
c("labels grid mismatch resampling=None", lambda: NiftiLabelsMasker(str(other_grid), resampling_target=None).fit_transform(R))
c("maps 5D", lambda: NiftiMapsMasker(str(maps5)).fit_transform(R))
c("maps 3D", lambda: NiftiMapsMasker(str(lab)).fit_transform(R))
c("seeds wrong shape", lambda: NiftiSpheresMasker([(1, 2)], radius=4).fit_transform(R))
c("seeds 3x3 array wrong", lambda: NiftiSpheresMasker(np.ones((2, 2, 2)), radius=4).fit_transform(R))
c("radius negative", lambda: NiftiSpheresMasker([tuple(centre)], radius=-1).fit_transform(R))
c("radius NaN", lambda: NiftiSpheresMasker([tuple(centre)], radius=np.nan).fit_transform(R))
c("radius string", lambda: NiftiSpheresMasker([tuple(centre)], radius="4").fit_transform(R))
c("seed outside image", lambda: NiftiSpheresMasker([(1000, 1000, 1000)], radius=4).fit_transform(R))
c("smoothing_fwhm negative", lambda: NiftiMasker(mask_strategy="epi", smoothing_fwhm=-3).fit_transform(R))
c("t_r negative", lambda: NiftiMasker(mask_strategy="epi", t_r=-2, high_pass=0.01).fit_transform(R))
c("low_pass above nyquist", lambda: NiftiMasker(mask_strategy="epi", t_r=2, low_pass=0.5).fit_transform(R))
c("high_pass > low_pass", lambda: NiftiMasker(mask_strategy="epi", t_r=2, low_pass=0.05, high_pass=0.1).fit_transform(R))
c("standardize bogus", lambda: NiftiMasker(mask_strategy="epi", standardize="bogus").fit_transform(R))
c("detrend string", lambda: NiftiMasker(mask_strategy="epi", detrend="yes").fit_transform(R))
c("mask_strategy unknown", lambda: NiftiMasker(mask_strategy="nope").fit(R))
c("mask_args unknown key", lambda: NiftiMasker(mask_strategy="epi", mask_args=dict(nope=1)).fit(R))
c("labels strategy unknown", lambda: NiftiLabelsMasker(str(lab), strategy="nope").fit_transform(R))
c("labels resampling_target bad", lambda: NiftiLabelsMasker(str(lab), resampling_target="x").fit_transform(R))
c("labels all background", lambda: NiftiLabelsMasker(nib.Nifti1Image(np.zeros((12,14,10), np.int16), aff)).fit_transform(R))
c("labels 4D", lambda: NiftiLabelsMasker(str(maps4)).fit_transform(R))
c("transform before fit", lambda: NiftiMasker().transform(R))
c("inverse_transform wrong width", lambda: (lambda m: m.inverse_transform(np.ones((3, m.n_elements_ + 2))))(NiftiMasker(mask_strategy="epi").fit(R)))
c("multi masker: confounds list length", lambda: MultiNiftiMasker(mask_strategy="epi").fit_transform([R, R], confounds=[None]))
c("mask_img nonbinary", lambda: NiftiMasker(mask_img=nib.Nifti1Image(np.arange(12*14*10).reshape(12,14,10).astype(np.float32), aff)).fit_transform(R))
c("mask_img 4D", lambda: NiftiMasker(mask_img=str(maps4)).fit_transform(R))
c("imgs not found", lambda: NiftiMasker(mask_strategy="epi").fit_transform(str(tmp / "nope.nii.gz")))
c("confounds with NaN in middle", lambda: NiftiMasker(mask_strategy="epi").fit_transform(R, confounds=np.where(np.arange(24)[:, None] == 10, np.nan, np.random.rand(24, 2))))
c("confounds file not found", lambda: NiftiMasker(mask_strategy="epi").fit_transform(R, confounds=str(tmp / "nope.tsv")))
c("confounds non-numeric column", lambda: (pd.DataFrame({"a": ["x"] * 24}).to_csv(tmp / "cs.tsv", sep="\t", index=False), NiftiMasker(mask_strategy="epi").fit_transform(R, confounds=str(tmp / "cs.tsv")))[1])
c("empty lut file", lambda: NiftiLabelsMasker(str(lab), lut=str(conf_empty)).fit_transform(R))
c("empty fMRIPrep confounds table", lambda: __import__("lazymask.interfaces.fmriprep").interfaces.fmriprep.read_confounds_table(conf_empty))
c("target_shape without target_affine", lambda: NiftiMasker(mask_strategy="epi", target_shape=(3, 3, 3)).fit(R))
c("target_affine wrong shape", lambda: NiftiMasker(mask_strategy="epi", target_affine=np.eye(2)).fit(R))

print()
from lazymask.maskers import NiftiLabelsMasker, save_signals, open_signals, load_masker
from lazymask.io import verify
import json
masker = NiftiMasker(mask_strategy="epi"); signals = masker.fit_transform(str(run))
n = [0]
def fresh():
    n[0] += 1; p = tmp / f"s{n[0]}.zarr"; save_signals(signals, p, masker=masker); return p
def image_store():
    n[0] += 1; p = tmp / f"i{n[0]}.zarr"
    with lazymask.config.set(zarr_chunk_bytes=12 * 14 * 10 * 2 * 4):
        to_zarr(open_nifti(run, chunks=4), p)
    return p
def edit(p, f):
    d = json.loads(p.read_text()); f(d); p.write_text(json.dumps(d))
def chunks(a): return sorted(q for q in (a / "c").rglob("*") if q.is_file())
def c(name, f):
    try:
        out = f()
        print(f"{name:40s} | OK (no error)")
    except LazymaskError as e:
        print(f"{name:40s} | {type(e).__name__}: {str(e).splitlines()[0][:170]}")
    except Exception as e:
        print(f"{name:40s} | **NOT LAZYMASK** {type(e).__name__}: {str(e)[:150]}")

def nan_pixdim():
    p = tmp / "nanpix.nii"; img = nib.load(run); h = img.header.copy(); img2 = nib.Nifti1Image(np.asarray(img.dataobj), None, h)
    img2.header.set_qform(img.affine, 1); img2.header.set_sform(None, 0); nib.save(img2, p)
    b = bytearray(p.read_bytes()); import struct; b[80:84] = struct.pack("<f", float("nan")); p.write_bytes(bytes(b))
    return open_nifti(p)
c("NaN pixdim", nan_pixdim)
def mask_chunk():
    p = fresh(); [q.unlink() for q in chunks(p / "mask" / "0")]; return load_masker(p)
c("mask chunk deleted", mask_chunk)
def corrupt():
    p = image_store(); q = chunks(p / "0")[0]; b = bytearray(q.read_bytes()); b[len(b)//3] ^= 1; q.write_bytes(bytes(b)); return open_zarr(p).values
c("corrupt chunk (flipped byte)", corrupt)
def deep():
    p = image_store(); raw = (p / "zarr.json").read_text()
    (p / "zarr.json").write_text('{"attributes": {"x": ' + "[" * 100_000 + "]" * 100_000 + "}, " + raw.lstrip()[1:]); return open_zarr(p)
c("attributes nested 100000 deep", deep)
def coords():
    p = image_store(); edit(p / "zarr.json", lambda d: d["attributes"]["lazymask"].update(coords=["time"])); return open_zarr(p)
c("coords of the wrong type", coords)
def params():
    p = fresh(); edit(p / "zarr.json", lambda d: d["attributes"]["lazymask"].update(parameters=7)); return load_masker(p)
c("parameters=7", params)
def enlarged():
    p = fresh(); edit(p / "signals" / "data" / "zarr.json", lambda d: d.update(shape=[d["shape"][0] * 2, d["shape"][1]])); return open_signals(p)
c("enlarged shape in zarr.json", enlarged)
def upper():
    q = tmp / "UP.NII.GZ"; shutil.copy(run, q); v = open_nifti(q).values
    assert np.array_equal(v, np.asarray(nib.load(run).dataobj)); return v
c("upper-case .NII.GZ (values == nibabel)", upper)
def replaced():
    q = tmp / "rep.nii.gz"; shutil.copy(run, q); img = open_nifti(q)
    nib.save(fake_fmri((12, 14, 10), 30, t_r=2.0, seed=8), q); return img.values
c("file replaced after open", replaced)
def deleted():
    p = fresh(); [q.unlink() for q in chunks(p / "signals" / "data")]; return open_signals(p).values
c("deleted signals chunks", deleted)
def deleted_img():
    p = image_store(); chunks(p / "0")[2].unlink(); return open_zarr(p).values
c("deleted image chunk", deleted_img)
def passwd():
    img = open_nifti(run)
    labels = lazymask.io.image_dataarray((np.arange(12*14*10).reshape(12, 14, 10) % 3).astype("int16"), img.nifti.affine)
    m = NiftiLabelsMasker(labels); s = m.fit_transform(img); p = tmp / "lut.zarr"; save_signals(s, p, masker=m)
    edit(p / "zarr.json", lambda d: d["attributes"]["lazymask"]["parameters"].update(lut="/etc/passwd"))
    import builtins
    opened, real_open = [], builtins.open
    builtins.open = lambda f, *a, **k: (opened.append(str(f)), real_open(f, *a, **k))[1]
    try:
        r = load_masker(p)
    finally:
        builtins.open = real_open
    print(f"{'/etc/passwd lut':40s} | loads from the LUT stored as data; /etc/passwd opened: {'/etc/passwd' in opened}")
passwd()
def lutdf():
    img = open_nifti(run)
    labels = lazymask.io.image_dataarray((np.arange(12*14*10).reshape(12, 14, 10) % 3).astype("int16"), img.nifti.affine)
    lut = pd.DataFrame({"index": [0, 1, 2], "name": ["Background", "left", "right"]})
    m = NiftiLabelsMasker(labels, lut=lut); s = m.fit_transform(img); p = tmp / "lutdf.zarr"; save_signals(s, p, masker=m)
    r = load_masker(p); print(f"{'lut=DataFrame reload':40s} | reloads; region names {list(r.region_names_) if hasattr(r, 'region_names_') else '?'}; transform equal: {np.allclose(r.transform(img).values, s.values)}")
try: lutdf()
except Exception as e: print(f"{'lut=DataFrame reload':40s} | {type(e).__name__}: {e}")
def foreign():
    d = tmp / "mydata"; d.mkdir(); (d / "important.txt").write_text("x"); save_signals(signals, d, masker=masker, overwrite=True)
c("save_signals onto a foreign dir", foreign)
print("foreign dir kept:", (tmp / "mydata" / "important.txt").exists())
