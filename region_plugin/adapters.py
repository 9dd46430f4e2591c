"""The one place that maps a codebase (`model_type`) to its adapter for tools that run the model.

A scoring adapter knows how its codebase loads a checkpoint and turns LLaVA-format records into
model inputs plus the image-token mask from the codebase's real image expansion. The core
(`region_plugin.scoring`) only talks to this interface, so it never imports `llava` or `bunny`.

`codebase_for` is the single registry every tool asks (scoring, pruning, analysis):

    config.json model_type "llava_*" (or no config)   -> "llava": region_plugin.llava.{data,prune_io}
    config.json model_type "bunny-*"                   -> "bunny": region_plugin.bunny.{data,prune_io}
    anything else (a plain transformers LLM)           -> None: pruning's plain backend; not scorable
    --model-type may confirm or refine (phi-1.5 vs phi-2), never contradict config.json.
"""
from __future__ import annotations

import importlib
import importlib.util
from typing import Optional

from .model_config import codebase_of

_REEXPORTED = ("LoadedModel", "ScoringAdapter", "check_checkpoint_paths")


def __getattr__(name: str):
    """The adapter interface lives in `scoring.adapter_api` (so adapters never import this registry); it is
    re-exported lazily, so asking the registry a question never imports torch (plain safetensors pruning)."""
    if name in _REEXPORTED:
        from .scoring import adapter_api

        return getattr(adapter_api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

# Codebase -> (upstream package, environment that has it, how to create that environment).
ENVIRONMENTS = {"llava": ("llava", ".venv", "make venv"), "bunny": ("bunny", ".venv-bunny", "make venv-bunny")}


def codebase_for(config: Optional[dict], model_type: Optional[str] = None, flag: str = "--model-type") -> Optional[str]:
    """THE registry: "llava", "bunny" or None (a plain transformers LLM) for a checkpoint config (+ --model-type).

    config.json decides (`llava_*`, `bunny-*`); --model-type may only confirm or refine it, never
    turn one codebase into another (that loads random weights). No config at all means LLaVA.
    """
    found = codebase_of(config)
    if model_type in (None, ""):
        return found if (found or config) else "llava"
    if model_type == "llava":
        wanted = "llava"
    else:
        from .bunny.source import CONFIG_MODEL_TYPES, MODEL_TYPES

        if model_type not in MODEL_TYPES:
            raise ValueError(f"{flag} {model_type!r} is neither llava nor a Bunny model type ({', '.join(MODEL_TYPES)})")
        wanted = "bunny"
        stored = CONFIG_MODEL_TYPES.get(str((config or {}).get("model_type")))
        phi = {"phi-1.5", "phi-2"}
        if found == "bunny" and stored != model_type and not {stored, model_type} <= phi:
            raise ValueError(f"{flag} {model_type!r} does not match the checkpoint: its config.json model_type is "
                             f"{config.get('model_type')!r} (--model-type {stored}); leave {flag} out")
    if config and found != wanted:
        what = f"model_type {config.get('model_type')!r}" if config.get("model_type") else "no model_type"
        raise ValueError(f"{flag} {model_type!r} does not match the checkpoint: its config.json has {what}"
                         f"{' (a ' + found + ' checkpoint)' if found else ''}; leave {flag} out")
    return wanted


def require_environment(codebase: Optional[str], flag: str = "--model-path") -> None:
    """Refuse, before anything loads, a checkpoint whose codebase this Python environment cannot run."""
    if codebase is None:
        return
    package, venv, make = ENVIRONMENTS[codebase]
    fix = f"use `{venv}` (`{make}`)"
    if codebase == "bunny":
        from importlib.metadata import version

        major_minor = tuple(int(x) for x in version("transformers").split(".")[:2])
        if major_minor < (4, 38):
            raise ValueError(f"{flag} is a Bunny checkpoint, but this environment has transformers "
                             f"{version('transformers')} (Bunny needs >= 4.38): {fix}")
        from .bunny.source import BunnySourceError, import_bunny

        try:
            import_bunny("bunny.constants")
        except BunnySourceError as e:
            raise ValueError(f"{flag} is a Bunny checkpoint: {e}") from None
    elif importlib.util.find_spec(package) is None:
        raise ValueError(f"{flag} is a LLaVA checkpoint, but upstream LLaVA (llava-torch) is not installed in this "
                         f"environment: {fix}")


def prune_backend(codebase: Optional[str]):
    """The codebase's prune_io module (merge, verification, name checks); plain transformers when None."""
    name = f"region_plugin.{codebase}.prune_io" if codebase else "region_plugin.pruning.backends"
    return importlib.import_module(name)


def get_adapter(model_type: Optional[str] = None, config: Optional[dict] = None) -> "ScoringAdapter":
    """The adapter for `model_type`; a clear error if that codebase's adapter is missing.

    Without a model_type the checkpoint's own config.json decides (Bunny saves "bunny-llama",
    "bunny-phi", ...), so a Bunny checkpoint needs no --model-type; anything else is LLaVA.
    """
    codebase = codebase_for(config, model_type)
    if codebase is None:
        raise ValueError(f"--model-path is a plain language model (config.json model_type "
                         f"{(config or {}).get('model_type')!r}), not a LLaVA or Bunny LVLM: this tool runs an LVLM on "
                         "image-text data; pass the LVLM checkpoint")
    if codebase == "llava":
        from .llava.data import LlavaAdapter

        return LlavaAdapter()
    try:
        module = importlib.import_module("region_plugin.bunny.data")
        factory = getattr(module, "scoring_adapter")
    except (ImportError, AttributeError) as e:
        raise ValueError(f"--model-type {model_type!r} selects the Bunny adapter (region_plugin.bunny.data."
                         f"scoring_adapter), which is not available here: {e}. Leave --model-type out for "
                         "LLaVA") from None
    return factory(None if model_type in (None, "") else model_type, config)


def analysis_io(config: Optional[dict]):
    """The codebase's analysis glue module (`region_plugin.<codebase>.analysis_io`), after the environment check."""
    codebase = codebase_for(config) or "llava"  # a plain LLM is refused by get_adapter, which the tools ask first
    require_environment(codebase)
    try:
        return importlib.import_module(f"region_plugin.{codebase}.analysis_io")
    except ImportError as e:
        raise ValueError(f"the {codebase} analysis adapter (region_plugin.{codebase}.analysis_io) is not available "
                         f"here: {e}") from None
