"""Bunny glue for region-prune: merge through upstream's loader, calibration outputs, name checks.

The twin of `region_plugin.llava.prune_io`; picked by region-prune for every checkpoint whose
config.json `model_type` starts with "bunny" (Bunny's --model_type is read from it). Merging is
what upstream's `script/merge_lora_weights.py` does (load_pretrained_model + save_pretrained, float16),
minus its hard-coded CUDA. Also registers the config fix Bunny's vendored MiniCPM needs: it scales
every residual branch by `scale_depth / sqrt(num_hidden_layers)`, so a shallower model keeps each
kept layer's function only if `scale_depth` shrinks with sqrt(depth).
"""
from __future__ import annotations

import math
import os
from typing import List, Optional

from ..pruning.backends import free_memory, merge_with
from ..pruning.config_edit import register_config_fix
from ..pruning.errors import PruneError
from ..pruning.verify import calibration_records
from .loading import load_bunny, model_type_from_config
from .source import CONFIG_MODEL_TYPES


def _minicpm_scale_depth(holder: dict, kept: List[int], old_n: int) -> None:
    if isinstance(holder.get("scale_depth"), (int, float)):
        holder["scale_depth"] = holder["scale_depth"] * math.sqrt(len(kept) / old_n)


register_config_fix("bunny-minicpm", _minicpm_scale_depth)


def _model_type(model_dir: str) -> str:
    """Bunny's --model_type for a saved checkpoint, read from its config.json."""
    model_type = model_type_from_config(model_dir)
    if model_type is None:
        raise PruneError(f"{model_dir}/config.json: model_type is not one of Bunny's ({', '.join(CONFIG_MODEL_TYPES)})")
    return model_type


def materialize(model_path: str, model_base: Optional[str], work_dir: str, device: Optional[str] = None,
                **_) -> str:
    """The merged checkpoint dir: `model_path` itself, or LoRA dir + base merged by upstream's loader."""
    def load(path, base):
        return load_bunny(path, base, _model_type(path), device=device)

    return merge_with(load, model_path, model_base, os.path.join(work_dir, "bunny-merged"))


def calibration_outputs(model_dir: str, data: Optional[str], image_folder: Optional[str], num_samples: int,
                        device: Optional[str] = None, conv_mode: Optional[str] = None, **_):
    """(final hidden states as fp32 host tensors, loss) per sample, one sample at a time (no padding)."""
    import torch
    from PIL import Image

    from .data import CONV_MODES, build_prompt
    from .source import import_bunny

    mm = import_bunny("bunny.util.mm_utils")
    index = import_bunny("bunny.constants").IMAGE_TOKEN_INDEX
    model_type = _model_type(model_dir)
    conv_mode = conv_mode or CONV_MODES.get(model_type, "bunny")
    tokenizer, model, image_processor, _ = load_bunny(model_dir, None, model_type, device=device)
    out = []
    with torch.inference_mode():
        for rec in calibration_records(data, image_folder, num_samples):
            ids = mm.tokenizer_image_token(build_prompt(rec, conv_mode), tokenizer, index, return_tensors="pt")
            ids = ids[None].to(model.device)
            images = None
            if rec.get("image"):
                image = Image.open(os.path.join(image_folder, rec["image"])).convert("RGB")
                images = mm.process_images([image], image_processor, model.config).to(model.device, model.dtype)
            labels = ids.clone()  # upstream overwrites IMAGE_TOKEN_INDEX in input_ids in place
            res = model(input_ids=ids, labels=labels, images=images, output_hidden_states=True, return_dict=True)
            out.append((res.hidden_states[-1][0].float().cpu(), float(res.loss)))
    del model
    free_memory()
    return out


def name_warnings(out: str, config: dict) -> List[str]:
    """What upstream's name-based loader would do differently with this output directory name."""
    name = os.path.basename(os.path.abspath(out))
    if "lora" in name.lower():
        return [f"--out name {name!r} contains 'lora': it is a merged checkpoint, so evaluate it WITHOUT "
                "--model-base (upstream's load_pretrained_model would otherwise take its LoRA branch)"]
    return []
