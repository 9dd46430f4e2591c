"""LLaVA glue for region-prune: merge through upstream's loader, a calibration batch, name checks.

Merging goes through upstream `load_pretrained_model` + `save_pretrained`, which is exactly what
upstream's `scripts/merge_lora_weights.py` does (so the merged weights are float16, as there).
Verification loads both checkpoints with the same loader the eval scripts use.
"""
from __future__ import annotations

import contextlib
import os
from typing import List, Optional

from ..pruning.backends import free_memory, merge_with
from ..pruning.verify import calibration_records
from .loading import load_llava

# LLaVA model_type -> the word upstream's loader needs in the directory name to build that class.
NAME_ROUTES = {"llava_mpt": "mpt", "llava_mistral": "mistral"}


@contextlib.contextmanager
def _quiet_loading():
    """Upstream merged checkpoints store the vision tower, which its loader lists as "not used" on every load."""
    from transformers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(level)


def materialize(model_path: str, model_base: Optional[str], work_dir: str, device: Optional[str] = None,
                **_) -> str:
    """The merged checkpoint dir: `model_path` itself, or LoRA/projector dir + base merged by upstream's loader."""
    return merge_with(lambda path, base: load_llava(path, base, device=device), model_path, model_base,
                      os.path.join(work_dir, "llava-merged"))


def calibration_outputs(model_dir: str, data: Optional[str], image_folder: Optional[str], num_samples: int,
                        device: Optional[str] = None, conv_mode: Optional[str] = None, **_):
    """(final hidden states as fp32 host tensors, loss) per sample, one sample at a time (no padding).

    Prompts are the whole conversation in upstream's template, built like region-score builds them.
    """
    import torch
    from PIL import Image

    from llava.constants import IMAGE_TOKEN_INDEX
    from llava.mm_utils import process_images, tokenizer_image_token

    from .data import LlavaAdapter, build_prompt

    conv_mode = conv_mode or LlavaAdapter.default_conv_mode
    records = calibration_records(data, image_folder, num_samples)
    with _quiet_loading():
        tokenizer, model, image_processor, _ = load_llava(model_dir, None, device=device)
    use_se = bool(getattr(model.config, "mm_use_im_start_end", False))
    out = []
    with torch.inference_mode():
        for rec in records:
            prompt = build_prompt(rec, conv_mode, use_se)
            ids = tokenizer_image_token(prompt, tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt")[None].to(model.device)
            kwargs = {}
            if rec.get("image"):
                image = Image.open(os.path.join(image_folder, rec["image"])).convert("RGB")
                kwargs = {"images": process_images([image], image_processor, model.config).to(model.device, model.dtype),
                          "image_sizes": [image.size]}
            res = model(input_ids=ids, labels=ids.clone(), output_hidden_states=True, return_dict=True, **kwargs)
            out.append((res.hidden_states[-1][0].float().cpu(), float(res.loss)))
    del model
    free_memory()
    return out


def name_warnings(out: str, config: dict) -> List[str]:
    """What upstream's name-based loader would do differently with this output directory name."""
    name = os.path.basename(os.path.abspath(out)).lower()
    warnings = []
    if "llava" not in name:
        warnings.append(f"--out name {os.path.basename(out)!r} lacks 'llava': upstream's load_pretrained_model and "
                        "eval scripts pick the LLaVA path from the directory name and would load it as a plain "
                        "LM; rename it, e.g. llava-v1.5-7b-region-pruned")
    if "lora" in name:
        warnings.append(f"--out name {os.path.basename(out)!r} contains 'lora': it is a merged checkpoint, so "
                        "evaluate it WITHOUT --model-base (upstream would otherwise take its LoRA branch)")
    model_type = str(config.get("model_type", ""))
    for kind, word in NAME_ROUTES.items():
        if (model_type == kind) != (word in name):
            warnings.append(f"--out name {os.path.basename(out)!r}: model_type is {model_type!r}, and upstream's "
                            f"loader {'needs' if model_type == kind else 'must not see'} {word!r} in the name")
    return warnings
