"""The ``lazymask`` command line.

Commands::

    lazymask info FILE...            headers, grid and chunk plan of images (reads headers only)
    lazymask convert IN OUT.zarr     a NIfTI image to a zarr store, with a progress bar
    lazymask extract IMG... --out OUT.zarr [--mask-strategy epi] [cleaning options]
                                     [--confounds TSV...] [--report OUT.html]
                                     voxel signals inside a mask, streamed to a zarr store
    lazymask verify STORE [--group G]
                                     check a zarr store chunk by chunk against what it recorded
    lazymask demo [--out DIR]        run the whole job on the bundled demo data

Outputs follow lazymask's data-safety rule (docs/guarantees.md): OUT is written under a temporary
name beside it and renamed into place when complete; ``--overwrite`` replaces only a complete
lazymask store, and only once the new one is complete (a failed job leaves the old one intact);
anything else at OUT is refused, with or without ``--overwrite``.

Every FILE, IN, OUT and STORE may be a URL (``s3://``, ``gs://``, ``https://``, ...).
``--storage-option KEY=VALUE`` (repeatable, before or after the command) sets fsspec's storage
options for them (``--storage-option anon=true`` for a public bucket); without it the usual
environment applies (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``, ...).

Exit codes: 0 on success, 2 on bad input or usage (with a one-line message on stderr, never a
traceback for an error lazymask anticipates), 130 when interrupted (Ctrl-C), 143 when terminated (SIGTERM):
either signal ends the command with one line, after removing what it was staging (a second one during
that cleanup is ignored); the old OUT is left as it was.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import signal
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np

from lazymask.exceptions import LazymaskError, ParameterError

__all__ = ["main"]

EXIT_OK, EXIT_ERROR, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 2, 130, 143


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``) and return the exit code.

    Examples
    --------
    >>> main(["info", "bold.nii.gz"])   # doctest: +SKIP
    0
    """
    parser = _parser()
    args = parser.parse_args(argv)
    stop = _Stop()
    try:
        from lazymask.storage import parse_storage_option, set_storage_options

        with stop.installed():
            options = dict(parse_storage_option(text) for text in args.storage_option or [])
            with set_storage_options(options if options else None):
                return args.run(args)
    except LazymaskError as exc:
        _fail(exc)
        return EXIT_ERROR
    except OSError as exc:  # the disk (full, read-only, permissions) or the network: one line, exit 2
        _fail(os_error_message(exc, _target_of(args)))
        return EXIT_ERROR
    except KeyboardInterrupt:
        # zarr's coroutines cut by the signal are collected on the way out: not a message for the user
        warnings.filterwarnings("ignore", "coroutine .* was never awaited", RuntimeWarning)
        terminated = stop.received == signal.SIGTERM
        print("lazymask: terminated" if terminated else "lazymask: interrupted", file=sys.stderr)
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED


