"""Rewrite a checkpoint without some decoder layers, shard by shard.

Each input shard becomes at most one output shard holding the same tensors minus the removed
layers, renamed so the kept layers are numbered 0..N'-1. Peak memory is one copy buffer for
safetensors input and about one shard for memory-mapped `.bin` input; never the whole model.
"""
from __future__ import annotations

import json
import os
import shutil
from typing import Dict, List, Optional, Sequence

from ..model_config import read_config as _read_config
from .checkpoint import SAFE_INDEX, SAFE_SINGLE, CheckpointFiles, iter_shard_tables, make_entry, scan, tensor_names
from .choose import layer_map
from .config_edit import depth_holder, pruned_config
from .errors import PruneError
from .keys import find_stack_prefix, rename
from .safetensors_io import write_file
from .shapes import check_stack_shapes, model_width


def read_config(model_dir: str, flag: str = "--model-path") -> dict:
    """config.json as a dict; missing, not JSON or not an object -> PruneError naming the flag."""
    try:
        return _read_config(model_dir, flag)
    except (OSError, ValueError) as e:
        raise PruneError(str(e)) from None


class Plan:
    """Everything decided before a byte is written: files, stack prefix, old -> new layer numbers."""

    def __init__(self, model_dir: str, removed: Sequence[int], flag: str = "--model-path"):
        self.model_dir = model_dir
        self.config = read_config(model_dir, flag)
        holder, key = depth_holder(self.config, os.path.join(model_dir, "config.json"))
        self.num_layers = holder[key]
        bad = [i for i in removed if not 0 <= i < self.num_layers]
        if bad:
            raise PruneError(f"layers {bad} do not exist in {model_dir} ({self.num_layers} layers)")
        self.removed = sorted(removed)
        self.files: CheckpointFiles = scan(model_dir, flag)
        self.prefix = find_stack_prefix(tensor_names(self.files), self.num_layers, model_dir)
        check_stack_shapes(self.files, self.prefix, model_width(holder), model_dir)
        self.mapping: Dict[int, int] = layer_map(self.num_layers, self.removed)


def _write_shards(plan: Plan, out_dir: str) -> Dict[str, object]:
    written: List[tuple] = []  # (temporary file name, tensor names)
    total = 0
    for i, (shard, table) in enumerate(iter_shard_tables(plan.files)):
        entries = []
        for name, spec in table.items():
            new = rename(name, plan.prefix, plan.mapping)
            if new is not None:
                entries.append(make_entry(new, spec))
        if not entries:
            continue
        tmp = f"shard-{i:05d}.part"
        total += write_file(os.path.join(out_dir, tmp), entries)
        written.append((tmp, [e.name for e in entries]))
    if not written:
        raise PruneError(f"{plan.model_dir}: nothing left to write after pruning")
    count = len(written)
    weight_map: Dict[str, str] = {}
    names = []
    for j, (tmp, tensors) in enumerate(written):
        final = SAFE_SINGLE if count == 1 else f"model-{j + 1:05d}-of-{count:05d}.safetensors"
        os.rename(os.path.join(out_dir, tmp), os.path.join(out_dir, final))
        names.append(final)
        weight_map.update({t: final for t in tensors})
    if count > 1:
        with open(os.path.join(out_dir, SAFE_INDEX), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, f, indent=2)
            f.write("\n")
    return {"files": names, "total_bytes": total, "num_tensors": len(weight_map)}


def prune_into(plan: Plan, out_dir: str, region: Optional[Sequence[int]] = None) -> Dict[str, object]:
    """Write the pruned checkpoint into the (empty, temporary) directory `out_dir`; return a summary.

    `region` (the visual region in input indices) is recorded as config `region_layers`, remapped.
    """
    os.makedirs(out_dir, exist_ok=True)
    shards = _write_shards(plan, out_dir)
    config = dict(plan.config)
    if region is not None:
        config["region_layers"] = list(region)
    config, changes = pruned_config(config, plan.removed, os.path.join(plan.model_dir, "config.json"))
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    for name in plan.files.others:
        shutil.copy2(os.path.join(plan.model_dir, name), os.path.join(out_dir, name))
    return {"stack_prefix": plan.prefix, "input_format": plan.files.fmt, "input_shards": plan.files.shards,
            "output": shards, "config_changes": changes, "copied_files": plan.files.others,
            "not_carried_over": plan.files.skipped + [d + "/" for d in plan.files.subdirs],
            "layer_map": {str(k): v for k, v in plan.mapping.items()}, "config": config}
