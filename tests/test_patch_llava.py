"""patches/llava applies with `git am` to upstream's train.py and the patched trainer honours the flag."""
import re
import shutil
from pathlib import Path

import llava
import pytest
from safetensors.torch import load_file

from conftest import REPO, git_am_onto, read_json, run_cli
from region_plugin.tiny import llava_train_args

PATCHES = sorted((REPO / "patches" / "llava").glob("*.patch"))


@pytest.fixture(scope="module")
def patched_llava(tmp_path_factory):
    """A git repo holding a copy of the installed upstream `llava` package, with the patch applied."""
    fork = tmp_path_factory.mktemp("llava-fork")
    shutil.copytree(Path(llava.__file__).parent, fork / "llava", ignore=shutil.ignore_patterns("__pycache__"))
    git_am_onto(fork, PATCHES)
    return fork


def test_patch_applies_and_adds_flag_and_script(patched_llava):
    assert PATCHES, "patches/llava/*.patch missing"
    train_py = (patched_llava / "llava" / "train" / "train.py").read_text()
    assert "region_layers: Optional[str]" in train_py and "RegionRun.for_fork" in train_py
    script = (patched_llava / "scripts" / "v1_5" / "finetune_region_lora.sh").read_text()
    assert "--region_layers 25%" in script and "llava/train/train_mem.py" in script


def test_patched_trainer_trains_only_the_region(patched_llava, tiny, tmp_path):
    out = tmp_path / "llava-patched-lora"
    env = {"PYTHONPATH": f"{patched_llava}:{REPO}"}
    proc = run_cli([str(patched_llava / "llava" / "train" / "train.py"), *llava_train_args(tiny, str(out)),
                    "--region_layers", "uniform:3"], env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    keys = list(load_file(str(out / "adapter_model.safetensors")))
    layers = {int(re.search(r"\.layers\.(\d+)\.", k).group(1)) for k in keys}
    assert layers == {0, 3, 6}
    assert read_json(out / "config.json")["region_layers"] == [0, 3, 6]
    assert read_json(out / "region_report.json")["region_layers"] == [0, 3, 6]


def test_patched_trainer_rejects_bad_spec_before_loading(patched_llava, tiny, tmp_path):
    env = {"PYTHONPATH": f"{patched_llava}:{REPO}"}
    proc = run_cli([str(patched_llava / "llava" / "train" / "train.py"),
                    *llava_train_args(tiny, str(tmp_path / "o")), "--region_layers", "0,8"], env=env)
    assert proc.returncode == 2  # the same contract as the plugin's entry point: exit 2, one line
    assert "--region_layers '0,8': layer 8 is out of range" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("error:") == 1
    assert "Adding LoRA" not in proc.stdout


def test_patched_train_py_help_lists_region_layers(patched_llava):
    proc = run_cli([str(patched_llava / "llava" / "train" / "train.py"), "--help"],
                   env={"PYTHONPATH": f"{patched_llava}:{REPO}"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "--region_layers" in proc.stdout and "25%" in proc.stdout


def test_plugin_help_lists_region_layers_then_upstreams():
    proc = run_cli(["-m", "region_plugin.llava.train", "--help"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert out.index("--region_layers SPEC") < out.index("--model_name_or_path") and "--attn_implementation" in out
