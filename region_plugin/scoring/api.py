"""`score_checkpoint`: every requested metric for one checkpoint, as the content of scores.json.

Order of work is the point: every input is checked first (metrics, paths, data format, images,
backbone depth and width from config.json), then the model loads once through its codebase's own
loader, the backbone tensors are matched by shape, and only then does the single scored pass run.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Dict, Optional, Sequence

from ..devices import check_device, default_device
from ..layers import find_decoder_stack
from ..model_config import is_lora_dir, layer_count_from_config, load_json_object
from .hidden import HiddenStateScorer
from .metrics import (ATTENTION_METRICS, DESCRIPTIONS, HIDDEN_METRICS, PARAM_METRICS, ScoringError, angular_meta,
                      parse_metrics, reported_names)
from .params import TensorFiles, check_backbone, param_change_scores
from .records import select_records

DEFAULT_BATCH_SIZE = 4
DEFAULT_SEED = 0  # samples are drawn without replacement; fixed so that two runs score the same data
DIRECTION = "higher = more important (selected by --top / top:K:METRIC)"


def _config(path: str, flag: str) -> dict:
    file = os.path.join(path or "", "config.json")
    if not os.path.isfile(file):
        raise ScoringError(f"{flag} {path!r} has no config.json; pass a Hugging Face checkpoint directory")
    try:
        return load_json_object(file, f"{flag} config.json")
    except ValueError as e:
        raise ScoringError(str(e)) from None


def check_backbone_config(model_cfg: dict, backbone: str) -> None:
    """Depth and width from config.json, so an unrelated backbone fails before any weights load."""
    cfg = _config(backbone, "--backbone")
    n_model = layer_count_from_config(model_cfg, "--model-path config.json")
    n_back = layer_count_from_config(cfg, f"--backbone {backbone}/config.json")
    if n_back != n_model:
        raise ScoringError(f"--backbone {backbone!r} has {n_back} decoder layers but --model-path has {n_model}; "
                           "pass the LLM the LVLM was trained from (e.g. vicuna-7b-v1.5 for llava-v1.5-7b)")
    for key in ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads"):
        a, b = model_cfg.get(key), cfg.get(key)
        if a is not None and b is not None and a != b:
            raise ScoringError(f"--backbone {backbone!r} has {key}={b} but --model-path has {key}={a}: the weight "
                               "shapes cannot match; pass the LLM the LVLM was trained from")


def score_checkpoint(model_path: str, model_base: Optional[str] = None, data: Optional[str] = None,
                     image_folder: Optional[str] = None, metrics: Sequence[str] | str = ("angular",),
                     num_samples: int = 200, angular_n: int = 1, backbone: Optional[str] = None,
                     model_type: Optional[str] = None, device: Optional[str] = None,
                     batch_size: int = DEFAULT_BATCH_SIZE, conv_mode: Optional[str] = None,
                     progress: bool = True, trust_remote_code: bool = False, seed: Optional[int] = DEFAULT_SEED) -> Dict:
    """Score every decoder layer of an LVLM checkpoint; returns the scores.json content.

    `{"num_layers": N, "metrics": {name: [N floats]}, "meta": {...}, "per_instance": {...}}`; every
    metric is oriented higher = more important. Raises ScoringError (a ValueError) on bad input
    before loading weights.
    """
    from ..adapters import codebase_for, get_adapter
    from ..input_checks import check_checkpoint_inputs

    started = time.time()
    metrics = parse_metrics(metrics)
    pass_metrics = [m for m in metrics if m in HIDDEN_METRICS + ATTENTION_METRICS]
    param_metrics = [m for m in metrics if m in PARAM_METRICS]
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ScoringError(f"--batch-size {batch_size!r} must be a positive whole number")
    if model_path and os.path.isdir(model_path) and not os.path.isfile(os.path.join(model_path, "config.json")) \
            and is_lora_dir(model_path):
        raise ScoringError(f"--model-path {model_path!r} has adapter files but no config.json (an intermediate trainer "
                           "checkpoint-N/ of an older run?): copy config.json and non_lora_trainables.bin from the "
                           "run's final output dir into it, or pass that final dir")
    model_cfg = _config(model_path, "--model-path")
    try:
        adapter = get_adapter(model_type, model_cfg)
        check_checkpoint_inputs(model_path, model_base, codebase_for(model_cfg, model_type), trust_remote_code,
                                [("--backbone", backbone)] if backbone else [])
        adapter.check_model(model_path, model_base, conv_mode)
        num_layers = layer_count_from_config(model_cfg, f"--model-path {model_path}/config.json")
        device = check_device(device)
    except ScoringError:
        raise
    except ValueError as e:
        raise ScoringError(str(e)) from None
    if "angular" in metrics and (not isinstance(angular_n, int) or not 1 <= angular_n <= num_layers):
        raise ScoringError(f"--angular-n {angular_n!r} must be a whole number in 1..{num_layers} "
                           f"(--model-path has {num_layers} layers)")
    positions, records = select_records(data, image_folder, num_samples, seed=seed) if pass_metrics else ([], [])
    if param_metrics:
        if not backbone:
            raise ScoringError(f"--backbone is required for {','.join(param_metrics)}: pass the LLM checkpoint the "
                               "LVLM was trained from (e.g. lmsys/vicuna-7b-v1.5 downloaded to a directory)")
        check_backbone_config(model_cfg, backbone)
        backbone_files = TensorFiles(backbone)

    device = device or default_device()
    loaded = adapter.load(model_path, model_base, device, attn_implementation="eager" if "attn" in metrics else None)
    model = loaded.model
    stack = find_decoder_stack(model)
    if stack.num_layers != num_layers:
        raise ScoringError(f"--model-path config.json says {num_layers} layers but the loaded model has "
                           f"{stack.num_layers}")
    index = check_backbone(model, stack, backbone_files) if param_metrics else None

    scores: Dict[str, list] = {}
    per_instance: Dict[str, dict] = {}
    if pass_metrics:
        from tqdm.auto import tqdm

        scorer = HiddenStateScorer(model, pass_metrics, angular_n=angular_n, stack=stack)
        total = -(-len(records) // batch_size)
        batches = adapter.batches(loaded, records, image_folder, batch_size, conv_mode)
        with scorer:
            for batch in tqdm(batches, total=total, desc="region-score", unit="batch", disable=not progress,
                              file=sys.stderr):
                scorer.score(batch)
        scores.update(scorer.result())
        if "attn" in metrics:
            per_instance["attn"] = {"ids": scorer.per_instance_ids, "values": scorer.per_instance_attn}
    if param_metrics:
        changes = param_change_scores(model, stack, backbone_files, adapter.load_dtype, index)
        scores.update({m: changes[m] for m in param_metrics})

    ordered = {name: scores[name] for name in reported_names(metrics)}
    meta = {
        "model": os.path.abspath(model_path),
        "model_base": os.path.abspath(model_base) if model_base else None,
        "model_type": adapter.name,
        "backbone": os.path.abspath(backbone) if param_metrics else None,
        "data": os.path.abspath(data) if records else None,
        "image_folder": os.path.abspath(image_folder) if records else None,
        "samples": len(records),
        "requested_samples": num_samples if records else None,
        "metrics": list(metrics),
        "seed": seed if records else None,
        "sample_indices": positions if records else None,
        "angular_n": angular_n if "angular" in metrics else None,
        **angular_meta(angular_n if "angular" in metrics else None),
        "conv_mode": (conv_mode or adapter.default_conv_mode) if records else None,
        "batch_size": batch_size,
        "device": str(device),
        "direction": DIRECTION,
        "definitions": {name: DESCRIPTIONS[name] for name in ordered if name in DESCRIPTIONS},
        "seconds": round(time.time() - started, 3),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    out = {"num_layers": num_layers, "metrics": ordered, "meta": meta}
    if per_instance:
        out["per_instance"] = per_instance
    return out
