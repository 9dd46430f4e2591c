"""Upstream Bunny training with `--region_layers`, without editing upstream files.

    python -m region_plugin.bunny.train <every bunny/train/train.py flag> --region_layers 25%
    deepspeed --module region_plugin.bunny.train ...   |   torchrun -m region_plugin.bunny.train ...

Runs upstream's own `bunny.train.train.train()`; with `--region_layers` it swaps two module
globals for the duration of the call (`find_all_linear_names` -> full names of the region's
Linear layers; `BunnyTrainer` -> a subclass that restricts/verifies/records the region and times
training) and writes `region_report.json` after upstream has saved. Same semantics, errors,
records and report as `region_plugin.llava.train`, including `--attn_implementation` (Bunny's
`train()` takes no such argument: it is handed to the LLM's `from_pretrained`). The Bunny source
is found as described in `region_plugin.bunny.source`.
"""
from __future__ import annotations

import contextlib
import sys
from typing import Iterator, List, Optional

from ..distributed import ddp_defaults, default_attn_implementation, prepare_launch
from ..spec import RegionSpecError
from ..training import RegionRun, argv_value, pop_flag, print_error, show_help, wants_help
from .source import BunnySourceError, check_model_type, import_bunny

EXTRA_HELP = ("--attn_implementation IMPL", "eager, sdpa or flash_attention_2 for the LLM (default: "
              "flash_attention_2 with CUDA + flash-attn, else transformers' default)")


@contextlib.contextmanager
def llm_attn_implementation(upstream, attn: Optional[str]) -> Iterator[None]:
    """While active, Bunny's `Bunny*ForCausalLM.from_pretrained` calls get `attn_implementation=attn`."""
    classes = [getattr(upstream, n) for n in dir(upstream) if n.startswith("Bunny") and n.endswith("ForCausalLM")]
    saved = {cls: cls.__dict__.get("from_pretrained") for cls in classes}
    if attn:
        for cls in classes:
            original = cls.from_pretrained.__func__

            def from_pretrained(klass, *args, _original=original, **kwargs):
                kwargs.setdefault("attn_implementation", attn)
                return _original(klass, *args, **kwargs)

            cls.from_pretrained = classmethod(from_pretrained)
    try:
        yield
    finally:
        for cls, value in saved.items():
            if value is None:
                cls.__dict__.get("from_pretrained") is not None and delattr(cls, "from_pretrained")
            else:
                cls.from_pretrained = value


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if wants_help(argv):
        try:
            return show_help(import_bunny("bunny.train.train"), [EXTRA_HELP])
        except BunnySourceError as e:
            print_error(e)
            return 2
    try:
        run, rest = RegionRun.from_argv(argv)
        attn, rest = pop_flag(rest, "--attn_implementation")
        check_model_type(argv_value(rest, "--model_type"))
    except (RegionSpecError, ValueError, OSError) as e:
        print_error(e)
        return 2
    prepare_launch(rest)
    rest = ddp_defaults(rest)
    try:  # heavy import only after the spec is known to be good
        upstream = import_bunny("bunny.train.train")
    except BunnySourceError as e:
        print_error(e)
        return 2
    with llm_attn_implementation(upstream, attn or default_attn_implementation()):
        return run.run_upstream(upstream, "BunnyTrainer", argv, rest)


def cli() -> None:
    """Console-script entry point (same as `python -m region_plugin.bunny.train`)."""
    sys.exit(main())


if __name__ == "__main__":
    cli()
