"""Token-weighted perplexity: answer tokens of image conversations, or plain text.

A codebase adapter turns each sample into forward kwargs whose `labels` mark the scored tokens
(upstream's own training labels for conversations); here the per-sample mean losses are weighted
back by their token counts, so the result is exp(total NLL / total scored tokens).
"""
from __future__ import annotations

import json
import math
import os
from typing import Dict, Iterable, List, Tuple

import torch

from .errors import AnalysisError

TEXT_EXAMPLE = 'plain text (documents separated by blank lines) or JSONL lines like {"text": "..."}'


def read_texts(path: str, num_samples: int, flag: str = "--text-data") -> List[str]:
    """The first `num_samples` documents of a plain-text or JSONL file; checked before any model loads."""
    if not os.path.isfile(path or ""):
        raise AnalysisError(f"{flag} {path!r} does not exist; pass {TEXT_EXAMPLE}")
    with open(path, encoding="utf-8") as f:
        content = f.read()
    if path.endswith((".jsonl", ".json")):
        texts = []
        for n, line in enumerate(content.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise AnalysisError(f"{flag} {path!r} line {n} is not JSON ({e}); expected {TEXT_EXAMPLE}") from None
            if not (isinstance(row, dict) and isinstance(row.get("text"), str)):
                raise AnalysisError(f"{flag} {path!r} line {n} has no \"text\" string; expected {TEXT_EXAMPLE}")
            texts.append(row["text"])
    else:
        texts = [block.strip() for block in content.split("\n\n")]
    texts = [t for t in texts if t.strip()][:num_samples]
    if not texts:
        raise AnalysisError(f"{flag} {path!r} holds no text; pass {TEXT_EXAMPLE}")
    return texts


def text_inputs(tokenizer, texts: List[str], max_len: int, device) -> Iterable[Tuple[dict, int]]:
    """(forward kwargs, scored tokens) per window of at most `max_len` tokens of each document."""
    for text in texts:
        ids = tokenizer(text, return_tensors="pt").input_ids[0]
        for start in range(0, len(ids), max_len):
            window = ids[start:start + max_len][None].to(device)
            if window.shape[1] > 1:
                yield {"input_ids": window, "labels": window}, window.shape[1] - 1


@torch.inference_mode()
def perplexity(model, inputs: Iterable[Tuple[dict, int]]) -> Dict[str, float]:
    """exp(mean NLL) over every scored token; the model's own loss on each sample, weighted by its tokens."""
    total, tokens, samples = 0.0, 0, 0
    for kwargs, n in inputs:
        if n <= 0:
            continue
        loss = model(**kwargs, return_dict=True).loss
        total += float(loss) * n
        tokens += n
        samples += 1
    if tokens == 0:
        raise AnalysisError("no sample had a scored token (every label masked). If upstream printed 'tokenization "
                            "mismatch', its template does not fit this tokenizer: pass the --conv-mode the model was "
                            "trained with (LLaVA-1.5: vicuna_v1; stage-1 projector data: plain)")
    return {"perplexity": math.exp(total / tokens), "nll": total / tokens, "tokens": tokens, "samples": samples}
