"""Issue 11, fidelity to the paper: pruning strategy and token, n>1 scores, param_angular, presets, sampling.

Mechanics on tiny local models (real transformers, real upstream LLaVA for scoring); the meaning of
the same choices on real weights is in test_real_weights.py.
"""
from __future__ import annotations

import json
import math
import re

import pytest
import torch

from region_plugin.pruning.cli import main as region_prune
from region_plugin.pruning.errors import PruneError
from region_plugin.pruning import strategy
from region_plugin.scoring.metrics import ParamChange, angular_meta
from region_plugin.scoring.records import sample_indices, select_records
from region_plugin.spec import parse_region_layers, region_note, uniform_layers
from region_plugin.tiny import build_llm

N = 8


# ---- fix 1: --strategy layer|block, --token last|all --------------------------------------------

def test_strategy_defaults_and_series():
    layer = strategy.resolve("layer", None, "angular", 3)
    block = strategy.resolve("block", None, "angular", 3)
    assert layer.as_dict() == {"strategy": "layer", "token": "all", "n": 1, "series": "angular"}
    assert block.as_dict() == {"strategy": "block", "token": "last", "n": 3, "series": "angular_last"}
    assert strategy.resolve("layer", "last", "angular", 3).series == "angular_last"
    assert strategy.resolve("block", "all", "angular", 3).series == "angular"
    assert strategy.resolve("layer", None, "bi", 3).as_dict() == {"strategy": "layer", "token": None, "n": 1,
                                                                  "series": "bi"}
    with pytest.raises(PruneError, match="--strategy block ranks blocks by angular distance"):
        strategy.resolve("block", None, "bi", 3)
    with pytest.raises(PruneError, match="--token applies to the angular distance only"):
        strategy.resolve("layer", "last", "bi", 3)
    with pytest.raises(PruneError, match="last-token series but --token is 'all'"):
        strategy.resolve("layer", "all", "angular_last", 3)


def test_block_is_the_lowest_full_block_outside_the_region():
    # Block scores for n=2: entries 7 (> N-n) measure a 1-layer tail and are the lowest: never used.
    scores = [0.9, 0.5, 0.2, 0.3, 0.4, 0.25, 0.6, 0.01]
    block = strategy.resolve("block", None, "angular", 2)
    assert strategy.choose(block, scores, 2, list(range(N)), N) == [2, 3]
    # Region [3]: blocks touching layer 3 are out; the best remaining full block starts at 5.
    assert strategy.choose(block, scores, 2, [0, 1, 2, 4, 5, 6, 7], N, [3]) == [5, 6]
    assert strategy.blocks(N, 2, [0, 1, 2, 4, 5, 6, 7]) == [0, 1, 4, 5, 6]
    # A region every 2 layers leaves no room for a block of 2.
    with pytest.raises(PruneError, match="no block of 2 consecutive layers fits outside the visual region.*"
                                         "use --strategy layer"):
        strategy.choose(block, scores, 2, [1, 3, 5, 7], N, [0, 2, 4, 6])
    layer = strategy.resolve("layer", None, "angular", 2)
    assert strategy.choose(layer, scores, 2, list(range(N)), N) == [2, 7]


@pytest.fixture(scope="module")
def llama8(tmp_path_factory):
    """A plain tiny LLaMA checkpoint (8 layers) for the CLI: plain pruning, no LVLM needed."""
    return build_llm(str(tmp_path_factory.mktemp("llm") / "tiny-llama"), num_layers=N)


def _scores_file(path, series, n=None):
    data = {"num_layers": N, "metrics": series}
    if n is not None:
        data["meta"] = {"n": n}
    path.write_text(json.dumps(data))
    return str(path)


def _prune(tmp_path, model, *args):
    out = tmp_path / f"pruned-{len(list(tmp_path.iterdir()))}"
    rc = region_prune(["--model-path", model, "--out", str(out), "--no-verify", *args])
    report = json.loads((out / "prune_report.json").read_text()) if rc == 0 else None
    return rc, report


