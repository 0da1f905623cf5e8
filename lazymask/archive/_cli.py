"""``lazymask archive``: a whole fMRIPrep dataset into one resumable archive (an icechunk repository).

Usage::

    lazymask archive BIDS_DIR OUT (--labels ATLAS [--lut TSV] [--strategy S] | --maps MAPS |
                     --seeds CSV [--radius MM] | [--mask-strategy S]) [cleaning options]
                     [--confounds-strategy simple|scrubbing|none] [--space S] [--task T]
                     [--participant-label L ...] [--scheduler ADDRESS]
                     [--storage-option KEY=VALUE ...]
    lazymask archive --status OUT [--tag TAG | --snapshot ID] [--storage-option KEY=VALUE ...]

OUT is a local directory or ``s3://bucket/prefix``; ``--storage-option`` (repeatable) gives the
fsspec/s3fs options (``endpoint_url=...``, ``anon=true``, ``client_kwargs={"region_name": ...}``:
a value is parsed as JSON when it parses, else taken as a string); without credentials the usual
``AWS_*`` environment variables apply.

Exit 0 when every run is complete; 2 with one line per failed run otherwise (a failed run does
not stop the others, and the next invocation retries it).
"""

from __future__ import annotations

import argparse
import sys

from lazymask.exceptions import ParameterError
from lazymask.maskers import MASK_STRATEGIES

EXIT_OK, EXIT_ERROR = 0, 2


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``archive`` command to the ``lazymask`` parser's subcommands."""
    parser = subparsers.add_parser(
        "archive", help="extract every run of an fMRIPrep dataset into one resumable archive (an icechunk repository)",
        description="Extract (and clean) every preprocessed run of an fMRIPrep derivatives tree with one "
                    "masker into OUT (a directory or s3://bucket/prefix; an icechunk repository), one group "
                    "per run, committed in batches; run it again to resume.",
    )
    parser.add_argument("bids_dir", nargs="?", metavar="BIDS_DIR", help="the fMRIPrep derivatives directory")
    parser.add_argument("out", nargs="?", metavar="OUT", help="the archive to write (or resume): a directory or "
                        "s3://bucket/prefix")
    parser.add_argument("--status", metavar="OUT", help="print the archive's index and exit")
    parser.add_argument("--tag", help="with --status: the version tagged TAG (build-1, ...)")
    parser.add_argument("--snapshot", metavar="ID", help="with --status: the version of snapshot ID")
    regions = parser.add_mutually_exclusive_group()
    regions.add_argument("--labels", metavar="ATLAS", help="region signals of a labels image (NiftiLabelsMasker)")
    regions.add_argument("--maps", metavar="MAPS", help="region signals of 4D maps (NiftiMapsMasker)")
    regions.add_argument("--seeds", metavar="CSV", help="sphere signals around x, y, z seeds in mm (NiftiSpheresMasker)")
    parser.add_argument("--lut", metavar="TSV", help="with --labels: the atlas's look-up table")
    parser.add_argument("--strategy", default="mean", help="with --labels: the region statistic (default: mean)")
    parser.add_argument("--radius", type=float, metavar="MM", help="with --seeds: sphere radius in mm")
    parser.add_argument("--mask-strategy", default="epi", choices=tuple(MASK_STRATEGIES),
                        help="without --labels/--maps/--seeds: voxel signals in a computed mask (default: epi)")
    parser.add_argument("--smoothing-fwhm", type=float, metavar="MM", help="smooth each volume (FWHM, mm)")
    parser.add_argument("--detrend", action="store_true", help="remove linear trends")
    parser.add_argument("--standardize", choices=("zscore_sample", "zscore", "psc"), help="scale each time series")
    parser.add_argument("--low-pass", type=float, metavar="HZ", help="low-pass cutoff (Hz)")
    parser.add_argument("--high-pass", type=float, metavar="HZ", help="high-pass cutoff (Hz)")
    parser.add_argument("--confounds-strategy", default="simple", choices=("simple", "scrubbing", "none"),
                        help="fMRIPrep confounds regressed out (nilearn's load_confounds_strategy; default: simple)")
    parser.add_argument("--space", help="only runs in this output space")
    parser.add_argument("--task", help="only runs of this task")
    parser.add_argument("--participant-label", nargs="+", metavar="L", help="only these participants")
    parser.add_argument("--scheduler", metavar="ADDRESS", help="a running dask scheduler to submit the runs to")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)
    return parser


