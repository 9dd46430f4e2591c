"""Where the LLM's decoder stack is, from NAMES only: one rule for models, checkpoints and backbones.

Names (never shapes) keep this valid under ZeRO-3 partitioning, and no torch import keeps plain
safetensors pruning light. The stack is a numbered group `<prefix>.<i>` outside the vision side
(`MULTIMODAL_KEYWORDS`): with a known depth N the group numbered exactly 0..N-1, otherwise the
group with the most entries; ties go to the shortest prefix (`model.layers` over a nested copy).
Used by `layers.find_decoder_stack` (a built model), `pruning.keys` (checkpoint tensor names)
and `scoring.params` (backbone tensor names).
"""
from __future__ import annotations

import re
from collections import defaultdict
from typing import Dict, Iterable, Optional, Set, Tuple

from .model_config import MULTIMODAL_KEYWORDS

_FIRST_INDEX = re.compile(r"^(.+?)\.([0-9]+)(?:\.|$)")  # ASCII digits only: int() takes nothing else


def is_multimodal(name: str) -> bool:
    """True for names inside the projector or vision tower (never part of the language model)."""
    return any(k in name for k in MULTIMODAL_KEYWORDS)


def numbered_groups(names: Iterable[str]) -> Dict[str, Set[int]]:
    """{prefix: indices} from each name's first `.<digits>` segment, vision-side names skipped."""
    groups: Dict[str, Set[int]] = defaultdict(set)
    for name in names:
        m = _FIRST_INDEX.match(name)
        if m and not is_multimodal(m.group(1)):
            groups[m.group(1)].add(int(m.group(2)))
    return dict(groups)


def pick_stack(groups: Dict[str, Set[int]], num_layers: Optional[int] = None) -> Optional[str]:
    """The decoder stack's prefix among `groups` ({prefix: indices}); None when no group qualifies."""
    groups = {p: idx for p, idx in groups.items() if p and not is_multimodal(p)}
    shortest = lambda p: (p.count("."), len(p))  # noqa: E731
    if num_layers is not None:
        exact = [p for p, idx in groups.items() if idx == set(range(num_layers))]
        return min(exact, key=shortest) if exact else None
    if not groups:
        return None
    return min(groups, key=lambda p: (-len(groups[p]), *shortest(p)))


def split_layer(name: str, prefix: str) -> Optional[Tuple[int, str]]:
    """(layer index, name inside the layer) for `<prefix>.<i>[.rest]`, else None (name starts at prefix)."""
    if not name.startswith(prefix + "."):
        return None
    head, _, rest = name[len(prefix) + 1:].partition(".")
    return (int(head), rest) if re.fullmatch(r"[0-9]+", head) else None


def layer_of(name: str, prefix: str) -> Optional[int]:
    """Layer index of a module/parameter name, also under a wrapper (`base_model.model.` + prefix)."""
    m = re.match(rf"^(?:.*\.)?{re.escape(prefix)}\.([0-9]+)(?:\.|$)", name)
    return int(m.group(1)) if m else None