def test_cli_block_strategy_records_strategy_token_and_n(llama8, tmp_path, capsys):
    last = [0.9, 0.5, 0.2, 0.3, 0.4, 0.25, 0.6, 0.01]
    allt = [0.9, 0.5, 0.4, 0.3, 0.1, 0.15, 0.6, 0.01]
    scores = _scores_file(tmp_path / "n2.json", {"angular": allt, "angular_last": last}, n=2)
    rc, report = _prune(tmp_path, llama8, "--mode", "global", "--strategy", "block", "--num-prune", "2",
                        "--scores", scores)
    assert rc == 0, capsys.readouterr().err
    assert report["pruned_layers"] == [2, 3]
    assert {k: report[k] for k in ("strategy", "token", "n", "series")} == {
        "strategy": "block", "token": "last", "n": 2, "series": "angular_last"}
    assert "block of 2 with the lowest angular_last (token last, n=2)" in capsys.readouterr().out
    rc, report = _prune(tmp_path, llama8, "--mode", "global", "--strategy", "block", "--token", "all",
                        "--num-prune", "2", "--scores", scores)
    assert rc == 0 and report["pruned_layers"] == [4, 5] and report["token"] == "all"


@pytest.mark.parametrize("args,n,needle", [
    (("--strategy", "block", "--num-prune", "2"), 1, "blocks of n=1 layers, but --strategy block with --num-prune 2 "
                                                     "needs n=2; re-score with region-score --angular-n 2"),
    (("--strategy", "layer", "--num-prune", "2"), 2, "blocks of n=2 layers, but --strategy layer ranks single "
                                                     "layers \\(n=1\\)"),
    (("--strategy", "block", "--num-prune", "2"), None, "does not record its block length n"),
    (("--strategy", "block", "--num-prune", "2", "--metric", "bi"), 1, "--strategy block ranks blocks by angular"),
    (("--num-prune", "2", "--seed", "-1"), 1, "--seed -1 must be a whole number >= 0"),
])
def test_cli_refuses_scores_whose_n_does_not_match_the_strategy(llama8, tmp_path, capsys, args, n, needle):
    series = {"angular": [0.5] * N, "angular_last": [0.5] * N, "bi": [0.5] * N}
    scores = _scores_file(tmp_path / "s.json", series, n=n)
    rc, _ = _prune(tmp_path, llama8, "--mode", "global", "--scores", scores, *args)
    assert rc == 2
    err = capsys.readouterr().err
    assert re.search(needle, err), err
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("pruned") or p.name.startswith(".pruned")]


def test_cli_block_that_cannot_fit_outside_the_region_exits_2_before_reading_weights(llama8, tmp_path, capsys):
    scores = _scores_file(tmp_path / "s.json", {"angular_last": [0.5] * N, "angular": [0.5] * N}, n=2)
    rc, _ = _prune(tmp_path, llama8, "--region-layers", "0,2,4,6", "--strategy", "block", "--num-prune", "2",
                   "--scores", scores)
    assert rc == 2
    err = capsys.readouterr().err
    assert "no block of 2 consecutive layers fits outside the visual region [0, 2, 4, 6]" in err
    assert "use --strategy layer" in err


# ---- fix 2: n > 1 scores from region-score carry n; truncated entries are never used ----------

def test_scores_meta_records_n_strategy_and_token():
    assert angular_meta(1) == {"n": 1, "strategy": "layer", "token": {"angular": "all", "angular_last": "last"}}
    assert angular_meta(4)["strategy"] == "block" and angular_meta(4)["n"] == 4
    assert angular_meta(None) == {"n": None, "strategy": None, "token": None}


