"""What a checkpoint's config.json and tensor names say, read without torch or weights."""
from __future__ import annotations

import json
import os
from typing import Optional, Tuple

# Names of the decoder-depth field across the architectures LLaVA and Bunny wrap.
LAYER_COUNT_KEYS = ("num_hidden_layers", "n_layers", "n_layer", "num_layers")

# Sub-trees that are never part of the language model (LLaVA and Bunny naming).
MULTIMODAL_KEYWORDS = ("mm_projector", "vision_tower", "vision_resampler", "vision_model")


# More decoder layers than any real model has: a bigger count is a damaged config (and would make
# spec parsing and pruning loop for minutes).
MAX_LAYERS = 4096


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def depth_key(config: dict, source: str = "config") -> Tuple[dict, str]:
    """(the dict holding the decoder depth, its key): top level, else text_config / llm_config.

    A depth that is not a whole number (`true`, `1e8`, "32") or exceeds MAX_LAYERS is refused
    with the file named, never read as some other number.
    """
    if not isinstance(config, dict):
        raise ValueError(f"{source} is a JSON {type(config).__name__}, not an object; the checkpoint's config is damaged")
    for key in LAYER_COUNT_KEYS:
        if key in config and config[key] is not None:
            value = config[key]
            if not _is_count(value) or not 1 <= value <= MAX_LAYERS:
                raise ValueError(f"{source}: {key}={value!r} is not a layer count (a whole number in 1..{MAX_LAYERS}); "
                                 "the config is damaged or not a decoder model's")
            return config, key
    for nested in ("text_config", "llm_config"):
        if isinstance(config.get(nested), dict):
            return depth_key(config[nested], f"{source} {nested}")
    raise ValueError(f"{source} has none of {LAYER_COUNT_KEYS}; cannot tell how many decoder layers it has")


def layer_count_from_config(config: dict, source: str = "config") -> int:
    holder, key = depth_key(config, source)
    return holder[key]


def load_json_object(path: str, what: str) -> dict:
    """A JSON object from `path`; anything else (not JSON, a list, not a regular file) names `what` and the file."""
    if not os.path.isfile(path):
        raise ValueError(f"{what}: {path!r} is not a regular file")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{what}: {path!r} is not valid JSON ({e}); the file is damaged") from None
    if not isinstance(data, dict):
        raise ValueError(f"{what}: {path!r} holds a JSON {type(data).__name__}, not an object; the file is damaged")
    return data


def read_config(model_dir: str, flag: str = "--model-path") -> dict:
    """config.json of a checkpoint dir as a dict, with a clear error naming the flag when absent or damaged."""
    path = os.path.join(model_dir, "config.json")
    if not os.path.isfile(path):
        if is_lora_dir(model_dir):
            raise FileNotFoundError(f"{flag} {model_dir!r} has adapter files but no config.json (an intermediate "
                                    "trainer checkpoint-N/ of an older run?): copy config.json and "
                                    "non_lora_trainables.bin from the run's final output dir into it, or pass that dir")
        raise FileNotFoundError(f"{flag} {model_dir!r}: no config.json in that directory; pass a Hugging Face "
                                "checkpoint directory")
    return load_json_object(path, f"{flag} config.json")


def read_num_layers(model_path: str, flag: str = "--model_name_or_path") -> int:
    """Decoder layers of a local checkpoint dir, or of a hub id through AutoConfig (config only)."""
    if not model_path:
        raise ValueError(f"{flag} is required to resolve --region_layers")
    if os.path.isdir(model_path):
        path = os.path.join(model_path, "config.json")
        return layer_count_from_config(read_config(model_path, flag), path)
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
