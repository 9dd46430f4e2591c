"""Cut config.json to the pruned depth so every loader builds exactly the layers that were kept.

Generic rules: the depth field is reduced; any list whose length equals the old depth is a
per-layer field (e.g. `layer_types`) and is cut; fields that hold layer INDICES are remapped
(`region_layers`, `mlp_only_layers`); thresholds compared with `layer_idx` (`max_window_layers`,
`first_k_dense_replace`) become the number of kept layers below them. Architecture-specific fixes
(e.g. MiniCPM's depth-dependent residual scale) register with `register_config_fix`.
"""
from __future__ import annotations

import copy
from typing import Callable, Dict, List, Sequence, Tuple

from ..model_config import depth_key
from .errors import PruneError

# List fields that are never per-layer even when their length happens to equal the depth.
NOT_PER_LAYER = {"architectures", "bad_words_ids", "image_grid_pinpoints", "suppress_tokens",
                 "begin_suppress_tokens", "forced_decoder_ids", "pruned_layers", "eos_token_id",
                 "region_layers", "mlp_only_layers"}
INDEX_LIST_FIELDS = ("region_layers", "mlp_only_layers")
THRESHOLD_FIELDS = ("max_window_layers", "first_k_dense_replace")

# model_type prefix -> fn(holder: dict, kept: list of old indices, old_n: int) editing holder in place
ConfigFix = Callable[[dict, List[int], int], None]
_FIXES: Dict[str, ConfigFix] = {}


def register_config_fix(model_type_prefix: str, fn: ConfigFix) -> None:
    """Run `fn` on the depth-holding config dict of every model whose model_type starts with the prefix."""
    _FIXES[model_type_prefix] = fn


def depth_holder(config: dict, source: str = "config.json") -> Tuple[dict, str]:
    """(the dict that holds the decoder depth, its key): `model_config.depth_key`, as a PruneError."""
    try:
        return depth_key(config, source)
    except ValueError as e:
        raise PruneError(str(e)) from None


def _remap(values, mapping: Dict[int, int]):
    return [mapping[i] for i in values if isinstance(i, int) and i in mapping]


def pruned_config(config: dict, removed: Sequence[int], source: str = "config.json") -> Tuple[dict, Dict]:
    """(new config dict, summary of what changed). `removed` are indices in this checkpoint."""
    new = copy.deepcopy(config)
    holder, key = depth_holder(new, source)
    old_n = holder[key]
    gone = set(removed)
    kept = [i for i in range(old_n) if i not in gone]
    mapping = {old: i for i, old in enumerate(kept)}
    changes: Dict[str, object] = {key: [old_n, len(kept)]}
    holder[key] = len(kept)
    for d in {id(new): new, id(holder): holder}.values():
        for name, value in list(d.items()):
            if name in INDEX_LIST_FIELDS and isinstance(value, list):
                d[name] = _remap(value, mapping)
                changes[name] = [value, d[name]]
            elif name in THRESHOLD_FIELDS and isinstance(value, int) and not isinstance(value, bool):
                d[name] = sum(1 for i in kept if i < value)
                changes[name] = [value, d[name]]
            elif isinstance(value, list) and len(value) == old_n and name not in NOT_PER_LAYER:
                d[name] = [value[i] for i in kept]
                changes[name] = "cut to the kept layers"
    model_type = str(holder.get("model_type") or new.get("model_type") or "")
    for prefix, fix in _FIXES.items():
        if model_type.startswith(prefix):
            fix(holder, kept, old_n)
            changes[f"fix:{prefix}"] = "applied"
    _record(new, removed, old_n)
    return new, changes


def _record(config: dict, removed: Sequence[int], old_n: int) -> None:
    """`pruned_layers` in the indices of the ORIGINAL unpruned model, `pruned_from` its depth."""
    prev, prev_from = config.get("pruned_layers"), config.get("pruned_from")
    if isinstance(prev, list) and isinstance(prev_from, int) and prev_from - len(prev) == old_n:
        original = [i for i in range(prev_from) if i not in set(prev)]
        config["pruned_layers"] = sorted(set(prev) | {original[i] for i in removed})
        config["pruned_from"] = prev_from
    else:
        config["pruned_layers"] = sorted(removed)
        config["pruned_from"] = old_n
