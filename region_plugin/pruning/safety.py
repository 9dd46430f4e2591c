"""region-prune's checks that need the codebase: inputs before any work, and the result before it is written.

Before: the registry's codebase for the checkpoint, the shared input checks (special files,
shipped code, pickles, --model-base pairing, environment), the device, the conversation
template, and whether `--data` can be scored at all. After: a pruned LLaVA/Bunny checkpoint
must still be an LVLM of the same codebase with its projector, or nothing is written.
"""
from __future__ import annotations

import os
from typing import Iterable, Optional

from ..adapters import codebase_for, get_adapter
from ..input_checks import check_checkpoint_inputs, lvlm_hint
from ..model_config import codebase_of, is_lora_dir
from .errors import PruneError

PROJECTOR = "mm_projector"


def input_codebase(model_path: str, config: dict) -> Optional[str]:
    """The registry's answer for --model-path; a LoRA dir without config.json counts as the LVLM it belongs to."""
    if is_lora_dir(model_path) and not os.path.isfile(os.path.join(model_path, "config.json")):
        hint = lvlm_hint(model_path)
        if hint is not None:
            return hint
    return codebase_for(config)


def check_inputs(args, config: dict) -> Optional[str]:
    """Everything region-prune can check before a weight is read; returns the codebase (None = plain LLM)."""
    try:
        codebase = input_codebase(args.model_path, config)
        check_checkpoint_inputs(args.model_path, args.model_base, codebase,
                                getattr(args, "trust_remote_code", False))
        if args.device is not None:  # None: each step picks the accelerator (and plain pruning imports no torch)
            from ..devices import check_device

            args.device = check_device(args.device)
        if codebase is not None and args.conv_mode is not None:
            get_adapter(None, config).check_model(args.model_path, args.model_base, args.conv_mode)
    except ValueError as e:
        raise PruneError(str(e)) from None
    if codebase is None and args.data and not (args.scores or args.layers):
        raise PruneError(f"--data: {args.model_path!r} is a plain language model (config.json model_type "
                         f"{config.get('model_type')!r}), and scoring layers on image-text data needs a LLaVA or Bunny "
                         "LVLM; rank its layers with --scores FILE or name them with --layers")
    return codebase


def check_lvlm(codebase: Optional[str], config: dict, tensor_names: Iterable[str], where: str) -> None:
    """A LLaVA/Bunny input must give a LLaVA/Bunny output: same codebase in config.json and a projector in the weights."""
    if codebase is None:
        return
    if codebase_of(config) != codebase:
        raise PruneError(f"{where} would be a {config.get('model_type')!r} model, not a {codebase} LVLM (its "
                         "config.json lost the multimodal model_type), so nothing was written; pass the LVLM's final "
                         "output dir (with its config.json) as --model-path")
    if not any(PROJECTOR in name for name in tensor_names):
        raise PruneError(f"{where} has no {PROJECTOR} weights: it would not be an LVLM, so nothing was written; pass "
                         "a merged LVLM checkpoint, or the LoRA dir with its non_lora_trainables.bin and --model-base")
