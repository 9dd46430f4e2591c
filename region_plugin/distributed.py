"""Launch helpers shared by the codebase adapters."""
from __future__ import annotations

import os
from typing import Optional, Sequence

import torch


def init_cpu_distributed(argv: Sequence[str]) -> None:
    """Under torchrun/deepspeed without CUDA, create the gloo process group before HF reads it.

    accelerate 0.2x otherwise assumes nccl under DeepSpeed; with CUDA present nothing is done.
    """
    if torch.cuda.is_available() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    if not any(a == "--deepspeed" or a.startswith("--deepspeed=") for a in argv):
        return
    if torch.distributed.is_initialized():
        return
    import deepspeed

    deepspeed.init_distributed(dist_backend="gloo")


def default_attn_implementation() -> Optional[str]:
    """flash_attention_2 where upstream's train_mem.py would use it (CUDA + flash-attn), else the HF default."""
    if torch.cuda.is_available():
        try:
            import flash_attn  # noqa: F401

            return "flash_attention_2"
        except ImportError:
            pass
    return None


def align_zero3_dtypes(model: torch.nn.Module, dtype: torch.dtype) -> int:
    """Cast float parameters that ZeRO-3's `zero.Init` never saw to the training dtype; return the count.

    Upstream LLaVA/Bunny build the projector after `from_pretrained`, i.e. outside `zero.Init`, so
    it stays fp32 while the LLM is bf16/fp16. DeepSpeed < 0.16 hid this by calling
    `module.bfloat16()` on the whole engine module; 0.16+ skips that cast for zero-init models and
    then asserts on the mixed-dtype trainable group. This restores the old behaviour for exactly
    those parameters. A no-op unless some parameters are ZeRO-3 partitioned (carry `ds_id`).
    """
    params = list(model.parameters())
    if not any(hasattr(p, "ds_id") for p in params):
        return 0
    cast = 0
    for p in params:
        if not hasattr(p, "ds_id") and p.is_floating_point() and p.dtype != dtype:
            p.data = p.data.to(dtype)
            cast += 1
    return cast
