"""bi, mm_bi, angular and attn from ONE forward pass per batch, for any HF decoder stack.

Forward hooks on the decoder layers see each layer's real input and output (not
`output_hidden_states`, whose last entry is after the final norm and would skew the last layer).
Per batch only a [layers, batch, tokens] cosine table is kept; across batches only running sums
(O(layers) memory). Attention weights are reduced inside the layer hook and dropped, so at most one
layer's attention matrix is alive at a time. The caller supplies which positions are image tokens,
so nothing here knows about LLaVA or Bunny.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import nn

from ..layers import DecoderStack, find_decoder_stack
from .metrics import ATTENTION_METRICS, HIDDEN_METRICS, ScoringError, angle_from_cosine, image_attention, token_cosine


@dataclass
class ScoringBatch:
    """One batch ready for the model: forward kwargs plus the token masks the metrics need.

    `inputs` are passed as `model(**inputs)` (e.g. inputs_embeds + attention_mask after the
    codebase's own image expansion); `valid` and `image` are [B, T] bool masks over the sequence
    the decoder layers see (valid = not padding, image = positions holding image features).
    """

    inputs: Dict[str, Any]
    valid: torch.Tensor
    image: torch.Tensor
    ids: List[str] = field(default_factory=list)


def _hidden_in(args, kwargs) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def _hidden_out(output) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


class HiddenStateScorer:
    """Hooks a model's decoder layers; `score(batch)` runs one forward and folds it into running sums.

        with HiddenStateScorer(model, ("bi", "mm_bi", "angular"), angular_n=1) as scorer:
            for batch in batches:
                scorer.score(batch)
        scores = scorer.result()          # {"bi": [N floats], "mm_bi": [...], ...}

    Under torch.distributed (e.g. ZeRO-3 ranks each scoring their own samples) `result()` sums
    the counters over ranks first, so every rank returns the global scores.
    """

    def __init__(self, model: nn.Module, metrics: Sequence[str] = HIDDEN_METRICS, angular_n: int = 1,
                 stack: Optional[DecoderStack] = None):
        unknown = [m for m in metrics if m not in HIDDEN_METRICS + ATTENTION_METRICS]
        if unknown:
            raise ScoringError(f"HiddenStateScorer computes {HIDDEN_METRICS + ATTENTION_METRICS}, not {unknown}")
        self.model = model
        self.metrics = tuple(metrics)
        self.stack = stack or find_decoder_stack(model)
        self.num_layers = n = self.stack.num_layers
        if not isinstance(angular_n, int) or not 1 <= angular_n <= n:
            raise ScoringError(f"--angular-n {angular_n!r} must be a whole number in 1..{n} (the model has {n} layers)")
        self.angular_n = angular_n
        self.want_attn = "attn" in self.metrics
        self._handles: List[Any] = []
        f64 = lambda *s: torch.zeros(*s, dtype=torch.float64)  # noqa: E731
        self.cos_sums = f64(n, 3)        # sum of cos(x_i, x_i+1) over valid / image / text tokens
        self.token_counts = f64(3)       # number of valid / image / text tokens
        self.angle_sum = f64(n)          # sum over valid tokens of the block angle
        self.angle_last_sum = f64(n)     # sum over instances of the last-token block angle
        self.instances = f64(1)
        self.attn_sum = f64(n)           # sum over instances with images of A_i
        self.attn_instances = f64(1)
        self.per_instance_attn: List[List[float]] = []
        self.per_instance_ids: List[str] = []
        self._reset_batch(None)

    # -- hooks ---------------------------------------------------------------------------------
    def __enter__(self) -> "HiddenStateScorer":
        layers = self.model.get_submodule(self.stack.prefix)
        for j, layer in enumerate(layers):
            self._handles.append(layer.register_forward_hook(self._make_hook(j), with_kwargs=True))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._reset_batch(None)

    def _reset_batch(self, batch: Optional[ScoringBatch]) -> None:
        self._batch = batch
        self._cos: List[Optional[torch.Tensor]] = [None] * self.num_layers
        self._cos_n: List[Optional[torch.Tensor]] = [None] * self.num_layers
        self._states: Dict[int, torch.Tensor] = {}
        self._attn: List[Optional[torch.Tensor]] = [None] * self.num_layers

    def _make_hook(self, j: int):
        def hook(module, args, kwargs, output):
            if self._batch is None:  # a forward outside score(): leave it alone
                return None
            x, y = _hidden_in(args, kwargs), _hidden_out(output)
            home = self._batch.valid.device
            cos = token_cosine(x, y)
            self._cos[j] = cos.to(home)
            if self.angular_n > 1:
                self._block_angles(j, x, y, home)
            if self.want_attn:
                return self._take_attention(j, output, home)
            return None

        return hook

    def _block_angles(self, j: int, x: torch.Tensor, y: torch.Tensor, home) -> None:
        """cos(x_l, x_{l+n}) where x_{j+1} = y; at the last layer, shorter tail blocks end at x_N."""
        n, last = self.angular_n, self.num_layers - 1
        self._states[j] = x
        starts = [j + 1 - n] if j + 1 - n >= 0 else []
        if j == last:
            starts += [l for l in range(max(j + 2 - n, 0), last + 1)]
        for l in starts:
            self._cos_n[l] = token_cosine(self._states[l], y).to(home)
        for l in [l for l in self._states if l <= j + 1 - n]:
            del self._states[l]

    def _take_attention(self, j: int, output, home):
        weights = output[1] if isinstance(output, (tuple, list)) and len(output) > 1 else None
        if not torch.is_tensor(weights) or weights.dim() != 4:
            return None
        b = self._batch
        self._attn[j] = image_attention(weights, b.image, b.valid).to(home)
        # Drop the [B, H, T, T] matrix now, so the model does not keep one per layer.
        return (output[0], None, *output[2:])

    # -- one batch -----------------------------------------------------------------------------
    @torch.no_grad()
    def score(self, batch: ScoringBatch) -> None:
        """One forward over `batch` with the hooks on; adds its tokens to the running sums."""
        if not self._handles:
            raise RuntimeError("use HiddenStateScorer as a context manager: `with HiddenStateScorer(...) as s:`")
        kwargs = dict(batch.inputs, use_cache=False)
        if self.want_attn:
            kwargs["output_attentions"] = True
        self._reset_batch(batch)
        try:
            self.model(**kwargs)
            self._fold(batch)
        finally:
            self._reset_batch(None)

    def _fold(self, batch: ScoringBatch) -> None:
        missing = [j for j, c in enumerate(self._cos) if c is None]
        if missing:
            raise RuntimeError(f"decoder layers {missing} did not run in the forward pass")
        valid = batch.valid.bool()
        image = batch.image.bool() & valid
        masks = torch.stack([valid, image, valid & ~image]).float()            # [3, B, T]
        cos = torch.stack(self._cos)                                           # [N, B, T]
        self.cos_sums += torch.einsum("nbt,mbt->nm", cos, masks).double().cpu()
        self.token_counts += masks.sum((1, 2)).double().cpu()
        angles = angle_from_cosine(torch.stack(self._cos_n) if self.angular_n > 1 else cos)
        self.angle_sum += torch.einsum("nbt,bt->n", angles, masks[0]).double().cpu()
        t = valid.shape[1]
        last = t - 1 - valid.flip(-1).int().argmax(-1)                          # last real token per row
        has_tokens = valid.any(-1)
        rows = torch.arange(valid.shape[0], device=valid.device)
        self.angle_last_sum += (angles[:, rows, last] * has_tokens).sum(-1).double().cpu()
        self.instances += float(has_tokens.sum())
        if self.want_attn:
            self._fold_attention(batch)

    def _fold_attention(self, batch: ScoringBatch) -> None:
        missing = [j for j, a in enumerate(self._attn) if a is None]
        if missing:
            raise ScoringError(
                "attn needs attention weights, but decoder layers "
                f"{missing[:4]}{'...' if len(missing) > 4 else ''} returned none; load the model with "
                "attn_implementation='eager' (flash-attention never materialises them)")
        table = torch.stack(self._attn).T.double().cpu()                        # [B, N]
        ok = ~torch.isnan(table).any(-1)                                         # instances with image tokens
        self.attn_sum += table[ok].sum(0)
        self.attn_instances += float(ok.sum())
        ids = batch.ids or [str(len(self.per_instance_ids) + i) for i in range(table.shape[0])]
        for i in range(table.shape[0]):
            if ok[i]:
                self.per_instance_attn.append(table[i].tolist())
                self.per_instance_ids.append(ids[i])

    # -- results -------------------------------------------------------------------------------
    _SUMS = ("cos_sums", "token_counts", "angle_sum", "angle_last_sum", "instances", "attn_sum", "attn_instances")

    def _totals(self, reduce: bool) -> Dict[str, torch.Tensor]:
        """The running sums, summed over ranks when torch.distributed runs (copies: result() may repeat)."""
        sums = {name: getattr(self, name).clone() for name in self._SUMS}
        if reduce and _distributed():
            backend = torch.distributed.get_backend()
            device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
            for name, t in sums.items():
                t = t.to(device)
                torch.distributed.all_reduce(t)
                sums[name] = t.cpu()
        return sums

    def result(self, reduce: bool = True) -> Dict[str, List[float]]:
        """Per-layer scores of the requested metrics (and their extras); higher = more important."""
        t = self._totals(reduce)
        n_valid, n_img, n_txt = t["token_counts"].tolist()
        if n_valid == 0:
            raise ScoringError("no tokens were scored: every sample was empty after preprocessing")
        mean_cos = t["cos_sums"] / t["token_counts"].clamp(min=1)
        out: Dict[str, List[float]] = {}
        for m in self.metrics:
            if m == "bi":
                out["bi"] = (1 - mean_cos[:, 0]).tolist()
            elif m == "mm_bi":
                if n_img == 0 or n_txt == 0:
                    raise ScoringError(f"mm_bi needs image and text tokens; the data gave {int(n_img)} image and "
                                       f"{int(n_txt)} text tokens (use samples with an image and a question)")
                out["mm_bi"] = (1 - (mean_cos[:, 1] + mean_cos[:, 2]) / 2).tolist()
                out["mm_bi_image"] = (1 - mean_cos[:, 1]).tolist()
                out["mm_bi_text"] = (1 - mean_cos[:, 2]).tolist()
            elif m == "angular":
                out["angular"] = (t["angle_sum"] / n_valid).tolist()
                out["angular_last"] = (t["angle_last_sum"] / t["instances"].clamp(min=1)).tolist()
            elif m == "attn":
                if float(t["attn_instances"]) == 0:
                    raise ScoringError("attn needs samples with image tokens; none of the scored samples had any")
                out["attn"] = (t["attn_sum"] / t["attn_instances"]).tolist()
        for name, values in out.items():
            if any(math.isnan(v) for v in values):
                raise ScoringError(f"{name} came out NaN; the hidden states contain inf/NaN (check the dtype)")
        return out
