"""Archives: a whole fMRIPrep dataset into one resumable, self-describing icechunk repository.

:func:`find_runs` lists the runs of a derivatives tree, :func:`build_archive` extracts every run
with a masker into one group per run (skipping the runs complete at the last commit, on the active
dask scheduler, committed in batches; concurrent builders lose nothing), and :func:`open_archive`
reads any version back (an index with each run's status, lazy signals per run, a stacked view, the
fitted masker, the history). A version's store opens with
``xarray.open_datatree(archive.store, engine="zarr", consolidated=False)``.
"""

from lazymask.archive._build import build_archive
from lazymask.archive._cli import add_parser as add_archive_command
from lazymask.archive._open import Archive, open_archive
from lazymask.interfaces import find_runs

__all__ = ["Archive", "add_archive_command", "build_archive", "find_runs", "open_archive"]