def test_region_score_then_block_prune_end_to_end(tiny, llava_merged, tmp_path, capsys):
    """region-score --angular-n 2 --seed writes n, seed and indices; region-prune --strategy block reads them."""
    from region_plugin.scoring.cli import main as region_score

    outs = []
    for name in ("a", "b"):
        rc = region_score(["--model-path", str(llava_merged), "--data", tiny.data, "--image-folder",
                           tiny.image_folder, "--metrics", "angular", "--angular-n", "2", "--num-samples", "5",
                           "--seed", "3", "--out", str(tmp_path / name), "--quiet"])
        assert rc == 0, capsys.readouterr().err
        outs.append(json.loads((tmp_path / name / "scores.json").read_text()))
    meta = outs[0]["meta"]
    assert meta["n"] == 2 and meta["strategy"] == "block" and meta["token"]["angular_last"] == "last"
    assert meta["seed"] == 3 and len(meta["sample_indices"]) == 5 == meta["samples"]
    assert meta["sample_indices"] == sorted(set(meta["sample_indices"]))
    assert meta["sample_indices"] == outs[1]["meta"]["sample_indices"]  # fixed seed: same sample
    assert meta["sample_indices"] != list(range(5))  # sampled, not the first five
    rc = region_prune(["--model-path", str(llava_merged), "--out", str(tmp_path / "llava-pruned"), "--mode", "global",
                       "--strategy", "block", "--num-prune", "2", "--scores", str(tmp_path / "a" / "scores.json"),
                       "--no-verify"])
    assert rc == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "llava-pruned" / "prune_report.json").read_text())
    last = outs[0]["metrics"]["angular_last"]
    best = min(range(len(last) - 1), key=lambda l: (last[l], -l))  # full blocks only: l <= N-2
    assert report["pruned_layers"] == [best, best + 1] and report["n"] == 2
    rc = region_prune(["--model-path", str(llava_merged), "--out", str(tmp_path / "llava-pruned-2"), "--mode",
                       "global", "--num-prune", "2", "--scores", str(tmp_path / "a" / "scores.json"), "--no-verify"])
    assert rc == 2 and "--strategy layer ranks single layers" in capsys.readouterr().err


def test_block_strategy_scores_with_n_equal_k_when_given_data(tiny, llava_merged, tmp_path, capsys):
    """With --data, region-prune scores blocks of n=K itself, on sampled records (--seed)."""
    rc = region_prune(["--model-path", str(llava_merged), "--out", str(tmp_path / "llava-pruned"), "--mode", "global",
                       "--strategy", "block", "--num-prune", "3", "--data", tiny.data, "--image-folder",
                       tiny.image_folder, "--num-samples", "6", "--seed", "1", "--no-verify"])
    assert rc == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "llava-pruned" / "prune_report.json").read_text())
    assert (report["strategy"], report["token"], report["n"], report["series"]) == ("block", "last", 3, "angular_last")
    assert report["reading"].startswith("Gromov et al.'s contiguous block")
    first = report["pruned_layers"][0]
    full = report["scores"][:N - 3 + 1]  # entries past N-K measure shorter blocks: never chosen
    assert report["pruned_layers"] == [first, first + 1, first + 2]
    assert first == min(range(len(full)), key=lambda l: (full[l], -l))


# ---- fix 3: param_angular averages per-tensor angles (Appendix A) ------------------------------

def test_param_angular_is_the_mean_of_per_tensor_angles():
    acc = ParamChange(1)
    old_a, new_a = torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])        # 45 degrees
    old_b, new_b = torch.tensor([10.0, 0.0, 0.0]), torch.tensor([10.0, 0.0, 0.0])  # unchanged
    acc.add(0, new_a, old_a)
    acc.add(0, new_b, old_b)
    got = acc.result()
    assert got["param_angular"][0] == pytest.approx((0.25 + 0.0) / 2)
    flat_cos = (1 + 100) / math.sqrt((2 + 100) * (1 + 100))
    assert got["param_angular_flat"][0] == pytest.approx(math.acos(flat_cos) / math.pi)
    assert got["param_angular"][0] > 3 * got["param_angular_flat"][0]  # the large tensor hides the change


