"""The real upstream Bunny trainer driven through `python -m region_plugin.bunny.train`."""
from bunny_support import require_bunny

BUNNY_SRC = require_bunny()
pytest_plugins = ["bunny_fixtures"]

import math  # noqa: E402
import time  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from bunny_support import (LINEARS, LORA_KEY, MODEL_TYPES, changed_llm_layers, generate, layer_of,  # noqa: E402
                           read_json, run_py, tail)
from region_plugin.bunny.source import import_bunny  # noqa: E402
from region_plugin.tiny.bunny import bunny_train_args  # noqa: E402

PROJECTOR = sorted(f"base_model.model.model.mm_projector.{i}.{p}" for i in (0, 2) for p in ("weight", "bias"))


def _lora_keys(out):
    keys = list(load_file(str(out / "adapter_model.safetensors")))
    assert keys and all(LORA_KEY.match(k) for k in keys), [k for k in keys if not LORA_KEY.match(k)][:5]
    return keys, sorted({int(LORA_KEY.match(k).group(1)) for k in keys})


@pytest.mark.parametrize("mt", MODEL_TYPES)
def test_lora_only_in_region_llm_layers_never_in_siglip(bunny_run, mt):
    out, proc = bunny_run(mt)
    keys, layers = _lora_keys(out)
    assert layers == [0, 6]
    assert {LORA_KEY.match(k).group(3) for k in keys} == LINEARS[mt]
    assert len(keys) == 2 * len(LINEARS[mt]) * 2  # 2 layers x linears x (A, B)
    assert not any("vision" in k or "siglip" in k for k in keys)
    assert "layers 0,6 (2 of 8)" in proc.stdout and f"{2 * len(LINEARS[mt])} LoRA modules" in proc.stdout
    non_lora = torch.load(out / "non_lora_trainables.bin", map_location="cpu")
    assert sorted(non_lora) == PROJECTOR  # the SigLIP tower stays frozen, as upstream has it
    adapter = load_file(str(out / "adapter_model.safetensors"))
    assert all(v.abs().max().item() > 0 for k, v in adapter.items() if "lora_B" in k), "LoRA B starts at 0, must move"
    losses = [e["loss"] for e in read_json(out / "trainer_state.json")["log_history"] if "loss" in e]
    assert len(losses) == 4 and all(math.isfinite(x) and x > 0 for x in losses)


@pytest.mark.parametrize("mt", MODEL_TYPES)
def test_region_recorded_in_config_adapter_and_report(bunny_run, mt):
    out, proc = bunny_run(mt)
    config = read_json(out / "config.json")
    assert config["region_layers"] == [0, 6] and config["model_type"].startswith("bunny-")
    adapter_cfg = read_json(out / "adapter_config.json")
    assert adapter_cfg["layers_to_transform"] == [0, 6] and adapter_cfg["layers_pattern"] == "layers"
    assert all(t.startswith(("model.layers.0.", "model.layers.6.")) for t in adapter_cfg["target_modules"])
    report = read_json(out / "region_report.json")
    assert report["region_layers"] == [0, 6] and report["num_layers"] == 8 and report["tuning"] == "lora"
    llm = report["parameters"]["llm"]
    assert 0 < llm["trainable"] < llm["total"]
    assert report["parameters"]["vision_tower"]["trainable"] == 0 < report["parameters"]["vision_tower"]["total"]
    assert report["parameters"]["projector"]["trainable"] == report["parameters"]["projector"]["total"] > 0
    assert report["num_devices"] == 1 and report["train_wall_seconds"] > 0 and report["peak_memory"]["bytes"] > 0
    assert "== region cost report ==" in proc.stdout


@pytest.mark.parametrize("mt", MODEL_TYPES)
def test_upstream_loader_merges_only_region_layers_and_generates(bunny_run, tiny_bunny, mt):
    out, _ = bunny_run(mt)
    tiny = tiny_bunny(mt)
    builder = import_bunny("bunny.model.builder")
    assert "lora" in out.name  # upstream picks its LoRA branch from the name
    tokenizer, model, image_processor, _ = builder.load_pretrained_model(str(out), tiny.llm, out.name, mt,
                                                                         device="cpu")
    assert type(model).__name__.startswith("Bunny") and model.config.region_layers == [0, 6]
    state = {k: v.float() for k, v in model.state_dict().items()}
    assert not any("lora" in k for k in state)
    base = load_file(f"{tiny.llm}/model.safetensors")
    assert changed_llm_layers(state, base) == [0, 6]
    assert torch.equal(state["model.embed_tokens.weight"], base["model.embed_tokens.weight"].half().float())
    model.float()  # upstream loads float16; CPU generation in float32
    ids, text = generate(tokenizer, model, image_processor, tiny)
    assert ids.shape[0] == 1 and ids.shape[1] > 6 and "What color is the shape?" in text


