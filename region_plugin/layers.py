"""Find the LLM's decoder stack inside any HF (multimodal) model and act on region layers by name.

Everything here works from module NAMES, never parameter shapes, so it is unaffected by
DeepSpeed ZeRO-3 partitioning (partitioned parameters have empty `.data`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence

import torch
from torch import nn

from .model_config import layer_count_from_config
from .stack_names import is_multimodal as _is_multimodal
from .stack_names import layer_of, pick_stack


def _linear_types() -> tuple:
    """nn.Linear (bitsandbytes' Linear4bit/8bitLt subclass it) and GPT-2-style Conv1D, as peft targets."""
    try:
        from transformers.pytorch_utils import Conv1D

        return (nn.Linear, Conv1D)
    except ImportError:  # pragma: no cover - very old transformers
        return (nn.Linear,)


LINEAR_TYPES = _linear_types()


@dataclass(frozen=True)
class DecoderStack:
    """Where the decoder layers live: `prefix` is the ModuleList's name, e.g. `model.layers`."""

    prefix: str
    num_layers: int

    @property
    def pattern(self) -> str:
        """The last name component (`layers`, `blocks`, `h`): peft's `layers_pattern`."""
        return self.prefix.rsplit(".", 1)[-1]

    def layer_of(self, name: str) -> int | None:
        """Index of the decoder layer containing module/parameter `name`, else None."""
        return layer_of(name, self.prefix)


def config_num_layers(config) -> int | None:
    """Decoder depth of a config object (model_config's rule), None when it has none."""
    as_dict = config.to_dict() if hasattr(config, "to_dict") else vars(config) if config is not None else None
    try:
        return layer_count_from_config(as_dict)
    except (TypeError, ValueError):
        return None


def find_decoder_stack(model: nn.Module, num_layers: int | None = None) -> DecoderStack:
    """The ModuleList holding the LLM's decoder layers (shortest matching name outside the vision side)."""
    if num_layers is None:
        num_layers = config_num_layers(getattr(model, "config", None))
    lists = {name: set(range(len(module))) for name, module in model.named_modules()
             if isinstance(module, nn.ModuleList) and len(module)}
    prefix = pick_stack(lists, num_layers)
    if prefix is None:
        raise ValueError(
            f"no decoder-layer ModuleList with {num_layers} entries found in {type(model).__name__}; "
            "is this a decoder-only LLM or an LVLM built on one?"
        )
    return DecoderStack(prefix=prefix, num_layers=len(model.get_submodule(prefix)))


def region_linear_names(model: nn.Module, layers: Sequence[int], stack: DecoderStack | None = None,
                        linear_cls: tuple = LINEAR_TYPES) -> List[str]:
    """Full names of every Linear inside the region's decoder layers: LoRA targets anchored to the LLM."""
    stack = stack or find_decoder_stack(model)
    wanted = set(layers)
    names = []
    for name, module in model.named_modules():
        if isinstance(module, linear_cls) and not _is_multimodal(name):
            idx = stack.layer_of(name)
            if idx is not None and idx in wanted:
                names.append(name)
    return sorted(names)


def numel(param: torch.Tensor) -> int:
    """Full parameter size, also for a ZeRO-3 partitioned parameter."""
    return int(getattr(param, "ds_numel", param.numel()))


def restrict_full_tuning(model: nn.Module, layers: Sequence[int], stack: DecoderStack | None = None) -> Dict[str, int]:
    """Freeze every LLM parameter outside the region's decoder layers; keep multimodal modules as set.

    Region layers become trainable; embeddings, final norm, lm_head and non-region layers are frozen;
    the projector / vision tower keep whatever the upstream trainer decided. Returns counts.
    """
    stack = stack or find_decoder_stack(model)
    wanted = set(layers)
    counts = {"trainable_region_params": 0, "frozen_llm_params": 0}
    for name, param in model.named_parameters():
        if _is_multimodal(name):
            continue
        idx = stack.layer_of(name)
        if idx is not None and idx in wanted:
            param.requires_grad_(True)
            counts["trainable_region_params"] += numel(param)
        else:
            param.requires_grad_(False)
            counts["frozen_llm_params"] += numel(param)
    return counts


def parameter_breakdown(model: nn.Module) -> Dict[str, Dict[str, int]]:
    """Total and trainable parameters of the LLM, the projector and the vision tower."""
    out = {part: {"total": 0, "trainable": 0} for part in ("llm", "projector", "vision_tower")}
    seen = set()
    for name, param in model.named_parameters():
        if id(param) in seen:  # tied embeddings
            continue
        seen.add(id(param))
        if "mm_projector" in name or "vision_resampler" in name:
            part = "projector"
        elif "vision_tower" in name or "vision_model" in name:
            part = "vision_tower"
        else:
            part = "llm"
        n = numel(param)
        out[part]["total"] += n
        if param.requires_grad:
            out[part]["trainable"] += n
    return out


def trainable_layers(model: nn.Module, stack: DecoderStack) -> List[int]:
    """Decoder layers that hold at least one trainable parameter."""
    found = set()
    for name, param in model.named_parameters():
        if param.requires_grad and not _is_multimodal(name):
            idx = stack.layer_of(name)
            if idx is not None:
                found.add(idx)
    return sorted(found)


def lora_module_layers(model: nn.Module, stack: DecoderStack) -> Dict[str, int | None]:
    """Every LoRA-wrapped module name and the decoder layer it sits in (None = outside the LLM stack)."""
    return {name: (None if _is_multimodal(name) else stack.layer_of(name))
            for name, module in model.named_modules() if hasattr(module, "lora_A") and isinstance(module, nn.Module)
            and len(getattr(module, "lora_A", {})) > 0}

