"""The report's figures (matplotlib, Agg): layers sweep (Fig 2), cost (Fig 3), pruning (Fig 4),
layer-score heatmap (Fig 5) and revert bars (Fig 1, left). Each returns False when it has no data."""
from __future__ import annotations

from collections import defaultdict
from typing import List, Optional

from .collect import Run
from .tables import cost_values, relative


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)


def layers_plot(runs: List[Run], baseline: Optional[Run], path: str) -> bool:
    """Performance vs number of trained layers, one line per score (% of the baseline when there is one)."""
    points = defaultdict(list)
    for r in runs:
        if r.layer_count is not None and not r.pruned:
            for name, value in r.performance().items():
                points[name].append((r.layer_count, value))
    if not points:
        return False
    base = baseline.performance() if baseline else {}
    if base and all(base.get(name) for name in points):  # a zero or missing baseline score: plot raw scores
        points = {k: [(x, relative(v, base[k])) for x, v in p] for k, p in points.items()}
    else:
        base = {}
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, p in sorted(points.items()):
        p = sorted(p)
        ax.plot([x for x, _ in p], [y for _, y in p], marker="o", label=name)
    ax.set_xlabel("trained decoder layers")
    ax.set_ylabel("% of the all-layer run" if base else "score")
    ax.set_xticks(sorted({x for p in points.values() for x, _ in p}))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("performance vs number of trained layers (Fig 2)", fontsize=9)
    _save(fig, path)
    return True


def cost_plot(runs: List[Run], baseline: Optional[Run], path: str) -> bool:
    """Grouped bars of training cost per run, relative to the baseline (or to the largest run)."""
    costed = [r for r in runs if r.cost is not None and not r.pruned]
    if not costed:
        return False
    plt = _plt()
    names = list(cost_values(costed[0]))
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(costed) + 2), 3.6))
    width = 0.8 / len(names)
    for j, name in enumerate(names):
        values = [cost_values(r)[name] for r in costed]
        ref = cost_values(baseline)[name] if baseline else max((v for v in values if v), default=None)
        heights = [relative(v, ref) or 0 for v in values]
        bars = ax.bar([i + j * width for i in range(len(costed))], heights, width, label=name)
        ax.bar_label(bars, labels=[f"{h:.0f}" for h in heights], fontsize=6)
    ax.set_xticks([i + width * (len(names) - 1) / 2 for i in range(len(costed))])
    ax.set_xticklabels([r.name for r in costed], fontsize=7, rotation=15)
    ax.set_ylabel(f"% of {baseline.name}" if baseline else "% of the largest")
    ax.legend(fontsize=7)
    ax.set_title("training cost (Fig 3)", fontsize=9)
    _save(fig, path)
    return True


def pruning_plot(runs: List[Run], path: str) -> bool:
    """Score vs pruned layers per mode; unpruned runs are the K=0 point of their kind."""
    curves = defaultdict(list)
    for r in runs:
        p = r.pruned
        perf = r.performance()
        if p:
            v = p.get("verification") or {}
            if not perf and v:
                perf = {"calibration loss": v["loss_after"]}
                curves[(p["mode"], "calibration loss")].append((0, v["loss_before"]))
            for name, value in perf.items():
                curves[(p["mode"], name)].append((len(p["pruned_layers"]), value))
        elif r.cost is not None:
            mode = "region" if r.region else "global"
            for name, value in perf.items():
                curves[(mode, name)].append((0, value))
    curves = {k: sorted(set(v)) for k, v in curves.items() if len({x for x, _ in v}) > 1}
    if not curves:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for (mode, name), points in sorted(curves.items()):
        ax.plot([x for x, _ in points], [y for _, y in points], marker="o",
                linestyle="-" if mode == "region" else "--", label=f"{name}, {mode} pruning")
    ax.set_xlabel("decoder layers pruned")
    only_loss = all(name == "calibration loss" for _, name in curves)
    ax.set_ylabel("calibration loss (lower is better)" if only_loss else "score")
    ax.set_xticks(sorted({x for pts in curves.values() for x, _ in pts}))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("region vs ordinary pruning (Fig 4)", fontsize=9)
    _save(fig, path)
    return True


def scores_heatmap(runs: List[Run], path: str) -> bool:
    """Metrics x layers, each row scaled to [0, 1]; region layers marked (Fig 5)."""
    panels = [(r, s) for r in runs for s in r.scores]
    if not panels:
        return False
    plt = _plt()
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 0.45 * sum(len(s["metrics"]) for _, s in panels) + 1.2 * len(panels)),
                             squeeze=False)
    for ax, (r, s) in zip(axes[:, 0], panels):
        names = list(s["metrics"])
        rows = []
        for name in names:
            values = s["metrics"][name]
            lo, hi = min(values), max(values)
            rows.append([(v - lo) / (hi - lo) if hi > lo else 0.0 for v in values])
        im = ax.imshow(rows, aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels(names, fontsize=7)
        n = s["num_layers"]
        ax.set_xticks(range(n) if n <= 40 else range(0, n, max(1, n // 16)))
        ax.tick_params(axis="x", labelsize=7)
        for i in r.region or []:
            ax.axvline(i, color="tab:red", linewidth=1.2, alpha=0.8)
        ax.set_title(f"{r.name}: layer scores, each row scaled to [0, 1]" + ("; red = trained region" if r.region else ""),
                     fontsize=8)
        fig.colorbar(im, ax=ax, fraction=0.03)
    axes[-1, 0].set_xlabel("decoder layer")
    _save(fig, path)
    return True


def revert_plot(runs: List[Run], path: str) -> bool:
    """Perplexity before/after reverting layers to the backbone, per revert result."""
    items = [(r, rev) for r in runs for rev in r.reverts]
    if not items:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(5, 1.4 * len(items) + 2), 3.6))
    labels, i = [], 0
    for r, rev in items:
        for kind in ("visual", "text"):
            pair = rev.get(kind)
            if not pair:
                continue
            ax.bar([i - 0.2, i + 0.2], [pair["before"], pair["after"]], 0.4, color=["tab:blue", "tab:orange"],
                   label=None)
            labels.append(f"{r.name}\n{kind}, revert {_short(rev['layers'])}")
            i += 1
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_xlim(-0.8, len(labels) - 0.2)
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(color="tab:blue", label="before"), Patch(color="tab:orange", label="after revert")],
              fontsize=7)
    ax.set_ylabel("perplexity")
    ax.set_title("reverting decoder layers to the backbone LLM (Fig 1, left)", fontsize=9)
    _save(fig, path)
    return True


def _short(layers: List[int]) -> str:
    text = ",".join(map(str, layers))
    return text if len(text) <= 18 else f"{len(layers)} layers"
