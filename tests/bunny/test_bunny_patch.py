"""patches/bunny applies with `git am` to the pinned Bunny source and the patched trainer honours the flag."""
from bunny_support import require_bunny

BUNNY_SRC = require_bunny()
pytest_plugins = ["bunny_fixtures"]

import re  # noqa: E402
import shutil  # noqa: E402

import pytest  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from bunny_support import REPO, read_json, run_py, tail  # noqa: E402
from conftest import git_am_onto  # noqa: E402
from region_plugin.tiny.bunny import bunny_train_args  # noqa: E402

PATCHES = sorted((REPO / "patches" / "bunny").glob("*.patch"))


@pytest.fixture(scope="module")
def patched_bunny(tmp_path_factory):
    """A git repo holding a copy of the pinned Bunny source, with the patch applied by `git am`."""
    fork = tmp_path_factory.mktemp("bunny-fork")
    for part in ("bunny", "script"):
        shutil.copytree(BUNNY_SRC / part, fork / part, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    git_am_onto(fork, PATCHES)
    return fork


def test_patch_applies_and_adds_flag_and_script(patched_bunny):
    assert PATCHES, "patches/bunny/*.patch missing"
    train_py = (patched_bunny / "bunny" / "train" / "train.py").read_text()
    assert "region_layers: Optional[str]" in train_py and "RegionRun.for_fork" in train_py
    assert "region.lora_targets(model) if region else find_all_linear_names(model)" in train_py
    script = patched_bunny / "script" / "train" / "finetune_region_lora.sh"
    assert "--region_layers 25%" in script.read_text() and "deepspeed bunny/train/train.py" in script.read_text()
    assert "set -o pipefail" in script.read_text()  # `| tee` must not turn a failed run into exit 0
    assert script.stat().st_mode & 0o111  # executable, like upstream's scripts are meant to be run


@pytest.mark.parametrize("mt", ["llama3-8b"])
def test_patched_trainer_trains_only_the_region(patched_bunny, tiny_bunny, tmp_path, mt):
    out = tmp_path / "bunny-patched-lora"
    proc = run_py([patched_bunny / "bunny" / "train" / "train.py", *bunny_train_args(tiny_bunny(mt), str(out)),
                   "--region_layers", "uniform:3"], env={"PYTHONPATH": f"{patched_bunny}:{REPO}"})
    assert proc.returncode == 0, tail(proc)
    keys = list(load_file(str(out / "adapter_model.safetensors")))
    assert {int(re.search(r"\.layers\.(\d+)\.", k).group(1)) for k in keys} == {0, 3, 6}
    assert not any("vision" in k for k in keys)
    assert read_json(out / "config.json")["region_layers"] == [0, 3, 6]
    assert read_json(out / "adapter_config.json")["layers_to_transform"] == [0, 3, 6]
    assert read_json(out / "region_report.json")["region_layers"] == [0, 3, 6]


def test_patched_trainer_rejects_bad_spec_before_loading(patched_bunny, tiny_bunny, tmp_path):
    proc = run_py([patched_bunny / "bunny" / "train" / "train.py",
                   *bunny_train_args(tiny_bunny("phi-2"), str(tmp_path / "o")), "--region_layers", "0,8"],
                  env={"PYTHONPATH": f"{patched_bunny}:{REPO}"})
    assert proc.returncode == 2  # the same contract as the plugin's entry point: exit 2, one line
    assert "--region_layers '0,8': layer 8 is out of range" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("error:") == 1
    assert "Adding LoRA" not in proc.stdout


def test_patched_train_py_help_lists_region_layers(patched_bunny):
    proc = run_py([patched_bunny / "bunny" / "train" / "train.py", "--help"],
                  env={"PYTHONPATH": f"{patched_bunny}:{REPO}"})
    assert proc.returncode == 0, tail(proc)
    assert "--region_layers" in proc.stdout and "25%" in proc.stdout


def test_plugin_help_lists_region_layers_then_upstreams():
    proc = run_py(["-m", "region_plugin.bunny.train", "--help"])
    assert proc.returncode == 0, tail(proc)
    assert proc.stdout.index("--region_layers SPEC") < proc.stdout.index("--model_type")
