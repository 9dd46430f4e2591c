"""Stack fixes that let upstream's unchanged recipes run on today's torch/transformers/DeepSpeed.

Applied to every run through our entry points, with or without `--region_layers`, because each one
breaks a flag or file that upstream's own `finetune_lora.sh` passes:
* `"auto"` ZeRO bucket sizes: transformers 4.37 fills `stage3_prefetch_bucket_size` with
  0.9 x hidden^2, a float, which DeepSpeed >= 0.16's pydantic config rejects (upstream's zero3.json).
* `--mm_projector_lr`: upstream builds four parameter groups; under LoRA some are empty. DeepSpeed
  >= 0.18 strips empty groups in place after the LR scheduler captured one `base_lr` per group, and
  torch >= 2.10 zips them strictly: the first `lr_scheduler.step()` dies. Empty groups go before
  DeepSpeed or the scheduler see the optimizer.
* resume: transformers 4.37 `torch.load`s `rng_state.pth` with torch's default `weights_only=True`,
  which refuses the numpy RNG state inside. Exactly the numpy types that file holds are allowed,
  for that one load; nothing else is unpickled more loosely.
* resume under DeepSpeed with LoRA: transformers 4.37 reloads the DeepSpeed checkpoint with
  `load_module_strict=True`, but saved it without the frozen weights (`exclude_frozen_parameters`),
  so every LoRA resume dies on "Missing key(s)". Newer transformers pass `load_module_strict=False`
  for peft models; we do the same on 4.37.
* `metrics` passed to `Trainer._save_checkpoint` (BunnyTrainer), which transformers >= 4.47 no longer accepts.
"""
from __future__ import annotations

import contextlib
import inspect
from typing import Iterator

import torch

# DeepSpeed types these as integers; JSON's `1e9` and transformers' `0.9 * h * h` arrive as floats.
INTEGER_ZERO_KEYS = ("reduce_bucket_size", "allgather_bucket_size", "stage3_prefetch_bucket_size",
                     "stage3_param_persistence_threshold", "stage3_model_persistence_threshold",
                     "stage3_max_live_parameters", "stage3_max_reuse_distance", "sub_group_size")


def integer_zero_sizes(config: dict) -> int:
    """Round float sizes in `config["zero_optimization"]` to int in place; return how many changed."""
    zero = config.get("zero_optimization") if isinstance(config, dict) else None
    if not isinstance(zero, dict):
        return 0
    changed = 0
    for key in INTEGER_ZERO_KEYS:
        value = zero.get(key)
        if isinstance(value, float):
            zero[key] = int(round(value))
            changed += 1
    return changed


@contextlib.contextmanager
def integer_zero_buckets() -> Iterator[None]:
    """While active, the Trainer's DeepSpeed config gets integer bucket sizes after filling `"auto"`."""
    try:
        from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig
    except ImportError:  # pragma: no cover - transformers without the DeepSpeed integration
        yield
        return
    original = HfTrainerDeepSpeedConfig.trainer_config_finalize

    def trainer_config_finalize(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        integer_zero_sizes(self.config)
        return result

    HfTrainerDeepSpeedConfig.trainer_config_finalize = trainer_config_finalize
    try:
        yield
    finally:
        HfTrainerDeepSpeedConfig.trainer_config_finalize = original


def drop_empty_param_groups(optimizer: torch.optim.Optimizer) -> int:
    """Remove parameter groups without parameters (in place); return how many were removed."""
    groups = optimizer.param_groups
    empty = [i for i, g in enumerate(groups) if not g["params"]]
    for i in reversed(empty):
        del groups[i]
    return len(empty)


def rng_state_safe_globals() -> list:
    """The numpy types `np.random.get_state()` pickles into a Trainer's `rng_state.pth`."""
    import numpy as np

    types = [np.ndarray, np.dtype, np.core.multiarray._reconstruct]
    types += [type(np.dtype(np.uint32))]  # numpy >= 1.25: dtypes.UInt32DType
    return types


@contextlib.contextmanager
def rng_state_loading() -> Iterator[None]:
    """Let a weights-only `torch.load` read numpy RNG state, for the duration of one load."""
    safe_globals = getattr(torch.serialization, "safe_globals", None)
    if safe_globals is None:  # torch < 2.5 defaulted to weights_only=False: nothing to allow
        yield
        return
    with safe_globals(rng_state_safe_globals()):
        yield


def save_checkpoint_shim(trainer_base: type) -> type:
    """A Trainer subclass that forwards `metrics` to `_save_checkpoint` only where transformers takes it.

    Placed between an upstream trainer and `transformers.Trainer` in the MRO, so upstream's
    `super()._save_checkpoint(model, trial, metrics)` reaches a signature that exists.
    """
    takes_metrics = "metrics" in inspect.signature(trainer_base._save_checkpoint).parameters

    class SaveCheckpointCompat(trainer_base):
        def _save_checkpoint(self, model, trial, metrics=None):
            if takes_metrics:
                return super()._save_checkpoint(model, trial, metrics=metrics)
            return super()._save_checkpoint(model, trial)

    return SaveCheckpointCompat


@contextlib.contextmanager
def peft_deepspeed_resume() -> Iterator[None]:
    """While active, a DeepSpeed resume of a peft model tolerates the frozen weights it never saved."""
    try:
        import transformers.trainer as hf_trainer
    except ImportError:  # pragma: no cover
        yield
        return
    original = getattr(hf_trainer, "deepspeed_load_checkpoint", None)
    if original is None or "load_module_strict" in inspect.signature(original).parameters:
        yield  # this transformers already handles it
        return

    def deepspeed_load_checkpoint(engine, checkpoint_path):
        if not hasattr(engine.module, "peft_config"):
            return original(engine, checkpoint_path)
        import glob

        if not glob.glob(f"{checkpoint_path}/global_step*"):
            raise ValueError(f"Can't find a valid DeepSpeed checkpoint at {checkpoint_path}")
        load_path, _ = engine.load_checkpoint(checkpoint_path, load_module_strict=False,
                                              load_optimizer_states=True, load_lr_scheduler_states=True)
        if load_path is None:
            raise ValueError(f"[deepspeed] failed to resume from checkpoint {checkpoint_path}")

    hf_trainer.deepspeed_load_checkpoint = deepspeed_load_checkpoint
    try:
        yield
    finally:
        hf_trainer.deepspeed_load_checkpoint = original