# ---- fix 4: presets for 1 and 2 layers -------------------------------------------------------

def test_one_and_two_layer_presets_say_they_are_not_the_papers():
    assert parse_region_layers("uniform:2", 32) == [0, 30] and parse_region_layers("6.25%", 32) == [0, 30]
    assert parse_region_layers("uniform:1", 32) == [0]
    for spec in ("uniform:2", "6.25%"):
        note = region_note(spec, parse_region_layers(spec, 32), 32)
        assert "--region_layers 0,31" in note and "this tool's spread rule" in note
    assert "--region_layers 31" in region_note("uniform:1", [0], 32)
    assert region_note("uniform:8", uniform_layers(8, 32), 32) is None
    assert region_note("0,30", [0, 30], 32) is None
    # The rule is ours; what it gives for N=40 (13B) is documented in the README.
    assert uniform_layers(10, 40) == [0, 4, 8, 12, 16, 22, 26, 30, 34, 38]
    assert uniform_layers(8, 40) == [0, 5, 10, 16, 22, 28, 33, 38]


# ---- fix 5: sampling --------------------------------------------------------------------------

def test_records_are_sampled_without_replacement_with_a_fixed_seed(tiny):
    first = select_records(tiny.data, tiny.image_folder, 6)
    assert first[0] == list(range(6))
    a = select_records(tiny.data, tiny.image_folder, 6, seed=0)
    b = select_records(tiny.data, tiny.image_folder, 6, seed=0)
    c = select_records(tiny.data, tiny.image_folder, 6, seed=1)
    assert a[0] == b[0] and a[0] != c[0] and len(set(a[0])) == 6 and a[0] == sorted(a[0])
    with open(tiny.data) as f:
        data = json.load(f)
    assert [data[i] for i in a[0]] == a[1]
    assert select_records(tiny.data, tiny.image_folder, 10_000, seed=5)[0] == list(range(len(data)))
    assert sample_indices(5, 3, 7) == sample_indices(5, 3, 7)


# ---- duplicates folded: one decoder-stack rule for models, checkpoints and backbones -----------

def test_one_stack_rule_for_models_checkpoint_names_and_backbones():
    from transformers import LlamaConfig, LlamaForCausalLM

    from region_plugin.layers import config_num_layers, find_decoder_stack
    from region_plugin.pruning.keys import find_stack_prefix, rename
    from region_plugin.scoring.params import stack_index
    from region_plugin.stack_names import numbered_groups

    model = LlamaForCausalLM(LlamaConfig(num_hidden_layers=3, hidden_size=16, intermediate_size=32,
                                         num_attention_heads=2, vocab_size=32))
    names = [n for n, _ in model.named_parameters()]
    tower = [f"model.vision_tower.vision_tower.vision_model.encoder.layers.{i}.mlp.fc1.weight" for i in range(3)]
    assert config_num_layers(model.config) == 3
    assert find_decoder_stack(model).prefix == find_stack_prefix(names + tower, 3) == "model.layers"
    index = stack_index(names + tower)
    assert {layer for layer, _ in index} == {0, 1, 2} and not any("vision" in k for k in index.values())
    assert index[(2, "mlp.up_proj.weight")] == "model.layers.2.mlp.up_proj.weight"
    # Only ASCII digits number a layer (int() would fail on a superscript digit).
    assert numbered_groups(["model.layers.\u00b2.w", "model.layers.1.w"]) == {"model.layers": {1}}
    assert rename("model.layers.\u00b2.w", "model.layers", {0: 0}) == "model.layers.\u00b2.w"
    assert rename("model.layers.2.w", "model.layers", {2: 1}) == "model.layers.1.w"
    assert rename("model.layers.1.w", "model.layers", {2: 1}) is None
