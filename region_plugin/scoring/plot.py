"""scores.png: one bar panel per metric across layers, plus the per-instance image-attention heatmap (Fig 5)."""
from __future__ import annotations

import math
import os
from typing import Dict, List, Optional

from .metrics import DESCRIPTIONS, EXTRAS

MAX_HEATMAP_ROWS = 48


def plot_scores(scores: Dict, path: str, top: Optional[Dict[str, List[int]]] = None) -> None:
    """Write the figure to `path` (PNG). `top` = {metric: layers} to highlight (e.g. the --top pick)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    metrics = scores["metrics"]
    extras = {e for names in EXTRAS.values() for e in names}
    main = [m for m in metrics if m not in extras]
    heat = (scores.get("per_instance") or {}).get("attn")
    panels = len(main) + (1 if heat and heat["values"] else 0)
    cols = min(3, panels)
    rows = math.ceil(panels / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.4 * rows), squeeze=False)
    n = scores["num_layers"]
    layers = list(range(n))
    for ax, m in zip(axes.flat, main):
        chosen = set((top or {}).get(m, ()))
        colors = ["tab:orange" if i in chosen else "tab:blue" for i in layers]
        ax.bar(layers, metrics[m], color=colors)
        for extra, style in zip(EXTRAS.get(m, ()), ("--", ":")):
            if extra in metrics:
                ax.plot(layers, metrics[extra], style, marker=".", color="k", label=extra)
        if any(e in metrics for e in EXTRAS.get(m, ())):
            ax.legend(fontsize=7)
        ax.set_title(f"{m}: {DESCRIPTIONS.get(m, '')}", fontsize=8)
        ax.set_xlabel("layer")
        ax.set_xticks(layers if n <= 32 else layers[::max(1, n // 16)])
        ax.tick_params(labelsize=7)
    if panels > len(main):
        ax = axes.flat[len(main)]
        values = heat["values"][:MAX_HEATMAP_ROWS]
        im = ax.imshow(values, aspect="auto", cmap="viridis", interpolation="nearest")
        ax.set_title(f"image attention per instance ({len(values)} of {len(heat['values'])})", fontsize=8)
        ax.set_xlabel("layer")
        ax.set_ylabel("instance")
        ax.set_xticks(layers if n <= 32 else layers[::max(1, n // 16)])
        ax.tick_params(labelsize=7)
        fig.colorbar(im, ax=ax, fraction=0.046)
    for ax in list(axes.flat)[panels:]:
        ax.axis("off")
    model = os.path.basename(str(scores.get("meta", {}).get("model", "")).rstrip("/"))
    picked = "; orange = --top pick" if top else ""
    fig.suptitle(f"{model}: layer scores, higher = more important{picked}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
