"""Codebase-agnostic glue between `--region_layers` and an upstream HF training script.

An adapter (region_plugin.llava, region_plugin.bunny) owns one `RegionRun` and wires three of its
methods into the upstream trainer: `lora_targets` replaces `find_all_linear_names`, the trainer
class from `trainer_class` calls `prepare` on the finished model and times training, and `finish`
writes the cost report after upstream has saved its checkpoint. `run_upstream` does that wiring
for a `train.py` module that looks both names up at call time, as LLaVA's and Bunny's do.
"""
from __future__ import annotations

import contextlib
import sys
import time
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

from .distributed import align_zero3_dtypes

from .layers import (DecoderStack, config_num_layers, find_decoder_stack, lora_module_layers,
                     parameter_breakdown, region_linear_names, restrict_full_tuning, trainable_layers)
from .model_config import read_num_layers
from .report import REPORT_NAME, build_report, format_report, is_main_process, write_json_atomic
from .spec import FLAG, RegionSpecError, format_layers, parse_region_layers


class RegionError(RuntimeError):
    """The region cannot be applied to this model or run; the message says what to change."""


def log(*args) -> None:
    if is_main_process():
        print("[region_plugin]", *args, flush=True)


def pop_flag(argv: Sequence[str], flag: str) -> Tuple[Optional[str], List[str]]:
    """Remove `flag VALUE` / `flag=VALUE` from argv; return (VALUE or None, remaining argv)."""
    rest, value, i = [], None, 0
    argv = list(argv)
    while i < len(argv):
        arg = argv[i]
        if arg == flag:
            if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                raise RegionSpecError(f"{flag} needs a value")
            value, i = argv[i + 1], i + 2
            continue
        if arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
        else:
            rest.append(arg)
        i += 1
    return value, rest


def argv_value(argv: Sequence[str], flag: str) -> Optional[str]:
    """The value of an upstream flag as HfArgumentParser would read it (last one wins)."""
    value = None
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
    return value


def _truthy(value: Optional[str]) -> bool:
    return value is not None and value.lower() in ("true", "1", "yes", "y")


