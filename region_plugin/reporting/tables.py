"""report.md: the paper's tables from collected runs, with % relative to the all-layer run."""
from __future__ import annotations

from typing import Dict, List, Optional

from .collect import Run


def pick_baseline(runs: List[Run], name: Optional[str]) -> Optional[Run]:
    """--baseline by directory name/path, else the first run that trained every layer."""
    if name:
        return next(r for r in runs if name in (r.name, r.path))
    return next((r for r in runs if r.cost is not None and not r.region and not r.pruned), None)


def relative(value: Optional[float], base: Optional[float]) -> Optional[float]:
    if value is None or base in (None, 0):
        return None
    return 100.0 * value / base


def _fmt(value, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}f}"


def _cell(value: Optional[float], base: Optional[float], digits: int = 2) -> str:
    rel = relative(value, base)
    return _fmt(value, digits) + (f" ({rel:.1f}%)" if rel is not None else "")


def _table(header: List[str], rows: List[List[str]]) -> List[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|",
            *("| " + " | ".join(r) + " |" for r in rows)]


def cost_values(run: Run) -> Dict[str, Optional[float]]:
    c = run.cost or {}
    params = (c.get("parameters") or {}).get("llm") or {}
    return {"trainable LLM params": params.get("trainable"), "train time (s)": c.get("train_wall_seconds"),
            "device-hours": c.get("device_hours"), "peak memory (GiB)": (c.get("peak_memory") or {}).get("gib")}


def region_text(run: Run) -> str:
    if run.cost is None:
        return "–"
    if not run.region:
        return f"all {run.cost.get('num_layers')}"
    return f"{len(run.region)}: {','.join(map(str, run.region))}"


def main_table(runs: List[Run], baseline: Optional[Run]) -> List[str]:
    """Tables 1-3 / Fig 2-3: region, cost and every performance score per run (% of the baseline)."""
    perf_names = sorted({k for r in runs for k in r.performance()})
    cost_names = list(cost_values(runs[0]))
    base_perf = baseline.performance() if baseline else {}
    base_cost = cost_values(baseline) if baseline else {}
    rows = []
    for r in runs:
        perf, cost = r.performance(), cost_values(r)
        layers = region_text(r)
        if r.pruned:
            p = r.pruned
            layers = (f"{p['num_layers_before']} − {len(p['pruned_layers'])} pruned ({p['mode']} mode, region "
                      f"{','.join(map(str, p.get('region_layers_before') or [])) or 'none'})")
        rows.append([r.name + (" (baseline)" if r is baseline else ""), layers]
                    + [_cell(perf.get(k), base_perf.get(k)) for k in perf_names]
                    + [_cell(cost.get(k), base_cost.get(k), 4 if k == "device-hours" else 2) for k in cost_names])
    return _table(["run", "trained layers"] + perf_names + cost_names, rows)


def revert_table(runs: List[Run]) -> List[str]:
    rows = []
    for r in runs:
        for rev in r.reverts:
            text = rev.get("text") or {}
            rows.append([r.name, ",".join(map(str, rev["layers"])), _fmt(rev["visual"]["before"], 4),
                         _fmt(rev["visual"]["after"], 4), _fmt(text.get("before"), 4), _fmt(text.get("after"), 4)])
    return _table(["run", "reverted layers", "visual ppl before", "visual ppl after", "text ppl before",
                   "text ppl after"], rows) if rows else []


def prune_table(runs: List[Run]) -> List[str]:
    rows = []
    for r in runs:
        for p in r.prunes:
            v = p.get("verification") or {}
            rows.append([r.name, p["mode"], str(len(p["pruned_layers"])), ",".join(map(str, p["pruned_layers"])),
                         str(p.get("region_layers_before")), _fmt(v.get("mean_cosine_final_hidden"), 4),
                         _fmt(v.get("loss_before"), 4), _fmt(v.get("loss_after"), 4)])
    return _table(["run", "mode", "K", "pruned layers", "region", "cosine to parent", "loss before",
                   "loss after"], rows) if rows else []


def scores_table(runs: List[Run]) -> List[str]:
    """Per metric, the top-K layers (K = the run's region size, else a quarter of the layers, as the paper)."""
    rows = []
    for r in runs:
        for s in r.scores:
            n = s["num_layers"]
            k = len(r.region) if r.region else max(1, round(n / 4))
            for metric, values in s["metrics"].items():
                best = sorted(sorted(range(n), key=lambda i: (-values[i], i))[:k])
                rows.append([r.name, metric, ",".join(map(str, best)), ", ".join(f"{v:.3g}" for v in values)])
    return _table(["run", "metric", "top-K layers", "per-layer scores"], rows) if rows else []


def render(runs: List[Run], baseline: Optional[Run], figures: Dict[str, str]) -> str:
    lines = ["# Region report", ""]
    lines += [f"Runs: {len(runs)}; baseline (100%): "
              + (f"`{baseline.name}`" if baseline else "none (no all-layer run given; pass --baseline)"), ""]
    sections = [("Runs: performance and training cost (Tables 1-3, Fig 3)", main_table(runs, baseline)),
                ("Reverting layers to the backbone (Fig 1, left)", revert_table(runs)),
                ("Pruning (Fig 4)", prune_table(runs)),
                ("Layer scores (Fig 5, Table 1 importance rows)", scores_table(runs))]
    for title, table in sections:
        if table:
            lines += [f"## {title}", "", *table, ""]
    if figures:
        lines += ["## Figures", ""]
        lines += [f"![{title}]({path})\n" for title, path in figures.items()]
    lines += ["## Sources", "", *(f"- `{r.name}`: " + ", ".join(f"`{f}`" for f in r.files) for r in runs), ""]
    return "\n".join(lines)
