"""LLaVA glue for the analysis tools (region-revert, region-eval-text, region-export-llm).

Answer tokens are upstream's own training labels: the record goes through upstream's
`preprocess_multimodal` + `preprocess` (what `LazySupervisedDataset` does) under the chosen
conversation template, so "visual perplexity" is exactly the stage-2 loss on answer tokens.
Text generation uses upstream's template and `generate` with no image.
"""
from __future__ import annotations

import contextlib
import copy
import os
from types import SimpleNamespace
from typing import Iterable, List, Optional, Sequence, Tuple

import torch

from ..adapters import LoadedModel
from ..scoring.records import conversation_turns
from .prune_io import name_warnings  # noqa: F401 - same name rules for every checkpoint we write

# LLaVA model_type -> the plain transformers model_type of its language model.
LLM_TYPES = {"llava_llama": "llama", "llava_mistral": "mistral", "llava_mpt": "mpt"}


@contextlib.contextmanager
def _template(conv_mode: str):
    """Upstream's `preprocess` reads the module global train() sets from --version; set it for the call."""
    from llava import conversation as conversation_lib

    saved = conversation_lib.default_conversation
    conversation_lib.default_conversation = conversation_lib.conv_templates[conv_mode]
    try:
        yield
    finally:
        conversation_lib.default_conversation = saved


def prepare(loaded: LoadedModel) -> None:
    """What upstream's train() does to the tokenizer for v1 templates: unk doubles as pad."""
    tok = loaded.tokenizer
    if tok.pad_token is None and tok.unk_token is not None:
        tok.pad_token = tok.unk_token


def answer_inputs(loaded: LoadedModel, records: Sequence[dict], image_folder: str,
                  conv_mode: str) -> Iterable[Tuple[dict, int]]:
    """(forward kwargs with upstream's training labels, number of scored answer tokens) per record."""
    from PIL import Image
    from llava.constants import IGNORE_INDEX
    from llava.mm_utils import process_images
    from llava.train.train import preprocess, preprocess_multimodal

    model = loaded.model
    prepare(loaded)
    data_args = SimpleNamespace(is_multimodal=True,
                                mm_use_im_start_end=bool(getattr(model.config, "mm_use_im_start_end", False)))
    for record in records:
        source = [{"from": "human" if human else "gpt", "value": text} for human, text in conversation_turns(record)]
        with _template(conv_mode):
            sources = preprocess_multimodal([copy.deepcopy(source)], data_args)
            tokens = preprocess(sources, loaded.tokenizer, has_image=True)
        # [0] as upstream's LazySupervisedDataset takes it (a batch row, or the `plain` template's list entry)
        ids, labels = tokens["input_ids"][0][None].to(model.device), tokens["labels"][0][None].to(model.device)
        image = Image.open(os.path.join(image_folder, record["image"])).convert("RGB")
        pixels = process_images([image], loaded.image_processor, model.config).to(model.device, model.dtype)
        kwargs = {"input_ids": ids, "labels": labels, "images": pixels, "image_sizes": [image.size]}
        yield kwargs, int((labels[0, 1:] != IGNORE_INDEX).sum())


def chat_prompt(turns: Sequence[Tuple[str, Optional[str]]], conv_mode: str) -> str:
    """Upstream's template over (user, assistant) turns; the last assistant None = generation starts there."""
    from llava.conversation import conv_templates

    conv = conv_templates[conv_mode].copy()
    for user, assistant in turns:
        conv.append_message(conv.roles[0], user)
        conv.append_message(conv.roles[1], assistant)
    return conv.get_prompt()


def generate_text(loaded: LoadedModel, prompt: str, max_new_tokens: int, conv_mode: str) -> str:
    """Greedy reply of the LVLM to a text-only prompt (upstream's generate, images=None), cut where its turn
    ends: the template's stop string, found with upstream's KeywordsStoppingCriteria as its CLI does."""
    from llava.constants import IMAGE_TOKEN_INDEX
    from llava.conversation import SeparatorStyle, conv_templates
    from llava.mm_utils import KeywordsStoppingCriteria, tokenizer_image_token

    model, tok = loaded.model, loaded.tokenizer
    conv = conv_templates[conv_mode]
    stop = conv.sep if conv.sep_style != SeparatorStyle.TWO else conv.sep2
    ids = tokenizer_image_token(prompt, tok, IMAGE_TOKEN_INDEX, return_tensors="pt")[None].to(model.device)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.unk_token_id
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), images=None, do_sample=False, num_beams=1,
                             max_new_tokens=max_new_tokens, pad_token_id=pad,
                             # generate() from embeddings returns only new tokens: count them from 0
                             stopping_criteria=[KeywordsStoppingCriteria([stop], tok, ids[:, :0])] if stop else None)
    reply = tok.decode(out[0], skip_special_tokens=True)
    return (reply.split(stop)[0] if stop else reply).strip()


def check_conv_mode(conv_mode: str) -> List[str]:
    """Upstream's template names (the caller reports an unknown --conv-mode with them)."""
    from llava.conversation import conv_templates

    return [] if conv_mode in conv_templates else sorted(conv_templates)
