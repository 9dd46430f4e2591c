"""`region-revert`: put the backbone LLM's weights back into chosen decoder layers (paper Fig 1, left).

    region-revert --model-path CKPT [--model-base BASE] --backbone LLM_DIR --layers SPEC \\
                  --data LLAVA_JSON --image-folder DIR [--text-data FILE] [--num-samples N] \\
                  [--out DIR] [--json]

Perplexity on the answer tokens of the image conversations (upstream's training labels) and on
plain text, before and after the swap; with --out the reverted model is also saved as a merged
checkpoint upstream's loader reads. SPEC is any --region_layers form, or `outside` (every layer
the region run never trained: reverting those must change nothing, exactly).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from typing import List, Optional

import torch

from ..devices import default_device
from ..layers import find_decoder_stack
from ..model_config import layer_count_from_config
from ..scoring.metrics import ScoringError
from ..scoring.params import TensorFiles, check_backbone, decoder_params
from .errors import AnalysisError
from .layers_spec import recorded_region, resolve_layers
from .outputs import check_new_dir, print_json_line, staged_dir, write_json
from .perplexity import perplexity, read_texts, text_inputs

REPORT_NAME = "revert_report.json"
MAX_TEXT_WINDOW = 2048


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="region-revert", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-path", required=True, help="LVLM checkpoint dir, merged or LoRA (then --model-base)")
    p.add_argument("--model-base", help="base LLM dir for a LoRA --model-path (as upstream's loader)")
    p.add_argument("--backbone", required=True, help="the LLM the LVLM was trained from (weights copied from it)")
    p.add_argument("--layers", required=True, help="layers to revert: any --region_layers form, or 'outside'")
    p.add_argument("--data", required=True, help="LLaVA-format JSON of image conversations (answer-token perplexity)")
    p.add_argument("--image-folder", required=True, help="folder the records' \"image\" paths are relative to")
    p.add_argument("--text-data", help="plain text (blank-line separated documents) or JSONL {\"text\": ...}")
    p.add_argument("--num-samples", type=int, default=100, help="first N image records / text documents (100)")
    p.add_argument("--conv-mode", help="conversation template of the answer labels (LLaVA default vicuna_v1)")
    p.add_argument("--device", help="torch device (default: the accelerator when there is one, else cpu)")
    p.add_argument("--out", help="also save the reverted model here (new dir, merged checkpoint)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")
    return p


@dataclass
class Job:
    """Everything decided before a weight is read."""

    adapter: object          # region_plugin.adapters scoring adapter: check_model / load / load_dtype
    io: object               # region_plugin.<codebase>.analysis_io
    num_layers: int
    region: Optional[List[int]]
    layers: List[int]
    records: list
    texts: Optional[List[str]]
    backbone: TensorFiles
    conv_mode: str


def _config(path: str) -> dict:
    with open(os.path.join(path, "config.json")) as f:
        return json.load(f)


def resolve(args) -> Job:
    """Check paths, backbone shape, SPEC, data, text and --out; no weights are read."""
    from ..adapters import analysis_io, get_adapter
    from ..scoring.api import check_backbone_config
    from ..scoring.records import read_records

    if not isinstance(args.num_samples, int) or args.num_samples < 1:
        raise AnalysisError(f"--num-samples {args.num_samples!r} must be a positive whole number")
    adapter = get_adapter(None, _config(args.model_path) if os.path.isfile(
        os.path.join(args.model_path or "", "config.json")) else None)
    adapter.check_model(args.model_path, args.model_base)
    config = _config(args.model_path)
    io = analysis_io(config)
    conv_mode = args.conv_mode or adapter.default_conv_mode
    known = io.check_conv_mode(conv_mode)
    if known:
        raise AnalysisError(f"--conv-mode {conv_mode!r} is not an upstream template; choose from {known}")
    n = layer_count_from_config(config, f"--model-path {args.model_path}/config.json")
    check_backbone_config(config, args.backbone)
    backbone = TensorFiles(args.backbone)
    region = recorded_region(args.model_path, n)
    layers = resolve_layers(args.layers, n, region)
    records = read_records(args.data, args.image_folder, args.num_samples)
    texts = read_texts(args.text_data, args.num_samples) if args.text_data else None
    if args.out:
        check_new_dir(args.out, [args.model_path, args.model_base, args.backbone])
    return Job(adapter, io, n, region, layers, records, texts, backbone, conv_mode)


@torch.no_grad()
def revert_layers(model, stack, backbone: TensorFiles, index, layers, reference_dtype) -> int:
    """Copy the backbone's tensors into `layers`, rounded as the loader rounded the LVLM; returns tensors copied."""
    wanted, copied = set(layers), 0
    for layer, suffix, _, param in decoder_params(model, stack):
        if layer in wanted:
            old = backbone.get(index[(layer, suffix)])
            if reference_dtype is not None:
                old = old.to(reference_dtype)
            param.data.copy_(old.to(device=param.device, dtype=param.dtype))
            copied += 1
    return copied


