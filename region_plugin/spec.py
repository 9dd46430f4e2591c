"""Parse `--region_layers SPEC` into a sorted list of decoder-layer indices.

The spec is validated against the model's layer count before any weights load, so a typo
costs a second, not a model load. Forms (see README "Choosing the region"):

    0,4,8,12,18,22,26,30     explicit indices
    0-3,28-31                inclusive ranges, mixable with indices
    uniform:8                8 layers spread evenly over [0, N-2] (the paper's lists)
    25%                      uniform:round(0.25 * N)
    top:8:bi:scores.json     the 8 highest-scoring layers of metric `bi` in a scores file
"""
from __future__ import annotations

import json
import math
import os
import re
from typing import List

from .model_config import MAX_LAYERS

FLAG = "--region_layers"
EXAMPLES = "e.g. --region_layers 0,4,8,12,18,22,26,30 | 0-3,28-31 | uniform:8 | 25% | top:8:bi:scores.json"


class RegionSpecError(ValueError):
    """A region spec that cannot be used; the message names the flag, value, N and a fix."""


# Digits are ASCII only ("٣" or "３" are not layer numbers); more than 9 digits is never a layer.
NUMBER = r"[0-9]{1,9}"


def _fail(spec: str, num_layers: int, why: str, flag: str = FLAG) -> RegionSpecError:
    examples = EXAMPLES if flag == FLAG else f"e.g. {flag} 5,9 | 4-6"
    return RegionSpecError(
        f"{flag} {spec!r}: {why} (model has num_hidden_layers={num_layers}, valid layers "
        f"0-{num_layers - 1}); {examples}"
    )


def uniform_layers(k: int, num_layers: int) -> List[int]:
    """K layers spread over [0, N-2]; lower half of positions floored, upper half ceiled.

    The rule is this tool's, not the paper's: the paper gives lists for N=32 only, and this rule
    reproduces its 4- and 8-layer lists (K=4: 0,10,20,30; K=8: 0,4,8,12,18,22,26,30). It ends at N-2
    because the paper found N-2 and N-1 equivalent for its 4-layer region. For K=1 and 2 it does
    NOT give the paper's regions ([31] and [0, 31], chosen by BI): see `region_note`.
    K=N means every layer.
    """
    if not 1 <= k <= num_layers:
        raise ValueError(f"K={k} must be in 1..{num_layers}")
    if k == num_layers:
        return list(range(num_layers))
    if k == 1:
        return [0]
    last = max(num_layers - 2, 0)
    step = last / (k - 1)
    out = []
    for j in range(k):
        pos = j * step
        # Round with a tolerance so that exact grid points (e.g. 30/5*5) stay exact.
        out.append(math.floor(pos + 1e-9) if j < k / 2 else math.ceil(pos - 1e-9))
    return out


def parse_layer_list(spec: str, num_layers: int, flag: str = FLAG) -> List[int]:
    """`0,4,8` / `0-3,28-31` -> sorted unique indices checked against N; THE parser of explicit layer lists.

    Used for `--region_layers` and region-prune's `--layers`; errors name `flag`.
    """
    _check_num_layers(num_layers)
    layers: List[int] = []
    seen = set()
    for part in (spec or "").split(","):
        part = part.strip()
        if not part:
            raise _fail(spec, num_layers, "empty entry between commas" if "," in (spec or "") else "the value is empty",
                        flag)
        if part.startswith("-"):
            raise _fail(spec, num_layers, f"negative layer {part!r}", flag)
        m = re.fullmatch(f"({NUMBER})(?:-({NUMBER}))?", part)
        if not m:
            raise _fail(spec, num_layers, f"cannot read {part!r} as a layer index or range a-b", flag)
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise _fail(spec, num_layers, f"range {part!r} runs backwards", flag)
        for i in range(lo, hi + 1):
            if i >= num_layers:
                raise _fail(spec, num_layers, f"layer {i} is out of range", flag)
            if i in seen:
                raise _fail(spec, num_layers, f"layer {i} is listed twice", flag)
            seen.add(i)
            layers.append(i)
    return sorted(layers)


def _check_num_layers(num_layers: int) -> None:
    if not isinstance(num_layers, int) or isinstance(num_layers, bool) or not 1 <= num_layers <= MAX_LAYERS:
        raise ValueError(f"num_layers must be a whole number in 1..{MAX_LAYERS}, got {num_layers!r}")


def _parse_k(spec: str, text: str, num_layers: int) -> int:
    if not re.fullmatch(NUMBER, text.strip()):
        raise _fail(spec, num_layers, f"K={text!r} is not a whole number (ASCII digits)")
    k = int(text)
    if k < 1:
        raise _fail(spec, num_layers, "K must be at least 1")
    if k > num_layers:
        raise _fail(spec, num_layers, f"K={k} is more than the {num_layers} layers")
    return k


