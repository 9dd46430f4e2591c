"""Shared fixtures: one tiny LLaVA built per session and a few real upstream training runs on it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from region_plugin.tiny import build_tiny_llava, llava_train_args

REPO = Path(__file__).resolve().parents[1]
HELPERS = Path(__file__).parent / "helpers"


def run_cli(args, timeout=600, env=None, cwd=None):
    """Run a command with the test venv's python; return CompletedProcess (stdout+stderr captured)."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
                "WANDB_DISABLED": "true", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env=full_env, cwd=cwd)


def git_am_onto(fork, patches) -> None:
    """Commit what `fork` holds as "upstream" in a fresh git repo, then `git am` the patches on top."""
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin:/usr/local/bin", "HOME": str(fork)}

    def git(*args):
        return subprocess.run(["git", *args], cwd=fork, capture_output=True, text=True, env=env)

    assert git("init", "-q").returncode == 0
    git("add", "-A")
    assert git("commit", "-qm", "upstream").returncode == 0
    proc = git("am", *map(str, patches))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def train_llava(tiny, out_dir, region=None, lora=True, extra=()):
    args = ["-m", "region_plugin.llava.train", *llava_train_args(tiny, str(out_dir), lora=lora), *extra]
    if region is not None:
        args += ["--region_layers", region]
    proc = run_cli(args)
    assert proc.returncode == 0, f"training failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    return proc


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    return build_tiny_llava(str(tmp_path_factory.mktemp("tiny")))


@pytest.fixture(scope="session")
def lora_region_run(tiny, tmp_path_factory):
    """Upstream LoRA finetune through the plugin, region 25% of 8 layers -> [0, 6]."""
    out = tmp_path_factory.mktemp("runs") / "llava-tiny-region-lora"
    proc = train_llava(tiny, out, region="25%", lora=True)
    return out, proc


@pytest.fixture(scope="session")
def lora_all_run(tiny, tmp_path_factory):
    """The same command without --region_layers: upstream behaviour."""
    out = tmp_path_factory.mktemp("runs") / "llava-tiny-all-lora"
    proc = train_llava(tiny, out, region=None, lora=True)
    return out, proc


@pytest.fixture(scope="session")
def full_region_run(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "llava-tiny-region-full"
    proc = train_llava(tiny, out, region="1,4", lora=False)
    return out, proc


def read_json(path):
    with open(path) as f:
        return json.load(f)


# ---- region-score / region-prune fixtures ----

@pytest.fixture(scope="session")
def llava_merged(lora_region_run, tiny, tmp_path_factory):
    """The region LoRA run merged as upstream's scripts/merge_lora_weights.py does (fp16, vision tower stored)."""
    from llava.model.builder import load_pretrained_model

    lora_dir, _ = lora_region_run
    out = tmp_path_factory.mktemp("merged") / "llava-tiny-region-merged"
    tokenizer, model, _, _ = load_pretrained_model(str(lora_dir), tiny.llm, "llava-tiny-region-lora",
                                                   device="cpu", device_map="cpu")
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


@pytest.fixture(scope="session")
def tiny_llama_sharded(tiny, tmp_path_factory):
    """A plain tiny LLaMA (fp32, weights large enough that every layer matters) in ~10 safetensors shards."""
    import shutil

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig.from_pretrained(tiny.llm)
    cfg.initializer_range = 0.3
    torch.manual_seed(1)
    out = tmp_path_factory.mktemp("sharded") / "tiny-llama-sharded"
    LlamaForCausalLM(cfg).save_pretrained(str(out), max_shard_size="200KB", safe_serialization=True)
    for name in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(os.path.join(tiny.llm, name), out / name)
    return out
