"""Codebase-agnostic glue between `--region_layers` and an upstream HF training script.

An adapter (region_plugin.llava, region_plugin.bunny) owns one `RegionRun` and wires three of its
methods into the upstream trainer: `lora_targets` replaces `find_all_linear_names`, the trainer
class from `trainer_class` calls `prepare` on the finished model and times training, and `finish`
writes the cost report after upstream has saved its checkpoint. `run_upstream` does that wiring
for a `train.py` module that looks both names up at call time, as LLaVA's and Bunny's do.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import time
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

from .checkpoints import (complete_checkpoint, last_checkpoint, non_lora_trainables, recorded_region,
                          restore_non_lora_trainables)
from .compat import (drop_empty_param_groups, integer_zero_buckets, peft_deepspeed_resume, rng_state_loading,
                     save_checkpoint_shim)
from .distributed import align_zero3_dtypes

from .layers import (DecoderStack, config_num_layers, find_decoder_stack, lora_module_layers,
                     parameter_breakdown, region_linear_names, restrict_full_tuning, trainable_layers)
from .model_config import read_num_layers
from .report import REPORT_NAME, build_report, format_report, is_main_process, write_json_atomic
from .spec import FLAG, RegionSpecError, format_layers, parse_region_layers, region_note


def seed_before_model_build(argv: Sequence[str]) -> None:
    """Apply `--seed` (default 42, as TrainingArguments) before upstream builds the model.

    Upstream creates the projector and the LoRA weights before the Trainer calls `set_seed`, so
    without this two runs of the same command (or a run and its resumed twin, or ZeRO-2 vs ZeRO-3)
    start from different random LoRA/projector weights.
    """
    from transformers import set_seed

    value = argv_value(argv, "--seed")
    try:
        seed = int(value) if value is not None else 42
    except ValueError:
        raise RegionSpecError(f"--seed {value!r}: expected an integer") from None
    set_seed(seed)


class RegionError(RuntimeError):
    """The region cannot be applied to this model or run; the message says what to change."""


def log(*args) -> None:
    if is_main_process():
        print("[region_plugin]", *args, flush=True)


def print_error(error: Exception) -> None:
    """One `error:` line for the whole job (rank 0 only), as the exit-2 contract promises."""
    if is_main_process():
        print(f"error: {error}", file=sys.stderr, flush=True)


REGION_HELP = (f"{FLAG} SPEC", "train only these LLM decoder layers (the visual region): '0,4,8,12,18,22,26,30', "
               "'0-3,28-31', 'uniform:8', '25%', or 'top:K:METRIC:scores.json' (region-score); checked "
               "against --model_name_or_path's config.json before any weights load")


def wants_help(argv: Sequence[str]) -> bool:
    return any(a in ("-h", "--help") for a in argv)


def show_help(upstream, extra: Sequence[Tuple[str, str]] = ()) -> int:
    """The plugin's own flags, then upstream's `--help` exactly as its HfArgumentParser prints it."""
    print("region_plugin options (read before upstream's parser sees the command line):")
    for flag, text in [REGION_HELP, *extra]:
        print(f"  {flag}\n      {text}")
    print(f"\nupstream {upstream.__name__} ({upstream.__file__}) options:", flush=True)
    real = sys.argv
    sys.argv = [real[0] if real else "train", "--help"]
    try:
        upstream.train()
    except SystemExit as e:
        return int(e.code or 0)
    finally:
        sys.argv = real
    return 0


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


TRUE_WORDS, FALSE_WORDS = ("yes", "true", "t", "y", "1"), ("no", "false", "f", "n", "0")


def flag_bool(argv: Sequence[str], flag: str) -> bool:
    """A boolean upstream flag as HfArgumentParser reads it: bare `--flag` is True, last one wins."""
    value = False
    for i, arg in enumerate(argv):
        if arg.startswith(flag + "="):
            word = arg.split("=", 1)[1]
        elif arg == flag:
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            word = "true" if nxt is None or nxt.startswith("--") else nxt
        else:
            continue
        if word.lower() not in TRUE_WORDS + FALSE_WORDS:
            raise RegionSpecError(f"{flag} {word!r}: expected True or False")
        value = word.lower() in TRUE_WORDS
    return value


def check_report_to(argv: Sequence[str]) -> None:
    """`--report_to wandb` (upstream's LLaVA recipe) needs wandb; say so before any weights load."""
    value = argv_value(argv, "--report_to")
    for name in (value or "").replace(",", " ").split():
        if name not in ("none", "all") and importlib.util.find_spec(name) is None:
            raise RegionSpecError(f"--report_to {value}: the {name!r} package is not installed in this "
                                  f"environment; `pip install {name}` or pass --report_to none")


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
        self.command: Optional[List[str]] = None  # our own argv (for the report), set by run_upstream

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
        note = region_note(spec, layers, num_layers)
        if note:
            log(f"note: {note}")
        return cls(layers, num_layers, spec)

    @classmethod
    def from_argv(cls, argv: Sequence[str], model_flag: str = "--model_name_or_path",
                  conflicting_flags: Sequence[str] = ("--tune_mm_mlp_adapter", "--freeze_backbone"),
                  ) -> Tuple["RegionRun", List[str]]:
        """Pop and validate `--region_layers` from an upstream command line; return (run, the rest).

        Also refused here, before any weights load: a resume (upstream resumes whenever
        `--output_dir` holds `checkpoint-*`) whose checkpoint was trained with another region.
        """
        spec, rest = pop_flag(argv, FLAG)
        conflicts = {flag: flag_bool(rest, flag) for flag in conflicting_flags}
        check_report_to(rest)
        model_path = argv_value(rest, model_flag) if spec is not None else None
        run = cls.from_spec(spec, model_path, model_flag, conflicts)
        run.check_resume(argv_value(rest, "--output_dir"))
        return run, rest

    def check_resume(self, output_dir: Optional[str]) -> None:
        """Refuse to resume a checkpoint trained on another region: its adapter and optimizer would not fit."""
        checkpoint = last_checkpoint(output_dir)
        if checkpoint is None:
            return
        trained = recorded_region(checkpoint)
        if trained != self.layers:
            def name(layers):
                return f"layers {format_layers(layers)}" if layers else "all layers"

            raise RegionSpecError(
                f"--output_dir {output_dir!r} holds {os.path.basename(checkpoint)}, trained on {name(trained)}, "
                f"and upstream resumes from it; this run asks for {name(self.layers)}"
                f"{f' ({FLAG} {self.spec})' if self.spec else ''}. Resume with the same {FLAG}, or choose a "
                "new --output_dir")
        log(f"resuming from {checkpoint} ({'layers ' + format_layers(trained) if trained else 'all layers'})")

    @classmethod
    def for_fork(cls, spec: Optional[str], model_path: Optional[str], output_dir: Optional[str],
                 conflicts: Optional[dict] = None) -> Optional["RegionRun"]:
        """What a patched upstream `train.py` calls (patches/): None without a spec, else a checked run.

        A bad spec or a resume with another region exits 2 with one line, as the plugin's entry point
        does; the stack fixes of `compat` stay on for the rest of this (training) process.
        """
        if spec is None:
            return None
        try:
            run = cls.from_spec(spec, model_path, conflicts=conflicts)
            run.check_resume(output_dir)
        except (RegionSpecError, ValueError, OSError) as e:
            print_error(e)
            sys.exit(2)
        run._fixes = contextlib.ExitStack()
        run._fixes.enter_context(integer_zero_buckets())
        run._fixes.enter_context(peft_deepspeed_resume())
        return run

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
        elif hasattr(unwrap(model).config, "region_layers"):  # a base that was region-trained before
            del unwrap(model).config.region_layers
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
        """Subclass of the upstream Trainer: prepares the model, times `train()`, and makes checkpoints whole.

        `compat.save_checkpoint_shim` sits between `base_cls` and `transformers.Trainer` in the MRO.
        """
        run = self
        hf_trainer = next(c for c in base_cls.__mro__ if c.__name__ == "Trainer" and c.__module__.startswith("transformers"))

        class RegionTrainer(base_cls, save_checkpoint_shim(hf_trainer)):
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

            def create_optimizer(self):
                optimizer = super().create_optimizer()
                dropped = drop_empty_param_groups(self.optimizer)
                if dropped:
                    log(f"dropped {dropped} empty optimizer parameter group(s) before DeepSpeed/the LR scheduler see them")
                return optimizer

            def _load_rng_state(self, checkpoint):
                with rng_state_loading():
                    return super()._load_rng_state(checkpoint)

            def _save_checkpoint(self, model, trial, metrics=None):
                super()._save_checkpoint(model, trial, metrics=metrics)
                if not hasattr(self.model, "peft_config") or getattr(self.args, "tune_mm_mlp_adapter", False):
                    return  # full tuning saves config.json itself; stage 1 saves mm_projector.bin
                state = non_lora_trainables(self.model)  # collective under ZeRO-3
                if self.args.should_save:
                    folder = os.path.join(self._get_output_dir(trial=trial), f"checkpoint-{self.state.global_step}")
                    complete_checkpoint(folder, unwrap(self.model).config, state)

            def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
                super()._load_from_checkpoint(resume_from_checkpoint, model)
                if hasattr(self.model, "peft_config"):  # the adapter is back; the projector is not
                    names = restore_non_lora_trainables(model or self.model, resume_from_checkpoint)
                    if names:
                        log(f"restored {len(names)} non-LoRA trainable tensors from {resume_from_checkpoint}")

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
            with integer_zero_buckets(), peft_deepspeed_resume():
                yield
        finally:
            for name, value in saved.items():
                setattr(upstream, name, value)

    def run_upstream(self, upstream, trainer_attr: str, argv: Sequence[str], rest: Sequence[str],
                     **train_kwargs) -> int:
        """Run `upstream.train(**train_kwargs)` on the command line `rest` with the region installed.

        Returns the exit code (2 on a RegionError) and writes the cost report after upstream saved.
        A run in which upstream never built its Trainer through our hook (upstream changed) fails:
        the region would silently not apply.
        """
        log(f"upstream {upstream.__name__}: {upstream.__file__}")
        real_argv = sys.argv
        self.command = [os.path.basename(real_argv[0]) if real_argv else "train", *argv]
        sys.argv = [real_argv[0] if real_argv else "train", *rest]  # upstream's HfArgumentParser reads sys.argv
        seed_before_model_build(rest)
        try:
            with self.installed(upstream, trainer_attr):
                upstream.train(**train_kwargs)
            if self.params is None:
                raise RegionError(f"upstream {upstream.__name__}.train() finished without building its Trainer "
                                  f"through {trainer_attr}: the plugin's hooks never ran, so "
                                  f"{'the region was not applied' if self.active else 'nothing was recorded'} "
                                  "(upstream code changed?)")
        except RegionError as e:
            print_error(e)
            return 2
        finally:
            sys.argv = real_argv
        self.finish(argv_value(rest, "--output_dir"))
        return 0

    # ---------------------------------------------------------------- after upstream saved
    def finish(self, output_dir: str) -> Optional[dict]:
        if self.params is None:
            return None
        report = build_report(self.layers, self.num_layers, self.params, self.train_seconds,
                              time.time() - self.started, self.mode, spec=self.spec,
                              lora_modules=self.lora_modules, command=self.command or list(sys.argv))
        if is_main_process():
            write_json_atomic(os.path.join(output_dir, REPORT_NAME), report)
            print(format_report(report), flush=True)
        return report
