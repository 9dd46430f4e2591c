"""Which device a tool runs on when the user names none: the machine's accelerator, else the CPU.

One answer for every tool (scoring, pruning, loaders), with no device literal: CUDA, ROCm, XPU or
MPS machines all report themselves through `torch.accelerator`.
"""
from __future__ import annotations

import torch


def default_device() -> str:
    """The current accelerator's device type when there is one, else torch's default device type."""
    acc = getattr(torch, "accelerator", None)
    if acc is not None and acc.is_available():
        return acc.current_accelerator().type
    return torch.get_default_device().type


def on_accelerator(device) -> bool:
    """Whether `device` is on the machine's accelerator (upstream loaders then keep float16)."""
    acc = getattr(torch, "accelerator", None)
    return acc is not None and acc.is_available() and torch.device(device).type == acc.current_accelerator().type


def check_device(device, flag: str = "--device") -> str:
    """`device` as a string if torch knows it AND this machine has it; else ValueError naming the flag.

    Checked before any work, so `--device banana` or an accelerator the machine lacks fails in a
    second instead of after a merge as a "verification failed".
    """
    if device is None:
        return default_device()
    try:
        dev = torch.device(str(device))
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(f"{flag} {device!r} is not a torch device; use e.g. {default_device()!r} "
                         "(or leave it out: the accelerator when there is one)") from None
    backend = getattr(torch, dev.type, None)
    available = getattr(backend, "is_available", None)
    if available is None or not available():
        raise ValueError(f"{flag} {device!r}: this machine has no {dev.type} device; use {default_device()!r} "
                         "(or leave it out)")
    count = getattr(backend, "device_count", None)
    if dev.index is not None and count is not None and dev.index >= count():
        raise ValueError(f"{flag} {device!r}: this machine has {count()} {dev.type} device(s); use an index below that")
    return str(device)


def has_accelerator() -> bool:
    """Whether torch sees any accelerator (CUDA, ROCm, XPU, MPS, ...)."""
    acc = getattr(torch, "accelerator", None)
    return bool(acc is not None and acc.is_available()) or torch.cuda.is_available()
