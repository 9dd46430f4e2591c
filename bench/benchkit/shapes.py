"""The model shapes the benches run, so every bench and RESULTS.md speak of the same sizes.

`7b-slice` has LLaMA-7B's layer shapes; its depth is what fits the device (at most 32, the real
model's). `small` keeps 7B's proportions that drive the ratios (head dim 128, MLP ratio 2.6875,
lm_head about 0.65 of one decoder layer) at a size a 2-core CPU steps in seconds. Every shape but
`tiny` feeds 576 image tokens (336 px / patch 14), as LLaVA-1.5's stage 2 does.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional


@dataclass(frozen=True)
class Shape:
    name: str
    hidden: int
    intermediate: int
    heads: int
    vocab: int
    train_layers: Optional[int]     # None: as many as fit the device (capped at max_layers)
    infer_layers: int
    image_size: int
    patch: int
    tower_hidden: int
    tower_layers: int
    turns: int                      # conversation turns per sample: sets the text length
    train_batch: int
    max_layers: int = 32

    @property
    def image_tokens(self) -> int:
        return (self.image_size // self.patch) ** 2

    def layer_params(self) -> int:
        return 4 * self.hidden * self.hidden + 3 * self.hidden * self.intermediate


SHAPES = {
    "tiny": Shape("tiny", hidden=64, intermediate=172, heads=4, vocab=384, train_layers=8, infer_layers=8,
                  image_size=32, patch=8, tower_hidden=32, tower_layers=2, turns=2, train_batch=2),
    "small": Shape("small", hidden=1024, intermediate=2752, heads=8, vocab=8192, train_layers=4, infer_layers=16,
                   image_size=336, patch=14, tower_hidden=64, tower_layers=2, turns=3, train_batch=1),
    "7b-slice": Shape("7b-slice", hidden=4096, intermediate=11008, heads=32, vocab=32000, train_layers=None,
                      infer_layers=32, image_size=336, patch=14, tower_hidden=1024, tower_layers=24, turns=3,
                      train_batch=16),
}


def get_shape(name: str, layers: Optional[int] = None, batch: Optional[int] = None) -> Shape:
    """The named shape with optional --layers / --batch-size overrides."""
    shape = SHAPES[name]
    if layers:
        shape = replace(shape, train_layers=layers, infer_layers=layers)
    if batch:
        shape = replace(shape, train_batch=batch)
    return shape


def fit_layers(shape: Shape, memory_bytes: int, bytes_per_param: int, configs: int = 4) -> int:
    """Decoder layers for which `configs` resident models (plus 25% full-tuning state) fit the memory.

    Per layer: one weight copy per configuration, and gradient + two AdamW states for the 25% of
    layers that region full tuning trains. 40% of the memory is left for activations, embeddings
    and the allocator (an 80 GB card gets 24 layers, a 141 GB one all 32).
    """
    per_layer = shape.layer_params() * bytes_per_param * (configs + 0.25 * 3)
    return max(4, min(shape.max_layers, int(0.6 * memory_bytes // per_layer) // 4 * 4))
