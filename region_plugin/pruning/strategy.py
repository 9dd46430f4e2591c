"""How region-prune turns scores into layers: single layers or one contiguous block (Gromov et al.).

Two readings of the paper's Sec 6, both offered:

* `layer` (default): the K candidate layers with the lowest per-layer score (n=1 angular
  distance, averaged over all tokens by default). The only reading that works for K=4 with a
  region layer every 4 layers, and this tool's behaviour before the choice existed.
* `block`: Gromov et al.'s rule, which the paper cites: the one block of n=K layers l..l+K-1 whose
  input x_l and output x_{l+K} are closest (lowest angular distance, at the last token by
  default). In region mode the block may not contain a region layer. `--mode global --strategy
  block` is Fig 4's baseline ("fully trained model, angular distance strategy").

An n-block score of layer l compares x_l with x_{l+n}; for l > N-n the block is cut short at the
last layer, so those entries are never used, and a scores file must say which n it holds.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import List, Optional, Sequence

from .choose import lowest_scoring
from .errors import PruneError

STRATEGIES = ("layer", "block")
TOKENS = ("last", "all")
DEFAULT_STRATEGY = "layer"
DEFAULT_TOKEN = {"layer": "all", "block": "last"}  # today's per-layer rule; Gromov's last token
ANGULAR_SERIES = {"all": "angular", "last": "angular_last"}  # --token -> scores.json series
SCORABLE_SERIES = ("angular_last",)  # scored now from --data by scoring "angular" (its extra series)


def add_arguments(p) -> None:
    """--strategy, --token and --seed on region-prune's parser."""
    p.add_argument("--strategy", choices=STRATEGIES, default=DEFAULT_STRATEGY,
                   help="layer (default): the K lowest single layers (n=1); block: the one block of K "
                        "consecutive layers with the lowest angular distance between its input and output "
                        "(Gromov et al.; n=K)")
    p.add_argument("--token", choices=TOKENS, default=None,
                   help="angular distance at the last token or averaged over all tokens "
                        "(default: all for --strategy layer, last for --strategy block)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the --num-samples records sampled for scoring with --data (default: region-score's, 0)")


@dataclass(frozen=True)
class Strategy:
    """The resolved choice: recorded as-is in prune_report.json."""

    strategy: str
    token: Optional[str]  # None for metrics without a token reading (bi, attn, ...)
    n: int                # block length the scores must measure: 1 for layer, K for block
    series: str           # the scores.json series ranked, lowest first

    def as_dict(self) -> dict:
        return {"strategy": self.strategy, "token": self.token, "n": self.n, "series": self.series}


def resolve(strategy: str, token: Optional[str], metric: str, num_prune: Optional[int]) -> Strategy:
    """Check --strategy/--token/--metric together; the series name follows --token for angular."""
    if strategy not in STRATEGIES:
        raise PruneError(f"--strategy {strategy!r}: use one of {', '.join(STRATEGIES)}")
    if token is not None and token not in TOKENS:
        raise PruneError(f"--token {token!r}: use one of {', '.join(TOKENS)}")
    if metric in ANGULAR_SERIES.values():
        implied = "last" if metric == "angular_last" else None
        if implied and token not in (None, implied):
            raise PruneError(f"--metric {metric} is the last-token series but --token is {token!r}; "
                             "use --metric angular with --token, or drop --token")
        token = token or implied or DEFAULT_TOKEN[strategy]
        series = ANGULAR_SERIES[token]
    else:
        if strategy == "block":
            raise PruneError(f"--strategy block ranks blocks by angular distance, not {metric!r}; "
                             "use --metric angular (the default) or --strategy layer")
        if token is not None:
            raise PruneError(f"--token applies to the angular distance only, not --metric {metric!r}; drop --token")
        series = metric
    n = num_prune if strategy == "block" else 1
    if strategy == "block" and not (isinstance(n, int) and n >= 1):
        raise PruneError("--strategy block needs --num-prune K (the block length)")
    return Strategy(strategy, token, n, series)


