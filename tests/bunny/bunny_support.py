"""Whether the Bunny tests run here: run, skip with one reason line, or fail.

Upstream Bunny is not on PyPI and CI has no network, so its source comes from
`$REGION_BUNNY_SRC` or the `third_party/Bunny` submodule, and it needs its own stack
(requirements-bunny.txt, `make venv-bunny`). Rule:
* source and stack present            -> the tests run;
* otherwise, REGION_BUNNY_SRC unset    -> every Bunny test is skipped with the reason (CI, `make test`);
* otherwise, REGION_BUNNY_SRC set      -> collection FAILS with the reason (you asked for Bunny tests).
Every test module calls `require_bunny()` before anything else, so pytest -ra folds the skips
into one line. Also holds the helpers the Bunny test modules share (they import this module, never
the fixtures plugin, so pytest can still rewrite the plugin's asserts).
"""
from __future__ import annotations

import functools
import os
import re
from pathlib import Path

import pytest
import torch

from conftest import read_json, run_cli as run_py  # noqa: F401 - shared with the LLaVA tests
from region_plugin.bunny.source import ENV_VAR, HOW_TO_GET, SUBMODULE, is_bunny_source

REPO = Path(__file__).resolve().parents[2]
# transformers releases that run the vendored Bunny modeling code (StaticCache .. DynamicCache.get_max_length).
TRANSFORMERS_RANGE = ("4.38.0", "4.48.3")
STRICT = bool(os.environ.get(ENV_VAR))  # read before _check() exports the checkout it found


@functools.lru_cache(maxsize=None)
def _check():
    """(source dir, None) when the tests can run, else (None, reason)."""
    env = os.environ.get(ENV_VAR)
    if env:
        if not is_bunny_source(env):
            return None, f"{ENV_VAR}={env!r} holds no bunny/train/train.py (point it at a Bunny checkout)"
        src = Path(env).resolve()
    elif is_bunny_source(SUBMODULE):
        src = SUBMODULE
    else:
        return None, f"no upstream Bunny source: {HOW_TO_GET}; then run `make test-bunny`"
    import transformers
    from packaging.version import Version

    low, high = map(Version, TRANSFORMERS_RANGE)
    if not low <= Version(transformers.__version__) <= high:
        return None, (f"this Python has transformers {transformers.__version__}; upstream Bunny runs on "
                      f"{low}..{high} (requirements-bunny.txt): run `make test-bunny`")
    os.environ[ENV_VAR] = str(src)  # in-process imports and subprocesses use the same checkout
    try:
        from region_plugin.bunny.source import import_bunny

        import_bunny("bunny.train.train")
    except Exception as e:  # noqa: BLE001 - report any import failure as the reason
        return None, f"cannot import upstream Bunny from {src}: {type(e).__name__}: {e}"
    return src, None


def require_bunny() -> Path:
    """The Bunny source dir; otherwise skip this module (or fail it when REGION_BUNNY_SRC is set)."""
    src, reason = _check()
    if src is not None:
        return src
    if STRICT:
        pytest.fail(f"{ENV_VAR} is set, so the Bunny tests must run, but: {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def tail(proc, n=4000) -> str:
    return f"rc={proc.returncode}\n--- stdout\n{proc.stdout[-n:]}\n--- stderr\n{proc.stderr[-n:]}"


MODEL_TYPES = ("llama3-8b", "phi-2")
# LoRA targets upstream's find_all_linear_names yields per architecture (suffix names).
LINEARS = {"llama3-8b": {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"},
           "phi-2": {"q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"}}
LORA_KEY = re.compile(r"^base_model\.model\.model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.lora_([AB])\.weight$")


def train_bunny(tiny, out_dir, region=None, lora=True, extra=()):
    """One real upstream Bunny training run through the plugin's entry point; asserts success."""
    from region_plugin.tiny.bunny import bunny_train_args

    args = ["-m", "region_plugin.bunny.train", *bunny_train_args(tiny, str(out_dir), lora=lora), *extra]
    if region is not None:
        args += ["--region_layers", region]
    proc = run_py(args)
    assert proc.returncode == 0, f"training failed:\n{tail(proc, 6000)}"
    return proc


def layer_of(key: str):
    m = re.match(r"^(?:base_model\.model\.)?model\.layers\.(\d+)\.", key)
    return int(m.group(1)) if m else None


def changed_llm_layers(state: dict, base: dict) -> list:
    """Decoder layers whose weights differ between a loaded model's state dict and the base LLM's files.

    Upstream's loader works in float16, so the base is compared after the same rounding.
    """
    changed = set()
    for key, value in base.items():
        idx = layer_of(key)
        if idx is not None and key in state and not torch.equal(state[key].float(), value.half().float()):
            changed.add(idx)
    return sorted(changed)


def generate(tokenizer, model, image_processor, tiny, max_new_tokens=6):
    """Upstream Bunny's own prompt building + image processing, then model.generate on one tiny image."""
    from PIL import Image

    from region_plugin.bunny.source import import_bunny

    conv_lib = import_bunny("bunny.conversation")
    mm = import_bunny("bunny.util.mm_utils")
    constants = import_bunny("bunny.constants")
    conv = conv_lib.conv_templates[tiny.version].copy()
    conv.append_message(conv.roles[0], "<image>\nWhat color is the shape?")
    conv.append_message(conv.roles[1], None)
    ids = mm.tokenizer_image_token(conv.get_prompt(), tokenizer, constants.IMAGE_TOKEN_INDEX, return_tensors="pt")
    image = Image.open(os.path.join(tiny.image_folder, "img_000.png")).convert("RGB")
    pixels = mm.process_images([image], image_processor, model.config).to(model.device, model.dtype)
    with torch.inference_mode():
        out = model.generate(ids[None].to(model.device), images=pixels, do_sample=False,
                             max_new_tokens=max_new_tokens, use_cache=True)
    return out, tokenizer.decode(out[0], skip_special_tokens=True)