def _measure(job: Job, loaded, args) -> dict:
    model = loaded.model
    visual = perplexity(model, job.io.answer_inputs(loaded, job.records, args.image_folder, job.conv_mode))
    text = None
    if job.texts is not None:
        window = min(int(getattr(model.config, "max_position_embeddings", MAX_TEXT_WINDOW)), MAX_TEXT_WINDOW)
        text = perplexity(model, text_inputs(loaded.tokenizer, job.texts, window, model.device))
    return {"visual": visual, "text": text}


def execute(job: Job, args):
    """Load once, measure, revert in memory, measure again; returns (result, loaded model)."""
    started = time.time()
    device = args.device or default_device()
    loaded = job.adapter.load(args.model_path, args.model_base, device)
    stack = find_decoder_stack(loaded.model)
    if stack.num_layers != job.num_layers:
        raise AnalysisError(f"--model-path config.json says {job.num_layers} layers, the loaded model has "
                            f"{stack.num_layers}")
    index = check_backbone(loaded.model, stack, job.backbone)
    before = _measure(job, loaded, args)
    copied = revert_layers(loaded.model, stack, job.backbone, index, job.layers, job.adapter.load_dtype)
    after = _measure(job, loaded, args)

    def pair(kind):
        return None if before[kind] is None else {"before": before[kind]["perplexity"],
                                                  "after": after[kind]["perplexity"]}
    result = {
        "layers": job.layers, "visual": pair("visual"), "text": pair("text"),
        "region_layers": job.region, "num_layers": job.num_layers, "tensors_reverted": copied,
        "details": {"before": before, "after": after},
        "model_path": os.path.abspath(args.model_path),
        "model_base": os.path.abspath(args.model_base) if args.model_base else None,
        "backbone": os.path.abspath(args.backbone), "data": os.path.abspath(args.data),
        "text_data": os.path.abspath(args.text_data) if args.text_data else None,
        "conv_mode": job.conv_mode, "device": str(device), "seconds": round(time.time() - started, 3),
    }
    return result, loaded


def save_reverted(job: Job, loaded, result: dict, out: str) -> str:
    """The reverted model as a merged checkpoint (loader dtype, as upstream's merge saves), plus the report."""
    model = loaded.model
    cfg = model.config
    cfg.reverted_layers = sorted(set(getattr(cfg, "reverted_layers", None) or []) | set(job.layers))
    cfg.reverted_to = result["backbone"]
    if job.region is not None:
        cfg.region_layers = [i for i in job.region if i not in set(job.layers)]
    with staged_dir(out) as tmp:
        if job.adapter.load_dtype is not None:
            model.to(job.adapter.load_dtype)
        model.save_pretrained(tmp, safe_serialization=True)
        loaded.tokenizer.save_pretrained(tmp)
        write_json(os.path.join(tmp, REPORT_NAME), {**result, "out": os.path.abspath(out)})
    return os.path.abspath(out)


def finish(job: Job, args, result: dict, loaded) -> dict:
    """Save (with --out), print the summary; the JSON line comes last."""
    if args.out:
        for w in job.io.name_warnings(args.out, loaded.model.config.to_dict()):
            print(f"warning: {w}", file=sys.stderr)
        result["out"] = save_reverted(job, loaded, result, args.out)
    print(f"region-revert: reverted {len(job.layers)} layer(s) {job.layers} to {args.backbone} "
          f"({result['tensors_reverted']} tensors; recorded region {job.region})", file=sys.stderr)
    for kind in ("visual", "text"):
        if result[kind]:
            d = result["details"]
            print(f"  {kind:6s} perplexity {result[kind]['before']:.4f} -> {result[kind]['after']:.4f} "
                  f"({d['before'][kind]['tokens']} tokens, {d['before'][kind]['samples']} samples)", file=sys.stderr)
    if args.out:
        print(f"  saved to {result['out']} (report {REPORT_NAME})", file=sys.stderr)
    if args.json:
        print_json_line(result)
    return result


def run(args) -> dict:
    job = resolve(args)
    result, loaded = execute(job, args)
    return finish(job, args, result, loaded)


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except (AnalysisError, ScoringError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
