"""Load any Bunny checkpoint our tools meet through upstream's own `load_pretrained_model`.

Upstream takes its LoRA branch when the model NAME contains "lora" and a base is given, and its
plain branch otherwise. Our tools look at the files instead (adapter_config.json = LoRA dir) and
hand upstream a name that selects the right branch, so a user's directory naming never matters.
`model_type` is Bunny's `--model_type`; it can be read from a saved checkpoint's config.json.
"""
from __future__ import annotations

import json
import os
from typing import Optional, Tuple

import torch

from ..devices import default_device, on_accelerator
from ..model_config import is_lora_dir
from .source import CONFIG_MODEL_TYPES, check_model_type, import_bunny


def model_type_from_config(model_path: str) -> Optional[str]:
    """The --model_type that loads a saved Bunny checkpoint (None when config.json is not Bunny's).

    phi-1.5 and phi-2 share one code path ("bunny-phi"), so either name loads such a checkpoint.
    """
    path = os.path.join(model_path, "config.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return CONFIG_MODEL_TYPES.get(json.load(f).get("model_type"))


def upstream_model_name(model_path: str, model_base: Optional[str]) -> str:
    """The name that routes upstream's loader to the branch this directory's FILES need (never the user's name)."""
    if is_lora_dir(model_path):
        if model_base is None:
            raise ValueError(f"--model-path {model_path!r} is a LoRA adapter dir: pass --model-base BASE_LLM_DIR")
        return "bunny-lora"
    return "bunny"


def load_bunny(model_path: str, model_base: Optional[str] = None, model_type: Optional[str] = None,
               device: Optional[str] = None, **kwargs) -> Tuple[object, torch.nn.Module, object, int]:
    """(tokenizer, model, image_processor, context_len) exactly as upstream's loader returns them.

    Upstream loads float16; off an accelerator the model is cast back to float32 (fp16 host kernels
    are slow and some are missing). `device` defaults to the accelerator when present;
    `model_type` to config.json's.
    """
    if not os.path.isdir(model_path):
        raise FileNotFoundError(f"--model-path {model_path!r} is not a directory")
    if model_base is not None and not os.path.isdir(model_base):
        raise FileNotFoundError(f"--model-base {model_base!r} is not a directory")
    model_type = check_model_type(model_type or model_type_from_config(model_path), "--model-type")
    builder = import_bunny("bunny.model.builder")
    device = device or default_device()
    name = upstream_model_name(model_path, model_base)
    tokenizer, model, image_processor, context_len = builder.load_pretrained_model(
        model_path, model_base, name, model_type, device=device, **kwargs)
    if not on_accelerator(device):
        model.to(device=device, dtype=torch.float32)  # also gathers any module the loader left elsewhere
    model.eval()
    return tokenizer, model, image_processor, context_len
