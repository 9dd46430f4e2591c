"""Do the decoder tensors' header shapes agree with config.json? Checked on headers only, even with --no-verify.

A shard whose header was damaged (or belongs to another model) would otherwise be renumbered and
exported as if nothing were wrong. Two architecture-free rules: a tensor name inside the stack has
the same shape in every layer that holds it, and every matrix of a layer has the model width
(`hidden_size` / `n_embd` / `d_model`) as one of its dimensions.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from .checkpoint import CheckpointFiles, iter_shard_tables
from .errors import PruneError

WIDTH_KEYS = ("hidden_size", "n_embd", "d_model")


def model_width(holder: dict) -> Optional[int]:
    for key in WIDTH_KEYS:
        value = holder.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def check_stack_shapes(files: CheckpointFiles, prefix: str, width: Optional[int], source: str) -> None:
    """Raise PruneError naming the tensor and shard whose shape disagrees with the config or the other layers."""
    first: Dict[str, Tuple[List[int], str, str]] = {}  # name inside the layer -> (shape, full name, shard)
    for shard, table in iter_shard_tables(files, headers_only=True):
        for name, (_, shape, _, _) in table.items():
            if not name.startswith(prefix + "."):
                continue
            head, _, inner = name[len(prefix) + 1:].partition(".")
            if not head.isdigit():
                continue
            if width is not None and len(shape) >= 2 and width not in shape:
                raise PruneError(f"{source}: {shard} stores {name} with shape {list(shape)}, which has no dimension "
                                 f"equal to the config's width {width}: the shard does not match config.json "
                                 "(damaged header, or weights of another model)")
            seen = first.setdefault(inner, (list(shape), name, shard))
            if seen[0] != list(shape):
                raise PruneError(f"{source}: {shard} stores {name} with shape {list(shape)} but {seen[1]} in {seen[2]} "
                                 f"is {seen[0]}: the shard headers disagree (damaged header, or mixed checkpoints)")
