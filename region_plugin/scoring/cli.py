"""`region-score`: score every decoder layer of an LVLM with the paper's importance metrics.

    region-score --model-path CKPT [--model-base BASE] --data LLAVA_JSON --image-folder DIR \\
                 [--metrics bi,mm_bi,angular,attn,param_ratio,param_angular] [--backbone LLM_DIR] \\
                 [--num-samples 200] [--seed 0] [--angular-n 1] --out scores/ [--top 8 --metric bi]

Writes scores.json, scores.csv and scores.png into --out. Every metric is oriented higher = more
important; `--top K --metric M` prints the K highest layers as a ready --region_layers value (also
reachable later as `--region_layers top:K:M:scores/scores.json`).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

from ..model_config import read_num_layers
from ..spec import format_layers, top_k_layers
from .api import DEFAULT_BATCH_SIZE, DEFAULT_SEED, score_checkpoint
from .metrics import ALL_METRICS, ScoringError, parse_metrics, reported_names
from ..outdir import check_apart_from_inputs
from .output import check_out_dir, write_outputs

DEFAULT_METRICS = ",".join(ALL_METRICS[:4])  # all data-driven metrics; param_* need --backbone


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="region-score", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-path", required=True, help="LVLM checkpoint dir, merged or LoRA (then --model-base)")
    p.add_argument("--model-base", default=None, help="base LLM dir for a LoRA --model-path (as upstream's loader)")
    p.add_argument("--model-type", default=None,
                   help="codebase model type: leave out for LLaVA; Bunny's model type for Bunny")
    p.add_argument("--data", default=None, help="LLaVA-format JSON (list of {image, conversations})")
    p.add_argument("--image-folder", default=None, help="folder the records' \"image\" paths are relative to")
    p.add_argument("--metrics", default=DEFAULT_METRICS,
                   help=f"comma-separated, from {','.join(ALL_METRICS)} (default: {DEFAULT_METRICS})")
    p.add_argument("--backbone", default=None, help="the LLM the LVLM was trained from (for param_ratio/param_angular)")
    p.add_argument("--num-samples", type=int, default=200,
                   help="N records with an image, sampled without replacement (default 200)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED,
                   help=f"seed of that sample (default {DEFAULT_SEED}); seed and indices go into scores.json's meta")
    p.add_argument("--angular-n", type=int, default=1, help="block length n of the angular distance (default 1)")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    p.add_argument("--conv-mode", default=None, help="conversation template (LLaVA default: vicuna_v1)")
    p.add_argument("--device", default=None, help="torch device (default: the accelerator when there is one, else cpu)")
    p.add_argument("--out", required=True, help="output directory (created if missing)")
    p.add_argument("--top", type=int, default=None, help="print the K most important layers as --region_layers")
    p.add_argument("--metric", default=None, help="metric for --top (default: the first of --metrics)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow Python code shipped in a checkpoint (config auto_map) to run; off by default")
    return p


def _check_top(args, metrics, num_layers: int) -> Optional[str]:
    if args.top is None:
        if args.metric is not None:
            raise ScoringError("--metric only selects the metric for --top K; add --top K")
        return None
    metric = args.metric or metrics[0]
    if metric not in reported_names(metrics):
        raise ScoringError(f"--metric {metric!r} is not computed by this run; choose from {reported_names(metrics)} "
                           "or add it to --metrics")
    if not 1 <= args.top <= num_layers:
        raise ScoringError(f"--top {args.top} must be in 1..{num_layers} (the model has {num_layers} layers)")
    return metric


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        metrics = parse_metrics(args.metrics)
        check_out_dir(args.out)
        check_apart_from_inputs(args.out, "--out", [("--model-path", args.model_path), ("--model-base", args.model_base),
                                                    ("--backbone", args.backbone)])
        num_layers = read_num_layers(args.model_path, "--model-path")
        top_metric = _check_top(args, metrics, num_layers)
        scores = score_checkpoint(args.model_path, args.model_base, data=args.data, image_folder=args.image_folder,
                                  metrics=metrics, num_samples=args.num_samples, angular_n=args.angular_n,
                                  backbone=args.backbone, model_type=args.model_type, device=args.device,
                                  batch_size=args.batch_size, conv_mode=args.conv_mode, progress=not args.quiet,
                                  trust_remote_code=args.trust_remote_code, seed=args.seed)
        top = top_k_layers(scores["metrics"][top_metric], args.top) if top_metric else None
        paths = write_outputs(scores, args.out, {top_metric: top} if top else None)
    except (ScoringError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n = scores["num_layers"]
    print(f"scored {n} layers on {scores['meta']['samples']} samples; wrote {', '.join(paths)}", file=sys.stderr)
    for name, values in scores["metrics"].items():
        print(f"  {name:14s} " + " ".join(f"{v:.4f}" for v in values), file=sys.stderr)
    if top is not None:
        spec = os.path.join(args.out, "scores.json")
        print(f"top {args.top} layers by {top_metric} (also: --region_layers top:{args.top}:{top_metric}:{spec}):",
              file=sys.stderr)
        print(format_layers(top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
