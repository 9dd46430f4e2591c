"""Where the analysis tools write: checked up front, built in a hidden sibling, moved into place at the end.

The staging, swap and clean-up rules are `region_plugin.outdir`'s (shared with region-score and
region-prune): a killed run leaves only a hidden `.NAME.tmp-*` directory that the next run for the
same output removes, and an input directory is never written into.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import Iterable, Iterator, Optional

from ..outdir import check_apart_from_inputs, make_staging, reap_stale, remove_staging, swap_dir
from .errors import AnalysisError


def check_new_dir(out: str, inputs: Iterable[Optional[str]], flag: str = "--out") -> None:
    """Refuse an output dir that exists, lies inside an input, or whose parent is missing/read-only."""
    if not out:
        raise AnalysisError(f"{flag} is required: the new directory to create")
    check_apart_from_inputs(out, flag, [("input", p) for p in inputs])
    if os.path.lexists(out):
        raise AnalysisError(f"{flag} {out!r} already exists; choose a new directory (or remove it first)")
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise AnalysisError(f"{flag} {out!r}: its parent directory {parent!r} does not exist; create it first")
    if not os.access(parent, os.W_OK):
        raise AnalysisError(f"{flag} {out!r}: cannot write to {parent!r}")


def check_results_dir(out: str, inputs: Iterable[Optional[str]], flag: str = "--out") -> None:
    """A directory results may be added to (existing or new), never inside an input."""
    check_apart_from_inputs(out, flag, [("input", p) for p in inputs])
    if os.path.lexists(out) and not os.path.isdir(out):
        raise AnalysisError(f"{flag} {out!r} exists and is not a directory")
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(out) and not os.path.isdir(parent):
        raise AnalysisError(f"{flag} {out!r}: its parent directory {parent!r} does not exist; create it first")


@contextlib.contextmanager
def staged_dir(out: str, replace: bool = False) -> Iterator[str]:
    """Yield a directory to fill; it becomes `out` on success (an existing `out` is replaced only if `replace`)."""
    out = os.path.abspath(out)
    for note in reap_stale(out):
        print(note, file=sys.stderr)
    root = make_staging(out)
    result = os.path.join(root, "result")
    os.makedirs(result)
    try:
        yield result
        if os.path.lexists(out) and not replace:
            raise AnalysisError(f"{out!r} appeared while this tool ran; nothing was replaced, choose a new directory")
        swap_dir(result, out, root)
    except BaseException:
        remove_staging(root, out)
        raise
    remove_staging(root, out)


def write_json(path: str, data) -> str:
    """Write JSON atomically (temp file + rename) and return the path."""
    from ..report import write_json_atomic

    write_json_atomic(path, data)
    return path


def print_json_line(data) -> None:
    """`--json`: one JSON object as the last stdout line."""
    print(json.dumps(data), flush=True)
