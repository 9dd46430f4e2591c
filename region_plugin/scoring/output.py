"""Write scores.json, scores.csv and scores.png into --out without ever leaving half a result.

All three files are written into a temporary directory next to --out; a new --out is then created
by one rename, an existing one receives the three files by `os.replace` (other files in it are
never touched).
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from typing import Dict, List, Optional

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


def write_csv(scores: Dict, path: str) -> None:
    names = list(scores["metrics"])
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["layer", *names])
        for i in range(scores["num_layers"]):
            w.writerow([i, *(f"{scores['metrics'][m][i]:.8g}" for m in names)])


def write_outputs(scores: Dict, out: str, top: Optional[Dict[str, List[int]]] = None) -> List[str]:
    """The three files in `out`; returns their paths."""
    from .plot import plot_scores

    check_out_dir(out)
    out = os.path.abspath(out)
    tmp = tempfile.mkdtemp(prefix=".region-score-", dir=os.path.dirname(out))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; a renamed --out should look like mkdir's
    try:
        with open(os.path.join(tmp, "scores.json"), "w") as f:
            json.dump(scores, f, indent=2)
            f.write("\n")
        write_csv(scores, os.path.join(tmp, "scores.csv"))
        plot_scores(scores, os.path.join(tmp, "scores.png"), top)
        if not os.path.exists(out):
            os.rename(tmp, out)
        else:
            for name in FILES:
                os.replace(os.path.join(tmp, name), os.path.join(out, name))
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return [os.path.join(out, name) for name in FILES]
