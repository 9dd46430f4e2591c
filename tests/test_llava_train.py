"""The real upstream LLaVA trainer (llava-torch) driven through `python -m region_plugin.llava.train`."""
import math
import re
import time

import torch
from safetensors.torch import load_file

from conftest import read_json, run_cli

LORA_KEY = re.compile(r"^base_model\.model\.model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.lora_([AB])\.weight$")
LINEARS = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def _lora_layers(out):
    keys = list(load_file(str(out / "adapter_model.safetensors")))
    assert keys and all(LORA_KEY.match(k) for k in keys), [k for k in keys if not LORA_KEY.match(k)][:5]
    return keys, sorted({int(LORA_KEY.match(k).group(1)) for k in keys})


def test_lora_region_keys_only_in_region_llm_layers(lora_region_run):
    out, proc = lora_region_run
    keys, layers = _lora_layers(out)
    assert layers == [0, 6]
    assert {LORA_KEY.match(k).group(3) for k in keys} == LINEARS
    assert len(keys) == 2 * len(LINEARS) * 2  # 2 layers x 7 linears x (A, B)
    assert "layers 0,6 (2 of 8)" in proc.stdout and "14 LoRA modules" in proc.stdout


def test_lora_region_projector_saved_and_weights_moved(lora_region_run):
    out, _ = lora_region_run
    non_lora = torch.load(out / "non_lora_trainables.bin", map_location="cpu")
    assert sorted(non_lora) == sorted(f"base_model.model.model.mm_projector.{i}.{p}" for i in (0, 2)
                                      for p in ("weight", "bias"))
    adapter = load_file(str(out / "adapter_model.safetensors"))
    b_norms = [v.abs().max().item() for k, v in adapter.items() if "lora_B" in k]
    assert all(n > 0 for n in b_norms), "LoRA B starts at zero and must move"
    losses = [e["loss"] for e in read_json(out / "trainer_state.json")["log_history"] if "loss" in e]
    assert len(losses) == 4 and all(math.isfinite(x) and x > 0 for x in losses)


def test_region_recorded_in_config_adapter_and_report(lora_region_run):
    out, proc = lora_region_run
    assert read_json(out / "config.json")["region_layers"] == [0, 6]
    adapter_cfg = read_json(out / "adapter_config.json")
    assert adapter_cfg["layers_to_transform"] == [0, 6] and adapter_cfg["layers_pattern"] == "layers"
    assert sorted(adapter_cfg["target_modules"])[0] == "model.layers.0.mlp.down_proj"
    report = read_json(out / "region_report.json")
    assert report["region_layers"] == [0, 6] and report["num_layers"] == 8 and report["tuning"] == "lora"
    llm = report["parameters"]["llm"]
    assert 0 < llm["trainable"] < llm["total"]
    assert report["parameters"]["projector"]["trainable"] == report["parameters"]["projector"]["total"] > 0
    assert report["num_devices"] == 1 and report["train_wall_seconds"] > 0 and report["device_hours"] > 0
    assert report["peak_memory"]["bytes"] > 0
    assert "== region cost report ==" in proc.stdout


def test_without_region_layers_lora_covers_every_layer_like_upstream(lora_all_run, lora_region_run):
    out, _ = lora_all_run
    keys, layers = _lora_layers(out)
    assert layers == list(range(8)) and len(keys) == 8 * len(LINEARS) * 2
    assert "region_layers" not in read_json(out / "config.json")
    adapter_cfg = read_json(out / "adapter_config.json")
    assert adapter_cfg["layers_to_transform"] is None
    assert sorted(adapter_cfg["target_modules"]) == sorted(LINEARS)  # upstream's suffix names
    region_keys, _ = _lora_layers(lora_region_run[0])
    assert set(region_keys) < set(keys)
    all_llm = read_json(out / "region_report.json")["parameters"]["llm"]["trainable"]
    region_llm = read_json(lora_region_run[0] / "region_report.json")["parameters"]["llm"]["trainable"]
    assert region_llm * 4 == all_llm  # 2 of 8 identical layers


def test_full_tuning_changes_only_region_layers_and_projector(full_region_run, tiny):
    out, proc = full_region_run
    tuned = load_file(str(out / "model.safetensors"))
    base = load_file(f"{tiny.llm}/model.safetensors")
    changed, unchanged = set(), set()
    for key, value in base.items():
        (changed if not torch.equal(tuned[key], value) else unchanged).add(key)
    layer_of = lambda k: int(k.split(".")[2]) if k.startswith("model.layers.") else None  # noqa: E731
    assert {layer_of(k) for k in changed} == {1, 4}
    assert all(layer_of(k) in (1, 4) for k in changed)
    assert not any(layer_of(k) in (1, 4) for k in unchanged)  # every region tensor moved
    assert "model.embed_tokens.weight" in unchanged and "lm_head.weight" in unchanged
    projector = torch.load(tiny.projector, map_location="cpu")
    assert not torch.equal(tuned["model.mm_projector.0.weight"], projector["model.mm_projector.0.weight"])
    assert read_json(out / "config.json")["region_layers"] == [1, 4]
    report = read_json(out / "region_report.json")
    assert report["tuning"] == "full" and report["region_fraction"] == 0.25
    assert "tuning=full" in proc.stdout


def test_bad_specs_fail_fast_before_weights_load(tiny, tmp_path):
    from region_plugin.tiny import llava_train_args

    for spec, needle in [("0,9", "layer 9 is out of range"), ("uniform:12", "K=12 is more than"),
                         ("1,1", "listed twice"), ("x", "cannot read")]:
        t0 = time.perf_counter()
        proc = run_cli(["-m", "region_plugin.llava.train", *llava_train_args(tiny, str(tmp_path / "o")),
                        "--region_layers", spec])
        elapsed = time.perf_counter() - t0
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert needle in proc.stderr and "num_hidden_layers=8" in proc.stderr and "--region_layers" in proc.stderr
        assert "e.g. --region_layers" in proc.stderr
        assert "Adding LoRA" not in proc.stdout and elapsed < 10
        assert not (tmp_path / "o").exists()


def test_model_path_without_config_is_named(tmp_path):
    proc = run_cli(["-m", "region_plugin.llava.train", "--model_name_or_path", str(tmp_path),
                    "--output_dir", str(tmp_path / "o"), "--region_layers", "25%"])
    assert proc.returncode == 2 and "--model_name_or_path" in proc.stderr and "no config.json" in proc.stderr


def test_region_conflicts_with_stage1_flags(tiny, tmp_path):
    from region_plugin.tiny import llava_train_args

    proc = run_cli(["-m", "region_plugin.llava.train", *llava_train_args(tiny, str(tmp_path / "o")),
                    "--tune_mm_mlp_adapter", "True", "--region_layers", "25%"])
    assert proc.returncode == 2 and "--tune_mm_mlp_adapter True freezes the LLM" in proc.stderr
