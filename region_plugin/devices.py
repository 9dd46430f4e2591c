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
