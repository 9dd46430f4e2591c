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

import sys
from typing import List, Optional

from ..distributed import prepare_launch
from ..spec import RegionSpecError
from ..training import RegionRun, argv_value
from .source import BunnySourceError, check_model_type, import_bunny


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        run, rest = RegionRun.from_argv(argv)
        check_model_type(argv_value(rest, "--model_type"))
    except (RegionSpecError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    prepare_launch(rest)
    try:  # heavy import only after the spec is known to be good
        upstream = import_bunny("bunny.train.train")
    except BunnySourceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return run.run_upstream(upstream, "BunnyTrainer", argv, rest)


def cli() -> None:
    """Console-script entry point (same as `python -m region_plugin.bunny.train`)."""
    sys.exit(main())


if __name__ == "__main__":
    cli()
