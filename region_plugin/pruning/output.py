"""Where region-prune writes: a hidden temporary sibling of --out, renamed into place at the very end.

A killed run leaves only a hidden `.NAME.tmp-*` directory, never something that looks like a
finished checkpoint; the input is never written to.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from typing import Iterable, Optional

from .errors import PruneError


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
    if os.path.lexists(out):
        if not os.path.isdir(out) or os.path.islink(out):
            raise PruneError(f"--out {out!r} exists and is not a directory; choose another path")
        if not overwrite:
            raise PruneError(f"--out {out!r} already exists; pass --overwrite to replace it, or choose a new directory")
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise PruneError(f"--out {out!r}: its parent directory {parent!r} does not exist; create it first")
    if not os.access(parent, os.W_OK):
        raise PruneError(f"--out {out!r}: cannot write to {parent!r}")


class Staging:
    """A temporary sibling of `out` with a `work/` scratch and the `result/` that becomes `out`."""

    def __init__(self, out: str):
        self.out = os.path.abspath(out)
        name = os.path.basename(self.out.rstrip(os.sep))
        self.root = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=os.path.dirname(self.out))
        self.result = os.path.join(self.root, "result")
        self.work = os.path.join(self.root, "work")
        os.makedirs(self.work)

    def finish(self, overwrite: bool) -> str:
        """Move result/ to `out` (swapping out an old one under --overwrite) and remove the staging dir."""
        if os.path.lexists(self.out):
            if not overwrite:
                raise PruneError(f"--out {self.out!r} appeared while pruning; pass --overwrite or choose a new directory")
            os.rename(self.out, os.path.join(self.root, "replaced"))
        os.rename(self.result, self.out)
        self.cleanup()
        return self.out

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
