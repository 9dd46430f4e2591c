"""Upstream Bunny's script/train/finetune_lora.sh, run as written (see tests/recipe.py) plus `--region_layers`.

`--mm_projector_lr 2e-5`, `--save_strategy steps`, `--gradient_checkpointing True` and Bunny's own
script/deepspeed/zero{2,3}.json reach the plugin unchanged; 2 gloo ranks (ZeRO-3, ZeRO-2) and one process.
"""
from bunny_support import require_bunny

BUNNY_SRC = require_bunny()
pytest_plugins = ["bunny_fixtures"]

import re  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from bunny_support import read_json, run_py, tail  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from recipe import localize, upstream_flags, zero_config  # noqa: E402

pytestmark = pytest.mark.distributed
MODEL_TYPE, STEPS = "llama3-8b", 2


def recipe(tiny, out, stage, steps=STEPS):
    paths = {"model_name_or_path": tiny.llm, "model_type": tiny.model_type, "version": tiny.version,
             "data_path": tiny.data, "image_folder": tiny.image_folder, "vision_tower": tiny.vision_tower,
             "pretrain_mm_mlp_adapter": tiny.projector, "output_dir": str(out),
             "deepspeed": zero_config("bunny", stage)}
    return localize(upstream_flags("bunny"), paths, steps=steps, save_steps=1)


def launch(args, nproc, region="25%"):
    runner = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)] if nproc > 1 else []
    extra = ["--region_layers", region] if region else []
    return run_py([*runner, "-m", "region_plugin.bunny.train", *args, *extra], timeout=900)


def ok(proc):
    assert proc.returncode == 0, tail(proc, 6000)
    return proc


@pytest.fixture(scope="module")
def runs(tiny_bunny, bunny_root):
    tiny = tiny_bunny(MODEL_TYPE)
    out = {s: bunny_root / "recipe" / f"bunny-tiny-region-lora-z{s}" for s in (2, 3)}
    for stage, path in out.items():
        ok(launch(recipe(tiny, path, stage), 2))
    return out


def state(path):
    adapter = load_file(str(path / "adapter_model.safetensors"))
    return {**adapter, **torch.load(path / "non_lora_trainables.bin", map_location="cpu", weights_only=True)}


def max_diff(a, b):
    assert set(a) == set(b)
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def adapter_layers(path):
    keys = list(load_file(str(path / "adapter_model.safetensors")))
    assert keys
    return sorted({int(re.search(r"\.layers\.(\d+)\.", k).group(1)) for k in keys})


def test_recipe_keeps_upstream_flags():
    flags = upstream_flags("bunny")
    assert "--mm_projector_lr" in flags and flags[flags.index("--save_strategy") + 1] == "steps"
    assert flags[flags.index("--deepspeed") + 1] == "./script/deepspeed/zero3.json"


def test_zero3_and_zero2_train_only_the_region_and_agree(runs):
    for path in runs.values():
        assert adapter_layers(path) == [0, 6]
        assert read_json(path / "region_report.json")["num_devices"] == 2
        ckpts = sorted(p.name for p in path.glob("checkpoint-*"))
        assert ckpts == [f"checkpoint-{STEPS}"]  # saved every step, --save_total_limit 1
        ckpt = path / ckpts[0]
        assert read_json(ckpt / "config.json")["region_layers"] == [0, 6]
        assert (ckpt / "non_lora_trainables.bin").is_file() and adapter_layers(ckpt) == [0, 6]
    assert max_diff(state(runs[3]), state(runs[2])) < 1e-4


def test_checkpoint_loads_with_upstream_loader(runs, tiny_bunny):
    from region_plugin.bunny.source import import_bunny

    builder = import_bunny("bunny.model.builder")
    mm_utils = import_bunny("bunny.util.mm_utils")
    ckpt = runs[3] / f"checkpoint-{STEPS}"
    name = mm_utils.get_model_name_from_path(str(ckpt))
    _, model, _, _ = builder.load_pretrained_model(str(ckpt), tiny_bunny(MODEL_TYPE).llm, name, MODEL_TYPE,
                                                   device="cpu", device_map="cpu")
    assert model.config.region_layers == [0, 6]
    saved = torch.load(ckpt / "non_lora_trainables.bin", map_location="cpu", weights_only=True)
    got = model.get_model().mm_projector[0].weight.float()
    assert torch.equal(got, saved["base_model.model.model.mm_projector.0.weight"].half().float())  # loaded in fp16


def test_resume_restores_everything_it_trained(runs, tiny_bunny, tmp_path):
    """Resume from the checkpoint upstream finds in --output_dir: nothing trained is lost.

    The checkpoint ends a 2-step cosine schedule, so the optimizer resumes at lr 0: the one more step
    must leave every restored tensor exactly as saved (the projector included, not its stage-1 weights).
    """
    out = tmp_path / "bunny-tiny-region-lora-resumed"
    out.mkdir()
    ckpt = runs[2] / f"checkpoint-{STEPS}"
    shutil.copytree(ckpt, out / ckpt.name)
    proc = ok(launch(recipe(tiny_bunny(MODEL_TYPE), out, 2, steps=STEPS + 1), 2))
    assert "resuming from" in proc.stdout
    assert max_diff(state(out), state(ckpt)) == 0.0


def test_resume_with_another_region_is_refused(runs, tiny_bunny, tmp_path):
    out = tmp_path / "bunny-tiny-region-lora-other"
    out.mkdir()
    shutil.copytree(runs[3] / f"checkpoint-{STEPS}", out / f"checkpoint-{STEPS}")
    proc = launch(recipe(tiny_bunny(MODEL_TYPE), out, 3), 1, region="0-3")
    assert proc.returncode == 2 and "layers 0,6" in proc.stderr and "layers 0,1,2,3" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_one_process_recipe(tiny_bunny, tmp_path):
    out = tmp_path / "bunny-tiny-region-lora-1p"
    ok(launch(recipe(tiny_bunny(MODEL_TYPE), out, 3), 1))
    assert adapter_layers(out) == [0, 6]
    assert sorted(p.name for p in out.glob("checkpoint-*")) == [f"checkpoint-{STEPS}"]


def test_attn_implementation_reaches_bunnys_llm(tiny_bunny, tmp_path):
    """README: everything said for LLaVA holds for Bunny, `--attn_implementation` included."""
    out = tmp_path / "bunny-tiny-eager-lora"
    proc = ok(launch(recipe(tiny_bunny(MODEL_TYPE), out, 3, steps=1) + ["--attn_implementation", "eager"], 1))
    assert read_json(out / "region_report.json")["region_layers"] == [0, 6]
    assert "upstream bunny.train.train" in proc.stdout
    proc = launch(recipe(tiny_bunny(MODEL_TYPE), tmp_path / "o2", 3, steps=1) + ["--attn_implementation", "banana"], 1)
    assert proc.returncode != 0 and "banana" in proc.stderr
