"""region-prune's decisions without a model: which layers, how names and config.json change, file format."""
import json
import random

import pytest
import torch
from safetensors.torch import load_file, save_file

from region_plugin.pruning import keys
from region_plugin.pruning.choose import (candidate_layers, layer_map, lowest_scoring, parse_layer_list,
                                          validate_explicit, validate_num_prune)
from region_plugin.pruning.config_edit import pruned_config, register_config_fix
from region_plugin.pruning.errors import PruneError
from region_plugin.pruning.safetensors_io import Entry, read_header, range_writer, write_file

REGION = [0, 4, 8, 12, 18, 22, 26, 30]


def test_region_mode_never_removes_a_region_layer_global_mode_can():
    rng = random.Random(0)
    for _ in range(200):
        scores = [rng.random() for _ in range(32)]
        for i in REGION[:3]:  # make region layers the most redundant ones
            scores[i] = -1.0
        k = rng.randint(1, 23)
        picked = lowest_scoring(scores, k, candidate_layers(32, REGION, "region"))
        assert len(picked) == k and not set(picked) & set(REGION)
        assert sorted(picked) == sorted(sorted(set(range(32)) - set(REGION), key=lambda i: scores[i])[:k])
        assert {0, 4, 8} <= set(lowest_scoring(scores, max(k, 3), candidate_layers(32, REGION, "global")))


def test_region_mode_needs_a_region():
    with pytest.raises(PruneError, match="--region-layers"):
        candidate_layers(8, None, "region")


@pytest.mark.parametrize("k", [0, -1, 6, 7, 100])
def test_bad_num_prune_is_refused_with_the_fix(k):
    with pytest.raises(PruneError) as e:
        validate_num_prune(k, candidate_layers(8, [0, 6], "region"), 8, "region", [0, 6])
    assert "--num-prune" in str(e.value) and "1..5" in str(e.value) and "--mode global" in str(e.value)
    validate_num_prune(5, candidate_layers(8, [0, 6], "region"), 8, "region", [0, 6])
    validate_num_prune(7, candidate_layers(8, [0, 6], "global"), 8, "global", [0, 6])


def test_explicit_layers():
    assert parse_layer_list("5,1-2", 8) == [1, 2, 5]
    for bad in ("5,5", "8", "a", "3-1", ""):
        with pytest.raises(PruneError, match="--layers"):
            parse_layer_list(bad, 8)
    with pytest.raises(PruneError, match=r"visual-region layers \[6\].*--mode global"):
        validate_explicit([3, 6], 8, "region", [0, 6], None)
    validate_explicit([3, 6], 8, "global", [0, 6], None)
    with pytest.raises(PruneError, match="--num-prune 3 disagrees"):
        validate_explicit([3, 5], 8, "region", [0, 6], 3)
    with pytest.raises(PruneError, match="keep at least one"):
        validate_explicit(list(range(8)), 8, "global", None, None)


def test_stack_prefix_from_names_skips_the_vision_tower():
    names = ["model.embed_tokens.weight", "lm_head.weight", "model.mm_projector.0.weight"]
    names += [f"model.layers.{i}.mlp.up_proj.weight" for i in range(4)]
    names += [f"model.vision_tower.vision_tower.vision_model.encoder.layers.{i}.mlp.fc1.weight" for i in range(4)]
    assert keys.find_stack_prefix(names, 4) == "model.layers"
    assert keys.find_stack_prefix([f"transformer.blocks.{i}.attn.Wqkv.weight" for i in range(3)], 3) == "transformer.blocks"
    with pytest.raises(PruneError, match="num_hidden_layers=6"):
        keys.find_stack_prefix(names, 6)
    mapping = layer_map(4, [1])
    assert keys.rename("model.layers.2.mlp.up_proj.weight", "model.layers", mapping) == "model.layers.1.mlp.up_proj.weight"
    assert keys.rename("model.layers.1.mlp.up_proj.weight", "model.layers", mapping) is None
    assert keys.rename(names[-1], "model.layers", mapping) == names[-1]


def test_config_surgery_cuts_per_layer_fields_and_remaps_indices():
    cfg = {"model_type": "qwen2", "num_hidden_layers": 6, "layer_types": [f"t{i}" for i in range(6)],
           "region_layers": [0, 2, 4], "max_window_layers": 3, "mlp_only_layers": [1, 5],
           "architectures": ["A"] * 6, "hidden_size": 8}
    new, changes = pruned_config(cfg, [1, 3])
    assert new["num_hidden_layers"] == 4 and new["layer_types"] == ["t0", "t2", "t4", "t5"]
    assert new["region_layers"] == [0, 1, 2] and new["mlp_only_layers"] == [3]
    assert new["max_window_layers"] == 2  # layers 0 and 2 were below 3
    assert new["architectures"] == ["A"] * 6 and new["pruned_layers"] == [1, 3] and new["pruned_from"] == 6
    assert cfg["num_hidden_layers"] == 6 and "pruned_layers" not in cfg  # input untouched
    again, _ = pruned_config(new, [0])  # second pruning records ORIGINAL indices
    assert again["pruned_layers"] == [0, 1, 3] and again["pruned_from"] == 6 and again["region_layers"] == [0, 1]
    assert "layer_types" in changes and "max_window_layers" in changes


def test_config_surgery_nested_text_config_and_arch_hook():
    cfg = {"model_type": "toyvlm", "text_config": {"model_type": "toy-lm", "num_hidden_layers": 4,
                                                   "scale_depth": 2.0, "layer_types": list("abcd")}}
    register_config_fix("toy-lm", lambda holder, kept, old_n: holder.update(scale_depth=holder["scale_depth"] *
                                                                             (len(kept) / old_n) ** 0.5))
    new, _ = pruned_config(cfg, [3])
    assert new["text_config"]["num_hidden_layers"] == 3 and new["text_config"]["layer_types"] == list("abc")
    assert new["text_config"]["scale_depth"] == pytest.approx(2.0 * (3 / 4) ** 0.5)
    assert new["pruned_layers"] == [3] and new["pruned_from"] == 4


def test_safetensors_writer_streams_ranges_exactly(tmp_path):
    src = tmp_path / "in.safetensors"
    tensors = {"a": torch.randn(3, 5), "b": torch.randn(7).to(torch.bfloat16), "c": torch.tensor(3, dtype=torch.int64),
               "d": torch.tensor([True, False, True]), "e": torch.zeros(0, 4, dtype=torch.float16)}
    save_file(tensors, str(src), metadata={"format": "pt"})
    header, meta, start = read_header(str(src))
    assert meta == {"format": "pt"}
    entries = [Entry(f"x.{n}", t["dtype"], t["shape"], t["data_offsets"][1] - t["data_offsets"][0],
                     range_writer(str(src), start + t["data_offsets"][0], t["data_offsets"][1] - t["data_offsets"][0]))
               for n, t in sorted(header.items()) if n != "c"]
    out = tmp_path / "out.safetensors"
    write_file(str(out), entries)
    back = load_file(str(out))
    assert set(back) == {"x.a", "x.b", "x.d", "x.e"}
    for n in "abde":
        assert back[f"x.{n}"].dtype == tensors[n].dtype and torch.equal(back[f"x.{n}"], tensors[n])
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(src.read_bytes()[:-4])
    with pytest.raises(ValueError, match="truncated"):
        read_header(str(truncated))
    json.loads(out.read_bytes()[8:8 + int.from_bytes(out.read_bytes()[:8], "little")])  # valid JSON header
