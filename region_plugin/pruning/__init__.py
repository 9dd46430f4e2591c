"""Prune decoder layers outside the visual region and export a checkpoint upstream loaders accept.

Codebase-agnostic core: layer choice (`choose`; `strategy`: single layers or one block),
tensor-name renumbering (`keys`), config surgery (`config_edit`), streaming shard rewriting
(`stream`, `safetensors_io`), atomic output (`output`). Loading a model (LoRA merge, verification) goes through per-codebase adapters
(`backends`); `region-prune` (`cli`) ties them together.
"""
from .choose import candidate_layers, layer_map, lowest_scoring
from .config_edit import pruned_config, register_config_fix
from .errors import PruneError
from .stream import Plan, prune_into

__all__ = ["PruneError", "Plan", "candidate_layers", "layer_map", "lowest_scoring", "prune_into", "pruned_config",
           "register_config_fix"]
