"""The training entry point's own contract: stack fixes, flags read as upstream reads them, no silent no-op."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import llava
import numpy as np
import pytest
import torch

from conftest import REPO, run_cli
from region_plugin.compat import drop_empty_param_groups, integer_zero_sizes, rng_state_loading
from region_plugin.spec import RegionSpecError
from region_plugin.tiny import llava_train_args
from region_plugin.training import RegionRun, flag_bool
from recipe import zero_config


def test_upstream_zero_configs_get_integer_sizes():
    for stage in (2, 3):
        config = json.loads(Path(zero_config("llava", stage)).read_text())
        zero = config["zero_optimization"]
        zero.update({k: 0.9 * 64 * 64 for k, v in zero.items() if v == "auto"})  # what transformers 4.37 fills
        assert integer_zero_sizes(config) >= 1
        assert all(not isinstance(v, float) for v in zero.values())
        assert zero.get("stage3_prefetch_bucket_size", 3686) == 3686


def test_empty_param_groups_dropped():
    w = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.AdamW([{"params": [w]}, {"params": []}, {"params": [], "lr": 1.0}])
    assert drop_empty_param_groups(opt) == 2 and len(opt.param_groups) == 1


def test_rng_state_loads_weights_only_with_exactly_numpy_allowed(tmp_path):
    path = tmp_path / "rng_state.pth"
    torch.save({"python": __import__("random").getstate(), "numpy": np.random.get_state(),
                "cpu": torch.random.get_rng_state()}, path)
    with pytest.raises(Exception, match="[Ww]eights only"):
        torch.load(path)  # torch's default: refused
    with rng_state_loading():
        state = torch.load(path)
    assert state["numpy"][0] == "MT19937"
    with pytest.raises(Exception, match="[Ww]eights only"):
        torch.load(path)  # the allowance ends with the load


@pytest.mark.parametrize("argv,want", [(["--tune_mm_mlp_adapter"], True), (["--tune_mm_mlp_adapter", "--x", "1"], True),
                                       (["--tune_mm_mlp_adapter", "False"], False), (["--tune_mm_mlp_adapter=yes"], True),
                                       ([], False), (["--tune_mm_mlp_adapter", "True", "--tune_mm_mlp_adapter", "0"], False)])
def test_bool_flags_read_as_hfargumentparser(argv, want):
    assert flag_bool(argv, "--tune_mm_mlp_adapter") is want


def test_bare_tune_mm_mlp_adapter_conflicts_with_region(tiny):
    with pytest.raises(RegionSpecError, match="--tune_mm_mlp_adapter True freezes the LLM"):
        RegionRun.from_argv(["--model_name_or_path", tiny.llm, "--tune_mm_mlp_adapter", "--region_layers", "25%"])


def test_report_to_wandb_without_wandb_exits_2_before_loading(tiny, tmp_path):
    args = llava_train_args(tiny, str(tmp_path / "o")) + ["--report_to", "wandb"]
    proc = run_cli(["-m", "region_plugin.llava.train", *args, "--region_layers", "25%"])
    assert proc.returncode == 2 and "--report_to wandb" in proc.stderr and "pip install wandb" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_changed_upstream_fails_instead_of_training_every_layer(tiny, tmp_path):
    """Upstream no longer looks its trainer class up as a module global: the region cannot apply -> exit 2."""
    fork = tmp_path / "llava-changed"
    shutil.copytree(Path(llava.__file__).parent, fork / "llava", ignore=shutil.ignore_patterns("__pycache__"))
    train_py = fork / "llava" / "train" / "train.py"
    text = train_py.read_text()
    assert text.count("LLaVATrainer(") == 1
    train_py.write_text(text.replace("trainer = LLaVATrainer(", "import llava.train.llava_trainer as _t\n"
                                     "    trainer = _t.LLaVATrainer("))
    out = tmp_path / "o"
    proc = run_cli(["-m", "region_plugin.llava.train", *llava_train_args(tiny, str(out), steps=1),
                    "--region_layers", "25%"], env={"PYTHONPATH": f"{fork}:{REPO}"})
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "hooks never ran" in proc.stderr and "region was not applied" in proc.stderr
    assert not (out / "region_report.json").exists()


@pytest.mark.distributed
def test_torchrun_ddp_with_gradient_checkpointing(tiny, tmp_path):
    """torchrun without DeepSpeed (gloo DDP on CPU) + upstream's --gradient_checkpointing True."""
    out = tmp_path / "llava-tiny-ddp-lora"
    proc = run_cli(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                    "-m", "region_plugin.llava.train", *llava_train_args(tiny, str(out), steps=2, cpu=False),
                    "--region_layers", "25%"])
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "adding --ddp_find_unused_parameters False" in proc.stdout
    report = json.loads((out / "region_report.json").read_text())
    assert report["num_devices"] == 2 and report["region_layers"] == [0, 6]


def test_training_path_containing_mpt_is_refused_before_remote_code_can_run(tiny, tmp_path):
    """Upstream's train.py would load '.../llm-attempt' as MPT with trust_remote_code=True."""
    attempt = tmp_path / "llm-attempt"
    attempt.symlink_to(tiny.llm, target_is_directory=True)
    args = llava_train_args(tiny, str(tmp_path / "o"))
    args[args.index("--model_name_or_path") + 1] = str(attempt)
    proc = run_cli(["-m", "region_plugin.llava.train", *args, "--region_layers", "25%"])
    assert proc.returncode == 2 and "--model_name_or_path" in proc.stderr and "trust_remote_code" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_resume_without_deepspeed_restores_the_projector(tiny, tmp_path):
    """Plain single-process resume: the adapter comes back through the Trainer, the projector through us."""
    def train(out):
        args = llava_train_args(tiny, str(out), steps=3) + ["--save_strategy", "steps", "--save_steps", "2",
                                                            "--lr_scheduler_type", "cosine"]
        proc = run_cli(["-m", "region_plugin.llava.train", *args, "--region_layers", "25%"])
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc

    def state(out):
        from safetensors.torch import load_file

        return {**load_file(str(out / "adapter_model.safetensors")),
                **torch.load(out / "non_lora_trainables.bin", map_location="cpu", weights_only=True)}

    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(straight)
    resumed.mkdir()
    shutil.copytree(straight / "checkpoint-2", resumed / "checkpoint-2")
    proc = train(resumed)
    assert "restored 4 non-LoRA trainable tensors" in proc.stdout
    a, b = state(straight), state(resumed)
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
