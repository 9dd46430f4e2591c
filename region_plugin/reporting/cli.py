"""`region-report`: gather every run's results into report.md (tables like the paper's) and plots.

    region-report RUN_DIR [RUN_DIR ...] --out report/ [--baseline RUN_NAME] [--json]

Each RUN_DIR is one row; its result files are found by content (see collect.py) up to three
directories deep. Percentages are relative to the baseline: --baseline, else the first run that
trained every layer. The report is built in a hidden sibling of --out and moved into place; an
existing --out is replaced only if region-report made it (its report.json says so).
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import List, Optional

from ..analysis.errors import AnalysisError
from ..analysis.outputs import check_results_dir, print_json_line, staged_dir, write_json
from ..outdir import check_replaceable
from . import plots
from .collect import Run, collect
from .tables import pick_baseline, render

REPORT = "report.md"
MARKER = "report.json"  # what marks a directory as ours to replace
FIGURES = (("performance vs trained layers (Fig 2)", "layers.png", "layers_plot", True),
           ("training cost (Fig 3)", "cost.png", "cost_plot", True),
           ("pruning curves (Fig 4)", "pruning.png", "pruning_plot", False),
           ("layer-score heatmap (Fig 5)", "scores_heatmap.png", "scores_heatmap", False),
           ("reverting layers to the backbone (Fig 1, left)", "revert.png", "revert_plot", False))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="region-report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="one directory per run (training output, eval dirs)")
    p.add_argument("--out", required=True, help="report directory (report.md + PNGs)")
    p.add_argument("--baseline", help="name (or path) of the run that is 100%% (default: the first all-layer run)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")
    return p


@dataclass
class Job:
    runs: List[Run]
    baseline: Optional[Run]


def resolve(args) -> Job:
    """Read and classify every run's files; check --baseline and --out. Nothing is written."""
    runs = []
    for path in args.runs:
        if not os.path.isdir(path):
            raise AnalysisError(f"RUN_DIR {path!r} is not a directory")
        run = collect(path)
        if not run.files:
            raise AnalysisError(f"RUN_DIR {path!r} holds none of region_report.json, scores.json, prune_report.json, "
                                "revert*.json, text_eval_*.json, benchmarks.json (searched 3 levels deep)")
        runs.append(run)
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        runs = [Run(**{**r.__dict__, "name": os.path.relpath(r.path)}) for r in runs]
    if args.baseline and not any(args.baseline in (r.name, r.path, os.path.abspath(args.baseline)) for r in runs):
        raise AnalysisError(f"--baseline {args.baseline!r} is none of the runs: {[r.name for r in runs]}")
    baseline = pick_baseline(runs, os.path.abspath(args.baseline) if args.baseline and os.path.isdir(args.baseline)
                             else args.baseline)
    check_results_dir(args.out, args.runs)
    if os.path.isdir(args.out):
        check_replaceable(args.out, "--out", MARKER, ("runs", "figures"), "region-report")
    return Job(runs, baseline)


def execute(job: Job, staging: str) -> dict:
    figures = {}
    for title, name, fn, with_baseline in FIGURES:
        make = getattr(plots, fn)
        done = make(job.runs, job.baseline, os.path.join(staging, name)) if with_baseline else \
            make(job.runs, os.path.join(staging, name))
        if done:
            figures[title] = name
    with open(os.path.join(staging, REPORT), "w") as f:
        f.write(render(job.runs, job.baseline, figures))
    summary = {"runs": [r.name for r in job.runs], "baseline": job.baseline.name if job.baseline else None,
               "figures": list(figures.values()), "sources": {r.name: r.files for r in job.runs}}
    write_json(os.path.join(staging, MARKER), summary)
    return summary


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        job = resolve(args)
    except (AnalysisError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = os.path.abspath(args.out)
    with staged_dir(out, replace=True) as staging:
        summary = execute(job, staging)
    summary.pop("sources")
    summary.update(out=out, report=os.path.join(out, REPORT))
    print(f"region-report: {len(job.runs)} run(s), baseline {summary['baseline']}; wrote {summary['report']} and "
          f"{', '.join(summary['figures']) or 'no figures'}", file=sys.stderr)
    if args.json:
        print_json_line(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
