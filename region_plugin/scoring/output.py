"""Write scores.json, scores.csv and scores.png into --out without ever leaving half a result.

All three files are written into a hidden `.NAME.tmp-*` directory next to --out; a new --out is
then created by one rename, an existing one has its three files replaced as one unit (old ones
moved aside first, put back if anything fails; other files in it are never touched).
"""
from __future__ import annotations

import csv
import json
import os
import sys
from typing import Dict, List, Optional

from ..outdir import is_out_of_space, make_staging, reap_stale, remove_staging, space_message, swap_dir, swap_files
from .metrics import ScoringError

FILES = ("scores.json", "scores.csv", "scores.png")


def check_out_dir(out: str) -> None:
    """Fail before any work if --out cannot receive the results."""
    if not out:
        raise ScoringError("--out is required: the directory for scores.json, scores.csv and scores.png")
    if os.path.exists(out) and not os.path.isdir(out):
        raise ScoringError(f"--out {out!r} is a file; pass a directory (it is created if missing)")
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise ScoringError(f"--out {out!r}: its parent directory {parent!r} does not exist")
    if not os.access(out if os.path.isdir(out) else parent, os.W_OK):
        raise ScoringError(f"--out {out!r} is not writable")
    for name in FILES:
        path = os.path.join(out, name)
        if os.path.lexists(path) and (os.path.islink(path) or not os.path.isfile(path)):
            raise ScoringError(f"--out {out!r}: {name} there is not a regular file; region-score replaces only its "
                               "own output files: remove it or choose another --out")


def write_csv(scores: Dict, path: str) -> None:
    names = list(scores["metrics"])
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["layer", *names])
        for i in range(scores["num_layers"]):
            w.writerow([i, *(f"{scores['metrics'][m][i]:.8g}" for m in names)])


def write_outputs(scores: Dict, out: str, top: Optional[Dict[str, List[int]]] = None) -> List[str]:
    """The three files in `out`, replaced as one unit (all new, or all old if anything fails); returns their paths."""
    from .plot import plot_scores

    check_out_dir(out)
    out = os.path.abspath(out)
    for note in reap_stale(out):
        print(f"region-score: {note}", file=sys.stderr)
    root = make_staging(out)
    new = os.path.join(root, "result")
    os.mkdir(new)  # mode 0777 minus umask, like mkdir: a renamed --out looks like any other directory
    try:
        with open(os.path.join(new, "scores.json"), "w") as f:
            json.dump(scores, f, indent=2)
            f.write("\n")
        write_csv(scores, os.path.join(new, "scores.csv"))
        plot_scores(scores, os.path.join(new, "scores.png"), top)
        if not os.path.exists(out):
            swap_dir(new, out, root)
        else:
            swap_files(new, out, FILES, root)
    except OSError as e:
        if is_out_of_space(e):
            raise ScoringError(space_message(e, "--out", out)) from None
        raise
    finally:
        remove_staging(root)
    return [os.path.join(out, name) for name in FILES]
