"""Upstream LLaVA's scripts/v1_5/finetune_lora.sh, run as written (see tests/recipe.py) plus `--region_layers`.

Every flag of the recipe reaches the plugin: `--mm_projector_lr 2e-5`, `--save_strategy steps`,
`--gradient_checkpointing True`, upstream's own zero3.json / zero2.json. Runs on 2 gloo ranks
(ZeRO-3 and ZeRO-2) and on one process; checkpoints load, merge, resume and prune with upstream code.
"""
from __future__ import annotations

import re
import shutil
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import read_json, run_cli
from recipe import localize, upstream_flags, zero_config

pytestmark = pytest.mark.distributed
REGION = "25%"  # of the tiny model's 8 layers -> [0, 6]
STEPS, SAVE_STEPS = 3, 2  # checkpoint-2 mid-run, final save at step 3


def recipe(tiny, out, stage, save_steps=SAVE_STEPS):
    paths = {"model_name_or_path": tiny.llm, "data_path": tiny.data, "image_folder": tiny.image_folder,
             "vision_tower": tiny.vision_tower, "pretrain_mm_mlp_adapter": tiny.projector,
             "output_dir": str(out), "deepspeed": zero_config("llava", stage)}
    return localize(upstream_flags("llava"), paths, steps=STEPS, save_steps=save_steps)


def launch(args, nproc, region=REGION):
    runner = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)] if nproc > 1 else []
    extra = ["--region_layers", region] if region else []
    return run_cli([*runner, "-m", "region_plugin.llava.train", *args, *extra], timeout=900)


def ok(proc):
    assert proc.returncode == 0, f"rc={proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


@pytest.fixture(scope="module")
def runs(tiny, tmp_path_factory):
    root = tmp_path_factory.mktemp("recipe")
    out = {"zero3": root / "llava-tiny-region-lora-z3", "zero2": root / "llava-tiny-region-lora-z2"}
    out["procs"] = {name: ok(launch(recipe(tiny, out[name], int(name[-1])), 2)) for name in ("zero3", "zero2")}
    return out


def adapter_layers(path):
    keys = list(load_file(str(path / "adapter_model.safetensors")))
    assert keys
    return sorted({int(re.search(r"\.layers\.(\d+)\.", k).group(1)) for k in keys})


def state(path):
    adapter = load_file(str(path / "adapter_model.safetensors"))
    non_lora = torch.load(path / "non_lora_trainables.bin", map_location="cpu", weights_only=True)
    return {**adapter, **non_lora}


def max_diff(a, b):
    assert set(a) == set(b)
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def test_recipe_flags_are_upstreams():
    flags = upstream_flags("llava")
    for flag in ("--mm_projector_lr", "--save_strategy", "--gradient_checkpointing", "--deepspeed", "--tf32"):
        assert flag in flags
    assert flags[flags.index("--deepspeed") + 1] == "./scripts/zero3.json"


def test_zero3_and_zero2_train_only_the_region_and_agree(runs):
    for name in ("zero3", "zero2"):
        out = runs[name]
        assert adapter_layers(out) == [0, 6]
        assert read_json(out / "config.json")["region_layers"] == [0, 6]
        report = read_json(out / "region_report.json")
        assert report["num_devices"] == 2 and report["region_layers"] == [0, 6]
        assert all(torch.count_nonzero(v) for k, v in state(out).items() if "lora_B" in k)
        log = runs["procs"][name].stdout + runs["procs"][name].stderr
        assert "dropped" in log and "empty optimizer parameter group" in log
    z3, z2 = state(runs["zero3"]), state(runs["zero2"])
    assert max_diff(z3, z2) < 1e-4  # lr 2e-4: one step moves weights by ~lr; seeded, the stages agree


def test_projector_trained_at_mm_projector_lr(runs, tiny):
    stage1 = torch.load(tiny.projector, map_location="cpu", weights_only=True)
    final = torch.load(runs["zero3"] / "non_lora_trainables.bin", map_location="cpu", weights_only=True)
    moved = max((final[f"base_model.model.{k}"] - v).abs().max().item() for k, v in stage1.items())
    assert 0 < moved < 3 * 2e-5 * STEPS  # Adam steps of ~mm_projector_lr, not of --learning_rate 2e-4


def test_checkpoint_is_complete_and_limited(runs):
    out = runs["zero3"]
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]  # --save_total_limit 1
    ckpt = out / "checkpoint-2"
    assert read_json(ckpt / "config.json")["region_layers"] == [0, 6]
    assert read_json(ckpt / "adapter_config.json")["layers_to_transform"] == [0, 6]
    non_lora = torch.load(ckpt / "non_lora_trainables.bin", map_location="cpu", weights_only=True)
    assert sorted(non_lora) == sorted(f"base_model.model.model.mm_projector.{i}.{p}" for i in (0, 2)
                                      for p in ("weight", "bias"))