class _Stop:
    """SIGINT and SIGTERM end a command the same way: the first one raises ``KeyboardInterrupt`` in
    the main thread, so that every staged write removes its staging on the way out (the old OUT is
    never touched); any further one is ignored (``SIG_IGN``) while that cleanup runs and until the
    process exits (a second Ctrl-C never escapes as a traceback or a death by signal, from the
    cleanup or from the interpreter's exit: the exit code stays 130, or 143 for SIGTERM). The
    handlers are installed once, by :func:`main`, and put back when the command ends without a
    signal (``main`` may be called in a process that has handlers of its own).

    Examples
    --------
    >>> stop = _Stop()
    >>> with stop.installed():
    ...     signal.getsignal(signal.SIGTERM) == stop.handle
    True
    >>> stop.received, signal.getsignal(signal.SIGTERM) == stop.handle  # no signal: the handlers put back
    (None, False)
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.received: int | None = None

    def handle(self, signum, frame) -> None:
        if self.received is not None:
            return  # the first signal's cleanup is under way: let it finish
        self.received = signum
        for other in self.SIGNALS:  # ignored by the OS from now on: the interpreter's exit resets Python
            signal.signal(other, signal.SIG_IGN)  # handlers to the default (death by the signal), not this
        raise KeyboardInterrupt

    @contextlib.contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():
            yield  # signals reach the main thread only; a command run elsewhere keeps its caller's handlers
            return
        previous = {signum: signal.signal(signum, self.handle) for signum in self.SIGNALS}
        try:
            yield
        finally:
            if self.received is None:
                for signum, handler in previous.items():
                    signal.signal(signum, handler)


def _parser() -> argparse.ArgumentParser:
    from lazymask import __version__

    parser = argparse.ArgumentParser(
        prog="lazymask", description="Lazy, out-of-core masking of fMRI images (nilearn's masking stack on dask)."
    )
    parser.add_argument("--version", action="version", version=f"lazymask {__version__}")
    _add_storage_option(parser)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_parser = commands.add_parser

    def add_parser(*args, **kwargs):  # every command takes --storage-option after its name too
        command = _add_parser(*args, **kwargs)
        _add_storage_option(command, default=argparse.SUPPRESS)
        return command

    commands.add_parser = add_parser

    info = commands.add_parser("info", help="show the shape, dtype, grid and chunk plan of images")
    info.add_argument("files", nargs="+", metavar="FILE", help="NIfTI images (.nii, .nii.gz)")
    _add_chunks(info)
    info.set_defaults(run=_run_info)

    convert = commands.add_parser("convert", help="convert a NIfTI image to a zarr store")
    convert.add_argument("input", metavar="IN", help="a NIfTI image (.nii, .nii.gz)")
    convert.add_argument("output", metavar="OUT.zarr", help="the zarr store to write")
    convert.add_argument("--overwrite", action="store_true",
                         help="replace OUT if it is a complete lazymask store (once the new one is complete)")
    _add_chunks(convert)
    convert.set_defaults(run=_run_convert)

    _add_extract(commands)
    from lazymask.archive import add_archive_command  # the archive command lives with the archive

    add_archive_command(commands)

    check = commands.add_parser("verify", help="check a zarr store chunk by chunk (exit 0 ok, 2 with the problem)")
    check.add_argument("store", metavar="STORE", help="a zarr store written by lazymask (or a NIfTI-Zarr image)")
    check.add_argument("--group", metavar="G", help="check only this group (and the groups below it)")
    check.set_defaults(run=_run_verify)

    demo = commands.add_parser("demo", help="run lazymask on the bundled (generated) demo data")
    demo.add_argument("--out", default="lazymask-demo", metavar="DIR",
                      help="where to write the results (default: ./lazymask-demo)")
    demo.set_defaults(run=_run_demo)
    return parser


def _add_storage_option(parser: argparse.ArgumentParser, default=None) -> None:
    parser.add_argument("--storage-option", action="append", default=default, metavar="KEY=VALUE",
                        help="an fsspec storage option for URLs (repeatable), e.g. anon=true or "
                             "endpoint_url=http://127.0.0.1:9000; values are read as JSON when they are JSON")


def _add_chunks(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--chunks", default="auto", type=_chunks_arg, metavar="N",
                        help="volumes per chunk: an integer, -1 for one chunk, or 'auto' (~64 MiB; default)")


def _chunks_arg(text: str):
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or an integer, got {text!r}") from None


_OS_HINTS = {
    errno.ENOSPC: "the device is full: free space or write elsewhere",
    errno.EDQUOT: "the disk quota is exceeded: free space or write elsewhere",
    errno.EROFS: "the file system is read-only: write elsewhere",
    errno.EACCES: "permission denied: write elsewhere or fix the permissions",
    errno.EPERM: "operation not permitted: write elsewhere or fix the permissions",
}


def _target_of(args) -> str | None:
    """What the command writes (named when an error of the disk does not say its path)."""
    for name in ("output", "out", "store"):
        value = getattr(args, name, None)
        if isinstance(value, str | os.PathLike):
            return str(value)
    return None


def os_error_message(exc: OSError, target: str | None = None) -> str:
    """One line for an operating-system error: what failed, on which path, and what to do.

    Writes are staged (docs/guarantees.md), so a failed write published nothing and left an old
    result intact; the message says so.

    Examples
    --------
    >>> os_error_message(OSError(errno.ENOSPC, "No space left on device", "/data/out.zarr/c/0"))
    'No space left on device (ENOSPC) at /data/out.zarr/c/0: the device is full: free space or write elsewhere. Nothing was published; an earlier result there is intact.'
    """
    name = errno.errorcode.get(exc.errno, "") if exc.errno is not None else ""
    where = f" at {exc.filename}" if exc.filename else f" writing {target}" if target else ""
    hint = _OS_HINTS.get(exc.errno, "check the path and the storage")
    return (f"{exc.strerror or exc}{f' ({name})' if name else ''}{where}: {hint}. Nothing was published; an "
            "earlier result there is intact.")


def _fail(exc: BaseException | str) -> None:
    message = " ".join(str(exc).split())  # one line, whatever the message's layout
    print(f"lazymask: error: {message}", file=sys.stderr)


# -- info -------------------------------------------------------------------------------------------
def _run_info(args) -> int:
    from lazymask.io import open_nifti

    status = EXIT_OK
    for index, path in enumerate(args.files):
        try:
            image = open_nifti(path, chunks=args.chunks)
        except LazymaskError as exc:
            _fail(exc)
            status = EXIT_ERROR
            continue
        if index:
            print()
        print(describe_image(image, path))
    return status


def describe_image(image, path) -> str:
    """A few lines describing an opened image: grid, dtype, size on disk and chunk plan."""
    zooms = " x ".join(f"{z:g}" for z in image.nifti.zooms)
    t_r = image.nifti.t_r
    affine = np.array2string(image.nifti.affine, precision=4, suppress_small=True, separator=", ")
    affine = affine.replace("\n", "\n" + " " * 12)
    rows = [
        ("shape", str(tuple(image.shape))),
        ("dtype", str(image.dtype)),
        ("zooms", f"{zooms} mm"),
        ("TR", "-" if t_r is None else f"{t_r:g} s"),
        ("affine", affine),
        ("on disk", f"{_size(_stored_size(path))}" + (" (gzip)" if str(path).endswith(".gz") else "")),
        ("chunks", _chunk_plan(image)),
    ]
    return "\n".join([str(path)] + [f"  {name:<9} {value}" for name, value in rows])


def _stored_size(path) -> int:
    from lazymask.storage import source_identity

    return source_identity(path).size


def _chunk_plan(image) -> str:
    volume_bytes = int(np.prod(image.shape[:3])) * image.dtype.itemsize
    if image.ndim == 3:
        return f"1 chunk of {_size(volume_bytes)} (a 3D image)"
    lengths = image.chunks[image.dims.index("time")]
    per_chunk = max(lengths)
    plural = "s" if len(lengths) > 1 else ""
    return (f"{per_chunk} volumes per chunk, {len(lengths)} chunk{plural}, "
            f"{_size(per_chunk * volume_bytes)} per chunk (in memory, {image.dtype})")


def _size(n_bytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n_bytes < 1024 or unit == "GiB":
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1024
    raise AssertionError("unreachable")


# -- convert ----------------------------------------------------------------------------------------
def _run_convert(args) -> int:
    from lazymask.io import open_nifti

    image = open_nifti(args.input, chunks=args.chunks)
    start = time.perf_counter()
    _write_zarr(image, args.output, overwrite=args.overwrite)
    print(f"wrote {args.output} {tuple(image.shape)} {image.dtype} in {time.perf_counter() - start:.1f} s")
    return EXIT_OK


def _write_zarr(image, store, overwrite: bool = False) -> None:
    """Write ``image`` to ``store`` with lazymask's zarr writer, showing progress on stderr."""
    from lazymask._progress import ProgressBar

    from lazymask.io import to_zarr

    with ProgressBar(out=sys.stderr):
        to_zarr(image, store, overwrite=overwrite)


