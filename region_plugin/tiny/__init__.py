"""Embedded tiny LVLM ingredients, built locally in seconds (no downloads).

What a LLaVA/Bunny-style stage-2 finetune needs, at toy size: a LLaMA-architecture LLM with a
sentencepiece tokenizer trained on the fly, a CLIP vision tower with few patches (32 px / patch 8
-> 16 image tokens, so upstream's truncation never wipes the labels), a projector checkpoint
like stage-1 produces, synthetic shape images and conversations in LLaVA's JSON format.
Used by `make demo` and by the tests; deterministic for a given seed.
"""
from __future__ import annotations

import json
import os
import random
from dataclasses import asdict, dataclass
from typing import List

COLORS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220), "yellow": (230, 210, 40)}
SHAPES = ("square", "circle", "triangle")
QUESTIONS = {
    "color": ("What color is the shape?", "The shape is {color}."),
    "shape": ("What shape is in the image?", "It is a {shape}."),
    "both": ("Describe the image.", "A {color} {shape} on a white background."),
}
SYSTEM_TEXT = ("A chat between a curious user and an artificial intelligence assistant. "
               "The assistant gives helpful, detailed, and polite answers to the user's questions.")


@dataclass
class TinyLLaVA:
    """Paths of one built fixture set."""

    root: str
    llm: str            # LLaMA checkpoint + tokenizer (the "vicuna" of stage 2)
    vision_tower: str   # CLIPVisionModel + CLIPImageProcessor
    projector: str      # mm_projector.bin as stage-1 pretraining writes it
    data: str           # LLaVA-format conversations (JSON list)
    image_folder: str
    questions: str      # model_vqa_loader-style jsonl
    num_layers: int

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def _image(color: str, shape: str, size: int, rng: random.Random):
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    m = rng.randint(2, size // 6)
    box = (m, m, size - 1 - m, size - 1 - m)
    if shape == "square":
        draw.rectangle(box, fill=COLORS[color])
    elif shape == "circle":
        draw.ellipse(box, fill=COLORS[color])
    else:
        draw.polygon([(size // 2, m), (m, size - 1 - m), (size - 1 - m, size - 1 - m)], fill=COLORS[color])
    return img


def build_data(root: str, num_samples: int = 24, image_size: int = 32, seed: int = 0) -> dict:
    """Synthetic shape images, LLaVA conversations (1-2 turns) and a 2-question eval jsonl."""
    rng = random.Random(seed)
    image_folder = os.path.join(root, "images")
    os.makedirs(image_folder, exist_ok=True)
    records = []
    for i in range(num_samples):
        color, shape = rng.choice(sorted(COLORS)), rng.choice(SHAPES)
        name = f"img_{i:03d}.png"
        _image(color, shape, image_size, rng).save(os.path.join(image_folder, name))
        kinds = rng.sample(sorted(QUESTIONS), k=1 + i % 2)
        conv = []
        for t, kind in enumerate(kinds):
            q, a = QUESTIONS[kind]
            conv.append({"from": "human", "value": ("<image>\n" if t == 0 else "") + q})
            conv.append({"from": "gpt", "value": a.format(color=color, shape=shape)})
        records.append({"id": f"tiny-{i}", "image": name, "conversations": conv})
    data = os.path.join(root, "train.json")
    with open(data, "w") as f:
        json.dump(records, f, indent=1)
    questions = os.path.join(root, "questions.jsonl")
    with open(questions, "w") as f:
        for qid, rec in enumerate(records[:2]):
            f.write(json.dumps({"question_id": qid, "image": rec["image"], "text": QUESTIONS["color"][0],
                                "category": "tiny"}) + "\n")
    return {"data": data, "image_folder": image_folder, "questions": questions}


def _corpus() -> List[str]:
    lines = [SYSTEM_TEXT, "USER: ASSISTANT:", "<image>"]
    for color in COLORS:
        for shape in SHAPES:
            for q, a in QUESTIONS.values():
                lines.append(f"USER: {q} ASSISTANT: {a.format(color=color, shape=shape)}")
    return lines * 4


def build_tokenizer(out_dir: str, vocab_size: int = 384):
    """A LLaMA sentencepiece tokenizer trained on the fly, saved with legacy=True.

    legacy=True matters: upstream LLaVA's preprocess_v1 counts tokens the legacy way and masks
    every label ("tokenization mismatch") otherwise.
    """
    import io

    import sentencepiece as spm
    from transformers import LlamaTokenizer

    os.makedirs(out_dir, exist_ok=True)
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus()), model_writer=buf, vocab_size=vocab_size, model_type="bpe",
        character_coverage=1.0, byte_fallback=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        add_dummy_prefix=True, normalization_rule_name="identity", num_threads=1, minloglevel=2)
    model_file = os.path.join(out_dir, "tokenizer.model")
    with open(model_file, "wb") as f:
        f.write(buf.getvalue())
    tok = LlamaTokenizer(vocab_file=model_file, legacy=True, add_bos_token=True, add_eos_token=False)
    tok.save_pretrained(out_dir)
    return tok


def build_llm(out_dir: str, num_layers: int = 8, hidden: int = 64, vocab_size: int = 384, seed: int = 0) -> str:
    """A random LLaMA-architecture causal LM plus its tokenizer, as upstream's --model_name_or_path."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = build_tokenizer(out_dir, vocab_size)
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=4,
                      max_position_embeddings=512, bos_token_id=1, eos_token_id=2, pad_token_id=None,
                      tie_word_embeddings=False)
    LlamaForCausalLM(cfg).save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def build_vision_tower(out_dir: str, image_size: int = 32, patch: int = 8, hidden: int = 32, seed: int = 0) -> str:
    """A random CLIP vision tower with (image/patch)^2 patches and its image processor."""
    import torch
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(seed)
    cfg = CLIPVisionConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                           num_attention_heads=4, image_size=image_size, patch_size=patch, projection_dim=hidden)
    CLIPVisionModel(cfg).save_pretrained(out_dir, safe_serialization=True)
    CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
                       ).save_pretrained(out_dir)
    return out_dir


def build_projector(path: str, vision_hidden: int = 32, llm_hidden: int = 64, seed: int = 0) -> str:
    """An `mlp2x_gelu` projector state dict under the names stage-1 pretraining saves."""
    import torch

    g = torch.Generator().manual_seed(seed)
    sd = {
        "model.mm_projector.0.weight": torch.randn(llm_hidden, vision_hidden, generator=g) * vision_hidden ** -0.5,
        "model.mm_projector.0.bias": torch.zeros(llm_hidden),
        "model.mm_projector.2.weight": torch.randn(llm_hidden, llm_hidden, generator=g) * llm_hidden ** -0.5,
        "model.mm_projector.2.bias": torch.zeros(llm_hidden),
    }
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save(sd, path)
    return path


def build_tiny_llava(root: str, num_layers: int = 8, num_samples: int = 24, seed: int = 0) -> TinyLLaVA:
    """Everything `--model_name_or_path/--vision_tower/--pretrain_mm_mlp_adapter/--data_path` need."""
    os.makedirs(root, exist_ok=True)
    llm = build_llm(os.path.join(root, "tiny-vicuna"), num_layers=num_layers, seed=seed)
    tower = build_vision_tower(os.path.join(root, "tiny-clip-vit"), seed=seed)
    proj = build_projector(os.path.join(root, "tiny-llava-pretrain", "mm_projector.bin"), seed=seed)
    data = build_data(root, num_samples=num_samples, seed=seed)
    tiny = TinyLLaVA(root=root, llm=llm, vision_tower=tower, projector=proj, num_layers=num_layers, **data)
    with open(os.path.join(root, "tiny.json"), "w") as f:
        f.write(tiny.to_json())
    return tiny


def trainer_flags(output_dir: str, lora: bool, steps: int, cpu: bool,
                  eval_flag: str = "--evaluation_strategy") -> List[str]:
    """The training half of upstream's finetune_lora.sh (LLaVA and Bunny share it), shrunk for tiny runs.

    `eval_flag` is transformers' name of the evaluation-strategy argument (renamed in 4.41).
    """
    args = [
        "--bf16", "False", "--output_dir", output_dir, "--num_train_epochs", "1", "--max_steps", str(steps),
        "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "4",
        "--gradient_accumulation_steps", "1", eval_flag, "no", "--save_strategy", "no",
        "--learning_rate", "2e-3" if lora else "1e-3", "--weight_decay", "0.", "--warmup_ratio", "0.0",
        "--lr_scheduler_type", "constant", "--logging_steps", "1", "--model_max_length", "256",
        "--gradient_checkpointing", "True", "--dataloader_num_workers", "0", "--lazy_preprocess", "True",
        "--report_to", "none", "--seed", "0",
    ]
    if cpu:
        args += ["--use_cpu", "True"]
    if lora:
        args = ["--lora_enable", "True", "--lora_r", "8", "--lora_alpha", "16", "--mm_projector_lr", "2e-3"] + args
    return args


def llava_train_args(tiny: TinyLLaVA, output_dir: str, lora: bool = True, steps: int = 4,
                     cpu: bool = True) -> List[str]:
    """Upstream scripts/v1_5/finetune_lora.sh flags, shrunk to the tiny model (and CPU unless cpu=False)."""
    return [
        "--model_name_or_path", tiny.llm, "--version", "v1",
        "--data_path", tiny.data, "--image_folder", tiny.image_folder,
        "--vision_tower", tiny.vision_tower, "--pretrain_mm_mlp_adapter", tiny.projector,
        "--mm_projector_type", "mlp2x_gelu", "--mm_vision_select_layer", "-2",
        "--mm_use_im_start_end", "False", "--mm_use_im_patch_token", "False",
        "--image_aspect_ratio", "pad", "--group_by_modality_length", "True",
    ] + trainer_flags(output_dir, lora, steps, cpu)
