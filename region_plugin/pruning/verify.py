"""How much a pruned model drifted from its parent on a calibration batch.

Backends return, per calibration sample, the final hidden states (after the last norm) and the
LM loss; this module only compares them, so it works for any codebase.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Dict, List, Sequence, Tuple

if TYPE_CHECKING:  # torch is imported only when a model runs
    import torch

Outputs = List[Tuple["torch.Tensor", float]]  # per sample: (final hidden states [tokens, hidden], loss)


class NonFiniteError(RuntimeError):
    """A model gave NaN/inf: verification fails, whatever the cosine would say."""


def compare(before: Outputs, after: Outputs) -> Dict[str, float]:
    """Mean per-token cosine of final hidden states, and the loss change (after - before)."""
    import torch

    if len(before) != len(after) or not before:
        raise RuntimeError(f"calibration produced {len(before)} vs {len(after)} samples")
    for which, outputs in (("the input checkpoint", before), ("the pruned checkpoint", after)):
        bad = [i for i, (h, loss) in enumerate(outputs) if not (math.isfinite(loss) and bool(torch.isfinite(h).all()))]
        if bad:
            raise NonFiniteError(f"{which} gives non-finite hidden states or loss (NaN/inf) on calibration sample(s) "
                                 f"{bad}: its weights are damaged (e.g. bit flips) or overflow in this dtype")
    cosines = []
    for (h0, _), (h1, _) in zip(before, after):
        if h0.shape != h1.shape:
            raise RuntimeError(f"final hidden states differ in shape: {tuple(h0.shape)} vs {tuple(h1.shape)}")
        cosines.append(torch.nn.functional.cosine_similarity(h0.float(), h1.float(), dim=-1))
    loss0 = sum(l for _, l in before) / len(before)
    loss1 = sum(l for _, l in after) / len(after)
    return {"mean_cosine_final_hidden": float(torch.cat(cosines).mean()), "loss_before": float(loss0),
            "loss_after": float(loss1), "loss_change": float(loss1 - loss0), "num_samples": len(before)}


def summarize(result: Dict[str, float]) -> str:
    return (f"verification on {result['num_samples']} calibration sample(s): mean cosine of final hidden states "
            f"{result['mean_cosine_final_hidden']:.4f}; loss {result['loss_before']:.4f} -> "
            f"{result['loss_after']:.4f} ({result['loss_change']:+.4f})")


def calibration_texts(data: str | None, num_samples: int) -> Sequence[str]:
    """Plain-text calibration: conversation text of a LLaVA-style JSON, a .jsonl with "text", or built-ins."""
    import json

    if not data:
        return BUILTIN_TEXTS[:num_samples]
    with open(data) as f:
        rows = [json.loads(l) for l in f if l.strip()] if data.endswith(".jsonl") else json.load(f)
    texts = []
    for row in rows:
        if isinstance(row, str):
            texts.append(row)
        elif isinstance(row, dict) and "conversations" in row:
            texts.append("\n".join(t["value"].replace("<image>", "").strip() for t in row["conversations"]))
        elif isinstance(row, dict) and isinstance(row.get("text"), str):
            texts.append(row["text"])
        if len(texts) == num_samples:
            break
    if not texts:
        raise RuntimeError(f"{data}: no usable calibration text")
    return texts


def calibration_records(data: str | None, image_folder: str | None, num_samples: int) -> List[dict]:
    """Image-text records of --data (checked as region-score checks them), else built-in text-only prompts."""
    if data:
        from ..scoring.records import read_records

        return read_records(data, image_folder, num_samples)
    return [{"conversations": [{"from": "human", "value": t}]} for t in BUILTIN_TEXTS[:num_samples]]


BUILTIN_TEXTS = (
    "The quick brown fox jumps over the lazy dog while the sun sets behind the hills.",
    "A picture shows a red square next to a blue circle on a white background.",
    "Question: What color is the shape? Answer: The shape is green.",
    "Large language models process text one token at a time through a stack of decoder layers.",
)