@contextlib.contextmanager
def _staged_output(out, overwrite: bool):
    """Stage a whole output store: yield where to write it; published only when the job succeeded.

    The data-safety rule of :func:`lazymask.io.check_target` applies to OUT: a complete lazymask
    store is replaced only with ``--overwrite`` and only now, once the new one is complete;
    anything else is refused. On an object store (a URL) there is no rename: OUT itself is
    yielded and each group is claimed, written and marked complete in place (replacing a complete
    store there is refused, see docs/guarantees.md).
    """
    from lazymask.io import check_target, inspect_store, staged_path
    from lazymask.storage import LocalLocation, resolve

    if not isinstance(resolve(out), LocalLocation):  # an object store: each group published in place
        check_target(str(out), inspect_store(out), kind="lazymask store", overwrite=overwrite)
        yield out
        return
    with staged_path(Path(out), kind="lazymask store", overwrite=overwrite, inspect=inspect_store,
                     directory=True, create=False) as staging:
        yield staging


# -- verify -----------------------------------------------------------------------------------------
def _run_verify(args) -> int:
    from lazymask.io import verify

    counts = verify(args.store, args.group)
    print(f"ok {args.store}: {counts['groups']} group(s), {counts['arrays']} arrays, {counts['chunks']} chunks "
          f"({_size(counts['bytes'])}) match what was recorded when written")
    return EXIT_OK