def from_args(args, num_layers: int, candidates: Sequence[int], region: Optional[Sequence[int]]) -> Strategy:
    """Resolve the CLI flags and check, before any weight is read, that a block of K fits."""
    chosen = resolve(args.strategy, args.token, args.metric, args.num_prune)
    if getattr(args, "seed", None) is not None and args.seed < 0:
        raise PruneError(f"--seed {args.seed} must be a whole number >= 0")
    if chosen.strategy == "block" and not blocks(num_layers, chosen.n, candidates):
        raise PruneError(_no_block(chosen.n, num_layers, region))
    return chosen


def metric_of(series: str) -> str:
    """The region-score metric that produces `series` (angular_last comes with angular)."""
    return "angular" if series in ANGULAR_SERIES.values() else series


def describe(chosen: Strategy) -> str:
    """For the 'removing layers' line: what was ranked and how."""
    if chosen.strategy == "block":
        return f"block of {chosen.n} with the lowest {chosen.series} (token {chosen.token}, n={chosen.n})"
    return f"lowest {chosen.series}" + (f" (token {chosen.token}, n=1)" if chosen.token else "")


def report_fields(chosen: Optional[Strategy]) -> dict:
    """prune_report.json keys: strategy, token, n, the series ranked, and which reading of Sec 6 that is."""
    if chosen is None:
        return {"strategy": None, "token": None, "n": None, "series": None, "reading": "explicit --layers"}
    reading = ("per-layer choice (default; the Sec 6 reading that works with a region layer every 4 layers)"
               if chosen.strategy == "layer" else "Gromov et al.'s contiguous block (the paper's cited rule)")
    return {**chosen.as_dict(), "reading": f"{reading}: {describe(chosen)}"}


def _no_block(k: int, num_layers: int, region: Optional[Sequence[int]]) -> str:
    where = f"outside the visual region {list(region)}" if region else "in the model"
    return (f"--strategy block: no block of {k} consecutive layers fits {where} ({num_layers} layers); "
            "use --strategy layer, a smaller --num-prune, or --mode global")


def file_block_length(path: str) -> Optional[int]:
    """The block length n a scores file records (meta "n", or region-score's older "angular_n"); None if absent."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None  # the scores loader reports unreadable files with the full reason
    meta = data.get("meta") if isinstance(data, dict) else None
    if not isinstance(meta, dict):
        return None
    n = meta.get("n", meta.get("angular_n"))
    return n if isinstance(n, int) and not isinstance(n, bool) else None


def check_file_n(path: str, chosen: Strategy) -> None:
    """Refuse angular scores whose block length is not the one the strategy needs."""
    if chosen.token is None:
        return
    n = file_block_length(path)
    fix = f"re-score with region-score --angular-n {chosen.n}"
    if n is None:
        if chosen.n != 1:
            raise PruneError(f"--scores {path!r} does not record its block length n (meta \"n\"), and --strategy "
                             f"block with --num-prune {chosen.n} needs n={chosen.n}; {fix}")
        return
    if n != chosen.n:
        what = ("--strategy layer ranks single layers (n=1)" if chosen.strategy == "layer"
                else f"--strategy block with --num-prune {chosen.n} needs n={chosen.n}")
        raise PruneError(f"--scores {path!r} holds angular distances over blocks of n={n} layers, but {what}; {fix}")


def blocks(num_layers: int, n: int, candidates: Sequence[int]) -> List[int]:
    """Start layers l of every full block l..l+n-1 made only of candidate layers (l <= N-n)."""
    allowed = set(candidates)
    return [l for l in range(num_layers - n + 1) if all(i in allowed for i in range(l, l + n))]


def choose(chosen: Strategy, scores: Sequence[float], k: int, candidates: Sequence[int], num_layers: int,
           region: Optional[Sequence[int]] = None) -> List[int]:
    """The layers to remove, sorted."""
    if len(scores) != num_layers:
        raise PruneError(f"scores cover {len(scores)} layers but the model has {num_layers}; re-score this checkpoint")
    if chosen.strategy == "layer":
        return lowest_scoring(scores, k, candidates)
    starts = blocks(num_layers, k, candidates)
    if not starts:
        raise PruneError(_no_block(k, num_layers, region))
    best = min(starts, key=lambda l: (scores[l], -l))
    return list(range(best, best + k))