def unwrap(model: nn.Module) -> nn.Module:
    """The transformers model under a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


class RegionRun:
    """One training run: the resolved region (None = upstream behaviour) and its bookkeeping."""

    def __init__(self, layers: Optional[List[int]], num_layers: Optional[int], spec: Optional[str] = None):
        self.layers = layers
        self.num_layers = num_layers
        self.spec = spec
        self.mode = "unknown"
        self.params = None
        self.train_seconds = 0.0
        self.started = time.time()
        self.lora_modules = 0

    # ---------------------------------------------------------------- before weights load
    @classmethod
    def from_spec(cls, spec: Optional[str], model_path: Optional[str], model_flag: str = "--model_name_or_path",
                  conflicts: Optional[dict] = None) -> "RegionRun":
        """Validate SPEC against `model_path`'s config.json (no weights) and log the resolved layers.

        `conflicts` maps upstream flag names to their parsed values; a true one (e.g.
        `--tune_mm_mlp_adapter True`, which freezes the LLM) cannot be combined with a region.
        """
        if spec is None:
            return cls(None, None)
        for flag, value in (conflicts or {}).items():
            if value:
                raise RegionSpecError(
                    f"{FLAG} {spec!r} selects LLM layers to train, but {flag} True freezes the LLM; "
                    f"drop one of the two flags (region training is the stage-2 finetune)")
        num_layers = read_num_layers(model_path, model_flag)
        layers = parse_region_layers(spec, num_layers)
        log(f"{FLAG} {spec} -> layers {format_layers(layers)} ({len(layers)} of {num_layers})")
        return cls(layers, num_layers, spec)

    @classmethod
    def from_argv(cls, argv: Sequence[str], model_flag: str = "--model_name_or_path",
                  conflicting_flags: Sequence[str] = ("--tune_mm_mlp_adapter", "--freeze_backbone"),
                  ) -> Tuple["RegionRun", List[str]]:
        """Pop and validate `--region_layers` from an upstream command line; return (run, the rest)."""
        spec, rest = pop_flag(argv, FLAG)
        conflicts = {flag: _truthy(argv_value(rest, flag)) for flag in conflicting_flags}
        model_path = argv_value(rest, model_flag) if spec is not None else None
        return cls.from_spec(spec, model_path, model_flag, conflicts), rest

    @property
    def active(self) -> bool:
        return self.layers is not None

    # ---------------------------------------------------------------- hooks into upstream
    def lora_targets(self, model: nn.Module) -> List[str]:
        """Full module names of the Linear layers inside region decoder layers (replaces suffix names)."""
        stack = self._stack(model)
        names = region_linear_names(model, self.layers, stack)
        if not names:
            raise RegionError(
                f"{FLAG} {format_layers(self.layers)}: no Linear modules found in decoder layers "
                f"{stack.prefix}.{{{format_layers(self.layers)}}} of {type(model).__name__}")
        return names

    def _stack(self, model: nn.Module) -> DecoderStack:
        base = unwrap(model)
        try:
            stack = find_decoder_stack(base, config_num_layers(base.config))
        except ValueError as e:
            raise RegionError(str(e)) from None
        if self.num_layers is not None and stack.num_layers != self.num_layers:
            raise RegionError(f"model has {stack.num_layers} decoder layers but config.json said {self.num_layers}")
        return stack

    def prepare(self, model: nn.Module, lora: bool) -> None:
        """Called on the finished model right before the Trainer is built: restrict, verify, record."""
        self.mode = "lora" if lora else "full"
        if self.active:
            base = unwrap(model)
            stack = self._stack(base)
            if lora:
                self._check_lora(model, stack)
            else:
                restrict_full_tuning(base, self.layers, stack)
                got = trainable_layers(base, stack)
                if got != self.layers:
                    raise RegionError(f"after freezing, trainable decoder layers are {got}, expected {self.layers}")
            base.config.region_layers = list(self.layers)
        self.params = parameter_breakdown(model)
        if self.num_layers is None:
            self.num_layers = config_num_layers(unwrap(model).config)
        p = self.params["llm"]
        extra = f", {self.lora_modules} LoRA modules" if self.active and lora else ""
        log(f"tuning={self.mode}{extra}; trainable LLM parameters {p['trainable']:,} of {p['total']:,} "
            f"({100 * p['trainable'] / max(p['total'], 1):.2f}%); projector trainable "
            f"{self.params['projector']['trainable']:,}")

    def _check_lora(self, model: nn.Module, stack: DecoderStack) -> None:
        found = lora_module_layers(model, stack)
        if not found:
            raise RegionError(f"{FLAG}: no LoRA module was attached; check --lora_enable and the model type")
        outside = sorted(n for n, idx in found.items() if idx is None or idx not in self.layers)
        if outside:
            raise RegionError(f"{FLAG}: LoRA landed outside the region: {outside[:5]}")
        self.lora_modules = len(found)
        for cfg in getattr(model, "peft_config", {}).values():
            # Recorded in adapter_config.json; consistent with the anchored target names on reload.
            cfg.layers_to_transform = list(self.layers)
            cfg.layers_pattern = stack.pattern

    def trainer_class(self, base_cls: type) -> type:
        """Subclass of the upstream Trainer that prepares the model and times `train()`."""
        run = self

        class RegionTrainer(base_cls):
            def __init__(self, *args, **kwargs):
                model = kwargs.get("model", args[0] if args else None)
                run.prepare(model, lora=hasattr(model, "peft_config"))
                targs = kwargs.get("args")
                if targs is not None and (targs.bf16 or targs.fp16):
                    n = align_zero3_dtypes(model, torch.bfloat16 if targs.bf16 else torch.float16)
                    if n:
                        log(f"cast {n} parameters created outside zero.Init to the ZeRO-3 training dtype")
                super().__init__(*args, **kwargs)

            def train(self, *args, **kwargs):
                t0 = time.perf_counter()
                try:
                    return super().train(*args, **kwargs)
                finally:
                    run.train_seconds += time.perf_counter() - t0

        RegionTrainer.__name__ = RegionTrainer.__qualname__ = f"Region{base_cls.__name__}"
        return RegionTrainer

    # ---------------------------------------------------------------- driving upstream's train()
    @contextlib.contextmanager
    def installed(self, upstream, trainer_attr: str):
        """Swap the module globals upstream's `train()` looks up at call time; restore afterwards."""
        saved = {"find_all_linear_names": upstream.find_all_linear_names,
                 trainer_attr: getattr(upstream, trainer_attr)}
        try:
            if self.active:
                upstream.find_all_linear_names = self.lora_targets
            setattr(upstream, trainer_attr, self.trainer_class(saved[trainer_attr]))
            yield
        finally:
            for name, value in saved.items():
                setattr(upstream, name, value)

    def run_upstream(self, upstream, trainer_attr: str, argv: Sequence[str], rest: Sequence[str],
                     **train_kwargs) -> int:
        """Run `upstream.train(**train_kwargs)` on the command line `rest` with the region installed.

        Returns the exit code (2 on a RegionError) and writes the cost report after upstream saved.
        """
        prog = sys.argv[0]
        sys.argv = [prog, *rest]  # upstream's HfArgumentParser reads sys.argv
        try:
            with self.installed(upstream, trainer_attr):
                upstream.train(**train_kwargs)
        except RegionError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        finally:
            sys.argv = [prog, *argv]
        self.finish(argv_value(rest, "--output_dir"))
        return 0

    # ---------------------------------------------------------------- after upstream saved
    def finish(self, output_dir: str) -> Optional[dict]:
        if self.params is None:
            return None
        report = build_report(self.layers, self.num_layers, self.params, self.train_seconds,
                              time.time() - self.started, self.mode, spec=self.spec,
                              lora_modules=self.lora_modules)
        if is_main_process():
            import os
            write_json_atomic(os.path.join(output_dir, REPORT_NAME), report)
            print(format_report(report), flush=True)
        return report
