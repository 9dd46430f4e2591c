"""`make demo`, second half: the paper's analyses on the demo's region run, then region-report.

Runs on what `region_plugin.llava.demo` left in --out (tiny/tiny.json, llava-tiny-region-lora/):
region-score (all six metrics), region-revert of the untouched layers (`outside`: nothing may
change) and of the region itself, region-prune of 1 and 2 layers in region and global mode, and
region-report over all of it. Inputs are only read; results go to --out/runs and --out/report.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

RUN = "llava-tiny-region-lora"


def step(text: str) -> None:
    print(f"\n[analyses] {text}", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m region_plugin.llava.demo_report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="demo_out", help="the demo's output directory (default demo_out)")
    p.add_argument("--prune", default="1,2", help="layer counts to prune in each mode (default 1,2)")
    p.add_argument("--num-samples", type=int, default=64, help="samples to score on (revert: half; default 64)")
    args = p.parse_args(argv)
    from ..analysis import revert
    from ..analysis.outputs import write_json
    from ..pruning.cli import main as prune
    from ..reporting.cli import main as report
    from ..scoring.cli import main as score

    with open(os.path.join(args.out, "tiny", "tiny.json")) as f:
        tiny = json.load(f)
    run_dir = os.path.join(args.out, RUN)
    runs = os.path.join(args.out, "runs")
    if os.path.isdir(runs):
        shutil.rmtree(runs)  # ours from an earlier call: every result below is rebuilt
    region_row = os.path.join(runs, "region-25")
    os.makedirs(region_row)
    shutil.copy(os.path.join(run_dir, "region_report.json"), region_row)
    model = ["--model-path", run_dir, "--model-base", tiny["llm"]]
    data = ["--data", tiny["data"], "--image-folder", tiny["image_folder"]]

    step("region-score: the six layer metrics")
    if score(model + data + ["--metrics", "bi,mm_bi,angular,attn,param_ratio,param_angular", "--backbone",
                             tiny["llm"], "--num-samples", str(args.num_samples), "--quiet", "--out",
                             os.path.join(region_row, "scores")]):
        return 1
    with open(os.path.join(run_dir, "config.json")) as f:
        region = ",".join(map(str, json.load(f)["region_layers"]))
    for name, spec in (("outside", "outside"), ("region", region)):
        step(f"region-revert --layers {spec}")
        result = revert.run(revert.build_parser().parse_args(
            model + data + ["--backbone", tiny["llm"], "--layers", spec, "--num-samples", str(max(1, args.num_samples // 2))]))
        write_json(os.path.join(region_row, f"revert_{name}.json"), result)
    rows = [region_row]
    for mode in ("region", "global"):
        for k in args.prune.split(","):
            step(f"region-prune --mode {mode} --num-prune {k}")
            row = os.path.join(runs, f"{mode}-pruned-{k}")
            os.makedirs(row)
            if prune(model + data + ["--mode", mode, "--num-prune", k, "--metric", "angular", "--scores",
                                     os.path.join(region_row, "scores", "scores.json"), "--verify-samples", "4",
                                     "--out", os.path.join(row, f"llava-tiny-{mode}-pruned-{k}")]):
                return 1
            rows.append(row)
    step("region-report")
    report_dir = os.path.join(args.out, "report")
    if report(rows + ["--out", report_dir]):
        return 1
    print(f"\nreport: {os.path.join(report_dir, 'report.md')} (figures beside it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
