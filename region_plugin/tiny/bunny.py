"""Tiny Bunny ingredients, built locally in seconds: llama3-8b- and phi-2-style LLMs and a SigLIP tower.

Mirrors what upstream Bunny's stage-2 `finetune_lora.sh` consumes, at toy size. Tokenizers are
byte-level BPEs trained on the fly with the `tokenizers` library (built inside the environment
that uses them: tokenizer.json from tokenizers 0.20+ is unreadable by 0.19). Upstream-imposed
details: llama3-8b hard-codes `eos_token_id = 128001`, so the llama3 vocab is padded to Llama-3's
128256 with `<|begin_of_text|>`=128000, `<|end_of_text|>`=128001, `<|eot_id|>`=128009 and a BOS
post-processor; the SigLIP directory name must contain "sig"; phi-2 uses `<|endoftext|>` as
bos/eos/unk with conversation version `bunny`.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import List

from . import _corpus, build_data, build_projector, trainer_flags

LLAMA3_SPECIAL = {128000: "<|begin_of_text|>", 128001: "<|end_of_text|>", 128006: "<|start_header_id|>",
                  128007: "<|end_header_id|>", 128009: "<|eot_id|>"}
LLAMA3_VOCAB = 128256
# --model_type -> (conversation --version, how to build the LLM)
TINY_TYPES = {"llama3-8b": "llama", "phi-2": "bunny"}


@dataclass
class TinyBunny:
    """Paths of one built fixture set."""

    root: str
    model_type: str     # Bunny --model_type
    version: str        # Bunny --version (conversation template)
    llm: str            # base LLM checkpoint + tokenizer (--model_name_or_path)
    vision_tower: str   # SiglipVisionModel + SiglipImageProcessor; name contains "sig"
    projector: str      # mm_projector.bin as stage-1 pretraining writes it
    data: str           # LLaVA/Bunny-format conversations (JSON list)
    image_folder: str
    questions: str      # model_vqa_loader-style jsonl
    num_layers: int

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def _byte_bpe(vocab_size: int, special: List[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_corpus(), trainer)
    return tok


def build_llama3_tokenizer(out_dir: str, bpe_size: int = 512):
    """A Llama-3-shaped fast tokenizer: small BPE, vocab padded to 128256, BOS prepended."""
    from tokenizers import AddedToken, Tokenizer, models, processors
    from transformers import PreTrainedTokenizerFast

    base = _byte_bpe(bpe_size, [])
    trained = json.loads(base.to_str())["model"]
    vocab = dict(trained["vocab"])
    first_special = min(LLAMA3_SPECIAL)
    for i in range(len(vocab), first_special):  # never produced: no merge leads to them
        vocab[f"<|filler_{i}|>"] = i
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in trained["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer, tok.decoder = base.pre_tokenizer, base.decoder
    names = [LLAMA3_SPECIAL.get(i, f"<|reserved_special_token_{i - first_special}|>")
             for i in range(first_special, LLAMA3_VOCAB)]
    tok.add_special_tokens([AddedToken(n, special=True, normalized=False) for n in names])
    bos = LLAMA3_SPECIAL[128000]
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, 128000)]),
    ])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token="<|eot_id|>",
                                   model_max_length=8192)
    assert fast.convert_tokens_to_ids("<|end_of_text|>") == 128001 and len(fast) == LLAMA3_VOCAB
    fast.save_pretrained(out_dir)
    return fast


def build_phi2_tokenizer(out_dir: str, bpe_size: int = 512):
    """A phi-2-shaped fast tokenizer: byte-level BPE, `<|endoftext|>` as bos/eos/unk, no BOS added."""
    from transformers import PreTrainedTokenizerFast

    eot = "<|endoftext|>"
    fast = PreTrainedTokenizerFast(tokenizer_object=_byte_bpe(bpe_size, [eot]), bos_token=eot, eos_token=eot,
                                   unk_token=eot, model_max_length=2048)
    fast.save_pretrained(out_dir)
    return fast


def build_llm(out_dir: str, model_type: str, num_layers: int = 8, hidden: int = 64, seed: int = 0) -> str:
    """A random base LLM of the architecture behind `model_type`, saved as transformers writes it."""
    import torch

    torch.manual_seed(seed)
    if model_type == "llama3-8b":
        from transformers import LlamaConfig, LlamaForCausalLM

        tok = build_llama3_tokenizer(out_dir)
        cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                          num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=2,
                          max_position_embeddings=512, rope_theta=500000.0, bos_token_id=128000,
                          eos_token_id=128009, tie_word_embeddings=False)
        LlamaForCausalLM(cfg).save_pretrained(out_dir, safe_serialization=True)
    elif model_type == "phi-2":
        from transformers import PhiConfig, PhiForCausalLM

        tok = build_phi2_tokenizer(out_dir)
        cfg = PhiConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                        num_hidden_layers=num_layers, num_attention_heads=4, partial_rotary_factor=0.5,
                        max_position_embeddings=512, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
        PhiForCausalLM(cfg).save_pretrained(out_dir, safe_serialization=True)
    else:
        raise ValueError(f"tiny Bunny fixtures exist for --model_type {' / '.join(TINY_TYPES)}, not {model_type!r}")
    return out_dir


def build_siglip(out_dir: str, image_size: int = 32, patch: int = 8, hidden: int = 32, seed: int = 0) -> str:
    """A random SigLIP vision tower with (image/patch)^2 patches and its image processor."""
    import torch
    from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

    if "sig" not in os.path.basename(out_dir.rstrip("/")).lower():
        raise ValueError(f"{out_dir!r}: Bunny picks the SigLIP tower only when the directory name contains 'sig'")
    torch.manual_seed(seed)
    cfg = SiglipVisionConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                             num_attention_heads=4, image_size=image_size, patch_size=patch)
    SiglipVisionModel(cfg).save_pretrained(out_dir, safe_serialization=True)
    SiglipImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(out_dir)
    return out_dir


def build_tiny_bunny(root: str, model_type: str = "llama3-8b", num_layers: int = 8, num_samples: int = 24,
                     seed: int = 0) -> TinyBunny:
    """Everything `--model_name_or_path/--vision_tower/--pretrain_mm_mlp_adapter/--data_path` need."""
    if model_type not in TINY_TYPES:
        raise ValueError(f"tiny Bunny fixtures exist for --model_type {' / '.join(TINY_TYPES)}, not {model_type!r}")
    os.makedirs(root, exist_ok=True)
    llm = build_llm(os.path.join(root, f"tiny-{model_type}"), model_type, num_layers=num_layers, seed=seed)
    tower = build_siglip(os.path.join(root, "tiny-siglip"), seed=seed)
    proj = build_projector(os.path.join(root, f"bunny-{model_type}-pretrain", "mm_projector.bin"),
                           vision_hidden=32, llm_hidden=64, seed=seed)
    data = build_data(root, num_samples=num_samples, seed=seed)
    tiny = TinyBunny(root=root, model_type=model_type, version=TINY_TYPES[model_type], llm=llm,
                     vision_tower=tower, projector=proj, num_layers=num_layers, **data)
    with open(os.path.join(root, "tiny.json"), "w") as f:
        f.write(tiny.to_json())
    return tiny


# --model_type -> upstream class name prefix in bunny.model, for complete checkpoints built directly.
CHECKPOINT_CLASSES = {"qwen1.5-1.8b": "BunnyQwen2", "minicpm": "BunnyMiniCPM", "phi-3": "BunnyPhi3"}


def build_bunny_checkpoint(out_dir: str, model_type: str, vision_tower: str, num_layers: int = 8,
                           hidden: int = 64, seed: int = 0, **config) -> str:
    """A complete random Bunny checkpoint made with upstream's own model class, as a merged run saves it.

    For the architectures whose base LLM transformers 4.48 cannot write (MiniCPM) or whose
    per-layer config fields pruning must edit (Qwen2 `max_window_layers`, MiniCPM `scale_depth`).
    Upstream's loader builds the SigLIP tower from `mm_vision_tower`, as for any stage-2 output.
    """
    import torch

    from region_plugin.bunny.source import import_bunny

    if model_type not in CHECKPOINT_CLASSES:
        raise ValueError(f"build_bunny_checkpoint covers --model_type {' / '.join(CHECKPOINT_CLASSES)}, "
                         f"not {model_type!r}")
    prefix = CHECKPOINT_CLASSES[model_type]
    bunny_model = import_bunny("bunny.model")
    tok = build_phi2_tokenizer(out_dir)
    cfg = getattr(bunny_model, f"{prefix}Config")(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=num_layers,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id, mm_vision_tower=vision_tower,
        mm_projector_type="mlp2x_gelu", mm_hidden_size=32, use_mm_proj=True, image_aspect_ratio="pad",
        tokenizer_padding_side="right", **config)
    torch.manual_seed(seed)
    model = getattr(bunny_model, f"{prefix}ForCausalLM")(cfg)
    model.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def bunny_train_args(tiny: TinyBunny, output_dir: str, lora: bool = True, steps: int = 4,
                     cpu: bool = True) -> List[str]:
    """Upstream script/train/finetune_lora.sh flags, shrunk to the tiny model (and CPU unless cpu=False)."""
    return [
        "--model_name_or_path", tiny.llm, "--model_type", tiny.model_type, "--version", tiny.version,
        "--data_path", tiny.data, "--image_folder", tiny.image_folder,
        "--vision_tower", tiny.vision_tower, "--pretrain_mm_mlp_adapter", tiny.projector,
        "--mm_projector_type", "mlp2x_gelu", "--image_aspect_ratio", "pad", "--group_by_modality_length", "False",
    ] + trainer_flags(output_dir, lora, steps, cpu, eval_flag="--eval_strategy")
