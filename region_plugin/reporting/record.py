"""Put one upstream benchmark score into a run's benchmarks.json (the experiment scripts call this).

    python -m region_plugin.reporting.record --run RUN_DIR --name POPE --log pope.log --pattern "F1 score:"

Upstream eval scripts print their scores; this reads every number that follows PATTERN in LOG,
averages them (e.g. POPE's three categories), scales fractions in [0, 1] to percent, and merges
{NAME: value} into RUN_DIR/benchmarks.json (written atomically), which region-report reads.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import List, Optional

from ..report import write_json_atomic

NUMBER = r"\s*([-+]?\d+(?:\.\d+)?)\s*(%?)"


def scores_in(text: str, pattern: str) -> List[float]:
    """Every number after `pattern` (a literal string), in percent."""
    values = []
    for number, percent in re.findall(re.escape(pattern) + NUMBER, text):
        value = float(number)
        values.append(value if percent or value > 1 else 100 * value)
    return values


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m region_plugin.reporting.record", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="run directory (benchmarks.json goes here)")
    p.add_argument("--name", required=True, help="benchmark name in the report, e.g. POPE")
    p.add_argument("--log", required=True, help="what the upstream eval script printed")
    p.add_argument("--pattern", required=True, help="literal text before the score, e.g. 'Accuracy:'")
    args = p.parse_args(argv)
    if not os.path.isfile(args.log):
        print(f"error: --log {args.log!r} does not exist", file=sys.stderr)
        return 2
    with open(args.log, errors="replace") as f:
        values = scores_in(f.read(), args.pattern)
    if not values:
        print(f"error: --log {args.log!r} has no number after {args.pattern!r}; check the eval output", file=sys.stderr)
        return 2
    path = os.path.join(args.run, "benchmarks.json")
    data = {}
    if os.path.isfile(path):
        with open(path) as f:
            data = json.load(f)
    data[args.name] = sum(values) / len(values)
    os.makedirs(args.run, exist_ok=True)
    write_json_atomic(path, data)
    print(f"{args.name} = {data[args.name]:.2f} -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
