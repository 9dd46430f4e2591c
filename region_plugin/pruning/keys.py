"""Find the decoder stack in a checkpoint's tensor NAMES and renumber its layers.

Works on names only (no model is built), so any architecture whose decoder layers are stored
as `<prefix>.<i>.…` is handled: `model.layers` (LLaMA, Mistral, Qwen, Phi), `transformer.h`
(GPT-2), `transformer.blocks` (MPT). The rule is `stack_names`' (shared with the trainer and
the scorer, torch-free so rewriting shards never imports torch).
"""
from __future__ import annotations

from typing import Dict, Iterable, Optional

from ..stack_names import numbered_groups, pick_stack, split_layer
from .errors import PruneError


def find_stack_prefix(names: Iterable[str], num_layers: int, source: str = "checkpoint") -> str:
    """The shortest name prefix whose `.<i>.` children are exactly layers 0..num_layers-1."""
    groups = numbered_groups(names)
    prefix = pick_stack(groups, num_layers)
    if prefix is not None:
        return prefix
    near = {p: (min(i), max(i), len(i)) for p, i in groups.items() if len(i) > 1}
    raise PruneError(f"{source}: no decoder stack with layers 0-{num_layers - 1} (config num_hidden_layers="
                     f"{num_layers}) among the tensor names; numbered groups found (prefix: min, max, count): "
                     f"{near or 'none'}; is config.json from the same checkpoint as the weights?")


def rename(name: str, prefix: str, mapping: Dict[int, int]) -> Optional[str]:
    """New name of a tensor after pruning, or None when its layer is removed."""
    where = split_layer(name, prefix)
    if where is None:
        return name
    new = mapping.get(where[0])
    return None if new is None else f"{prefix}.{new}" + (f".{where[1]}" if where[1] else "")
