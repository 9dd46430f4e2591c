"""The one place that maps a codebase (`model_type`) to its adapter for tools that run the model.

A scoring adapter knows how its codebase loads a checkpoint and turns LLaVA-format records into
model inputs plus the image-token mask from the codebase's real image expansion. The core
(`region_plugin.scoring`) only talks to this interface, so it never imports `llava` or `bunny`.

    model_type None / "llava"  -> region_plugin.llava.data.LlavaAdapter
    anything else (Bunny's model types: llama3-8b, phi-2, ...) -> region_plugin.bunny.data.scoring_adapter(model_type)
    model_type None and config.json's model_type "bunny-*" -> the Bunny adapter for that checkpoint
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Any, Iterator, List, Optional, Protocol

import torch

from .model_config import codebase_of, is_lora_dir


@dataclass
class LoadedModel:
    """What an adapter's `load` returns: the model and whatever its `batches` needs to feed it."""

    model: torch.nn.Module
    tokenizer: Any
    image_processor: Any


class ScoringAdapter(Protocol):
    """What `score_checkpoint` needs from a codebase."""

    name: str
    load_dtype: Optional[torch.dtype]   # dtype the loader rounds weights to (None = kept as stored)
    default_conv_mode: str

    def check_model(self, model_path: str, model_base: Optional[str], conv_mode: Optional[str] = None) -> None:
        """Cheap checks (no weights): raise ScoringError naming the flag if the paths/options cannot load."""

    def load(self, model_path: str, model_base: Optional[str], device: str,
             attn_implementation: Optional[str] = None) -> LoadedModel:
        """Load through the codebase's own loader, in eval mode."""

    def batches(self, loaded: LoadedModel, records: List[dict], image_folder: str, batch_size: int,
                conv_mode: Optional[str] = None) -> Iterator[Any]:
        """Yield `region_plugin.scoring.hidden.ScoringBatch`es (image mask from the real expansion)."""


def check_checkpoint_paths(model_path: str, model_base: Optional[str], codebase: str) -> None:
    """The path checks every adapter makes before loading; each error names the flag and the fix."""
    from .scoring.metrics import ScoringError

    what = f"pass a {codebase} checkpoint or LoRA dir"
    if not os.path.isdir(model_path or ""):
        raise ScoringError(f"--model-path {model_path!r} is not a directory; {what}")
    if not os.path.isfile(os.path.join(model_path, "config.json")):
        raise ScoringError(f"--model-path {model_path!r} has no config.json; {what}")
    if model_base is not None and not os.path.isdir(model_base):
        raise ScoringError(f"--model-base {model_base!r} is not a directory")
    if is_lora_dir(model_path) and model_base is None:
        raise ScoringError(f"--model-path {model_path!r} is a LoRA adapter dir: pass --model-base BASE_LLM_DIR "
                           "(the LLM it was trained from)")


def get_adapter(model_type: Optional[str] = None, config: Optional[dict] = None) -> ScoringAdapter:
    """The adapter for `model_type`; a clear error if that codebase's adapter is missing.

    Without a model_type the checkpoint's own config.json decides (Bunny saves "bunny-llama",
    "bunny-phi", ...), so a Bunny checkpoint needs no --model-type; anything else is LLaVA.
    """
    if model_type in (None, "") and codebase_of(config) == "bunny":
        model_type = None  # the Bunny adapter reads its model type from config
    elif model_type in (None, "", "llava"):
        from .llava.data import LlavaAdapter

        return LlavaAdapter()
    try:
        module = importlib.import_module("region_plugin.bunny.data")
        factory = getattr(module, "scoring_adapter")
    except (ImportError, AttributeError) as e:
        raise ValueError(f"--model-type {model_type!r} selects the Bunny adapter (region_plugin.bunny.data."
                         f"scoring_adapter), which is not available here: {e}. Leave --model-type out for "
                         "LLaVA") from None
    return factory(model_type or None, config)
