"""Upstream LLaVA training with `--region_layers`, without editing upstream files.

    python -m region_plugin.llava.train <every llava.train.train flag> --region_layers 25%
    deepspeed --module region_plugin.llava.train ...   |   torchrun -m region_plugin.llava.train ...

Runs upstream's own `llava.train.train.train()`; with `--region_layers` it swaps two module
globals for the duration of the call (`find_all_linear_names` -> full names of the region's
Linear layers; `LLaVATrainer` -> a subclass that restricts/verifies/records the region and times
training) and writes `region_report.json` after upstream has saved. Extra flag:
`--attn_implementation` (default: flash_attention_2 when CUDA + flash-attn, as train_mem.py).
"""
from __future__ import annotations

import sys
from typing import List, Optional

from ..distributed import ddp_defaults, default_attn_implementation, prepare_launch
from ..spec import RegionSpecError
from ..input_checks import check_training_model_path
from ..training import RegionRun, argv_value, pop_flag, print_error, show_help, wants_help

EXTRA_HELP = ("--attn_implementation IMPL", "eager, sdpa or flash_attention_2 for the LLM (default: "
              "flash_attention_2 with CUDA + flash-attn, as upstream's train_mem.py; else transformers' default)")


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if wants_help(argv):
        import llava.train.train as upstream

        return show_help(upstream, [EXTRA_HELP])
    try:
        run, rest = RegionRun.from_argv(argv)
        attn, rest = pop_flag(rest, "--attn_implementation")
        check_training_model_path(argv_value(rest, "--model_name_or_path"))
    except (RegionSpecError, ValueError, OSError) as e:
        print_error(e)
        return 2
    prepare_launch(rest)
    rest = ddp_defaults(rest)
    import llava.train.train as upstream  # heavy import only after the spec is known to be good

    return run.run_upstream(upstream, "LLaVATrainer", argv, rest,
                            attn_implementation=attn or default_attn_implementation())


def cli() -> None:
    """Console script `region-llava-train` (same as `python -m region_plugin.llava.train`)."""
    sys.exit(main())


if __name__ == "__main__":
    cli()