def test_checkpoint_loads_with_upstream_loader(runs, tiny):
    from llava.mm_utils import get_model_name_from_path
    from llava.model.builder import load_pretrained_model

    ckpt = runs["zero3"] / "checkpoint-2"
    name = get_model_name_from_path(str(ckpt))
    _, model, _, _ = load_pretrained_model(str(ckpt), tiny.llm, name, device="cpu", device_map="cpu")
    assert model.config.region_layers == [0, 6]
    saved = torch.load(ckpt / "non_lora_trainables.bin", map_location="cpu", weights_only=True)
    got = model.get_model().mm_projector[0].weight.float()
    assert torch.allclose(got, saved["base_model.model.model.mm_projector.0.weight"].half().float())


def test_checkpoint_merges_like_upstream_merge_script(runs, tiny, tmp_path):
    """What LLaVA's scripts/merge_lora_weights.py does (that file is not in the llava-torch package)."""
    from llava.mm_utils import get_model_name_from_path
    from llava.model.builder import load_pretrained_model

    ckpt, out = runs["zero2"] / "checkpoint-2", tmp_path / "llava-tiny-ckpt2-merged"
    tokenizer, model, _, _ = load_pretrained_model(str(ckpt), tiny.llm, get_model_name_from_path(str(ckpt)),
                                                   device_map="cpu", device="cpu")
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    cfg = read_json(out / "config.json")
    assert cfg["model_type"] == "llava_llama" and cfg["region_layers"] == [0, 6] and "mm_vision_tower" in cfg


def test_resume_restores_everything_it_trained(runs, tiny, tmp_path):
    """Resume from checkpoint-2 (as upstream does when output_dir holds one) == the uninterrupted run."""
    out = tmp_path / "llava-tiny-region-lora-resumed"
    out.mkdir()
    shutil.copytree(runs["zero2"] / "checkpoint-2", out / "checkpoint-2")
    proc = ok(launch(recipe(tiny, out, 2), 2))
    assert "resuming from" in proc.stdout and "checkpoint-2" in proc.stdout
    assert max_diff(state(out), state(runs["zero2"])) < 1e-6
    assert adapter_layers(out) == [0, 6]


def test_resume_with_another_region_is_refused(runs, tiny, tmp_path):
    out = tmp_path / "llava-tiny-region-lora-other"
    out.mkdir()
    shutil.copytree(runs["zero3"] / "checkpoint-2", out / "checkpoint-2")
    for region, want in (("1,4", "layers 1,4"), (None, "all layers")):
        proc = launch(recipe(tiny, out, 3), 1, region=region)
        assert proc.returncode == 2, proc.stderr[-3000:]
        assert "layers 0,6" in proc.stderr and want in proc.stderr and "--output_dir" in proc.stderr
        assert "Traceback" not in proc.stderr


def test_one_process_recipe_keeps_one_checkpoint(tiny, tmp_path):
    out = tmp_path / "llava-tiny-region-lora-1p"
    ok(launch(recipe(tiny, out, 3, save_steps=1), 1))  # python -m, no launcher, upstream's zero3.json
    assert sorted(p.name for p in out.glob("checkpoint-*")) == [f"checkpoint-{STEPS}"]
    assert adapter_layers(out) == [0, 6] and adapter_layers(out / f"checkpoint-{STEPS}") == [0, 6]


def test_region_prune_on_checkpoint_gives_an_lvlm(runs, tiny, tmp_path):
    out = tmp_path / "llava-tiny-ckpt2-pruned"
    proc = run_cli(["-m", "region_plugin.pruning", "--model-path", runs["zero3"] / "checkpoint-2",
                    "--model-base", tiny.llm, "--out", out, "--num-prune", "2",
                    "--data", tiny.data, "--image-folder", tiny.image_folder, "--device", "cpu"])
    assert proc.returncode == 0, proc.stderr[-4000:]
    cfg = read_json(out / "config.json")
    assert cfg["model_type"] == "llava_llama" and cfg["num_hidden_layers"] == 6 and cfg["region_layers"]
    from llava.model.builder import load_pretrained_model

    _, model, image_processor, _ = load_pretrained_model(str(out), None, "llava-tiny-ckpt2-pruned",
                                                         device="cpu", device_map="cpu")
    assert model.get_model().mm_projector is not None and image_processor is not None
    assert sys.modules.get("llava") is not None
