"""The layer-importance metrics of the paper's Sec 4.1 / Appendix A: names, kinds, and the math on tensors.

Every metric is oriented so that a HIGHER value means a MORE important layer, which is what
`--top K` and `top:K:METRIC:scores.json` select:

* bi / mm_bi: 1 - cos(input, output); a layer that barely changes its input is redundant.
* angular: a larger angle between x_l and x_{l+n} means the block transforms the representation.
* attn: more attention mass on image tokens means a more "visual" layer.
* param_ratio / param_angular: the more instruction tuning moved a layer, the more it was needed.

The paper names its parameter metric a change ratio (Sec 4.1) and defines an angle "averaging all
parameters within each layer" (Appendix A); both readings are offered. `param_angular` is that
text: one angle per parameter tensor, averaged over the layer's tensors. `param_angular_flat` is
the other reading (one angle over the whole layer flattened into a single vector).
"""
from __future__ import annotations

import math
from typing import Dict, Iterable, List, Sequence, Tuple

import torch

HIDDEN_METRICS = ("bi", "mm_bi", "angular")  # from decoder-layer inputs/outputs (hooks)
ATTENTION_METRICS = ("attn",)                # from attention weights of the same pass
PARAM_METRICS = ("param_ratio", "param_angular", "param_angular_flat")  # LVLM vs backbone weights, no data
ALL_METRICS = HIDDEN_METRICS + ATTENTION_METRICS + PARAM_METRICS

# Extra per-layer series reported beside the requested metric (same pass, no extra cost).
EXTRAS = {"mm_bi": ("mm_bi_image", "mm_bi_text"), "angular": ("angular_last",)}

DESCRIPTIONS = {
    "bi": "block influence: 1 - mean cos(x_i, x_i+1)",
    "mm_bi": "multimodal BI: mean of image-token BI and text-token BI",
    "mm_bi_image": "BI over image tokens only",
    "mm_bi_text": "BI over text tokens only",
    "angular": "angular distance arccos(cos(x_l, x_l+n))/pi, mean over tokens",
    "angular_last": "angular distance, last token only",
    "attn": "image-attention score: mass on image columns / (N_img * H)",
    "param_ratio": "mean |theta' - theta| / |theta| vs the backbone (Sec 4.1's change ratio)",
    "param_angular": "arccos(cos(theta'_j, theta_j))/pi per tensor j, mean over the layer (Appendix A)",
    "param_angular_flat": "arccos(cos(theta', theta))/pi, the layer's tensors as one vector",
}


# Which token each angular series averages over (recorded in scores.json's meta as "token").
ANGULAR_TOKENS = {"angular": "all", "angular_last": "last"}


def angular_meta(n: int | None) -> Dict[str, object]:
    """scores.json meta keys that tell region-prune what the angular series measure.

    `n`: block length (x_l vs x_{l+n}); entries l > N-n measure a shorter block and are never used
    for pruning. `strategy`: the region-prune strategy these series serve (n=1: layer, n>1: block
    of n). `token`: series -> tokens averaged.
    """
    if n is None:
        return {"n": None, "strategy": None, "token": None}
    return {"n": n, "strategy": "layer" if n == 1 else "block", "token": dict(ANGULAR_TOKENS)}


class ScoringError(ValueError):
    """Input that region-score cannot use; the message names the flag or file and the fix."""


def parse_metrics(value: str | Sequence[str]) -> Tuple[str, ...]:
    """`bi,mm_bi` or a sequence -> validated tuple in the given order (duplicates dropped)."""
    names = [m.strip() for m in (value.split(",") if isinstance(value, str) else value)]
    names = [m for m in names if m]
    if not names:
        raise ScoringError(f"--metrics is empty; choose from {','.join(ALL_METRICS)}")
    unknown = [m for m in names if m not in ALL_METRICS]
    if unknown:
        raise ScoringError(f"--metrics: unknown metric(s) {unknown}; choose from {','.join(ALL_METRICS)}")
    return tuple(dict.fromkeys(names))


def reported_names(metrics: Iterable[str]) -> List[str]:
    """Every series a run with these metrics writes: each metric followed by its extras."""
    out: List[str] = []
    for m in metrics:
        out += [m, *EXTRAS.get(m, ())]
    return out


def token_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """cos(a_t, b_t) for every token, in float32, on a's device: shape a.shape[:-1]."""
    return torch.nn.functional.cosine_similarity(a.float(), b.to(a.device).float(), dim=-1, eps=1e-12)


def angle_from_cosine(cos: torch.Tensor) -> torch.Tensor:
    """(1/pi) * arccos(cos), clamped so rounding past +-1 cannot give NaN."""
    return torch.arccos(cos.clamp(-1.0, 1.0)) / math.pi


def image_attention(attn: torch.Tensor, image: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per instance A = sum_h sum_q sum_{k in image} a[h, q, k] / (N_img * H); NaN without images.

    attn: [B, H, Tq, Tk] attention probabilities; image/valid: [B, Tk] bool; queries are the
    valid (non-padding) positions.
    """
    img = image.to(attn.device, torch.float32)
    mass = torch.einsum("bhqk,bk->bq", attn.float(), img)         # summed over heads and image columns
    total = (mass * valid.to(attn.device, torch.float32)).sum(-1)  # summed over query tokens
    return total / (img.sum(-1) * attn.shape[1])


def _angle(dot: torch.Tensor, new_sq: torch.Tensor, old_sq: torch.Tensor) -> torch.Tensor:
    """(1/pi) * arccos of dot / (|new| |old|); two zero vectors count as unchanged (angle 0)."""
    denom = (new_sq * old_sq).sqrt()
    return angle_from_cosine(torch.where(denom > 0, dot / denom.clamp(min=1e-300), torch.ones_like(denom)))


class ParamChange:
    """Running per-layer sums for the parameter metrics, fed one tensor pair at a time."""

    def __init__(self, num_layers: int):
        self.num_layers = num_layers
        z = lambda: torch.zeros(num_layers, dtype=torch.float64)  # noqa: E731
        self.ratio_sum, self.ratio_count, self.dot, self.new_sq, self.old_sq = z(), z(), z(), z(), z()
        self.angle_sum, self.tensors = z(), z()  # per-tensor angles (param_angular)

    def add(self, layer: int, new: torch.Tensor, old: torch.Tensor) -> None:
        """Fold in one parameter of `layer`; elements where theta = 0 have no ratio and are skipped."""
        new = new.detach().to(torch.float64)
        old = old.detach().to(new.device, torch.float64)
        nonzero = old != 0
        ratio = (new - old).abs() / torch.where(nonzero, old.abs(), torch.ones_like(old))
        self.ratio_sum[layer] += float(ratio[nonzero].sum())
        self.ratio_count[layer] += float(nonzero.sum())
        dot, new_sq, old_sq = (torch.tensor(float(v), dtype=torch.float64)
                               for v in ((new * old).sum(), (new * new).sum(), (old * old).sum()))
        self.dot[layer] += dot
        self.new_sq[layer] += new_sq
        self.old_sq[layer] += old_sq
        self.angle_sum[layer] += _angle(dot, new_sq, old_sq)
        self.tensors[layer] += 1

    def result(self) -> Dict[str, List[float]]:
        return {"param_ratio": (self.ratio_sum / self.ratio_count.clamp(min=1)).tolist(),
                "param_angular": (self.angle_sum / self.tensors.clamp(min=1)).tolist(),
                "param_angular_flat": _angle(self.dot, self.new_sq, self.old_sq).tolist()}
