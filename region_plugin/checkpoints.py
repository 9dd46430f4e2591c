"""Intermediate checkpoints (`checkpoint-N/`) that upstream's loader, merge script and resume can use.

Upstream LoRA runs save only the adapter in `checkpoint-N/`: no `config.json`, no
`non_lora_trainables.bin` (the projector), so `load_pretrained_model(ckpt, base, name)` and
`merge_lora_weights.py` fail on it, and a resume without DeepSpeed reloads the adapter but leaves the
projector at its stage-1 weights. We add both files to every checkpoint, in upstream's own format
(the same names upstream's final save uses), and read them back on resume. The region a checkpoint
was trained with is recorded in both `config.json` and `adapter_config.json`, so a resume with a
different `--region_layers` is refused before any weights load.
"""
from __future__ import annotations

import json
import os
import re
from typing import Dict, List, Optional

import torch
from torch import nn

NON_LORA_NAME = "non_lora_trainables.bin"
CHECKPOINT_DIR = re.compile(r"^checkpoint-(\d+)$")


def last_checkpoint(output_dir: Optional[str]) -> Optional[str]:
    """The `checkpoint-N` with the highest N in `output_dir` (what upstream resumes from), else None."""
    if not output_dir or not os.path.isdir(output_dir):
        return None
    steps = [(int(m.group(1)), name) for name in os.listdir(output_dir)
             if (m := CHECKPOINT_DIR.match(name)) and os.path.isdir(os.path.join(output_dir, name))]
    return os.path.join(output_dir, max(steps)[1]) if steps else None


def _json(path: str) -> Optional[dict]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def recorded_region(checkpoint: str) -> Optional[List[int]]:
    """The region a checkpoint was trained with; None when it trained every layer (or records nothing).

    Read from config.json's `region_layers`, else adapter_config.json's `layers_to_transform`, else
    the layer indices in the adapter's full-name `target_modules` (what the plugin's LoRA targets are).
    """
    config = _json(os.path.join(checkpoint, "config.json")) or {}
    if isinstance(config.get("region_layers"), list):
        return sorted(int(i) for i in config["region_layers"])
    adapter = _json(os.path.join(checkpoint, "adapter_config.json")) or {}
    layers = adapter.get("layers_to_transform")
    if isinstance(layers, int):
        return [layers]
    if isinstance(layers, list):
        return sorted(int(i) for i in layers)
    targets = adapter.get("target_modules")
    if isinstance(targets, list) and targets:
        found = [re.search(r"\.layers\.(\d+)\.", str(t)) for t in targets]
        if all(found):
            return sorted({int(m.group(1)) for m in found})
    return None


def _is_partitioned(param: torch.Tensor) -> bool:
    return hasattr(param, "ds_id")


def non_lora_trainables(model: nn.Module) -> Dict[str, torch.Tensor]:
    """Trainable parameters that are not LoRA (projector, a tuned tower), gathered, on the CPU.

    Names are the model's own `named_parameters()` names, as upstream's final
    `non_lora_trainables.bin`. Under ZeRO-3 every rank must call this (the gather is collective).
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad and "lora_" not in n]
    partitioned = [p for _, p in named if _is_partitioned(p)]
    if partitioned:
        import deepspeed

        with deepspeed.zero.GatheredParameters(partitioned):
            return {n: p.detach().to("cpu", copy=True) for n, p in named}
    return {n: p.detach().to("cpu", copy=True) for n, p in named}


def restore_non_lora_trainables(model: nn.Module, checkpoint: str) -> List[str]:
    """Copy a checkpoint's `non_lora_trainables.bin` into the matching parameters; return their names.

    Loaded with `weights_only=True`. Every saved name must exist in the model with the same shape:
    a checkpoint of another model is an error, never a partial load.
    """
    path = os.path.join(checkpoint, NON_LORA_NAME)
    if not os.path.isfile(path):
        return []
    saved = torch.load(path, map_location="cpu", weights_only=True)
    params = dict(model.named_parameters())
    missing = sorted(set(saved) - set(params))
    if missing:
        raise ValueError(f"{path}: parameters {missing[:3]} do not exist in this model; the checkpoint belongs "
                         "to another model or run")
    targets = [params[n] for n in saved]
    partitioned = [p for p in targets if _is_partitioned(p)]
    context = None
    if partitioned:
        import deepspeed

        context = deepspeed.zero.GatheredParameters(partitioned, modifier_rank=0)
        context.__enter__()
    try:
        with torch.no_grad():
            for name, value in saved.items():
                param = params[name]
                if tuple(param.shape) != tuple(value.shape):
                    raise ValueError(f"{path}: {name} has shape {tuple(value.shape)}, the model's is "
                                     f"{tuple(param.shape)}")
                param.copy_(value.to(device=param.device, dtype=param.dtype))
    finally:
        if context is not None:
            context.__exit__(None, None, None)
    return sorted(saved)


def complete_checkpoint(checkpoint: str, config, non_lora: Dict[str, torch.Tensor]) -> None:
    """Write `config.json` and `non_lora_trainables.bin` into `checkpoint` (main process only)."""
    os.makedirs(checkpoint, exist_ok=True)
    config.save_pretrained(checkpoint)
    tmp = os.path.join(checkpoint, f".{NON_LORA_NAME}.tmp")
    torch.save(non_lora, tmp)
    os.replace(tmp, os.path.join(checkpoint, NON_LORA_NAME))