# -- extract ----------------------------------------------------------------------------------------
def _add_extract(commands) -> None:
    from lazymask.maskers import MASK_STRATEGIES

    extract = commands.add_parser(
        "extract", help="extract (and clean) voxel signals inside a mask into a zarr store",
        description="Fit a mask (NiftiMasker; MultiNiftiMasker for several runs) and stream each run's "
                    "signals to OUT.zarr (one group per run when several IMG are given).",
    )
    extract.add_argument("images", nargs="+", metavar="IMG", help="4D runs (.nii, .nii.gz)")
    extract.add_argument("--out", required=True, metavar="OUT.zarr", help="the zarr store to write")
    extract.add_argument("--mask", metavar="MASK", help="a binary mask image (instead of --mask-strategy)")
    extract.add_argument("--mask-strategy", default="background", choices=MASK_STRATEGIES,
                         help="how to compute the mask (default: background, as nilearn)")
    extract.add_argument("--smoothing-fwhm", type=float, metavar="MM", help="smooth each volume (FWHM, mm)")
    extract.add_argument("--detrend", action="store_true", help="remove linear trends")
    extract.add_argument("--standardize", choices=("zscore_sample", "zscore", "psc"),
                         help="scale each time series")
    extract.add_argument("--low-pass", type=float, metavar="HZ", help="low-pass cutoff (Hz)")
    extract.add_argument("--high-pass", type=float, metavar="HZ", help="high-pass cutoff (Hz)")
    extract.add_argument("--t-r", type=float, metavar="S", help="repetition time (default: the header's)")
    extract.add_argument("--high-variance-confounds", action="store_true",
                         help="regress out the components of the highest-variance voxels")
    extract.add_argument("--confounds", nargs="+", metavar="TSV",
                         help="confounds files (TSV with a header), one per IMG")
    extract.add_argument("--report", metavar="OUT.html", help="write the masker's HTML report here")
    regions = extract.add_mutually_exclusive_group()
    regions.add_argument("--labels", metavar="ATLAS", help="region signals of a labels image (NiftiLabelsMasker)")
    regions.add_argument("--maps", metavar="MAPS", help="region signals of 4D maps (NiftiMapsMasker)")
    regions.add_argument("--seeds", metavar="CSV", help="sphere signals around seeds: a CSV with x, y, z "
                         "columns in mm (NiftiSpheresMasker)")
    extract.add_argument("--lut", metavar="TSV", help="with --labels: the atlas's look-up table (index, name)")
    extract.add_argument("--strategy", default="mean", help="with --labels: mean, median, sum, minimum, "
                         "maximum, variance or standard_deviation (default: mean)")
    extract.add_argument("--radius", type=float, metavar="MM", help="with --seeds: sphere radius in mm "
                         "(default: the nearest voxel)")
    extract.add_argument("--overwrite", action="store_true", help="replace OUT if it is a zarr store")
    _add_chunks(extract)
    extract.set_defaults(run=_run_extract)


