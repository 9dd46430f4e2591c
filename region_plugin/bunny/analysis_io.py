"""Bunny glue for the analysis tools (region-revert, region-eval-text, region-export-llm).

The twin of `region_plugin.llava.analysis_io`: answer tokens are upstream Bunny's own training
labels (`bunny.util.data_utils.preprocess_multimodal` + `preprocess` under the chosen template),
text generation is upstream's template plus `generate` without image.
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
from .source import import_bunny

# Bunny config.json model_type -> the plain transformers model_type of its language model
# (MiniCPM has no transformers class: exporting it is refused before anything loads).
LLM_TYPES = {"bunny-llama": "llama", "bunny-phi": "phi", "bunny-phi3": "phi3", "bunny-qwen2": "qwen2",
             "bunny-stablelm": "stablelm"}


@contextlib.contextmanager
def _template(conv_mode: str):
    """Upstream's `preprocess` reads the module global train() sets from --version; set it for the call."""
    conversation_lib = import_bunny("bunny.conversation")
    saved = conversation_lib.default_conversation
    conversation_lib.default_conversation = conversation_lib.conv_templates[conv_mode]
    try:
        yield
    finally:
        conversation_lib.default_conversation = saved


def prepare(loaded: LoadedModel) -> None:
    """What upstream's train() does to the tokenizer: unk doubles as pad; Llama-3 pads with eos."""
    tok = loaded.tokenizer
    if tok.unk_token is not None and tok.pad_token is None:
        tok.pad_token = tok.unk_token
    if getattr(loaded.model.config, "model_type", "") == "bunny-llama":
        tok.pad_token = tok.eos_token


def answer_inputs(loaded: LoadedModel, records: Sequence[dict], image_folder: str,
                  conv_mode: str) -> Iterable[Tuple[dict, int]]:
    """(forward kwargs with upstream's training labels, number of scored answer tokens) per record."""
    from PIL import Image

    data_utils = import_bunny("bunny.util.data_utils")
    mm = import_bunny("bunny.util.mm_utils")
    ignore = import_bunny("bunny.constants").IGNORE_INDEX
    model = loaded.model
    prepare(loaded)
    for record in records:
        source = [{"from": "human" if human else "gpt", "value": text} for human, text in conversation_turns(record)]
        with _template(conv_mode):
            sources = data_utils.preprocess_multimodal([copy.deepcopy(source)], SimpleNamespace(is_multimodal=True))
            tokens = data_utils.preprocess(sources, loaded.tokenizer, has_image=True)
        # [0] as upstream's LazySupervisedDataset takes it (a batch row, or the `plain` template's list entry)
        ids, labels = tokens["input_ids"][0][None].to(model.device), tokens["labels"][0][None].to(model.device)
        image = Image.open(os.path.join(image_folder, record["image"])).convert("RGB")
        pixels = mm.process_images([image], loaded.image_processor, model.config).to(model.device, model.dtype)
        yield {"input_ids": ids, "labels": labels, "images": pixels}, int((labels[0, 1:] != ignore).sum())


def chat_prompt(turns: Sequence[Tuple[str, Optional[str]]], conv_mode: str) -> str:
    """Upstream's template over (user, assistant) turns; the last assistant None = generation starts there."""
    conv = import_bunny("bunny.conversation").conv_templates[conv_mode].copy()
    for user, assistant in turns:
        conv.append_message(conv.roles[0], user)
        conv.append_message(conv.roles[1], assistant)
    return conv.get_prompt()


def generate_text(loaded: LoadedModel, prompt: str, max_new_tokens: int, conv_mode: str) -> str:
    """Greedy reply to a text-only prompt (upstream's generate, images=None), only the new tokens, cut where
    the turn ends: the template's stop string, found with upstream's KeywordsStoppingCriteria as its CLI does."""
    conversation = import_bunny("bunny.conversation")
    mm = import_bunny("bunny.util.mm_utils")
    index = import_bunny("bunny.constants").IMAGE_TOKEN_INDEX
    conv = conversation.conv_templates[conv_mode]
    stop = conv.sep if conv.sep_style != conversation.SeparatorStyle.TWO else conv.sep2
    model, tok = loaded.model, loaded.tokenizer
    ids = mm.tokenizer_image_token(prompt, tok, index, return_tensors="pt")[None].to(model.device)
    pad = next((t for t in (tok.pad_token_id, tok.eos_token_id) if t is not None), 0)
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), images=None, do_sample=False, num_beams=1,
                             max_new_tokens=max_new_tokens, pad_token_id=pad, use_cache=True,
                             stopping_criteria=[mm.KeywordsStoppingCriteria([stop], tok, ids)] if stop else None)
    reply = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    return (reply.split(stop)[0] if stop else reply).strip()


def check_conv_mode(conv_mode: str) -> List[str]:
    """Upstream Bunny's template names (the caller reports an unknown --conv-mode with them)."""
    templates = import_bunny("bunny.conversation").conv_templates
    return [] if conv_mode in templates else sorted(templates)
