"""Load any LLaVA checkpoint our tools meet through upstream's own `load_pretrained_model`.

Upstream picks its code path from the directory NAME ("llava" for a multimodal model, "llava"
and "lora" for an unmerged LoRA dir with a base). Our tools look at the files instead and hand
upstream a name that selects the right path, so a user's directory naming never matters.
"""
from __future__ import annotations

import os
from typing import Optional, Tuple

import torch

from ..devices import default_device, on_accelerator
from ..model_config import is_lora_dir


def upstream_model_name(model_path: str, model_base: Optional[str]) -> str:
    """A name that routes upstream's loader to the branch this directory's files need."""
    from llava.mm_utils import get_model_name_from_path

    name = get_model_name_from_path(model_path)
    if is_lora_dir(model_path):
        if model_base is None:
            raise ValueError(f"--model-path {model_path!r} is a LoRA adapter dir: pass --model-base BASE_LLM_DIR")
        if "lora" not in name.lower():
            name = f"{name}-lora"
    if "llava" not in name.lower():
        name = f"llava-{name}"
    return name


def load_llava(model_path: str, model_base: Optional[str] = None, device: Optional[str] = None,
               **kwargs) -> Tuple[object, torch.nn.Module, object, int]:
    """(tokenizer, model, image_processor, context_len) exactly as upstream's loader returns them.

    Upstream loads float16; off the accelerator the model is cast back to float32 (fp16 host
    kernels are slow and some are missing). `device` defaults to the accelerator when present.
    """
    from llava.model.builder import load_pretrained_model

    if not os.path.isdir(model_path):
        raise FileNotFoundError(f"--model-path {model_path!r} is not a directory")
    if model_base is not None and not os.path.isdir(model_base):
        raise FileNotFoundError(f"--model-base {model_base!r} is not a directory")
    device = device or default_device()
    name = upstream_model_name(model_path, model_base)
    device_map = "auto" if device == "cuda" else device  # upstream's own rule for its device_map
    tokenizer, model, image_processor, context_len = load_pretrained_model(
        model_path, model_base, name, device=device, device_map=device_map, **kwargs)
    if not on_accelerator(device):
        model.to(device=device, dtype=torch.float32)  # also gathers any module the loader left elsewhere
    model.eval()
    return tokenizer, model, image_processor, context_len
