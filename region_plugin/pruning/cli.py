"""`region-prune`: remove the K least useful decoder layers OUTSIDE the visual region (paper Sec 6).

    region-prune --model-path CKPT [--model-base BASE] --out PRUNED_DIR --num-prune K
                 [--region-layers SPEC] [--scores scores.json | --data D.json --image-folder IMGS]
                 [--mode region|global] [--strategy layer|block] [--token last|all] [--layers 5,9] [--overwrite]

Every input is checked before a weight is read; the result is written next to --out under a
hidden temporary name, verified with the codebase's own loader, then renamed into place.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from typing import List, Optional

from ..spec import RegionSpecError, load_layer_scores, parse_region_layers
from ..model_config import is_lora_dir
from .backends import adapter_for
from .choose import MODES, candidate_layers, parse_layer_list, validate_explicit, validate_num_prune
from .config_edit import depth_holder
from .errors import PruneError
from ..input_checks import CHECKPOINT_N, lvlm_hint
from ..outdir import is_out_of_space, space_message
from .checkpoint import scan, tensor_names
from .output import REPORT_NAME, Staging, check_out
from .safety import check_inputs, check_lvlm
from . import strategy
from .stream import Plan, prune_into, read_config
from .verify import NonFiniteError, compare, summarize


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="region-prune", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-path", required=True, help="merged checkpoint dir, or a LoRA dir with --model-base")
    p.add_argument("--model-base", help="base LLM dir for a LoRA --model-path (merged first, as upstream merges)")
    p.add_argument("--out", required=True, help="new directory for the pruned checkpoint")
    p.add_argument("--num-prune", type=int, help="K: how many decoder layers to remove")
    p.add_argument("--mode", choices=MODES, default="region",
                   help="region (default): rank only layers outside the visual region; global: rank all layers")
    p.add_argument("--region-layers", help="region spec (as --region_layers); default: region_layers in config.json")
    p.add_argument("--layers", help="remove exactly these layers, e.g. 5,9 (no scoring)")
    p.add_argument("--scores", help="scores.json from region-score (or {metric: [one score per layer]})")
    p.add_argument("--metric", default="angular", help="metric in the scores to rank by, lowest first (default angular)")
    strategy.add_arguments(p)
    p.add_argument("--data", help="LLaVA-format JSON: score layers on it (as region-score does) and verify on it")
    p.add_argument("--image-folder", help="images referenced by --data")
    p.add_argument("--num-samples", type=int, default=200, help="samples to score on with --data (default 200)")
    p.add_argument("--verify-samples", type=int, default=4, help="calibration samples for verification (default 4)")
    p.add_argument("--no-verify", action="store_true", help="skip loading the result for verification")
    p.add_argument("--conv-mode", help="LLaVA conversation template for scoring/verification prompts (default vicuna_v1)")
    p.add_argument("--device", help="device for merge/scoring/verification (default: accelerator if present)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out that region-prune wrote")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow Python code shipped in a checkpoint (config auto_map) to run; off by default")
    return p


def _check_dirs(args) -> None:
    if not os.path.isdir(args.model_path):
        raise PruneError(f"--model-path {args.model_path!r} is not a directory")
    if args.model_base is not None and not os.path.isdir(args.model_base):
        raise PruneError(f"--model-base {args.model_base!r} is not a directory")
    for flag, path, isdir in (("--scores", args.scores, False), ("--data", args.data, False),
                              ("--image-folder", args.image_folder, True)):
        if path is not None and not (os.path.isdir(path) if isdir else os.path.isfile(path)):
            raise PruneError(f"{flag} {path!r} does not exist")
    if args.data and not args.image_folder:
        raise PruneError("--data needs --image-folder (the folder its \"image\" entries are relative to)")
    if is_lora_dir(args.model_path) and args.model_base is None:
        raise PruneError(f"--model-path {args.model_path!r} is a LoRA adapter dir: pass --model-base BASE_DIR "
                         "(it is merged first; a LoRA dir is never pruned in place)")
    check_out(args.out, args.overwrite, [args.model_path, args.model_base])


def _input_config(args) -> dict:
    """config.json of --model-path (a LoRA dir's records the region), else of --model-base (plain peft adapters)."""
    if os.path.isfile(os.path.join(args.model_path, "config.json")) or args.model_base is None:
        return read_config(args.model_path)
    if lvlm_hint(args.model_path) is not None:  # an LVLM's checkpoint-N/ without config.json
        raise PruneError(CHECKPOINT_N.format(path=args.model_path))
    return read_config(args.model_base, "--model-base")


def _region(args, config: dict, num_layers: int) -> Optional[List[int]]:
    if args.region_layers:
        try:
            return parse_region_layers(args.region_layers, num_layers)
        except RegionSpecError as e:
            raise PruneError(f"--region-layers: {e}") from None
    region = config.get("region_layers")
    if region is None:
        return None
    if not (isinstance(region, list) and all(type(i) is int and 0 <= i < num_layers for i in region)):
        raise PruneError(f"--model-path config.json region_layers={region!r} is not a list of layers 0-"
                         f"{num_layers - 1}; pass --region-layers SPEC")
    return sorted(region)


def _check_data(args) -> None:
    """--data is read the way region-score reads it, so a bad file or image fails before any weights load."""
    if not args.data:
        return
    from ..scoring import ScoringError
    from ..scoring.records import read_records

    try:
        read_records(args.data, args.image_folder, max(args.num_samples, args.verify_samples))
    except ScoringError as e:
        raise PruneError(str(e)) from None


def _need_scoring(args) -> bool:
    """True when layers must be scored now (--data without --scores/--layers)."""
    if args.layers or args.scores:
        return False
    if not args.data:
        raise PruneError("nothing to rank layers by: pass --scores scores.json (from region-score), "
                         "--data/--image-folder to score now, or --layers to name the layers")
    from ..scoring import HIDDEN_METRICS

    if args.metric not in HIDDEN_METRICS + strategy.SCORABLE_SERIES:
        raise PruneError(f"--metric {args.metric!r} cannot be scored from --data here (choose from "
                         f"{', '.join(HIDDEN_METRICS)}); for other metrics run region-score and pass --scores")
    return True


def _file_scores(args, num_layers: int, chosen: Optional[strategy.Strategy]) -> Optional[List[float]]:
    if not args.scores:
        return None
    series = chosen.series if chosen else args.metric
    try:
        scores = load_layer_scores(args.scores, series, num_layers)
    except (OSError, ValueError) as e:
        raise PruneError(f"--scores: {e} (pick another with --metric)") from None
    if chosen:
        strategy.check_file_n(args.scores, chosen)
    return scores


def _score_now(model_dir: str, args, num_layers: int, chosen: strategy.Strategy) -> List[float]:
    """Score the (merged) checkpoint with region-score's API; higher = more important, as in scores.json.

    The angular distance is measured over blocks of the strategy's n (1 for layer, K for block).
    """
    from ..scoring import ScoringError, score_checkpoint

    metric = strategy.metric_of(chosen.series)
    extra = {} if args.seed is None else {"seed": args.seed}
    try:
        result = score_checkpoint(model_dir, data=args.data, image_folder=args.image_folder, metrics=(metric,),
                                  num_samples=args.num_samples, device=args.device, conv_mode=args.conv_mode,
                                  angular_n=chosen.n, trust_remote_code=args.trust_remote_code, **extra)
    except ScoringError as e:
        raise PruneError(str(e)) from None
    scores = [float(s) for s in result["metrics"][chosen.series]]
    if len(scores) != num_layers:
        raise PruneError(f"the scorer returned {len(scores)} {chosen.series} scores for {num_layers} layers")
    return scores


@dataclass
class Job:
    """Everything decided before the first weight is read."""

    num_layers: int
    region: Optional[List[int]]
    explicit: Optional[List[int]]
    candidates: List[int]
    scores: Optional[List[float]]
    score_now: bool
    config: dict
    adapter: object
    codebase: Optional[str] = None  # the registry's answer: "llava", "bunny" or None (plain LLM)
    strategy: Optional[strategy.Strategy] = None  # None with explicit --layers


def resolve(args) -> Job:
    """Check every input (paths, --out, region, K or --layers, scores, data); no weights are read."""
    _check_dirs(args)
    config = _input_config(args)
    codebase = check_inputs(args, config)
    holder, key = depth_holder(config, f"{args.model_path}/config.json")
    n = holder[key]
    region = _region(args, config, n)
    explicit = parse_layer_list(args.layers, n) if args.layers else None
    if explicit is not None:
        validate_explicit(explicit, n, args.mode, region, args.num_prune)
        candidates = candidate_layers(n, region, args.mode)
    else:
        if args.num_prune is None:
            raise PruneError("--num-prune K is required (or name the layers with --layers)")
        candidates = candidate_layers(n, region, args.mode)
        validate_num_prune(args.num_prune, candidates, n, args.mode, region)
    chosen = strategy.from_args(args, n, candidates, region) if explicit is None else None
    scores = _file_scores(args, n, chosen)
    score_now = _need_scoring(args)
    _check_data(args)
    return Job(n, region, explicit, candidates, scores, score_now, config, adapter_for(config), codebase, chosen)


def _verify(job: Job, args, before_dir: str, after_dir: str) -> dict:
    opts = dict(data=args.data, image_folder=args.image_folder, num_samples=args.verify_samples,
                device=args.device, conv_mode=args.conv_mode, trust_remote_code=args.trust_remote_code)
    try:
        result = compare(job.adapter.calibration_outputs(before_dir, **opts),
                         job.adapter.calibration_outputs(after_dir, **opts))
    except NonFiniteError as e:
        raise PruneError(f"verification failed, so nothing was written to --out: {e}") from None
    except Exception as e:  # noqa: BLE001 - the output is discarded; say why and how to proceed
        raise PruneError(f"verification failed, so nothing was written to --out: {type(e).__name__}: {e}. "
                         f"If {job.config.get('model_type')!r} models need a loader this tool does not have, "
                         "rerun with --no-verify") from e
    print(summarize(result), flush=True)
    return result


def execute(job: Job, args, staging: Staging) -> dict:
    """Merge if needed, score if needed, choose, stream-prune into staging, verify; returns the report."""
    started = time.time()
    n = job.num_layers
    merged = job.adapter.materialize(args.model_path, args.model_base, staging.work, args.device,
                                     trust_remote_code=args.trust_remote_code)
    check_lvlm(job.codebase, read_config(merged), tensor_names(scan(merged)), f"the merged {args.model_path!r}")
    if Plan(merged, []).num_layers != n:
        raise PruneError(f"{merged} does not have the {n} layers {args.model_path} declares")
    scores = _score_now(merged, args, n, job.strategy) if job.score_now else job.scores
    removed = job.explicit if job.explicit is not None else strategy.choose(
        job.strategy, scores, args.num_prune, job.candidates, n, job.region)
    print(f"region-prune: removing layers {removed} of {n} ({args.mode} mode, region {job.region}, "
          f"{'explicit --layers' if job.explicit is not None else strategy.describe(job.strategy)})", flush=True)
    summary = prune_into(Plan(merged, removed), staging.result, region=job.region)
    config_out = summary.pop("config")
    check_lvlm(job.codebase, config_out, tensor_names(scan(staging.result, "--out")), "the pruned checkpoint")
    if summary["not_carried_over"]:
        print(f"region-prune: not carried over (stale after pruning, or subdirectories): "
              f"{', '.join(summary['not_carried_over'])}", flush=True)
    verification = None if args.no_verify else _verify(job, args, merged, staging.result)
    return {
        "model_path": os.path.abspath(args.model_path),
        "model_base": os.path.abspath(args.model_base) if args.model_base else None,
        "merged_from_lora": merged != args.model_path,
        "mode": args.mode, "metric": args.metric if scores else None,
        **strategy.report_fields(job.strategy),
        "scores_from": os.path.abspath(args.scores) if args.scores else ("scored on --data" if job.score_now else None),
        "num_layers_before": n, "num_layers_after": n - len(removed),
        "pruned_layers": removed,
        "pruned_layers_original": config_out["pruned_layers"], "pruned_from": config_out["pruned_from"],
        "pruned_scores": {str(i): scores[i] for i in removed} if scores else None,
        "scores": scores, "candidates": job.candidates,
        "region_layers_before": job.region, "region_layers_after": config_out.get("region_layers"),
        "verification": verification, **summary,
        "seconds": round(time.time() - started, 3),
    }


def run(args) -> dict:
    """resolve -> execute in a staging sibling of --out -> write prune_report.json -> rename into place."""
    job = resolve(args)
    for w in job.adapter.name_warnings(args.out, job.config):
        print(f"warning: {w}", file=sys.stderr)
    staging = Staging(args.out)
    try:
        report = execute(job, args, staging)
        with open(os.path.join(staging.result, REPORT_NAME), "w") as f:  # inside the staged dir: atomic
            json.dump(report, f, indent=2)
            f.write("\n")
        out = staging.finish(args.overwrite)
    except OSError as e:
        staging.cleanup()
        if is_out_of_space(e):
            raise PruneError(space_message(e, "--out", args.out)) from None
        raise
    except BaseException:
        staging.cleanup()
        raise
    print(f"region-prune: wrote {out} ({report['num_layers_before']} -> {report['num_layers_after']} layers, region "
          f"{report['region_layers_before']} -> {report['region_layers_after']}); report in "
          f"{os.path.join(out, REPORT_NAME)}", flush=True)
    return report


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.verify_samples < 1 or args.num_samples < 1:
        print("error: --verify-samples and --num-samples must be at least 1", file=sys.stderr)
        return 2
    previous = None
    try:  # SIGTERM unwinds like Ctrl-C, so the staging directory is removed
        previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    except ValueError:  # not the main thread
        pass
    try:
        run(args)
    except PruneError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
