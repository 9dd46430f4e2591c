"""Find and import the upstream Bunny source (not on PyPI), and name Bunny's model types.

Order: `$REGION_BUNNY_SRC` when set, else an importable `bunny` package (PYTHONPATH), else the
`third_party/Bunny` submodule of a region_plugin source checkout. Before the first `bunny`
import the torchvision CPU shim is armed (see torchvision_cpu).
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Optional

ENV_VAR = "REGION_BUNNY_SRC"
SUBMODULE = Path(__file__).resolve().parents[2] / "third_party" / "Bunny"
# bunny/train/train.py and bunny/model/builder.py accept exactly these --model_type values.
MODEL_TYPES = ("phi-1.5", "phi-2", "phi-3", "stablelm-2", "qwen1.5-1.8b", "minicpm", "llama3-8b")
# config.json `model_type` of a saved Bunny checkpoint -> a --model_type that loads it.
CONFIG_MODEL_TYPES = {"bunny-llama": "llama3-8b", "bunny-phi": "phi-2", "bunny-phi3": "phi-3",
                      "bunny-qwen2": "qwen1.5-1.8b", "bunny-minicpm": "minicpm", "bunny-stablelm": "stablelm-2"}
HOW_TO_GET = (f"set {ENV_VAR}=/path/to/Bunny (a checkout of github.com/BAAI-DCAI/Bunny, commit 08273ac), "
              "or run `git submodule update --init third_party/Bunny` in the region_plugin checkout")


class BunnySourceError(ImportError):
    """Upstream Bunny cannot be imported; the message says where it was looked for and how to fix it."""


def is_bunny_source(path) -> bool:
    return (Path(path) / "bunny" / "train" / "train.py").is_file()


def source_dir() -> Optional[Path]:
    """The Bunny checkout to use when `bunny` is not importable as is (None: none found)."""
    env = os.environ.get(ENV_VAR)
    if env:
        if not is_bunny_source(env):
            raise BunnySourceError(f"{ENV_VAR}={env!r} holds no bunny/train/train.py; {HOW_TO_GET}")
        return Path(env).resolve()
    return SUBMODULE if is_bunny_source(SUBMODULE) else None


def check_model_type(model_type: Optional[str], flag: str = "--model_type") -> str:
    if model_type not in MODEL_TYPES:
        raise ValueError(f"{flag} {model_type!r} is not a Bunny model type; use one of {', '.join(MODEL_TYPES)} "
                         f"(e.g. {flag} llama3-8b for Bunny-Llama-3-8B-V)")
    return model_type


def _importable() -> bool:
    spec = importlib.util.find_spec("bunny")
    return spec is not None and spec.origin is not None  # a bare directory named bunny is no package


def import_bunny(module: str = "bunny"):
    """Import `module` of upstream Bunny (e.g. 'bunny.train.train'), putting its source on sys.path if needed."""
    from .torchvision_cpu import ensure

    ensure()
    src = source_dir() if os.environ.get(ENV_VAR) else None  # an explicit checkout wins
    if src is None and not _importable():
        src = source_dir()
        if src is None:
            raise BunnySourceError(f"upstream Bunny is not importable; {HOW_TO_GET}")
    if src is not None and str(src) not in sys.path:
        sys.path.insert(0, str(src))
    return importlib.import_module(module)
