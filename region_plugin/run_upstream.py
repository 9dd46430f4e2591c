"""Run any upstream LLaVA/Bunny script or module on a chosen device, without editing upstream files.

    region-run-upstream [--device cpu|cuda|xpu|mps|...] llava.eval.model_vqa_loader --model-path ... ARGS
    region-run-upstream --device cpu scripts/merge_lora_weights.py --model-path ... ARGS   (a checkout's file)

Upstream's eval and merge scripts assume CUDA: `.cuda()`, `.to(device='cuda')` and loaders that
default to `device="cuda"`. Here every CUDA placement is redirected to `--device` (default: the
machine's accelerator, else the CPU) and upstream's `load_pretrained_model` is given that device.
Nothing else changes: the script's own argument parsing, prompts, decoding and output files run as
written. On a CUDA machine with `--device cuda` nothing is redirected at all.
"""
from __future__ import annotations

import argparse
import functools
import os
import runpy
import sys
from typing import List, Optional, Sequence

import torch

from .devices import default_device

# Upstream loader modules, by codebase; the Bunny one is imported through its source finder.
LOADERS = {"llava": "llava.model.builder", "bunny": "bunny.model.builder"}
CUDA = torch.device("cuda").type


def _redirect(device: str):
    def fix(value):
        if isinstance(value, str) and value.split(":")[0] == CUDA:
            return device
        if isinstance(value, torch.device) and value.type == CUDA:
            return torch.device(device)
        if isinstance(value, int) and not isinstance(value, bool):
            return device  # `.cuda(0)` / `.to(0)` style ordinals
        return value
    return fix


def redirect_cuda(device: str) -> None:
    """Make `.cuda()` and `.to('cuda'...)` of tensors and modules land on `device` (process-wide)."""
    fix = _redirect(device)
    tensor_to, module_to = torch.Tensor.to, torch.nn.Module.to

    def to(self, *args, **kwargs):
        args = tuple(fix(a) if i == 0 or not isinstance(a, int) else a for i, a in enumerate(args))
        if "device" in kwargs:
            kwargs["device"] = fix(kwargs["device"])
        return tensor_to(self, *args, **kwargs)

    def module_to_(self, *args, **kwargs):
        args = tuple(fix(a) if not isinstance(a, torch.dtype) else a for a in args)
        if "device" in kwargs:
            kwargs["device"] = fix(kwargs["device"])
        return module_to(self, *args, **kwargs)

    torch.Tensor.to = to
    torch.Tensor.cuda = lambda self, *a, **k: tensor_to(self, device)
    torch.nn.Module.to = module_to_
    torch.nn.Module.cuda = lambda self, *a, **k: module_to(self, device)


def pin_loader_device(codebase: str, device: str) -> bool:
    """Give upstream's `load_pretrained_model` our device (it defaults to "cuda"); False if not importable."""
    try:
        if codebase == "bunny":
            from .bunny.source import import_bunny

            builder = import_bunny(LOADERS["bunny"])
        else:
            import importlib

            builder = importlib.import_module(LOADERS[codebase])
    except Exception:  # noqa: BLE001 - that codebase is not installed here: nothing to pin
        return False
    original = builder.load_pretrained_model

    @functools.wraps(original)
    def load_pretrained_model(*args, **kwargs):
        kwargs["device"] = device
        if kwargs.get("device_map") not in (None, "auto"):
            kwargs["device_map"] = device
        return original(*args, **kwargs)

    builder.load_pretrained_model = load_pretrained_model
    return True


def codebase_of_target(target: str) -> Optional[str]:
    name = target.replace(os.sep, ".")
    for codebase in LOADERS:
        if name.startswith(codebase + ".") or f".{codebase}." in name:
            return codebase
    return None


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="region-run-upstream", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default=None, help="where the script's CUDA placements go (default: "
                        "the machine's accelerator, else cpu)")
    parser.add_argument("--codebase", choices=sorted(LOADERS), default=None,
                        help="whose loader to pin (default: from the module name, else both that import)")
    parser.add_argument("target", help="a module (llava.eval.model_vqa_loader) or a script file (.py)")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the script's own arguments, unchanged")
    ns = parser.parse_args(argv)
    device = ns.device or default_device()
    try:
        torch.empty(0, device=device)
    except (RuntimeError, ValueError) as e:
        print(f"error: --device {device!r} is not usable here ({e}); use one of cpu or the machine's "
              "accelerator", file=sys.stderr)
        return 2
    is_file = ns.target.endswith(".py")
    if is_file and not os.path.isfile(ns.target):
        print(f"error: script {ns.target!r} does not exist", file=sys.stderr)
        return 2
    if torch.device(device).type != CUDA:
        redirect_cuda(device)
    codebases = [ns.codebase] if ns.codebase else (
        [codebase_of_target(ns.target)] if codebase_of_target(ns.target) else list(LOADERS))
    for codebase in codebases:
        pin_loader_device(codebase, device)
    sys.argv = [ns.target, *ns.args]
    if is_file:
        sys.path.insert(0, os.path.dirname(os.path.abspath(ns.target)))
        runpy.run_path(ns.target, run_name="__main__")
    else:
        runpy.run_module(ns.target, run_name="__main__", alter_sys=True)
    return 0


def script_command(target: str, *args, device: Optional[str] = None) -> List[str]:
    """argv (after the interpreter) that runs `target ARGS` through this tool."""
    return ["-m", "region_plugin.run_upstream", *(["--device", device] if device else []), str(target),
            *map(str, args)]


def cli() -> None:
    """Console script `region-run-upstream`."""
    sys.exit(main())


if __name__ == "__main__":
    cli()