def _parse_percent(spec: str, num_layers: int) -> List[int]:
    text = spec[:-1].strip()
    if text.startswith("-"):
        raise _fail(spec, num_layers, "the percentage must be in (0, 100]")
    if not re.fullmatch(r"[0-9]{1,3}(?:\.[0-9]{1,6})?", text):
        raise _fail(spec, num_layers, f"{text!r} is not a percentage (ASCII digits, e.g. 25 or 12.5)")
    pct = float(text)
    if not 0 < pct <= 100:
        raise _fail(spec, num_layers, "the percentage must be in (0, 100]")
    k = math.floor(pct / 100 * num_layers + 0.5)
    if k < 1:
        raise _fail(spec, num_layers, f"{pct}% of {num_layers} layers rounds to 0 layers")
    return uniform_layers(k, num_layers)


def load_layer_scores(path: str, metric: str, num_layers: int | None = None) -> List[float]:
    """Per-layer scores of one metric from `scores.json` (region-score) or a plain {metric: [...]}."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"scores file {path!r} does not exist; create it with region-score --out DIR")
    with open(path) as f:
        try:
            data = json.load(f)
        except (UnicodeDecodeError, ValueError) as e:  # JSONDecodeError, or a number past Python's digit limit
            raise ValueError(f"scores file {path!r} is not valid JSON scores: {str(e)[:200]}") from None
    metrics = data.get("metrics", data) if isinstance(data, dict) else None
    if not isinstance(metrics, dict) or metric not in metrics:
        have = sorted(metrics) if isinstance(metrics, dict) else []
        raise ValueError(f"scores file {path!r} has no metric {metric!r}; it has {have}")
    scores = metrics[metric]
    if not isinstance(scores, list) or not all(isinstance(s, (int, float)) and not isinstance(s, bool) for s in scores):
        raise ValueError(f"scores file {path!r}: metric {metric!r} must be a list of numbers, one per layer")
    if not all(math.isfinite(s) for s in scores):
        raise ValueError(f"scores file {path!r}: metric {metric!r} contains NaN or Infinity; re-score the model")
    if num_layers is not None and len(scores) != num_layers:
        raise ValueError(
            f"scores file {path!r}: metric {metric!r} has {len(scores)} values but the model has "
            f"num_hidden_layers={num_layers}; score this model with region-score"
        )
    return [float(s) for s in scores]


def top_k_layers(scores: List[float], k: int) -> List[int]:
    """The K highest-scoring layers (ties broken toward the lower index), sorted."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    return sorted(order[:k])


def _parse_top(spec: str, num_layers: int) -> List[int]:
    parts = spec.split(":", 3)
    if len(parts) != 4 or not parts[2] or not parts[3]:
        raise _fail(spec, num_layers, "the importance form is top:K:METRIC:PATH/TO/scores.json")
    k = _parse_k(spec, parts[1], num_layers)
    try:
        scores = load_layer_scores(parts[3], parts[2], num_layers)
    except (OSError, ValueError) as e:
        raise _fail(spec, num_layers, str(e)) from None
    return top_k_layers(scores, k)


def parse_region_layers(spec: str, num_layers: int) -> List[int]:
    """Resolve SPEC for a model with `num_layers` decoder layers; raise RegionSpecError if unusable."""
    _check_num_layers(num_layers)
    spec = (spec or "").strip()
    if not spec:
        raise _fail(spec, num_layers, "the value is empty")
    if spec.startswith("uniform:"):
        return uniform_layers(_parse_k(spec, spec[len("uniform:"):], num_layers), num_layers)
    if spec.startswith("top:"):
        return _parse_top(spec, num_layers)
    if spec.endswith("%"):
        return _parse_percent(spec, num_layers)
    return parse_layer_list(spec, num_layers)


def format_layers(layers: List[int]) -> str:
    """The canonical explicit form, accepted back by parse_region_layers."""
    return ",".join(str(i) for i in layers)


# The paper's 1- and 2-layer regions (N=32) were chosen by BI, not spread: the first and last layers.
PAPER_SMALL_REGIONS = {1: "[N-1] ([31] for 32 layers)", 2: "[0, N-1] ([0, 31] for 32 layers)"}


def region_note(spec: str, layers: List[int], num_layers: int) -> str | None:
    """A note for the resolved-region log line when a spread spec differs from the paper's preset.

    `uniform:1`, `uniform:2` and percentages that round to 1 or 2 layers resolve by this tool's
    rule ([0] and [0, N-2]); the paper's 1- and 2-layer regions are the last layer and the first
    plus last. None when nothing needs saying.
    """
    text = (spec or "").strip()
    if not (text.startswith("uniform:") or text.endswith("%")) or len(layers) not in PAPER_SMALL_REGIONS:
        return None
    paper = [num_layers - 1] if len(layers) == 1 else [0, num_layers - 1]
    return (f"{text} -> {format_layers(layers)} by this tool's spread rule; the paper's {len(layers)}-layer region "
            f"is {PAPER_SMALL_REGIONS[len(layers)]}, chosen by BI: pass --region_layers {format_layers(paper)} "
            "to reproduce it")
