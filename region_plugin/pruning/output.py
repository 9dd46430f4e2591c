"""Where region-prune writes: a hidden temporary sibling of --out, renamed into place at the very end.

A killed run leaves only a hidden `.NAME.tmp-*` directory, never something that looks like a
finished checkpoint (the next run removes it); the input is never written to; `--overwrite`
replaces only a directory region-prune wrote, and keeps it until the new one is in place.
"""
from __future__ import annotations

import os
from typing import Iterable, Optional

from ..outdir import OutputError, check_replaceable, make_staging, reap_stale, remove_staging, swap_dir
from .errors import PruneError

REPORT_NAME = "prune_report.json"
REPORT_KEYS = ("pruned_layers", "num_layers_before", "num_layers_after")  # what makes a prune_report.json ours


def _real(path: str) -> str:
    return os.path.realpath(os.path.abspath(path))


def _inside(child: str, parent: str) -> bool:
    child, parent = _real(child), _real(parent)
    return child == parent or child.startswith(parent.rstrip(os.sep) + os.sep)


def check_out(out: str, overwrite: bool, inputs: Iterable[Optional[str]]) -> None:
    """Refuse an --out that exists (without --overwrite), is a file, or overlaps an input directory."""
    if not out:
        raise PruneError("--out is required: the directory to create for the pruned checkpoint")
    for src in filter(None, inputs):
        if _inside(out, src) or _inside(src, out):
            raise PruneError(f"--out {out!r} overlaps the input {src!r}; region-prune never writes into its "
                             "input: choose a new directory")
    for note in reap_stale(out):  # first: a killed run may have moved an old output aside
        print(f"region-prune: {note}", flush=True)
    if os.path.lexists(out):
        if not os.path.isdir(out) or os.path.islink(out):
            raise PruneError(f"--out {out!r} exists and is not a directory; choose another path")
        if not overwrite:
            raise PruneError(f"--out {out!r} already exists; pass --overwrite to replace it, or choose a new directory")
        try:
            check_replaceable(out, "--out", REPORT_NAME, REPORT_KEYS, "region-prune")
        except OutputError as e:
            raise PruneError(str(e)) from None
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise PruneError(f"--out {out!r}: its parent directory {parent!r} does not exist; create it first")
    if not os.access(parent, os.W_OK):
        raise PruneError(f"--out {out!r}: cannot write to {parent!r}")


class Staging:
    """A temporary sibling of `out` with a `work/` scratch and the `result/` that becomes `out`."""

    def __init__(self, out: str):
        self.out = os.path.abspath(out)
        for note in reap_stale(self.out):
            print(f"region-prune: {note}", flush=True)
        self.root = make_staging(self.out)
        self.result = os.path.join(self.root, "result")
        self.work = os.path.join(self.root, "work")
        os.makedirs(self.work)

    def finish(self, overwrite: bool) -> str:
        """Move result/ to `out`; an old `out` (under --overwrite) is moved aside first and deleted last."""
        if os.path.lexists(self.out) and not overwrite:
            raise PruneError(f"--out {self.out!r} appeared while pruning; pass --overwrite or choose a new directory")
        swap_dir(self.result, self.out, self.root)
        self.cleanup()
        return self.out

    def cleanup(self) -> None:
        """Remove the staging dir; an old output still moved aside in it is restored, never deleted."""
        remove_staging(self.root, self.out)
