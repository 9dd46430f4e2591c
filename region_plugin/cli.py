"""`region-layers`: resolve a --region_layers spec for a checkpoint and print the explicit list.

    region-layers --model-path ./vicuna-7b 25%        ->  0,4,8,12,18,22,26,30
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from .model_config import read_num_layers
from .spec import EXAMPLES, RegionSpecError, format_layers, parse_region_layers, region_note


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="region-layers", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES)
    p.add_argument("spec", nargs="?", help="a --region_layers value (one starting with '-' may follow `--`)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model-path", help="checkpoint dir (or hub id) whose config.json gives the layer count")
    src.add_argument("--num-layers", type=int, help="the decoder layer count, when no checkpoint is at hand")
    args, extra = p.parse_known_args(argv)
    if args.spec is None and len(extra) == 1 and extra[0].startswith("-"):
        args.spec = extra[0]  # e.g. `-5%`: a (bad) spec, not an option; parse_region_layers says why
    elif extra:
        p.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.spec is None:
        p.error("the following arguments are required: spec")
    try:
        n = args.num_layers if args.num_layers is not None else read_num_layers(args.model_path, "--model-path")
        layers = parse_region_layers(args.spec, n)
        note = region_note(args.spec, layers, n)
        if note:
            print(f"note: {note}", file=sys.stderr)
        print(format_layers(layers))
    except (RegionSpecError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
