"""Which decoder layers to remove: the paper's Sec 6 rule and its global baseline.

`region` mode ranks only the layers OUTSIDE the visual region, lowest score first (for the
angular distance, lowest = the layer changes its input least = most redundant), so a region
layer is never removed. `global` mode ranks every layer (the dashed baselines of Fig 4).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

from ..spec import parse_layer_list as _parse_layer_list
from .errors import PruneError

MODES = ("region", "global")


def candidate_layers(num_layers: int, region: Optional[Sequence[int]], mode: str) -> List[int]:
    """Layers that may be removed in `mode`."""
    if mode not in MODES:
        raise PruneError(f"--mode {mode!r}: use one of {', '.join(MODES)}")
    if mode == "global":
        return list(range(num_layers))
    if not region:
        raise PruneError("--mode region needs the visual region: the checkpoint's config.json has no "
                         "region_layers; pass --region-layers SPEC (e.g. 25%) or use --mode global")
    inside = set(region)
    return [i for i in range(num_layers) if i not in inside]


def validate_num_prune(k: int, candidates: Sequence[int], num_layers: int, mode: str,
                       region: Optional[Sequence[int]]) -> None:
    """K must leave at least one candidate layer: 1 <= K < len(candidates)."""
    n = len(candidates)
    where = (f"the {n} layers outside the visual region {list(region or [])} of {num_layers}"
             if mode == "region" else f"the model's {num_layers} layers")
    if n < 2:
        raise PruneError(f"--mode {mode}: only {n} candidate layer(s) ({where}); nothing can be pruned "
                         "while keeping one; use --mode global or a smaller region")
    if not isinstance(k, int) or k < 1 or k >= n:
        raise PruneError(f"--num-prune {k}: must be at least 1 and less than {where}; "
                         f"use --num-prune 1..{n - 1}" + (" or --mode global" if mode == "region" else ""))


def lowest_scoring(scores: Sequence[float], k: int, candidates: Sequence[int]) -> List[int]:
    """The K candidates with the lowest score, sorted; ties go to the deeper layer."""
    if len(scores) <= max(candidates):
        raise PruneError(f"scores cover {len(scores)} layers but the model has more; re-score this checkpoint")
    order = sorted(candidates, key=lambda i: (scores[i], -i))
    return sorted(order[:k])


def parse_layer_list(text: str, num_layers: int, flag: str = "--layers") -> List[int]:
    """`5,9` or `4-6,9` -> sorted unique indices: `spec.parse_layer_list` (the one parser), as a PruneError."""
    try:
        return _parse_layer_list(text, num_layers, flag)
    except ValueError as e:
        raise PruneError(str(e)) from None


def validate_explicit(layers: Sequence[int], num_layers: int, mode: str, region: Optional[Sequence[int]],
                      k: Optional[int]) -> None:
    """An explicit list must leave a layer, agree with --num-prune, and spare the region in region mode."""
    if len(layers) >= num_layers:
        raise PruneError(f"--layers removes all {num_layers} layers; keep at least one")
    if k is not None and k != len(layers):
        raise PruneError(f"--num-prune {k} disagrees with --layers ({len(layers)} layers); drop one of the two")
    if mode == "region":
        if region is None:
            candidate_layers(num_layers, region, mode)  # raises the "needs the visual region" error
        hit = sorted(set(layers) & set(region))
        if hit:
            raise PruneError(f"--layers {','.join(map(str, layers))} removes visual-region layers {hit} "
                             f"(region {list(region)}); take them out of --layers or use --mode global")


def layer_map(num_layers: int, removed: Sequence[int]) -> Dict[int, int]:
    """Old index -> new contiguous index for every kept layer."""
    gone = set(removed)
    kept = [i for i in range(num_layers) if i not in gone]
    return {old: new for new, old in enumerate(kept)}
