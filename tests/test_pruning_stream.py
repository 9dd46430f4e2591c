"""region-prune on a plain multi-shard LLaMA: streaming rewrite, renumbering, equivalence, safety."""
import hashlib
import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file

from region_plugin.pruning.cli import main


def tree_digest(root):
    """{relative path: sha256} of every file: proves a directory was not touched."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


def load_all(model_dir):
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.isfile(index):
        with open(index) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
    else:
        shards = ["model.safetensors"]
    sd = {}
    for shard in shards:
        sd.update(load_file(os.path.join(model_dir, shard)))
    return sd, shards


def leftovers(parent, name):
    return [n for n in os.listdir(parent) if n.startswith(f".{name}.tmp-")]


def test_multishard_checkpoint_is_streamed_and_renumbered(tiny_llama_sharded, tmp_path, capsys):
    src = str(tiny_llama_sharded)
    before = tree_digest(src)
    out = tmp_path / "tiny-llama-pruned"
    assert main(["--model-path", src, "--out", str(out), "--mode", "global", "--layers", "2,5"]) == 0
    assert tree_digest(src) == before

    orig, in_shards = load_all(src)
    pruned, out_shards = load_all(str(out))
    assert len(in_shards) >= 5 and len(out_shards) >= 4  # sharded in, sharded out (with an index)
    assert sorted({int(k.split(".")[2]) for k in pruned if k.startswith("model.layers.")}) == list(range(6))
    mapping = {0: 0, 1: 1, 3: 2, 4: 3, 6: 4, 7: 5}
    for k, v in orig.items():
        if k.startswith("model.layers."):
            i = int(k.split(".")[2])
            if i in mapping:
                assert torch.equal(pruned[k.replace(f"layers.{i}.", f"layers.{mapping[i]}.", 1)], v)
        else:
            assert torch.equal(pruned[k], v)
    assert len(pruned) == len(orig) - 2 * (len(orig) - 3) // 8

    cfg = json.loads((out / "config.json").read_text())
    assert cfg["num_hidden_layers"] == 6 and cfg["pruned_layers"] == [2, 5] and cfg["pruned_from"] == 8
    assert (out / "tokenizer.model").is_file() and (out / "generation_config.json").is_file()
    report = json.loads((out / "prune_report.json").read_text())
    assert report["pruned_layers"] == [2, 5] and report["layer_map"]["3"] == 2
    assert -1 <= report["verification"]["mean_cosine_final_hidden"] < 0.9999
    assert "mean cosine of final hidden states" in capsys.readouterr().out
    assert not leftovers(tmp_path, out.name)


def test_pruning_layer_j_equals_skipping_it(tiny_llama_sharded, tmp_path):
    """The pruned checkpoint computes exactly what the unpruned model computes with layer j skipped."""
    from transformers import LlamaForCausalLM

    j = 3
    out = tmp_path / "tiny-llama-minus-3"
    assert main(["--model-path", str(tiny_llama_sharded), "--out", str(out), "--mode", "global",
                 "--layers", str(j), "--no-verify"]) == 0
    ids = torch.randint(3, 300, (2, 12), generator=torch.Generator().manual_seed(0))

    full = LlamaForCausalLM.from_pretrained(str(tiny_llama_sharded)).eval()
    with torch.no_grad():
        full_logits = full(ids).logits
        full.model.layers = torch.nn.ModuleList(l for i, l in enumerate(full.model.layers) if i != j)
        skipped = full(ids, use_cache=False).logits
    pruned = LlamaForCausalLM.from_pretrained(str(out)).eval()
    assert len(pruned.model.layers) == 7
    assert [l.self_attn.layer_idx for l in pruned.model.layers] == list(range(7))
    with torch.no_grad():
        got = pruned(ids).logits
        gen = pruned.generate(ids[:1], max_new_tokens=5, do_sample=False, use_cache=True, pad_token_id=0)
    assert (full_logits - skipped).abs().max() > 1e-2  # the layer matters ...
    torch.testing.assert_close(got, skipped, rtol=0, atol=1e-5)  # ... and pruning = skipping it
    assert gen.shape == (1, 17)


def test_bin_input_gives_the_same_checkpoint(tiny_llama_sharded, tmp_path):
    from transformers import LlamaForCausalLM

    src = tmp_path / "tiny-llama-bin"
    LlamaForCausalLM.from_pretrained(str(tiny_llama_sharded)).save_pretrained(
        str(src), max_shard_size="300KB", safe_serialization=False)
    assert (src / "pytorch_model.bin.index.json").is_file()
    a, b = tmp_path / "from-bin", tmp_path / "from-st"
    for inp, out in ((src, a), (tiny_llama_sharded, b)):
        assert main(["--model-path", str(inp), "--out", str(out), "--mode", "global", "--layers", "0,7",
                     "--no-verify"]) == 0
    sd_a, _ = load_all(str(a))
    sd_b, _ = load_all(str(b))
    assert sd_a.keys() == sd_b.keys() and all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    assert not list(a.glob("*.bin"))


def test_refusals_happen_before_any_work(tiny_llama_sharded, tmp_path, capsys):
    src = str(tiny_llama_sharded)
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    base = ["--model-path", src, "--mode", "global"]

    assert main(base + ["--out", str(out), "--layers", "1"]) == 2
    assert "--overwrite" in capsys.readouterr().err and (out / "keep.txt").read_text() == "mine"
    assert main(base + ["--out", str(tmp_path / "x"), "--num-prune", "8", "--scores", "/nonexistent"]) == 2
    assert "--scores" in capsys.readouterr().err
    assert main(base + ["--out", str(tmp_path / "x"), "--num-prune", "8"]) == 2
    assert "--num-prune 8" in capsys.readouterr().err
    assert main(base + ["--out", str(tmp_path / "x"), "--num-prune", "2"]) == 2
    assert "--scores" in capsys.readouterr().err  # nothing to rank by
    assert main(base + ["--out", os.path.join(src, "inside"), "--layers", "1"]) == 2
    assert "never writes into its input" in capsys.readouterr().err
    assert main(["--model-path", src, "--out", str(tmp_path / "x"), "--layers", "1"]) == 2
    assert "--region-layers" in capsys.readouterr().err  # region mode, no region in config.json
    assert not os.path.exists(tmp_path / "x") and not leftovers(tmp_path, "x")

    # --overwrite replaces only a directory region-prune wrote (issue 9): "taken" holds someone's file
    assert main(base + ["--out", str(out), "--layers", "1", "--overwrite", "--no-verify"]) == 2
    assert "not written by region-prune" in capsys.readouterr().err and (out / "keep.txt").read_text() == "mine"
    ours = tmp_path / "ours"
    assert main(base + ["--out", str(ours), "--layers", "1", "--no-verify"]) == 0
    assert main(base + ["--out", str(ours), "--layers", "1,2", "--overwrite", "--no-verify"]) == 0
    assert json.loads((ours / "config.json").read_text())["num_hidden_layers"] == 6
    assert not leftovers(tmp_path, "ours")


def test_a_failing_run_leaves_no_output(tiny_llama_sharded, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_llama_sharded, broken)
    with open(broken / "model.safetensors.index.json") as f:
        last = sorted(set(json.load(f)["weight_map"].values()))[-1]
    data = (broken / last).read_bytes()
    (broken / last).write_bytes(data[: len(data) // 2])
    out = tmp_path / "pruned"
    assert main(["--model-path", str(broken), "--out", str(out), "--mode", "global", "--layers", "1"]) == 2
    assert "truncated" in capsys.readouterr().err
    assert not out.exists() and not leftovers(tmp_path, "pruned")


@pytest.mark.filterwarnings("ignore:Could not find a config file")
def test_plain_peft_adapter_is_merged_before_pruning(tiny_llama_sharded, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(LlamaForCausalLM.from_pretrained(str(tiny_llama_sharded)),
                           LoraConfig(r=4, target_modules=["q_proj", "down_proj"], init_lora_weights=False))
    adapter = tmp_path / "adapter"
    model.save_pretrained(str(adapter))
    expected = {k: v for k, v in model.merge_and_unload().state_dict().items()}
    before = tree_digest(adapter)
    out = tmp_path / "merged-pruned"
    assert main(["--model-path", str(adapter), "--model-base", str(tiny_llama_sharded), "--out", str(out),
                 "--mode", "global", "--layers", "6", "--no-verify"]) == 0
    assert tree_digest(adapter) == before
    got, _ = load_all(str(out))
    assert torch.equal(got["model.layers.6.mlp.down_proj.weight"], expected["model.layers.7.mlp.down_proj.weight"])
    assert torch.equal(got["model.layers.2.self_attn.q_proj.weight"], expected["model.layers.2.self_attn.q_proj.weight"])
    assert not torch.equal(expected["model.layers.2.self_attn.q_proj.weight"],
                           load_all(str(tiny_llama_sharded))[0]["model.layers.2.self_attn.q_proj.weight"])
    assert not any("lora" in k for k in got)


def test_safetensors_rewrite_never_imports_torch(tiny_llama_sharded, tmp_path):
    """The streamed rewrite holds about one tensor; importing torch alone would dwarf a small shard."""
    from conftest import run_cli

    out = tmp_path / "tiny-llama-pruned-no-torch"
    code = ("import sys; from region_plugin.pruning.cli import main; "
            f"rc = main(['--model-path', {str(tiny_llama_sharded)!r}, '--out', {str(out)!r}, '--mode', 'global', "
            "'--layers', '2,5', '--no-verify']); "
            "torch_modules = [m for m in sys.modules if m.split('.')[0] == 'torch']; print(torch_modules[:5]); "
            "sys.exit(rc or (3 if torch_modules else 0))")
    proc = run_cli(["-c", code])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (out / "model.safetensors.index.json").is_file()
