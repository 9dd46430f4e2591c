"""Find the decoder stack in a checkpoint's tensor NAMES and renumber its layers.

Works on names only (no model is built), so any architecture whose decoder layers are stored
as `<prefix>.<i>.…` is handled: `model.layers` (LLaMA, Mistral, Qwen, Phi), `transformer.h`
(GPT-2), `transformer.blocks` (MPT). Vision-side stacks (`vision_tower…encoder.layers`) are
skipped by the same keywords the trainer uses.
"""
from __future__ import annotations

import re
from collections import defaultdict
from typing import Dict, Iterable, Optional

from ..model_config import MULTIMODAL_KEYWORDS  # torch-free: rewriting shards never imports torch
from .errors import PruneError

_FIRST_INDEX = re.compile(r"^(.+?)\.(\d+)(?:\.|$)")


def find_stack_prefix(names: Iterable[str], num_layers: int, source: str = "checkpoint") -> str:
    """The shortest name prefix whose `.<i>.` children are exactly layers 0..num_layers-1."""
    seen: Dict[str, set] = defaultdict(set)
    for name in names:
        m = _FIRST_INDEX.match(name)
        if m and not any(k in m.group(1) for k in MULTIMODAL_KEYWORDS):
            seen[m.group(1)].add(int(m.group(2)))
    want = set(range(num_layers))
    exact = [p for p, idx in seen.items() if idx == want]
    if exact:
        return min(exact, key=lambda p: (p.count("."), len(p)))
    near = {p: (min(i), max(i), len(i)) for p, i in seen.items() if len(i) > 1}
    raise PruneError(f"{source}: no decoder stack with layers 0-{num_layers - 1} (config num_hidden_layers="
                     f"{num_layers}) among the tensor names; numbered groups found (prefix: min, max, count): "
                     f"{near or 'none'}; is config.json from the same checkpoint as the weights?")


def rename(name: str, prefix: str, mapping: Dict[int, int]) -> Optional[str]:
    """New name of a tensor after pruning, or None when its layer is removed."""
    if not name.startswith(prefix + "."):
        return name
    rest = name[len(prefix) + 1:]
    head, dot, tail = rest.partition(".")
    if not head.isdigit():
        return name
    new = mapping.get(int(head))
    return None if new is None else f"{prefix}.{new}{dot}{tail}"
