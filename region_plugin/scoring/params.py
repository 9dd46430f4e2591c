"""param_ratio / param_angular(_flat): how far instruction tuning moved each decoder layer from its backbone.

The tuned weights come from the loaded LVLM (so a LoRA dir counts with its merged weights); the
backbone's are streamed one tensor at a time from its safetensors / .bin files (memory-mapped), so
the two full models are never in memory together. Layers are matched by (layer index, name inside
the layer), which is independent of the wrapper's prefix (`model.layers` in both LLaVA and Vicuna).
Under ZeRO-3 each parameter is gathered just for its own comparison.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
from typing import Dict, Iterator, List, Optional, Tuple

import torch
from torch import nn

from ..layers import DecoderStack
from ..stack_names import is_multimodal, numbered_groups, pick_stack, split_layer
from .metrics import ParamChange, ScoringError


class TensorFiles:
    """The tensors of one checkpoint directory, opened lazily and read one at a time."""

    def __init__(self, directory: str, flag: str = "--backbone"):
        self.directory, self.flag = directory, flag
        self.files = self._weight_files()
        self._where: Dict[str, Tuple[str, object]] = {}
        for path in self.files:
            if path.endswith(".safetensors"):
                from safetensors import safe_open

                handle = safe_open(path, framework="pt", device="cpu")
                for key in handle.keys():
                    self._where[key] = ("st", handle)
            else:
                table = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
                for key in table:
                    self._where[key] = ("bin", table)

    def _weight_files(self) -> List[str]:
        d = self.directory
        if not os.path.isdir(d):
            raise ScoringError(f"{self.flag} {d!r} is not a directory; pass the backbone LLM's checkpoint dir")
        for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
            path = os.path.join(d, index)
            if os.path.isfile(path):
                with open(path) as f:
                    names = sorted(set(json.load(f)["weight_map"].values()))
                return [os.path.join(d, n) for n in names]
        names = sorted(os.listdir(d))
        for pattern in (r"model.*\.safetensors", r"pytorch_model.*\.bin"):
            found = [n for n in names if re.fullmatch(pattern, n)]
            if found:
                return [os.path.join(d, n) for n in found]
        raise ScoringError(f"{self.flag} {d!r} holds no model weights (model*.safetensors or pytorch_model*.bin); "
                           "pass the directory of the LLM the LVLM was trained from")

    def keys(self) -> List[str]:
        return list(self._where)

    def shape(self, key: str) -> Tuple[int, ...]:
        kind, src = self._where[key]
        return tuple(src.get_slice(key).get_shape()) if kind == "st" else tuple(src[key].shape)

    def get(self, key: str) -> torch.Tensor:
        kind, src = self._where[key]
        return src.get_tensor(key) if kind == "st" else src[key]


def stack_index(keys: List[str]) -> Dict[Tuple[int, str], str]:
    """{(layer, name inside the layer): key} for the decoder stack among checkpoint keys.

    The stack is found by the one rule of `stack_names` (depth unknown here: the group with the
    most layers), so a backbone with another depth is reported by its real layer count.
    """
    prefix = pick_stack(numbered_groups(keys))
    if prefix is None:
        return {}
    found = ((split_layer(key, prefix), key) for key in keys if not is_multimodal(key))
    return {where: key for where, key in found if where is not None and where[1]}


def _suffix(name: str, stack: DecoderStack, layer: int) -> str:
    marker = f"{stack.prefix}.{layer}."
    return name[name.index(marker) + len(marker):]


def _shape(param: torch.Tensor) -> Tuple[int, ...]:
    return tuple(getattr(param, "ds_shape", param.shape))


def decoder_params(model: nn.Module, stack: DecoderStack) -> Iterator[Tuple[int, str, str, nn.Parameter]]:
    """(layer, name inside the layer, full name, parameter) for every decoder-layer parameter."""
    for name, param in model.named_parameters():
        if is_multimodal(name):
            continue
        layer = stack.layer_of(name)
        if layer is not None:
            yield layer, _suffix(name, stack, layer), name, param


def check_backbone(model: nn.Module, stack: DecoderStack, backbone: TensorFiles) -> Dict[Tuple[int, str], str]:
    """Match every decoder parameter to a backbone tensor of the same shape, or raise naming --backbone."""
    index = stack_index(backbone.keys())
    layers = {i for i, _ in index}
    if len(layers) != stack.num_layers:
        raise ScoringError(f"{backbone.flag} {backbone.directory!r} has {len(layers)} decoder layers in its weights "
                           f"but the LVLM has {stack.num_layers}; pass the LLM the LVLM was trained from")
    problems = []
    for layer, suffix, name, param in decoder_params(model, stack):
        key = index.get((layer, suffix))
        if key is None:
            problems.append(f"{name}: no tensor '*.{layer}.{suffix}' in the backbone")
        elif backbone.shape(key) != _shape(param):
            problems.append(f"{name}: shape {list(_shape(param))} vs backbone {key} {list(backbone.shape(key))}")
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise ScoringError(f"{backbone.flag} {backbone.directory!r} does not match the LVLM's decoder layers: "
                           + "; ".join(problems[:5]) + more + ". Pass the LLM the LVLM was trained from")
    return index


@contextlib.contextmanager
def _full_param(param: nn.Parameter):
    """The whole parameter, gathered for the duration if ZeRO-3 partitioned it."""
    if hasattr(param, "ds_id"):
        import deepspeed

        with deepspeed.zero.GatheredParameters([param], modifier_rank=None):
            yield param.data
    else:
        yield param.data


def param_change_scores(model: nn.Module, stack: DecoderStack, backbone: TensorFiles,
                        reference_dtype: Optional[torch.dtype] = None,
                        index: Optional[Dict[Tuple[int, str], str]] = None) -> Dict[str, List[float]]:
    """param_ratio, param_angular and param_angular_flat per layer (LVLM vs backbone), one tensor at a time.

    `reference_dtype`: the dtype the loader rounded the LVLM's weights to (upstream LLaVA loads
    float16); the backbone is rounded the same way, so loader rounding never counts as a change.
    """
    index = index or check_backbone(model, stack, backbone)
    acc = ParamChange(stack.num_layers)
    for layer, suffix, _, param in decoder_params(model, stack):
        old = backbone.get(index[(layer, suffix)])
        if reference_dtype is not None:
            old = old.to(reference_dtype)
        with _full_param(param) as new:
            acc.add(layer, new, old)
    return acc.result()
