"""Local fixtures at a bench shape: tokenizer, LLaMA LLM, CLIP tower, projector, data, LLaVA checkpoint.

Random weights (speed does not depend on values) made on the bench device so a 7B-shaped model
is built in seconds; everything is saved the way upstream reads it, so upstream's trainer and
loader run unchanged on it.
"""
from __future__ import annotations

import json
import os
from typing import Optional

import torch

from region_plugin.spec import parse_region_layers
from region_plugin.tiny import QUESTIONS, TinyLLaVA, build_data, build_projector, build_tokenizer

from .shapes import Shape


def tokenizer(out_dir: str, vocab: int):
    """The tiny sentencepiece tokenizer padded with unused tokens to `vocab` entries.

    Upstream's loader resizes the embeddings to len(tokenizer), so the tokenizer must be as large
    as the vocabulary whose lm_head cost the bench is meant to include.
    """
    tok = build_tokenizer(out_dir)
    if vocab > len(tok):
        tok.add_tokens([f"<unused_{i}>" for i in range(vocab - len(tok))])
        tok.save_pretrained(out_dir)
    return tok


def llm(out_dir: str, shape: Shape, layers: int, device: str, dtype: torch.dtype) -> str:
    """A random LLaMA of `shape` with `layers` decoder layers, as upstream's --model_name_or_path."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tokenizer(out_dir, shape.vocab)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=shape.hidden, intermediate_size=shape.intermediate,
                      num_hidden_layers=layers, num_attention_heads=shape.heads, num_key_value_heads=shape.heads,
                      max_position_embeddings=4096, bos_token_id=1, eos_token_id=2, pad_token_id=None,
                      tie_word_embeddings=False)
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM._from_config(cfg, torch_dtype=dtype)
    model.save_pretrained(out_dir, safe_serialization=True, max_shard_size="4GB")
    del model
    return out_dir


def vision_tower(out_dir: str, shape: Shape) -> str:
    """A random CLIP vision tower giving shape.image_tokens patches, with its image processor."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(0)
    h = shape.tower_hidden
    cfg = CLIPVisionConfig(hidden_size=h, intermediate_size=4 * h, num_hidden_layers=shape.tower_layers,
                           num_attention_heads=max(4, h // 64), image_size=shape.image_size, patch_size=shape.patch,
                           projection_dim=h)
    CLIPVisionModel(cfg).save_pretrained(out_dir, safe_serialization=True)
    CLIPImageProcessor(size={"shortest_edge": shape.image_size},
                       crop_size={"height": shape.image_size, "width": shape.image_size}).save_pretrained(out_dir)
    return out_dir


def data(root: str, shape: Shape, samples: int) -> dict:
    """Shape images and LLaVA conversations of `shape.turns` turns, all with the same turn sequence."""
    paths = build_data(root, num_samples=samples, image_size=shape.image_size)
    with open(paths["data"]) as f:
        records = json.load(f)
    kinds = sorted(QUESTIONS)
    for rec in records:
        answer_words = rec["conversations"][1]["value"]  # keep each sample's colour/shape facts
        conv = []
        for t in range(shape.turns):
            q, _ = QUESTIONS[kinds[t % len(kinds)]]
            conv.append({"from": "human", "value": ("<image>\n" if t == 0 else "") + q})
            conv.append({"from": "gpt", "value": answer_words})
        rec["conversations"] = conv
    with open(paths["data"], "w") as f:
        json.dump(records, f)
    return paths


def train_fixture(root: str, shape: Shape, layers: int, device: str, dtype: torch.dtype,
                  samples: int = 8) -> TinyLLaVA:
    """Everything upstream's stage-2 finetune needs, at `shape` with `layers` decoder layers."""
    os.makedirs(root, exist_ok=True)
    llm_dir = llm(os.path.join(root, "bench-vicuna"), shape, layers, device, dtype)
    tower = vision_tower(os.path.join(root, "bench-clip"), shape)
    proj = build_projector(os.path.join(root, "pretrain", "mm_projector.bin"), vision_hidden=shape.tower_hidden,
                           llm_hidden=shape.hidden)
    return TinyLLaVA(root=root, llm=llm_dir, vision_tower=tower, projector=proj, num_layers=layers,
                     **data(root, shape, samples))


def llava_checkpoint(out_dir: str, shape: Shape, layers: int, tower: str, device: str, dtype: torch.dtype,
                     region: Optional[list] = None) -> str:
    """A merged LLaVA-1.5-style checkpoint (LLM + mlp2x_gelu projector, tower by path) of random weights.

    Its config carries what upstream's loader and process_images read, and `region_layers` as a
    region-trained checkpoint records it (default: the uniform 25% region).
    """
    from llava.model import LlavaConfig, LlavaLlamaForCausalLM

    tok = tokenizer(out_dir, shape.vocab)
    cfg = LlavaConfig(vocab_size=len(tok), hidden_size=shape.hidden, intermediate_size=shape.intermediate,
                      num_hidden_layers=layers, num_attention_heads=shape.heads, num_key_value_heads=shape.heads,
                      max_position_embeddings=4096, bos_token_id=1, eos_token_id=2, pad_token_id=0,
                      tie_word_embeddings=False, use_cache=True,
                      mm_vision_tower=os.path.abspath(tower), mm_hidden_size=shape.tower_hidden,
                      mm_projector_type="mlp2x_gelu", mm_vision_select_layer=-2, mm_vision_select_feature="patch",
                      mm_patch_merge_type="flat", use_mm_proj=True, image_aspect_ratio="pad",
                      mm_use_im_start_end=False, mm_use_im_patch_token=False, tokenizer_padding_side="right",
                      tokenizer_model_max_length=2048,
                      region_layers=region if region is not None else parse_region_layers("25%", layers))
    torch.manual_seed(0)
    with torch.device(device):
        model = LlavaLlamaForCausalLM._from_config(cfg, torch_dtype=dtype)
    model.save_pretrained(out_dir, safe_serialization=True, max_shard_size="4GB")
    del model
    return out_dir
