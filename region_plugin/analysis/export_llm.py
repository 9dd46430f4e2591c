"""`region-export-llm`: the LVLM's language model alone, as a plain transformers checkpoint.

    region-export-llm --model-path CKPT [--model-base BASE] --out DIR [--json]

LoRA is merged by the codebase's own loader; the projector and vision tower are dropped; config.json
becomes the plain LLM's (e.g. `llama`), with its tokenizer beside it, so any text tool
(lm-evaluation-harness: `lm_eval --model hf --model_args pretrained=DIR --tasks mmlu`) runs on it.
The result is loaded back with `AutoModelForCausalLM` and its logits compared with the LVLM's on a
text prompt before the directory is renamed into place.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import List, Optional

import torch

from ..devices import default_device
from ..model_config import MULTIMODAL_KEYWORDS
from ..scoring.metrics import ScoringError
from .errors import AnalysisError
from .outputs import check_new_dir, print_json_line, staged_dir, write_json

REPORT_NAME = "export_report.json"
CHECK_TEXT = "USER: What color is the shape in the picture? ASSISTANT: The shape is red."
# Provenance kept in the exported config.json (plain transformers ignores unknown keys).
KEPT_KEYS = ("region_layers", "pruned_layers", "pruned_from", "reverted_layers", "reverted_to")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="region-export-llm", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-path", required=True, help="LVLM checkpoint dir, merged or LoRA (then --model-base)")
    p.add_argument("--model-base", help="base LLM dir for a LoRA --model-path (as upstream's loader)")
    p.add_argument("--out", required=True, help="new directory for the plain LLM checkpoint")
    p.add_argument("--device", help="torch device (default: the accelerator when there is one, else cpu)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")
    return p


def _config(path: str) -> dict:
    with open(os.path.join(path, "config.json")) as f:
        return json.load(f)


def resolve(args):
    """(scoring adapter, plain LLM model_type); checks paths, architecture and --out before any weights load."""
    from ..adapters import analysis_io, get_adapter

    path = os.path.join(args.model_path or "", "config.json")
    config = _config(args.model_path) if os.path.isfile(path) else None
    adapter = get_adapter(None, config)
    adapter.check_model(args.model_path, args.model_base)
    config = _config(args.model_path)
    llm_type = analysis_io(config).LLM_TYPES.get(config.get("model_type"))
    if llm_type is None:
        raise AnalysisError(f"--model-path {args.model_path!r}: model_type {config.get('model_type')!r} has no plain "
                            f"transformers LLM this tool knows; supported: {sorted(analysis_io(config).LLM_TYPES)}")
    check_new_dir(args.out, [args.model_path, args.model_base])
    return adapter, llm_type


def llm_config(lvlm_config, llm_type: str, source: str):
    """The plain LLM's config: every field its config class knows (multimodal fields dropped) + provenance."""
    from transformers import AutoConfig

    known = set(AutoConfig.for_model(llm_type).to_dict())
    values = {k: v for k, v in lvlm_config.to_dict().items() if k in known and k not in ("model_type", "architectures")}
    cfg = AutoConfig.for_model(llm_type, **values)
    for key in KEPT_KEYS:
        if getattr(lvlm_config, key, None) is not None:
            setattr(cfg, key, getattr(lvlm_config, key))
    cfg.exported_from = source
    return cfg


def llm_state_dict(model) -> dict:
    """Every tensor of the LVLM except the vision tower, projector and resampler."""
    return {k: v for k, v in model.state_dict().items() if not any(m in k for m in MULTIMODAL_KEYWORDS)}