def _masker(args):
    from lazymask import maskers

    clean = dict(smoothing_fwhm=args.smoothing_fwhm, detrend=args.detrend, standardize=args.standardize,
                 low_pass=args.low_pass, high_pass=args.high_pass)
    if args.labels:
        return maskers.NiftiLabelsMasker(args.labels, lut=args.lut, strategy=args.strategy, **clean)
    if args.maps:
        return maskers.NiftiMapsMasker(args.maps, **clean)
    if args.seeds:
        import pandas as pd

        try:
            table = pd.read_csv(args.seeds, sep=None, engine="python")
        except (OSError, pd.errors.EmptyDataError, pd.errors.ParserError) as exc:
            raise ParameterError(f"--seeds {args.seeds}: cannot read a table of x, y, z seeds ({exc}).") from exc
        columns = {c.lower(): c for c in table.columns}
        if not {"x", "y", "z"} <= set(columns):
            raise ParameterError(f"--seeds {args.seeds}: expected columns x, y, z (mm); found {list(table.columns)}.")
        seeds = table[[columns["x"], columns["y"], columns["z"]]].to_numpy(dtype=float).tolist()
        return maskers.NiftiSpheresMasker(seeds, radius=args.radius, allow_overlap=True, **clean)
    return maskers.NiftiMasker(mask_strategy=args.mask_strategy, **clean)


def _storage_options() -> dict | None:
    """The command line's ``--storage-option`` pairs (``lazymask.cli.main`` sets them for every command)."""
    from lazymask.storage import default_storage_options

    return default_storage_options() or None


def _print_status(args) -> int:
    from lazymask.archive import open_archive

    archive = open_archive(args.status, tag=args.tag, snapshot=args.snapshot,
                           storage_options=_storage_options())
    runs = archive.runs
    columns = [c for c in ("group", "status", "t_r", "error") if c in runs.columns]
    print(runs[columns].to_string(index=False))
    print(f"version    {archive.snapshot_id}" + (f" ({', '.join(archive.tags)})" if archive.tags else ""))
    failed = runs[runs["status"] != "complete"]
    return EXIT_OK if failed.empty else EXIT_ERROR


def run(args) -> int:
    """Run ``lazymask archive`` with parsed ``args``; returns the exit code."""
    if args.status:
        return _print_status(args)
    if not args.bids_dir or not args.out:
        raise ParameterError("lazymask archive needs BIDS_DIR and OUT (or --status OUT).")
    if args.tag or args.snapshot:
        raise ParameterError("--tag/--snapshot go with --status (a build always extends the branch's tip).")
    options = _storage_options()
    from lazymask.archive import build_archive

    client = None
    if args.scheduler:
        from distributed import Client

        try:
            client = Client(args.scheduler, timeout="10s")
        except (OSError, ValueError, TypeError) as exc:
            raise ParameterError(f"--scheduler {args.scheduler}: no dask scheduler answers at that address "
                                 f"({type(exc).__name__}: {exc}); start one (dask scheduler) or fix the address.") from exc
    find_args = {k: v for k, v in (("space", args.space), ("task", args.task),
                                   ("subjects", args.participant_label)) if v is not None}
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # failures are printed below, one line each
            archive = build_archive(args.bids_dir, args.out, _masker(args), confounds_strategy=args.confounds_strategy,
                                    client=client, progress=not args.quiet, storage_options=options, **find_args)
    finally:
        if client is not None:
            client.close()
    runs = archive.runs
    failed = runs[runs["status"] != "complete"]
    for group, error in zip(failed["group"], failed["error"], strict=True):
        print(f"lazymask: run {group} failed: {str(error).splitlines()[0] if error else 'not written'}", file=sys.stderr)
    print(f"archive    {args.out} ({len(runs) - len(failed)}/{len(runs)} runs complete; "
          f"{', '.join(archive.tags) or 'no new commit'})")
    return EXIT_OK if failed.empty else EXIT_ERROR
