"""Find and classify the result files under each run directory, by content rather than by name.

    region_report.json  (training cost)      scores.json        (region-score)
    prune_report.json   (region-prune)       revert*.json       (region-revert --json / --out)
    text_eval_*.json    (region-eval-text)   benchmarks.json    ({"TextVQA": 58.2, ...}: upstream eval scores)

One RUN_DIR is one row of the report; files are searched up to MAX_DEPTH directories below it.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional

MAX_DEPTH = 3
TASK_NAMES = {"mmlu": "MMLU", "bbh": "BBH"}


@dataclass
class Run:
    """Everything known about one run directory."""

    name: str
    path: str
    cost: Optional[dict] = None                     # region_report.json
    scores: List[dict] = field(default_factory=list)
    prunes: List[dict] = field(default_factory=list)
    reverts: List[dict] = field(default_factory=list)
    text_evals: Dict[str, dict] = field(default_factory=dict)
    benchmarks: Dict[str, float] = field(default_factory=dict)
    files: List[str] = field(default_factory=list)

    @property
    def num_layers(self) -> Optional[int]:
        for source in [self.cost, *self.scores]:
            if source and isinstance(source.get("num_layers"), int):
                return source["num_layers"]
        for p in self.prunes:
            return p.get("num_layers_before")
        return None

    @property
    def region(self) -> Optional[List[int]]:
        return (self.cost or {}).get("region_layers")

    @property
    def layer_count(self) -> Optional[int]:
        """Trained decoder layers: the region's size, or all layers for an ordinary run."""
        if self.cost is None:
            return None
        return len(self.region) if self.region else self.cost.get("num_layers")

    @property
    def pruned(self) -> Optional[dict]:
        """The last prune report (the one that produced this run's model)."""
        return self.prunes[-1] if self.prunes else None

    def performance(self) -> Dict[str, float]:
        """Higher-is-better scores of this run: text tasks (accuracy %) and upstream benchmarks."""
        out = {TASK_NAMES.get(t, t): 100.0 * r["accuracy"] for t, r in sorted(self.text_evals.items())}
        out.update(self.benchmarks)
        return out


def _kind(data) -> Optional[str]:
    if not isinstance(data, dict):
        return None
    if "tuning" in data and "parameters" in data:
        return "cost"
    if "metrics" in data and "num_layers" in data:
        return "scores"
    if "pruned_layers" in data and "num_layers_after" in data:
        return "prune"
    if "layers" in data and "visual" in data:
        return "revert"
    if "task" in data and "accuracy" in data:
        return "text_eval"
    if data and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in data.values()):
        return "benchmarks"
    return None


def _json_files(root: str) -> List[str]:
    found = []
    base = root.rstrip(os.sep).count(os.sep)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if dirpath.count(os.sep) - base >= MAX_DEPTH:
            dirnames[:] = []
        found += [os.path.join(dirpath, f) for f in sorted(filenames)
                  if f.endswith(".json") and not f.startswith(".") and _wanted(f)]
    return found


def _wanted(name: str) -> bool:
    return name in ("region_report.json", "scores.json", "prune_report.json", "benchmarks.json") or \
        name.startswith(("revert", "text_eval_"))


def collect(path: str, name: Optional[str] = None) -> Run:
    run = Run(name or os.path.basename(os.path.abspath(path).rstrip(os.sep)), os.path.abspath(path))
    for file in _json_files(path):
        try:
            with open(file) as f:
                data = json.load(f)
        except (OSError, json.JSONDecodeError):
            continue
        kind = _kind(data)
        if kind is None:
            continue
        run.files.append(file)
        if kind == "cost":
            run.cost = run.cost or data
        elif kind == "scores":
            run.scores.append({**data, "file": file})
        elif kind == "prune":
            run.prunes.append(data)
        elif kind == "revert":
            run.reverts.append(data)
        elif kind == "text_eval":
            run.text_evals[data["task"]] = data
        else:
            run.benchmarks.update({k: float(v) for k, v in data.items()})
    return run
