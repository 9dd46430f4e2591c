"""Each scoring metric equals a hand computation on small constructed inputs (no LLaVA needed).

The decoder stack here is a real nn.Module whose layers rotate 2-D token vectors by known angles
(a different angle for text, image and padding tokens), so every cosine is known in closed form;
attention matrices and state dicts are written out by hand.
"""
from __future__ import annotations

import math
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from region_plugin.scoring import HiddenStateScorer, ScoringBatch, ScoringError, TensorFiles, param_change_scores
from region_plugin.scoring.metrics import image_attention, parse_metrics
from region_plugin.scoring.params import check_backbone
from region_plugin.layers import find_decoder_stack

TEXT, IMAGE, PAD = 0, 1, 2
THETA = [0.3, 0.1, 0.7, 0.2]   # text-token rotation per layer (radians)
PHI = [0.5, 0.05, 0.2, 0.9]    # image-token rotation per layer
PSI = 2.5                      # padding rotation: must never show up in a score


class RotateLayer(nn.Module):
    """Rotates each token's 2-D vector by the angle of its kind; returns a fixed attention matrix."""

    def __init__(self, angles, attn=None):
        super().__init__()
        self.register_buffer("angles", torch.tensor(angles, dtype=torch.float64))
        self.attn = attn

    def forward(self, hidden_states, kinds=None, output_attentions=False, **_):
        a = self.angles[kinds].to(hidden_states.dtype)
        x, y = hidden_states[..., 0], hidden_states[..., 1]
        out = torch.stack([a.cos() * x - a.sin() * y, a.sin() * x + a.cos() * y], -1)
        return (out, self.attn) if output_attentions else (out,)


class ToyStack(nn.Module):
    def __init__(self, thetas=THETA, phis=PHI, attns=None):
        super().__init__()
        self.config = SimpleNamespace(num_hidden_layers=len(thetas))
        attns = attns or [None] * len(thetas)
        self.layers = nn.ModuleList(RotateLayer([t, p, PSI], a) for t, p, a in zip(thetas, phis, attns))
        self.seen_attentions = []

    def forward(self, inputs_embeds, kinds, output_attentions=False, use_cache=False):
        h, self.seen_attentions = inputs_embeds, []
        for layer in self.layers:
            out = layer(h, kinds=kinds, output_attentions=output_attentions)
            h = out[0]
            self.seen_attentions.append(out[1] if output_attentions else None)
        return h


KINDS = torch.tensor([[TEXT, IMAGE, IMAGE, TEXT, TEXT], [TEXT, IMAGE, TEXT, PAD, PAD]])
N_TEXT, N_IMAGE = 5, 3


def toy_batch(rows):
    g = torch.Generator().manual_seed(0)
    kinds = KINDS[rows]
    h = torch.randn(len(rows), 5, 2, generator=g, dtype=torch.float64) * torch.rand(len(rows), 5, 1, generator=g) * 5
    valid = kinds != PAD
    return ScoringBatch(inputs={"inputs_embeds": h, "kinds": kinds}, valid=valid, image=kinds == IMAGE,
                        ids=[str(r) for r in rows])


def run(model, metrics, batches, angular_n=1):
    with HiddenStateScorer(model, metrics, angular_n=angular_n) as scorer:
        for b in batches:
            scorer.score(b)
    return scorer, scorer.result()


@pytest.mark.parametrize("split", [False, True], ids=["one_batch", "two_batches"])
def test_hidden_metrics_equal_hand_computation(split):
    batches = [toy_batch([0]), toy_batch([1])] if split else [toy_batch([0, 1])]
    _, s = run(ToyStack(), ("bi", "mm_bi", "angular"), batches)
    n = N_TEXT + N_IMAGE
    for l, (t, p) in enumerate(zip(THETA, PHI)):
        assert s["bi"][l] == pytest.approx(1 - (N_TEXT * math.cos(t) + N_IMAGE * math.cos(p)) / n, abs=1e-6)
        assert s["mm_bi"][l] == pytest.approx(1 - (math.cos(t) + math.cos(p)) / 2, abs=1e-6)
        assert s["mm_bi_image"][l] == pytest.approx(1 - math.cos(p), abs=1e-6)
        assert s["mm_bi_text"][l] == pytest.approx(1 - math.cos(t), abs=1e-6)
        assert s["angular"][l] == pytest.approx((N_TEXT * t + N_IMAGE * p) / (n * math.pi), abs=1e-6)
        assert s["angular_last"][l] == pytest.approx(t / math.pi, abs=1e-6)  # both rows end on a text token