def extract_llm(model, llm_type: str, source: str):
    """A plain `AutoModelForCausalLM` holding exactly the LVLM's language-model weights (strict load)."""
    from transformers import AutoModelForCausalLM

    cfg = llm_config(model.config, llm_type, source)
    with torch.device("meta"):
        llm = AutoModelForCausalLM.from_config(cfg, torch_dtype=model.dtype)
    state = llm_state_dict(model)
    missing, unexpected = llm.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in missing if not (k == "lm_head.weight" and cfg.tie_word_embeddings)]
    for key in [k for k in missing if k.endswith(".bias") and k[:-5] + ".weight" in state]:
        # e.g. Bunny's Phi replaces PhiForCausalLM's lm_head by one without bias: a zero bias is the same function
        module = llm.get_submodule(key[:-5])
        module.bias = torch.nn.Parameter(torch.zeros(module.bias.shape, dtype=model.dtype, device=model.device))
        missing.remove(key)
        llm.zero_filled = getattr(llm, "zero_filled", []) + [key]
    if missing or unexpected:
        raise AnalysisError(f"the LVLM's language model does not map onto {type(llm).__name__}: missing "
                            f"{missing[:5]}, unexpected {unexpected[:5]}")
    if cfg.tie_word_embeddings:
        llm.tie_weights()
    return llm.eval()


@torch.inference_mode()
def compare_logits(lvlm, tokenizer, llm_dir: str, load_dtype=None) -> float:
    """Max |logit difference| between the LVLM (no image) and the exported LLM loaded back from disk.

    The LLM is loaded the way the LVLM was (in the loader's dtype, then cast), so buffers built at
    load time (rotary caches) are rounded alike and equal weights give equal logits.
    """
    from transformers import AutoModelForCausalLM

    attn = getattr(lvlm.config, "_attn_implementation", None)  # same kernels, so equal weights give equal logits
    llm = AutoModelForCausalLM.from_pretrained(llm_dir, torch_dtype=load_dtype or lvlm.dtype, **(
        {"attn_implementation": attn} if attn else {})).to(device=lvlm.device, dtype=lvlm.dtype).eval()
    ids = tokenizer(CHECK_TEXT, return_tensors="pt").input_ids.to(lvlm.device)
    diff = (lvlm(input_ids=ids).logits.float() - llm(input_ids=ids).logits.float()).abs().max()
    del llm
    return float(diff)


def execute(args, adapter, llm_type: str) -> dict:
    started = time.time()
    device = args.device or default_device()
    loaded = adapter.load(args.model_path, args.model_base, device)
    lvlm = loaded.model
    llm = extract_llm(lvlm, llm_type, os.path.abspath(args.model_path))
    with staged_dir(args.out) as tmp:
        if adapter.load_dtype is not None:  # the dtype upstream's loader and merge use
            llm.to(adapter.load_dtype)
            llm.config.torch_dtype = adapter.load_dtype
        llm.save_pretrained(tmp, safe_serialization=True)
        loaded.tokenizer.save_pretrained(tmp)
        diff = compare_logits(lvlm, loaded.tokenizer, tmp, adapter.load_dtype)
        report = {
            "out": os.path.abspath(args.out), "model_path": os.path.abspath(args.model_path),
            "model_base": os.path.abspath(args.model_base) if args.model_base else None,
            "model_type": llm_type, "architecture": type(llm).__name__,
            "num_layers": llm.config.num_hidden_layers, "region_layers": getattr(llm.config, "region_layers", None),
            "parameters": sum(p.numel() for p in llm.parameters()),
            "zero_filled": getattr(llm, "zero_filled", []),
            "max_abs_logit_diff_vs_lvlm": diff, "device": str(device), "seconds": round(time.time() - started, 3),
        }
        write_json(os.path.join(tmp, REPORT_NAME), report)
    return report


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        adapter, llm_type = resolve(args)
        report = execute(args, adapter, llm_type)
    except (AnalysisError, ScoringError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"region-export-llm: wrote {report['out']} ({report['architecture']}, {report['num_layers']} layers, "
          f"{report['parameters']:,} parameters); max |logit diff| vs the LVLM without image: "
          f"{report['max_abs_logit_diff_vs_lvlm']:.3g}\n  lm-eval: lm_eval --model hf --model_args "
          f"pretrained={report['out']},dtype=float16 --tasks mmlu --num_fewshot 5", file=sys.stderr)
    if args.json:
        print_json_line(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
