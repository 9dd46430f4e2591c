"""Codebase adapters for the steps that need a real model: merging a LoRA dir, and verification.

The core never imports a codebase: the registry (`region_plugin.adapters.codebase_for`) picks an
adapter module from the checkpoint's `model_type` (`llava*` -> `region_plugin.llava.prune_io`,
`bunny*` -> `region_plugin.bunny.prune_io`); anything else uses the plain-transformers adapter below. An adapter module provides `materialize`,
`calibration_outputs` and `name_warnings`.
"""
from __future__ import annotations

import gc
import os
from typing import List, Optional

from ..model_config import is_lora_dir
from .errors import PruneError
from .verify import Outputs, calibration_texts


def adapter_for(config: dict, model_type: Optional[str] = None):
    """The codebase's prune_io module, chosen by the one registry (`region_plugin.adapters.codebase_for`)."""
    from ..adapters import codebase_for, prune_backend

    try:
        return prune_backend(codebase_for(config, model_type))
    except ValueError as e:
        raise PruneError(str(e)) from None


def merge_with(load, model_path: str, model_base: Optional[str], merged_dir: str) -> str:
    """`model_path` itself, or (LoRA dir, base) merged by a codebase loader and saved float16.

    `load(model_path, model_base)` returns upstream's (tokenizer, model, processor, ctx); saving its
    model in float16 is what upstream's merge_lora_weights.py does, for LLaVA and Bunny alike.
    """
    if model_base is None:
        if is_lora_dir(model_path):
            raise PruneError(f"--model-path {model_path!r} is a LoRA adapter dir: pass --model-base BASE_LLM_DIR")
        return model_path
    import torch

    tokenizer, model, _, _ = load(model_path, model_base)
    model.to(torch.float16)
    model.save_pretrained(merged_dir, safe_serialization=True)
    tokenizer.save_pretrained(merged_dir)
    del model
    free_memory()
    return merged_dir


def free_memory() -> None:
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---- plain transformers adapter (any AutoModelForCausalLM checkpoint) ----

def materialize(model_path: str, model_base: Optional[str], work_dir: str, device: Optional[str] = None,
                trust_remote_code: bool = False) -> str:
    """A merged checkpoint dir: the input itself, or a peft adapter merged into --model-base."""
    if not is_lora_dir(model_path):
        return model_path
    if model_base is None:
        raise PruneError(f"--model-path {model_path!r} is a LoRA adapter dir: pass --model-base BASE_DIR")
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_base, torch_dtype="auto", low_cpu_mem_usage=True,
                                                 trust_remote_code=trust_remote_code)
    model = PeftModel.from_pretrained(model, model_path).merge_and_unload()
    merged = os.path.join(work_dir, "merged")
    with torch.no_grad():
        model.save_pretrained(merged, safe_serialization=True)
    AutoTokenizer.from_pretrained(model_base, trust_remote_code=trust_remote_code).save_pretrained(merged)
    del model
    free_memory()
    return merged


def calibration_outputs(model_dir: str, data: Optional[str], image_folder: Optional[str], num_samples: int,
                        device: Optional[str] = None, trust_remote_code: bool = False, **_) -> Outputs:
    """Final hidden states and loss per calibration text, fp32."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..devices import default_device

    dev = torch.device(device or default_device())
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32,
                                                 trust_remote_code=trust_remote_code).to(dev).eval()
    out = []
    with torch.inference_mode():
        for text in calibration_texts(data, num_samples):
            ids = tokenizer(text, return_tensors="pt").input_ids.to(dev)
            res = model(input_ids=ids, labels=ids, output_hidden_states=True, return_dict=True)
            out.append((res.hidden_states[-1][0].float().cpu(), float(res.loss)))
    del model
    free_memory()
    return out


def name_warnings(out: str, config: dict) -> List[str]:
    return []
