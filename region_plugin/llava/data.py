"""LLaVA scoring adapter: records -> upstream prompt/tokens/images -> expanded inputs + image-token mask.

The image-token mask comes from upstream's own `prepare_inputs_labels_for_multimodal`: we pass
labels = input_ids, upstream inserts the image features where `<image>` (IMAGE_TOKEN_INDEX) sits
and labels them IGNORE_INDEX, so `(labels == IGNORE_INDEX) & attention_mask` marks exactly the image
positions, wherever the placeholder is in the prompt and however many features the tower gives.
The forward then gets `inputs_embeds`, so the expansion is not done twice.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator, List, Optional

import torch

from ..scoring.adapter_api import LoadedModel, check_checkpoint_paths
from ..scoring.hidden import ScoringBatch
from ..scoring.metrics import ScoringError
from ..scoring.records import IMAGE_TOKEN, conversation_turns
from .loading import load_llava


@dataclass
class RawBatch:
    """Tokenized prompts (with IMAGE_TOKEN_INDEX placeholders) and preprocessed images."""

    input_ids: torch.Tensor       # [B, L], right-padded
    attention_mask: torch.Tensor  # [B, L] long
    images: object                # tensor [B, 3, H, W] (or upstream's list form for anyres)
    image_sizes: List[tuple]
    ids: List[str]

    def plain_inputs(self) -> dict:
        """kwargs of an ordinary upstream forward over this batch (the baseline the bench compares with)."""
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask, "images": self.images,
                "image_sizes": self.image_sizes}


def build_prompt(record: dict, conv_mode: str, use_im_start_end: bool = False) -> str:
    """The whole conversation (questions and answers) in upstream's template, `<image>` where the user put it."""
    from llava.constants import DEFAULT_IM_END_TOKEN, DEFAULT_IM_START_TOKEN
    from llava.conversation import conv_templates

    if conv_mode not in conv_templates:
        raise ScoringError(f"--conv-mode {conv_mode!r} is not an upstream LLaVA template; choose from "
                           f"{sorted(conv_templates)}")
    conv = conv_templates[conv_mode].copy()
    for is_human, value in conversation_turns(record):
        if use_im_start_end:
            value = value.replace(IMAGE_TOKEN, DEFAULT_IM_START_TOKEN + IMAGE_TOKEN + DEFAULT_IM_END_TOKEN)
        conv.append_message(conv.roles[0] if is_human else conv.roles[1], value)
    return conv.get_prompt()


def encode(records: List[dict], image_folder: str, tokenizer, image_processor, config, conv_mode: str,
           device=None, dtype=None) -> RawBatch:
    """Upstream tokenization (`tokenizer_image_token`) and image preprocessing (`process_images`)."""
    from PIL import Image
    from llava.constants import IMAGE_TOKEN_INDEX
    from llava.mm_utils import process_images, tokenizer_image_token

    use_se = bool(getattr(config, "mm_use_im_start_end", False))
    seqs = [tokenizer_image_token(build_prompt(r, conv_mode, use_se), tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt")
            for r in records]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.unk_token_id or 0)
    length = max(len(s) for s in seqs)
    input_ids = torch.full((len(seqs), length), pad, dtype=torch.long)
    attention_mask = torch.zeros((len(seqs), length), dtype=torch.long)
    for i, s in enumerate(seqs):
        input_ids[i, :len(s)] = s
        attention_mask[i, :len(s)] = 1
    pil = [Image.open(os.path.join(image_folder, r["image"])).convert("RGB") for r in records]
    images = process_images(pil, image_processor, config)
    if torch.is_tensor(images):
        images = images.to(device=device, dtype=dtype)
    else:
        images = [im.to(device=device, dtype=dtype) for im in images]
    return RawBatch(input_ids.to(device), attention_mask.to(device), images, [im.size for im in pil],
                    [str(r.get("id", i)) for i, r in enumerate(records)])


@torch.no_grad()
def expand(model, raw: RawBatch) -> ScoringBatch:
    """Run upstream's image expansion; image mask = positions upstream labelled IGNORE_INDEX."""
    from llava.constants import IGNORE_INDEX

    _, position_ids, attention_mask, _, inputs_embeds, labels = model.prepare_inputs_labels_for_multimodal(
        raw.input_ids, None, raw.attention_mask, None, raw.input_ids.clone(), raw.images, raw.image_sizes)
    valid = attention_mask.bool()
    image = (labels == IGNORE_INDEX) & valid
    inputs = {"inputs_embeds": inputs_embeds, "attention_mask": attention_mask, "position_ids": position_ids}
    return ScoringBatch(inputs=inputs, valid=valid, image=image, ids=raw.ids)


class LlavaAdapter:
    """Loads with upstream's `load_pretrained_model` (LoRA dirs, merged dirs) and builds scoring batches."""

    name = "llava"
    load_dtype = torch.float16  # upstream's loader always loads float16 (we cast to float32 on CPU after)
    default_conv_mode = "vicuna_v1"

    def check_model(self, model_path: str, model_base: Optional[str], conv_mode: Optional[str] = None) -> None:
        if conv_mode is not None:
            from llava.conversation import conv_templates

            if conv_mode not in conv_templates:
                raise ScoringError(f"--conv-mode {conv_mode!r} is not an upstream LLaVA template; choose from "
                                   f"{sorted(conv_templates)}")
        check_checkpoint_paths(model_path, model_base, "LLaVA")

    def load(self, model_path: str, model_base: Optional[str], device: str,
             attn_implementation: Optional[str] = None) -> LoadedModel:
        kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
        tokenizer, model, image_processor, _ = load_llava(model_path, model_base, device=device, **kwargs)
        return LoadedModel(model=model, tokenizer=tokenizer, image_processor=image_processor)

    def raw_batches(self, loaded: LoadedModel, records: List[dict], image_folder: str, batch_size: int,
                    conv_mode: Optional[str] = None) -> Iterator[RawBatch]:
        model = loaded.model
        for start in range(0, len(records), batch_size):
            yield encode(records[start:start + batch_size], image_folder, loaded.tokenizer, loaded.image_processor,
                         model.config, conv_mode or self.default_conv_mode, device=model.device, dtype=model.dtype)

    def batches(self, loaded: LoadedModel, records: List[dict], image_folder: str, batch_size: int,
                conv_mode: Optional[str] = None) -> Iterator[ScoringBatch]:
        for raw in self.raw_batches(loaded, records, image_folder, batch_size, conv_mode):
            yield expand(loaded.model, raw)