def test_angular_block_of_two_layers_hand_computation():
    _, s = run(ToyStack(), ("angular",), [toy_batch([0, 1])], angular_n=2)
    n = N_TEXT + N_IMAGE
    for l in range(4):
        t, p = sum(THETA[l:l + 2]), sum(PHI[l:l + 2])  # the last layer's block is cut at the stack's end
        assert s["angular"][l] == pytest.approx((N_TEXT * t + N_IMAGE * p) / (n * math.pi), abs=1e-6)
        assert s["angular_last"][l] == pytest.approx(t / math.pi, abs=1e-6)
    with pytest.raises(ScoringError, match="--angular-n"):
        HiddenStateScorer(ToyStack(), ("angular",), angular_n=5)


# Heads x query x key, image token at position 1, position 3 is padding (its row must not count).
HEAD0 = [[1, 0, 0, 0], [0.5, 0.5, 0, 0], [0.2, 0.3, 0.5, 0], [0, 1, 0, 0]]
HEAD1 = [[1, 0, 0, 0], [0.1, 0.9, 0, 0], [0.6, 0.2, 0.2, 0], [0, 1, 0, 0]]
CAUSAL_UNIFORM = [[1, 0, 0, 0], [1 / 2, 1 / 2, 0, 0], [1 / 3, 1 / 3, 1 / 3, 0], [0, 1, 0, 0]]


def test_image_attention_hand_computation():
    a = torch.tensor([[HEAD0, HEAD1]])
    image = torch.tensor([[False, True, False, False]])
    valid = torch.tensor([[True, True, True, False]])
    # column 1 over valid queries: head0 0 + .5 + .3, head1 0 + .9 + .2 -> 1.9 / (N_img=1 * H=2)
    assert image_attention(a, image, valid).tolist() == pytest.approx([0.95])

    attns = [a.double(), torch.tensor([[CAUSAL_UNIFORM, CAUSAL_UNIFORM]], dtype=torch.float64)]
    model = ToyStack(THETA[:2], PHI[:2], attns)
    kinds = torch.tensor([[TEXT, IMAGE, TEXT, PAD]])
    batch = ScoringBatch(inputs={"inputs_embeds": torch.randn(1, 4, 2, dtype=torch.float64), "kinds": kinds},
                         valid=kinds != PAD, image=kinds == IMAGE, ids=["x"])
    scorer, s = run(model, ("attn",), [batch])
    assert s["attn"] == pytest.approx([0.95, (1 / 2 + 1 / 3) * 2 / 2])
    assert scorer.per_instance_attn == [pytest.approx([0.95, 5 / 6])] and scorer.per_instance_ids == ["x"]
    # The scorer reduced each layer's matrix inside its hook and handed the model None instead.
    assert model.seen_attentions == [None, None]


def test_attn_without_attention_weights_is_a_clear_error():
    with pytest.raises(ScoringError, match="eager"):
        run(ToyStack(), ("attn",), [toy_batch([0])])  # layers return no attention matrix


class ParamLayer(nn.Module):
    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w, dtype=torch.float32))


class ParamModel(nn.Module):
    def __init__(self, weights):
        super().__init__()
        self.config = SimpleNamespace(num_hidden_layers=len(weights))
        self.model = nn.Module()
        self.model.layers = nn.ModuleList(ParamLayer(w) for w in weights)