@pytest.mark.parametrize("mt", MODEL_TYPES)
def test_full_tuning_changes_only_region_layers_and_loads(bunny_run, tiny_bunny, mt):
    out, proc = bunny_run(mt, region="1,4", lora=False)
    tiny = tiny_bunny(mt)
    tuned = load_file(str(out / "model.safetensors"))
    base = load_file(f"{tiny.llm}/model.safetensors")
    shared = [k for k in base if k in tuned]  # HF phi's lm_head.bias has no place in Bunny's phi
    changed = {k for k in shared if not torch.equal(tuned[k], base[k])}
    assert {layer_of(k) for k in changed} == {1, 4}
    assert all(k in changed for k in shared if layer_of(k) in (1, 4))  # every region tensor moved
    assert "model.embed_tokens.weight" in shared and "model.embed_tokens.weight" not in changed
    tower = load_file(f"{tiny.vision_tower}/model.safetensors")
    prefix = "model.vision_tower.vision_tower."
    tower_keys = [k for k in tuned if k.startswith(prefix)]
    assert tower_keys and all(torch.equal(tuned[k].float(), tower[k[len(prefix):]].half().float()) for k in tower_keys)
    projector = torch.load(tiny.projector, map_location="cpu")
    assert not torch.equal(tuned["model.mm_projector.0.weight"], projector["model.mm_projector.0.weight"])
    assert read_json(out / "config.json")["region_layers"] == [1, 4]
    assert read_json(out / "region_report.json")["tuning"] == "full" and "tuning=full" in proc.stdout

    builder = import_bunny("bunny.model.builder")
    tokenizer, model, image_processor, _ = builder.load_pretrained_model(str(out), None, out.name, mt, device="cpu")
    assert model.config.region_layers == [1, 4]
    ids, _ = generate(tokenizer, model.float(), image_processor, tiny)
    assert ids.shape[1] > 6


def test_without_region_layers_lora_covers_every_layer_like_upstream(bunny_run):
    out, proc = bunny_run("phi-2", region=None)
    keys, layers = _lora_keys(out)
    assert layers == list(range(8)) and len(keys) == 8 * len(LINEARS["phi-2"]) * 2
    assert "region_layers" not in read_json(out / "config.json")
    adapter_cfg = read_json(out / "adapter_config.json")
    assert adapter_cfg["layers_to_transform"] is None
    assert sorted(adapter_cfg["target_modules"]) == sorted(LINEARS["phi-2"])  # upstream's suffix names
    all_llm = read_json(out / "region_report.json")["parameters"]["llm"]["trainable"]
    region_llm = read_json(bunny_run("phi-2")[0] / "region_report.json")["parameters"]["llm"]["trainable"]
    assert region_llm * 4 == all_llm  # 2 of 8 identical layers


def test_bad_input_fails_fast_before_weights_load(tiny_bunny, tmp_path):
    tiny = tiny_bunny("llama3-8b")
    cases = [(["--region_layers", "0,9"], "layer 9 is out of range"),
             (["--region_layers", "uniform:12"], "K=12 is more than"),
             (["--region_layers", "x"], "cannot read")]
    for extra, needle in cases:
        t0 = time.perf_counter()
        proc = run_py(["-m", "region_plugin.bunny.train", *bunny_train_args(tiny, str(tmp_path / "o")), *extra])
        elapsed = time.perf_counter() - t0
        assert proc.returncode == 2, tail(proc)
        assert needle in proc.stderr and "num_hidden_layers=8" in proc.stderr and "e.g. --region_layers" in proc.stderr
        assert "Adding LoRA" not in proc.stdout and elapsed < 10 and not (tmp_path / "o").exists()
    args = bunny_train_args(tiny, str(tmp_path / "o"))
    args[args.index("--model_type") + 1] = "llama3"
    proc = run_py(["-m", "region_plugin.bunny.train", *args, "--region_layers", "25%"])
    assert proc.returncode == 2 and "--model_type 'llama3' is not a Bunny model type" in proc.stderr
    assert "llama3-8b" in proc.stderr and not (tmp_path / "o").exists()


def test_region_conflicts_with_stage1_flags(tiny_bunny, tmp_path):
    proc = run_py(["-m", "region_plugin.bunny.train", *bunny_train_args(tiny_bunny("phi-2"), str(tmp_path / "o")),
                   "--tune_mm_mlp_adapter", "True", "--region_layers", "25%"])
    assert proc.returncode == 2 and "--tune_mm_mlp_adapter True freezes the LLM" in proc.stderr


def test_missing_bunny_source_is_named(tiny_bunny, tmp_path):
    proc = run_py(["-m", "region_plugin.bunny.train", *bunny_train_args(tiny_bunny("phi-2"), str(tmp_path / "o")),
                   "--region_layers", "25%"], env={"REGION_BUNNY_SRC": str(tmp_path)})
    assert proc.returncode == 2, tail(proc)
    assert "REGION_BUNNY_SRC" in proc.stderr and "git submodule update --init third_party/Bunny" in proc.stderr


def test_zero3_two_ranks_trains_only_the_region(tiny_bunny, tmp_path):
    """Upstream's own script/deepspeed/zero3.json over 2 ranks (torchrun; gloo when there is no CUDA)."""
    out = tmp_path / "bunny-zero3-region-lora"
    args = bunny_train_args(tiny_bunny("phi-2"), str(out), cpu=False, steps=2)
    args[args.index("--per_device_train_batch_size") + 1] = "2"
    i = args.index("--mm_projector_lr")  # under ZeRO its empty param group breaks upstream's LR scheduler
    del args[i:i + 2]
    proc = run_py(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                   "-m", "region_plugin.bunny.train", *args,
                   "--deepspeed", BUNNY_SRC / "script" / "deepspeed" / "zero3.json", "--region_layers", "25%"])
    assert proc.returncode == 0, tail(proc, 6000)
    _, layers = _lora_keys(out)
    assert layers == [0, 6] and read_json(out / "adapter_config.json")["layers_to_transform"] == [0, 6]
    report = read_json(out / "region_report.json")
    assert report["num_devices"] == 2 and report["region_layers"] == [0, 6] and report["tuning"] == "lora"
    assert proc.stdout.count("== region cost report ==") == 1  # written and printed by rank 0 only
