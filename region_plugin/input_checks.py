"""Checks on input checkpoint dirs that run before any weights load and before any upstream loader runs.

Upstream loaders trust their inputs: they unpickle `non_lora_trainables.bin` with full Python,
follow `auto_map` into code shipped in the directory, and read whatever files are there. Our
tools route checkpoints through those loaders, so each input is checked here first, and every
refusal names the flag, the file and the fix (ValueError; the CLIs exit with status 2).
"""
from __future__ import annotations

import os
from typing import Iterable, Optional, Tuple

from .model_config import is_lora_dir, load_json_object, read_config

PICKLED = ("non_lora_trainables.bin", "mm_projector.bin")   # what upstream loaders torch.load without weights_only
CODE_CONFIGS = ("config.json", "tokenizer_config.json")      # where transformers finds `auto_map`
SHAPE_KEYS = ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads")


def check_regular_files(root: str, flag: str) -> None:
    """Refuse a FIFO, socket, device or broken link among a checkpoint's files (reading one hangs or fails)."""
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if not (os.path.isfile(path) or os.path.isdir(path)):
            kind = "a broken link" if os.path.islink(path) else "a special file (FIFO, socket or device)"
            raise ValueError(f"{flag} {root!r}: {name!r} is {kind}; a checkpoint holds only regular files: "
                             "remove it or pass another directory")


def check_dir(path: Optional[str], flag: str) -> None:
    if not path or not os.path.isdir(path):
        raise ValueError(f"{flag} {path!r} is not a directory")
    check_regular_files(path, flag)


def remote_code_files(path: str) -> Tuple[str, ...]:
    """The config files in `path` that point transformers at code shipped with the checkpoint (`auto_map`)."""
    found = []
    for name in CODE_CONFIGS:
        file = os.path.join(path, name)
        if os.path.isfile(file):
            try:
                data = load_json_object(file, name)
            except ValueError:
                continue  # reported by the config checks with a better message
            if data.get("auto_map"):
                found.append(name)
    return tuple(found)


def check_remote_code(dirs: Iterable[Tuple[str, Optional[str]]], trust: bool) -> None:
    """Code shipped in a checkpoint (auto_map) runs only when the user passed --trust-remote-code."""
    if trust:
        return
    for flag, path in dirs:
        if path and os.path.isdir(path):
            files = remote_code_files(path)
            if files:
                raise ValueError(f"{flag} {path!r}: {', '.join(files)} has an auto_map that points at Python code "
                                 "shipped in the directory; it is never run unless you pass --trust-remote-code "
                                 "(only do that for a checkpoint whose code you have read)")


def check_pickles(path: str, flag: str) -> None:
    """Files upstream loaders unpickle with full Python must load weights-only first (plain tensors)."""
    for name in PICKLED:
        file = os.path.join(path, name)
        if not os.path.isfile(file):
            continue
        import torch  # only when there is a pickle to check: plain safetensors pruning imports no torch

        try:
            data = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        except Exception as e:  # noqa: BLE001 - any failure means upstream's full unpickling is unsafe or broken
            raise ValueError(f"{flag} {path!r}: {name} is not a plain tensor file (a weights-only load refused it: "
                             f"{type(e).__name__}: {str(e).splitlines()[0][:200]}); upstream's loader would unpickle "
                             "it with full Python, so it is not loaded: re-save it with torch.save(state_dict)") from None
        if not (isinstance(data, dict) and all(isinstance(v, torch.Tensor) for v in data.values())):
            raise ValueError(f"{flag} {path!r}: {name} is not a {{name: tensor}} state dict; the file is damaged")


CHECKPOINT_N = ("--model-path {path!r} has adapter files but no config.json (an intermediate trainer checkpoint-N/ "
                "of an older run?): copy config.json and non_lora_trainables.bin from the run's final output dir "
                "into it, or pass that final dir")


def lvlm_hint(model_path: str) -> Optional[str]:
    """"llava"/"bunny" when a dir (or the run dir holding it, for checkpoint-N/) is an LVLM's, though it lacks config.json."""
    from .model_config import codebase_of

    parent = os.path.dirname(os.path.abspath(model_path))
    for d in (model_path, parent):
        file = os.path.join(d, "config.json")
        if os.path.isfile(file):
            try:
                found = codebase_of(load_json_object(file, "config.json"))
            except ValueError:
                found = None
            if found:
                return found
    if any(os.path.isfile(os.path.join(d, "non_lora_trainables.bin")) for d in (model_path, parent)):
        return "llava"  # only LLaVA-style trainers (LLaVA, Bunny) write this file
    return trained_by(model_path)