OLD = [[1.0, 2.0, 0.0, -4.0], [1.0, -1.0], [0.1, 0.3333]]
NEW = [[1.5, 2.0, 3.0, -4.0], [2.0, -2.0], torch.tensor([0.1, 0.3333]).half().float().tolist()]


def save_backbone(directory, tensors, fmt):
    directory.mkdir()
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(tensors, str(directory / "model.safetensors"))
    else:
        torch.save(tensors, str(directory / "pytorch_model.bin"))
    return str(directory)


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_param_metrics_hand_computation(tmp_path, fmt):
    tensors = {f"model.layers.{i}.w": torch.tensor(w) for i, w in enumerate(OLD)}
    tensors["model.embed_tokens.weight"] = torch.ones(3, 2)
    backbone = TensorFiles(save_backbone(tmp_path / "llm", tensors, fmt))
    model = ParamModel(NEW)
    stack = find_decoder_stack(model)
    s = param_change_scores(model, stack, backbone, reference_dtype=torch.float16)
    # layer 0: |.5|/1, 0/2, (theta = 0 skipped), 0/4 -> mean over 3 = 1/6; layer 1: every element doubles -> 1.
    assert s["param_ratio"][:2] == pytest.approx([1 / 6, 1.0])
    cos0 = (1.5 * 1 + 2 * 2 + 0 + 16) / math.sqrt((1.5 ** 2 + 4 + 9 + 16) * (1 + 4 + 0 + 16))
    assert s["param_angular"][:2] == pytest.approx([math.acos(cos0) / math.pi, 0.0], abs=1e-7)
    # layer 2 differs from the backbone only by float16 rounding, which the loader did: no change.
    assert s["param_ratio"][2] == 0 and s["param_angular"][2] == 0
    raw = param_change_scores(model, stack, backbone, reference_dtype=None)
    assert raw["param_ratio"][2] > 0


def test_param_backbone_mismatch_is_named(tmp_path):
    model = ParamModel(NEW)
    stack = find_decoder_stack(model)
    wrong_shape = {f"model.layers.{i}.w": torch.zeros(len(w) + 1) for i, w in enumerate(OLD)}
    with pytest.raises(ScoringError, match=r"--backbone .*shape \[4\] vs backbone model\.layers\.0\.w \[5\]"):
        check_backbone(model, stack, TensorFiles(save_backbone(tmp_path / "a", wrong_shape, "safetensors")))
    fewer = {"model.layers.0.w": torch.tensor(OLD[0])}
    with pytest.raises(ScoringError, match="1 decoder layers in its weights but the LVLM has 3"):
        check_backbone(model, stack, TensorFiles(save_backbone(tmp_path / "b", fewer, "safetensors")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ScoringError, match="holds no model weights"):
        TensorFiles(str(tmp_path / "empty"))


def test_metric_names_are_checked():
    assert parse_metrics("bi, attn,bi") == ("bi", "attn")
    with pytest.raises(ScoringError, match=r"--metrics: unknown metric\(s\) \['bogus'\]; choose from bi,mm_bi"):
        parse_metrics("bi,bogus")


def test_scoring_core_does_not_import_llava():
    code = "import sys, region_plugin.scoring, region_plugin.adapters; sys.exit('llava' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def _rank_scores(rank, store, out_dir):
    torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        scorer, s = run(ToyStack(), ("bi", "mm_bi", "angular"), [toy_batch([rank])])  # each rank: its own row
        torch.save(s, f"{out_dir}/rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def test_scores_are_summed_over_ranks(tmp_path):
    """Two gloo ranks (as ZeRO-3 / DDP scoring would run) each see one sample; both get the global scores."""
    torch.multiprocessing.spawn(_rank_scores, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2)
    _, single = run(ToyStack(), ("bi", "mm_bi", "angular"), [toy_batch([0, 1])])
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        for name, values in single.items():
            assert got[name] == pytest.approx(values, abs=1e-6), (rank, name)
