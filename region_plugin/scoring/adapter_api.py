"""What a codebase adapter provides to the scoring core, and the path checks every adapter makes.

Lives in the core (not in `region_plugin.adapters`, the registry) so the adapters import it
without importing the registry that imports them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterator, List, Optional, Protocol

import torch

from ..model_config import is_lora_dir
from .metrics import ScoringError


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
