"""Bunny scoring adapter: records -> upstream prompt/tokens/images -> expanded inputs + image-token mask.

The twin of `region_plugin.llava.data` for upstream Bunny. The image-token mask comes from
Bunny's own `prepare_inputs_labels_for_multimodal`: with labels = input_ids it inserts the image
features where `<image>` (IMAGE_TOKEN_INDEX) sits and labels them IGNORE_INDEX, so
`(labels == IGNORE_INDEX) & attention_mask` marks exactly the image positions. The forward then
gets `inputs_embeds`, so the expansion is not done twice.
"""
from __future__ import annotations

import os
from typing import Iterator, List, Optional

import torch

from ..scoring.adapter_api import LoadedModel, check_checkpoint_paths
from ..scoring.hidden import ScoringBatch
from ..scoring.metrics import ScoringError
from ..scoring.records import conversation_turns
from .loading import load_bunny
from .source import CONFIG_MODEL_TYPES, check_model_type, import_bunny

# Bunny --model_type -> the conversation template its tutorials train it with (--version).
CONV_MODES = {"llama3-8b": "llama", "minicpm": "minicpm", "phi-3": "phi3"}


def build_prompt(record: dict, conv_mode: str) -> str:
    """The whole conversation (questions and answers) in upstream's template, `<image>` where the user put it."""
    conv_templates = import_bunny("bunny.conversation").conv_templates
    if conv_mode not in conv_templates:
        raise ScoringError(f"--conv-mode {conv_mode!r} is not an upstream Bunny template; choose from "
                           f"{sorted(conv_templates)}")
    conv = conv_templates[conv_mode].copy()
    for is_human, value in conversation_turns(record):
        conv.append_message(conv.roles[0] if is_human else conv.roles[1], value)
    return conv.get_prompt()


def encode(records: List[dict], image_folder: str, tokenizer, image_processor, config, conv_mode: str,
           device=None, dtype=None):
    """(input_ids, attention_mask, images, ids): upstream `tokenizer_image_token` + `process_images`, right-padded."""
    from PIL import Image

    mm = import_bunny("bunny.util.mm_utils")
    index = import_bunny("bunny.constants").IMAGE_TOKEN_INDEX
    seqs = [mm.tokenizer_image_token(build_prompt(r, conv_mode), tokenizer, index, return_tensors="pt")
            for r in records]
    pad = next((t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id) if t is not None), 0)
    input_ids = torch.full((len(seqs), max(len(s) for s in seqs)), pad, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for i, s in enumerate(seqs):
        input_ids[i, :len(s)] = s
        attention_mask[i, :len(s)] = 1
    pil = [Image.open(os.path.join(image_folder, r["image"])).convert("RGB") for r in records]
    images = mm.process_images(pil, image_processor, config)
    images = images.to(device=device, dtype=dtype) if torch.is_tensor(images) else \
        [im.to(device=device, dtype=dtype) for im in images]
    return input_ids.to(device), attention_mask.to(device), images, [str(r.get("id", i)) for i, r in enumerate(records)]


@torch.no_grad()
def expand(model, input_ids, attention_mask, images, ids) -> ScoringBatch:
    """Run upstream's image expansion; image mask = positions upstream labelled IGNORE_INDEX."""
    ignore = import_bunny("bunny.constants").IGNORE_INDEX
    labels = input_ids.clone()  # upstream overwrites IMAGE_TOKEN_INDEX in input_ids in place
    _, position_ids, attention_mask, _, inputs_embeds, labels = model.prepare_inputs_labels_for_multimodal(
        input_ids, None, attention_mask, None, labels, images)
    valid = attention_mask.bool()
    inputs = {"inputs_embeds": inputs_embeds, "attention_mask": attention_mask, "position_ids": position_ids}
    return ScoringBatch(inputs=inputs, valid=valid, image=(labels == ignore) & valid, ids=ids)


class BunnyAdapter:
    """Loads with upstream's `load_pretrained_model` (LoRA dirs, merged dirs) and builds scoring batches."""

    load_dtype = torch.float16  # upstream's loader always loads float16 (cast to float32 off CUDA after)

    def __init__(self, model_type: str):
        try:
            self.name = check_model_type(model_type, "--model-type")
        except ValueError as e:
            raise ScoringError(str(e)) from None
        self.default_conv_mode = CONV_MODES.get(model_type, "bunny")

    def check_model(self, model_path: str, model_base: Optional[str], conv_mode: Optional[str] = None) -> None:
        if conv_mode is not None:
            build_prompt({"conversations": []}, conv_mode)  # raises ScoringError naming --conv-mode
        check_checkpoint_paths(model_path, model_base, "Bunny")

    def load(self, model_path: str, model_base: Optional[str], device: str,
             attn_implementation: Optional[str] = None) -> LoadedModel:
        kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
        tokenizer, model, image_processor, _ = load_bunny(model_path, model_base, self.name, device=device, **kwargs)
        return LoadedModel(model=model, tokenizer=tokenizer, image_processor=image_processor)

    def batches(self, loaded: LoadedModel, records: List[dict], image_folder: str, batch_size: int,
                conv_mode: Optional[str] = None) -> Iterator[ScoringBatch]:
        model = loaded.model
        for start in range(0, len(records), batch_size):
            raw = encode(records[start:start + batch_size], image_folder, loaded.tokenizer, loaded.image_processor,
                         model.config, conv_mode or self.default_conv_mode, device=model.device, dtype=model.dtype)
            yield expand(model, *raw)


def scoring_adapter(model_type: Optional[str], config: Optional[dict] = None) -> BunnyAdapter:
    """Entry point `region_plugin.adapters.get_adapter` calls for Bunny; no model_type = config.json's."""
    if model_type is None:
        model_type = CONFIG_MODEL_TYPES.get((config or {}).get("model_type"))
    return BunnyAdapter(model_type)