def trained_by(path: str) -> Optional[str]:
    """"llava"/"bunny" if the Trainer's training_args.bin in `path` holds that codebase's TrainingArguments class.

    The pickle is searched as bytes for the class's module name, never unpickled.
    """
    import zipfile

    file = os.path.join(path, "training_args.bin")
    if not os.path.isfile(file) or os.path.getsize(file) > (16 << 20):
        return None
    with open(file, "rb") as f:
        raw = f.read()
    try:
        with zipfile.ZipFile(file) as z:  # torch.save's zip format: the pickle is data.pkl inside
            raw += b"".join(z.read(n) for n in z.namelist() if n.endswith(".pkl"))
    except (zipfile.BadZipFile, OSError, RuntimeError):
        pass
    return next((cb for cb in ("llava", "bunny") if f"{cb}.train".encode() in raw), None)


def check_model_base(model_path: str, model_base: Optional[str], codebase: Optional[str]) -> None:
    """--model-base only with a LoRA / projector-only dir; the LoRA dir's files must be complete and match the base.

    An intermediate trainer checkpoint (`checkpoint-N/`) may lack config.json or the projector
    (`non_lora_trainables.bin`); upstream's loader would then build a plain LLM or fetch the
    projector from the Hub, so such a dir is refused with the fix.
    """
    lora = is_lora_dir(model_path)
    projector_only = os.path.isfile(os.path.join(model_path, "mm_projector.bin"))
    if model_base is None:
        if lora:
            raise ValueError(f"--model-path {model_path!r} is a LoRA adapter dir: pass --model-base BASE_LLM_DIR "
                             "(the LLM it was trained from)")
        return
    if not lora and not projector_only:
        raise ValueError(f"--model-base is only for a LoRA (adapter_config.json) or projector-only (mm_projector.bin) "
                         f"--model-path; {model_path!r} is a full checkpoint: drop --model-base")
    if not os.path.isfile(os.path.join(model_path, "config.json")):
        if lvlm_hint(model_path) is not None or projector_only:
            raise ValueError(CHECKPOINT_N.format(path=model_path))
        return  # a plain peft adapter: peft compares it with the base when it loads
    if lora and codebase is not None and not os.path.isfile(os.path.join(model_path, "non_lora_trainables.bin")):
        raise ValueError(f"--model-path {model_path!r} is a {codebase} LoRA dir without non_lora_trainables.bin (the "
                         "trained projector; intermediate checkpoint-N/ dirs of older runs lack it): copy it from the "
                         "run's final output dir, or pass that final dir")
    adapter = os.path.join(model_path, "adapter_model.safetensors")
    if lora and os.path.isfile(adapter):
        from .pruning.safetensors_io import read_header  # torch-free header check

        read_header(adapter)  # raises ValueError naming the file when damaged
    cfg = read_config(model_path, "--model-path")
    base = read_config(model_base, "--model-base")
    from .model_config import layer_count_from_config

    pairs = [("num_hidden_layers", layer_count_from_config(cfg, "--model-path config.json"),
              layer_count_from_config(base, "--model-base config.json"))]
    pairs += [(k, cfg.get(k), base.get(k)) for k in SHAPE_KEYS]
    for key, mine, theirs in pairs:
        if mine is not None and theirs is not None and mine != theirs:
            raise ValueError(f"--model-base {model_base!r} has {key}={theirs} but --model-path {model_path!r} was "
                             f"trained on {key}={mine}: the weights cannot match; pass the LLM it was trained from")


def check_checkpoint_inputs(model_path: str, model_base: Optional[str], codebase: Optional[str],
                            trust_remote_code: bool = False, others: Iterable[Tuple[str, Optional[str]]] = ()) -> None:
    """Everything above, in order, for one tool run: dirs, special files, code, pickles, base pairing, environment."""
    from .adapters import require_environment

    check_dir(model_path, "--model-path")
    if model_base is not None:
        check_dir(model_base, "--model-base")
    for flag, path in others:
        if path is not None:
            check_dir(path, flag)
    check_remote_code([("--model-path", model_path), ("--model-base", model_base), *others], trust_remote_code)
    check_model_base(model_path, model_base, codebase)
    require_environment(codebase)
    check_pickles(model_path, "--model-path")



def check_training_model_path(model_name_or_path: str, flag: str = "--model_name_or_path") -> None:
    """Upstream LLaVA's train.py builds an MPT model with trust_remote_code=True whenever the PATH contains "mpt".

    "attempt", "prompt" or "/home/mpt-user/" would run code shipped in the checkpoint and build the
    wrong class; refuse such a path unless its config.json really is an MPT model's.
    """
    if "mpt" not in (model_name_or_path or ""):
        return
    model_type = None
    if os.path.isdir(model_name_or_path):
        try:
            model_type = read_config(model_name_or_path, flag).get("model_type")
        except (OSError, ValueError):
            model_type = None
    if model_type in ("mpt", "llava_mpt"):
        return
    raise ValueError(f"{flag} {model_name_or_path!r} contains 'mpt', so upstream LLaVA's train.py would load it as an "
                     "MPT model with trust_remote_code=True (running code shipped in the directory), but its "
                     f"config.json model_type is {model_type!r}: pass a path without 'mpt' in it (e.g. a symlink "
                     "with another name)")
