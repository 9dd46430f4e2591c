"""Load any LLaVA checkpoint our tools meet through upstream's own `load_pretrained_model`.

Upstream picks its code path from the directory NAME ("llava" for a multimodal model, "llava"
and "lora" for an unmerged LoRA dir with a base, "mpt"/"mistral" for those classes). Our tools
look at the files (config.json, adapter_config.json) instead and hand upstream a name built from
them, so a user's directory naming never matters.
"""
from __future__ import annotations

import os
from typing import Optional, Tuple

import torch

from ..devices import default_device, on_accelerator
from ..model_config import is_lora_dir, read_config


# config.json model_type -> the word upstream's loader needs in the name to build that class.
NAME_WORDS = {"llava_mpt": "mpt", "llava_mistral": "mistral"}


def upstream_model_name(model_path: str, model_base: Optional[str]) -> str:
    """The name that routes upstream's loader to the branch and class this directory's FILES need.

    Built from config.json, never from the user's directory name: upstream matches substrings
    ("mpt" inside "prompt" or "attempt" turns on trust_remote_code and copies code into the
    input; "mistral" builds another class), so the user's name is never passed on.
    """
    if is_lora_dir(model_path) and model_base is None:
        raise ValueError(f"--model-path {model_path!r} is a LoRA adapter dir: pass --model-base BASE_LLM_DIR")
    model_type = read_config(model_path, "--model-path").get("model_type")
    word = NAME_WORDS.get(model_type)
    if word == "mpt" and model_base is not None:
        raise ValueError(f"--model-path {model_path!r} is an MPT projector/LoRA dir: upstream's loader would copy "
                         "configuration_mpt.py from --model-base into it and run it; merge it first with upstream's "
                         "scripts/merge_lora_weights.py, then pass the merged dir without --model-base")
    parts = ["llava"] + ([word] if word else []) + (["lora"] if is_lora_dir(model_path) else [])
    return "-".join(parts)


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
