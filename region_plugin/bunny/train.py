"""Upstream Bunny training with `--region_layers`, without editing upstream files.

    python -m region_plugin.bunny.train <every bunny/train/train.py flag> --region_layers 25%
    deepspeed --module region_plugin.bunny.train ...   |   torchrun -m region_plugin.bunny.train ...

Runs upstream's own `bunny.train.train.train()`; with `--region_layers` it swaps two module
globals for the duration of the call (`find_all_linear_names` -> full names of the region's
Linear layers; `BunnyTrainer` -> a subclass that restricts/verifies/records the region and times
training) and writes `region_report.json` after upstream has saved. Same semantics, errors,
records and report as `region_plugin.llava.train`; the Bunny source is found as described in
`region_plugin.bunny.source`.
"""
from __future__ import annotations

import contextlib
import sys
from typing import List, Optional

from ..distributed import init_cpu_distributed
from ..spec import RegionSpecError
from ..training import RegionError, RegionRun, argv_value
from .source import BunnySourceError, check_model_type, import_bunny


@contextlib.contextmanager
def installed(upstream, run: RegionRun):
    """Swap upstream's module globals that `train()` looks up at call time; restore afterwards."""
    saved = {"find_all_linear_names": upstream.find_all_linear_names, "BunnyTrainer": upstream.BunnyTrainer}
    try:
        if run.active:
            upstream.find_all_linear_names = run.lora_targets
        upstream.BunnyTrainer = run.trainer_class(saved["BunnyTrainer"])
        yield
    finally:
        for name, value in saved.items():
            setattr(upstream, name, value)


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        run, rest = RegionRun.from_argv(argv)
        check_model_type(argv_value(rest, "--model_type"))
    except (RegionSpecError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    init_cpu_distributed(rest)
    try:  # heavy import only after the spec is known to be good
        upstream = import_bunny("bunny.train.train")
    except BunnySourceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    prog = sys.argv[0]
    sys.argv = [prog] + rest  # upstream's HfArgumentParser reads sys.argv
    try:
        with installed(upstream, run):
            upstream.train()
    except RegionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        sys.argv = [prog] + argv
    run.finish(argv_value(rest, "--output_dir"))
    return 0


def cli() -> None:
    """Console-script entry point (same as `python -m region_plugin.bunny.train`)."""
    sys.exit(main())


if __name__ == "__main__":
    cli()
