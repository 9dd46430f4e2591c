"""What a checkpoint's config.json and tensor names say, read without torch or weights."""
from __future__ import annotations

import json
import os
from typing import Optional

# Names of the decoder-depth field across the architectures LLaVA and Bunny wrap.
LAYER_COUNT_KEYS = ("num_hidden_layers", "n_layers", "n_layer", "num_layers")

# Sub-trees that are never part of the language model (LLaVA and Bunny naming).
MULTIMODAL_KEYWORDS = ("mm_projector", "vision_tower", "vision_resampler", "vision_model")


def layer_count_from_config(config: dict, source: str = "config") -> int:
    for key in LAYER_COUNT_KEYS:
        value = config.get(key)
        if isinstance(value, int) and value > 0:
            return value
    for nested in ("text_config", "llm_config"):
        if isinstance(config.get(nested), dict):
            return layer_count_from_config(config[nested], source)
    raise ValueError(f"{source} has none of {LAYER_COUNT_KEYS}; cannot tell how many decoder layers it has")


def read_num_layers(model_path: str, flag: str = "--model_name_or_path") -> int:
    """Decoder layers of a local checkpoint dir, or of a hub id through AutoConfig (config only)."""
    if not model_path:
        raise ValueError(f"{flag} is required to resolve --region_layers")
    if os.path.isdir(model_path):
        path = os.path.join(model_path, "config.json")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{flag} {model_path!r}: no config.json in that directory")
        with open(path) as f:
            return layer_count_from_config(json.load(f), path)
    if os.path.exists(model_path):
        raise ValueError(f"{flag} {model_path!r} is a file; pass the checkpoint directory")
    from transformers import AutoConfig  # hub id: downloads config.json only

    try:
        cfg = AutoConfig.from_pretrained(model_path, trust_remote_code=False)
    except Exception as e:  # noqa: BLE001 - name the flag, keep the cause
        raise ValueError(f"{flag} {model_path!r} is neither a local directory nor a readable hub id: {e}") from e
    return layer_count_from_config(cfg.to_dict(), model_path)


def is_lora_dir(model_path: str) -> bool:
    """A peft adapter dir (adapter_config.json): loaders need the base LLM beside it."""
    return os.path.isfile(os.path.join(model_path, "adapter_config.json"))


def codebase_of(config: Optional[dict]) -> Optional[str]:
    """"llava" or "bunny" from config.json's model_type ("llava_llama", "bunny-phi", ...); None if neither.

    Every tool asks this one function, so a checkpoint never needs to be told what it is.
    """
    model_type = str((config or {}).get("model_type") or "")
    return next((name for name in ("llava", "bunny") if model_type.startswith(name)), None)