def _run_extract(args) -> int:
    from lazymask.io import get_t_r, open_nifti
    from lazymask.maskers import MultiNiftiMasker, NiftiMasker

    images = [open_nifti(path, chunks=args.chunks) for path in args.images]
    confounds = _confounds_arg(args.confounds, len(images))
    _check_output(args.out, args.overwrite)  # refuse before any work: the rule is applied again at the end
    t_r = args.t_r if args.t_r is not None else get_t_r(images[0])
    params = dict(mask_img=args.mask, mask_strategy=args.mask_strategy, smoothing_fwhm=args.smoothing_fwhm,
                  detrend=args.detrend, standardize=args.standardize, low_pass=args.low_pass,
                  high_pass=args.high_pass, t_r=t_r, high_variance_confounds=args.high_variance_confounds)
    start = time.perf_counter()
    if args.labels or args.maps or args.seeds:
        return _run_extract_regions(args, images, confounds, params, start)
    if len(images) == 1:
        masker = NiftiMasker(**params)
        runs = [(None, masker.fit_transform(images[0], confounds=confounds[0]))]
    else:
        masker = MultiNiftiMasker(**params)
        signals = masker.fit_transform(images, confounds=confounds)
        runs = list(zip(_group_names(args.images), signals, strict=True))
    print(f"mask       {masker.n_elements_} voxels ({args.mask or args.mask_strategy})")
    return _finish_extract(args, masker, runs, start)


def _region_masker(args, params, several: bool):
    """The region masker ``extract`` builds for --labels / --maps / --seeds."""
    from lazymask import maskers

    params = {k: v for k, v in params.items() if k != "mask_strategy"}
    if args.labels:
        cls = maskers.MultiNiftiLabelsMasker if several else maskers.NiftiLabelsMasker
        return cls(args.labels, lut=args.lut, strategy=args.strategy, **params)
    if args.maps:
        cls = maskers.MultiNiftiMapsMasker if several else maskers.NiftiMapsMasker
        return cls(args.maps, **params)
    return maskers.NiftiSpheresMasker(_read_seeds(args.seeds), radius=args.radius, allow_overlap=True, **params)


def _read_seeds(path) -> list:
    import pandas as pd

    table = pd.read_csv(path, sep=None, engine="python")
    columns = {c.lower(): c for c in table.columns}
    if not {"x", "y", "z"} <= set(columns):
        raise ParameterError(f"--seeds {path}: expected columns x, y, z (mm); found {list(table.columns)}.")
    return table[[columns["x"], columns["y"], columns["z"]]].to_numpy(dtype=float).tolist()


def _run_extract_regions(args, images, confounds, params, start) -> int:
    several = len(images) > 1
    masker = _region_masker(args, params, several and not args.seeds)
    if several and not args.seeds:
        runs = list(zip(_group_names(args.images), masker.fit_transform(images, confounds=confounds), strict=True))
    elif several:
        masker.fit(images[0])
        runs = [(name, masker.transform(img, confounds=conf))
                for name, img, conf in zip(_group_names(args.images), images, confounds, strict=True)]
    else:
        runs = [(None, masker.fit_transform(images[0], confounds=confounds[0]))]
    print(f"regions    {masker.n_elements_} ({type(masker).__name__})")
    return _finish_extract(args, masker, runs, start)


