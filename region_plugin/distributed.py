"""Launch helpers shared by the codebase adapters: make upstream's DeepSpeed/DDP path start anywhere."""
from __future__ import annotations

import os
import socket
from typing import List, Optional, Sequence

import torch

from .devices import default_device, has_accelerator


def _has_flag(argv: Sequence[str], flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in argv)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ddp_defaults(argv: Sequence[str]) -> List[str]:
    """`argv` plus `--ddp_find_unused_parameters False` for multi-rank DDP with gradient checkpointing.

    Upstream recipes turn on (reentrant) gradient checkpointing; under plain DDP the Trainer decides
    `find_unused_parameters` from `model.is_gradient_checkpointing`, which a peft-wrapped model does
    not expose, so DDP searches for unused parameters and dies with "Expected to mark a variable
    ready only once". The Trainer's own rule for an unwrapped model is the default here; an explicit
    user value always wins. DeepSpeed runs are untouched.
    """
    argv = list(argv)
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or _has_flag(argv, "--deepspeed"):
        return argv
    if _has_flag(argv, "--ddp_find_unused_parameters"):
        return argv
    from .training import flag_bool, log

    if flag_bool(argv, "--gradient_checkpointing"):
        log("DDP with --gradient_checkpointing: adding --ddp_find_unused_parameters False (as the Trainer "
            "does for an unwrapped model)")
        argv += ["--ddp_find_unused_parameters", "False"]
    return argv


def prepare_launch(argv: Sequence[str]) -> None:
    """Set up what upstream's Trainer expects from a launcher, before transformers/accelerate build state.

    * `--deepspeed` without a launcher (`python -m ...`): DeepSpeed would look for MPI; give it the
      single-process rendezvous `deepspeed`/`torchrun` would have set.
    * No accelerator: accelerate 0.2x calls `torch.cuda.set_device` under DeepSpeed (a CPU build has
      no `_cuda_setDevice`) unless told the device with ACCELERATE_TORCH_DEVICE; and the process
      group must be gloo (created here, before HF reads it, or Trainer sees one process).
    With an accelerator nothing but the rendezvous default is touched.
    """
    deepspeed = _has_flag(argv, "--deepspeed")
    if deepspeed and "RANK" not in os.environ:
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    if has_accelerator():
        return
    distributed = deepspeed or int(os.environ.get("WORLD_SIZE", "1")) > 1
    if not distributed:
        return
    os.environ.setdefault("ACCELERATE_TORCH_DEVICE", default_device())
    if torch.distributed.is_available() and not torch.distributed.is_initialized():
        if deepspeed:
            import deepspeed as ds

            ds.init_distributed(dist_backend="gloo")
        else:
            torch.distributed.init_process_group(backend="gloo")


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
