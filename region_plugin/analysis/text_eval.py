"""`region-eval-text`: text-task retention of an LVLM's language model (paper Table 4: MMLU, BBH).

    region-eval-text --model-path CKPT [--model-base BASE] --task mmlu|bbh --data DIR \\
                     [--shots 5] [--num-samples N] [--out DIR] [--json]

The paper's protocol: each question in the codebase's chat template (shots as earlier turns),
with "Answer with the option's letter from the given choices directly." (MMLU) or "Please answer
this question in a word or phrase." (BBH); greedy generation without image; accuracy with lenient
matching (extra explanation allowed). Data stays local, in the standard formats (see text_tasks).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import List, Optional

from ..devices import default_device
from ..scoring.metrics import ScoringError
from .errors import AnalysisError
from .outputs import check_results_dir, print_json_line, write_json
from .text_tasks import DEFAULT_SHOTS, TASKS, Item, load_items, predict


def result_name(task: str) -> str:
    return f"text_eval_{task}.json"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="region-eval-text", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-path", required=True, help="LVLM checkpoint dir, merged or LoRA (then --model-base)")
    p.add_argument("--model-base", help="base LLM dir for a LoRA --model-path (as upstream's loader)")
    p.add_argument("--task", required=True, choices=TASKS)
    p.add_argument("--data", required=True, help="MMLU data dir (*_dev.csv, *_test.csv) or BBH dir (TASK.json)")
    p.add_argument("--shots", type=int, help="in-context examples (default: mmlu 5, bbh 0, as in the paper)")
    p.add_argument("--num-samples", type=int, help="at most N questions per subject/task (default: all)")
    p.add_argument("--max-new-tokens", type=int, default=32, help="reply length (default 32)")
    p.add_argument("--conv-mode", help="chat template (LLaVA default vicuna_v1)")
    p.add_argument("--device", help="torch device (default: the accelerator when there is one, else cpu)")
    p.add_argument("--out", help=f"directory to write {result_name('TASK')} into (created if missing)")
    p.add_argument("--json", action="store_true", help="print one JSON object (without per-item rows) last")
    return p


@dataclass
class Job:
    adapter: object
    io: object
    items: List[Item]
    shots: int
    conv_mode: str


def resolve(args) -> Job:
    """Check model paths, template, shots, data and --out; no weights are read."""
    from ..adapters import analysis_io, get_adapter

    path = os.path.join(args.model_path or "", "config.json")
    config = None
    if os.path.isfile(path):
        with open(path) as f:
            config = json.load(f)
    adapter = get_adapter(None, config)
    adapter.check_model(args.model_path, args.model_base)
    io = analysis_io(config)
    conv_mode = args.conv_mode or adapter.default_conv_mode
    known = io.check_conv_mode(conv_mode)
    if known:
        raise AnalysisError(f"--conv-mode {conv_mode!r} is not an upstream template; choose from {known}")
    shots = DEFAULT_SHOTS[args.task] if args.shots is None else args.shots
    if shots < 0:
        raise AnalysisError(f"--shots {shots} must be 0 or more")
    for flag, value in (("--num-samples", args.num_samples), ("--max-new-tokens", args.max_new_tokens)):
        if value is not None and value < 1:
            raise AnalysisError(f"{flag} {value} must be at least 1")
    items = load_items(args.task, args.data, shots, args.num_samples)
    if args.out:
        check_results_dir(args.out, [args.model_path, args.model_base, args.data])
    return Job(adapter, io, items, shots, conv_mode)


def summarize(rows: List[dict]) -> dict:
    groups = defaultdict(list)
    for row in rows:
        groups[row["task"]].append(row["correct"])
    per = {k: {"accuracy": sum(v) / len(v), "correct": sum(v), "total": len(v)} for k, v in sorted(groups.items())}
    correct = sum(r["correct"] for r in rows)
    return {"accuracy": correct / len(rows), "correct": correct, "total": len(rows),
            "macro_accuracy": sum(p["accuracy"] for p in per.values()) / len(per), "per_task": per}


def execute(job: Job, args) -> dict:
    """Load once, generate a reply per question, match it."""
    from tqdm.auto import tqdm

    started = time.time()
    device = args.device or default_device()
    loaded = job.adapter.load(args.model_path, args.model_base, device)
    rows = []
    for item in tqdm(job.items, desc=f"region-eval-text {args.task}", unit="q", file=sys.stderr):
        reply = job.io.generate_text(loaded, job.io.chat_prompt(item.turns, job.conv_mode), args.max_new_tokens,
                                     job.conv_mode)
        pred = predict(reply, item, args.task)
        rows.append({"id": item.id, "task": item.task, "target": item.target, "prediction": pred, "reply": reply,
                     "correct": pred == item.target})
    return {
        "task": args.task, "shots": job.shots, **summarize(rows),
        "model_path": os.path.abspath(args.model_path),
        "model_base": os.path.abspath(args.model_base) if args.model_base else None,
        "data": os.path.abspath(args.data), "conv_mode": job.conv_mode, "max_new_tokens": args.max_new_tokens,
        "example_prompt": job.io.chat_prompt(job.items[0].turns, job.conv_mode),
        "device": str(device), "seconds": round(time.time() - started, 3), "items": rows,
    }


def finish(args, result: dict) -> None:
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        result["out"] = write_json(os.path.join(os.path.abspath(args.out), result_name(args.task)), result)
    print(f"region-eval-text: {args.task} {result['shots']}-shot accuracy {result['accuracy']:.4f} "
          f"({result['correct']}/{result['total']}, macro {result['macro_accuracy']:.4f} over "
          f"{len(result['per_task'])} {'subjects' if args.task == 'mmlu' else 'tasks'})"
          + (f"; wrote {result['out']}" if args.out else ""), file=sys.stderr)
    if args.json:
        print_json_line({k: v for k, v in result.items() if k != "items"})


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        job = resolve(args)
        finish(args, execute(job, args))
    except (AnalysisError, ScoringError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