def _check_output(out, overwrite: bool) -> None:
    from lazymask.io import check_target, inspect_store

    check_target(str(out), inspect_store(out), kind="lazymask store", overwrite=overwrite)


def _finish_extract(args, masker, runs, start: float) -> int:
    """Stream every run's signals to the store (published when all are written), the report, say where."""
    with _staged_output(args.out, args.overwrite) as staging:
        _save_runs(runs, staging, masker, overwrite=args.overwrite and staging == args.out)
    print(f"signals    {args.out}" + ("" if len(runs) == 1 else f" ({len(runs)} groups)"))
    if args.report:
        print(f"report     {masker.generate_report().save_as_html(args.report)}")
    print(f"done in {time.perf_counter() - start:.1f} s")
    return EXIT_OK


def _confounds_arg(paths, n_images: int) -> list:
    if not paths:
        return [None] * n_images
    if len(paths) != n_images:
        raise ParameterError(f"--confounds got {len(paths)} files for {n_images} images; pass one per image.")
    return list(paths)


def _group_names(paths) -> list[str]:
    names = [Path(p).name.removesuffix(".gz").removesuffix(".nii") for p in paths]
    if len(set(names)) != len(names):
        names = [f"run-{index + 1}" for index in range(len(paths))]
    return names


def _save_runs(runs, store, masker, overwrite: bool = False) -> None:
    """Write each run's signals (one group per run), the runs computed together (save_signals' windows)."""
    from lazymask._progress import ProgressBar

    from lazymask.maskers import save_signals

    groups, signals = [group for group, _ in runs], [run for _, run in runs]
    with ProgressBar(out=sys.stderr):
        save_signals(signals if len(signals) > 1 else signals[0], store, groups if len(groups) > 1 else groups[0],
                     masker=masker, overwrite=overwrite)


# -- demo -------------------------------------------------------------------------------------------
def _run_demo(args) -> int:
    from lazymask._progress import ProgressBar

    from lazymask.datasets import load_demo
    from lazymask.io import open_nifti, to_nifti

    start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    demo = load_demo()
    image = open_nifti(demo.func)
    print(f"demo run   {demo.func}")
    print(f"           {tuple(image.shape)} {image.dtype}, TR {image.nifti.t_r:g} s, "
          f"{len(image.chunks[3])} chunk(s) of up to {max(image.chunks[3])} volumes")
    with ProgressBar(out=sys.stderr):
        mean = image.mean("time").compute()
    mean_path = to_nifti(mean.astype(np.float32), out / "mean_bold.nii.gz", overwrite=True)
    print(f"mean image {mean_path}")
    zarr_path = out / "bold.zarr"
    _write_zarr(image, zarr_path, overwrite=True)
    print(f"zarr store {zarr_path}")
    _demo_extraction(demo, image, out)
    print(f"done in {time.perf_counter() - start:.1f} s; results in {out.resolve()}")
    return EXIT_OK


def _demo_extraction(demo, image, out: Path) -> None:
    """The main job: an EPI mask, cleaned signals in zarr, the masker's report."""
    from lazymask.maskers import NiftiMasker

    masker = NiftiMasker(mask_strategy="epi", detrend=True, standardize="zscore_sample", low_pass=0.1,
                         high_pass=0.01, t_r=demo.t_r)
    signals = masker.fit_transform(image, confounds=_demo_confounds(demo.confounds))
    print(f"mask       {masker.n_elements_} voxels (mask_strategy='epi')")
    signals_path = out / "signals.zarr"
    with _staged_output(signals_path, overwrite=True) as staging:
        _save_runs([(None, signals)], staging, masker)
    print(f"signals    {signals_path} {tuple(signals.shape)} (detrended, band-passed, 6 motion confounds)")
    print(f"report     {masker.generate_report().save_as_html(out / 'report.html')}")


def _demo_confounds(path):
    import pandas as pd

    return pd.read_csv(path, sep="\t")[["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]]


if __name__ == "__main__":
    sys.exit(main())
