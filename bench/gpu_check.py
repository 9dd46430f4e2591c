"""GPU acceptance check: region training, scoring and pruning with upstream code, as users run them.

Needs CUDA. On a locally built tiny model of the chosen codebase it runs upstream's own
finetune_lora.sh flags unmodified (tests/recipe.py: only paths, sizes and `--report_to none`;
`--mm_projector_lr`, `--save_strategy steps`, gradient checkpointing, bf16 and upstream's own
zero3.json stay): region LoRA in one process and under ZeRO-3 (torchrun over all visible GPUs), a
resume from the intermediate checkpoint that must reproduce the uninterrupted run, region full
tuning under ZeRO-3; upstream's loader on the GPU + generate; region-score on the GPU (checked against
the same scores on CPU); region-prune of the LoRA output (merge and verification on the GPU),
loaded back with upstream's loader. Prints one PASS/FAIL line per check.

    python bench/gpu_check.py [--codebase llava|bunny] [--workdir DIR]

Bunny needs its stack (requirements-bunny.txt) and REGION_BUNNY_SRC, as for `make test-bunny`.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
from recipe import localize, upstream_flags, zero_config  # noqa: E402  (upstream's recipe, verbatim)

results = []


def check(name, ok, detail=""):
    results.append(ok)
    print(f"{'PASS' if ok else 'FAIL'} {name} {detail}", flush=True)


def run(cmd, env=None):
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if proc.returncode:
        print(proc.stdout[-3000:], proc.stderr[-6000:], sep="\n")
    return proc, time.time() - t0


def lora_layers(out):
    from safetensors.torch import load_file

    keys = load_file(os.path.join(out, "adapter_model.safetensors"))
    return sorted({int(re.search(r"\.layers\.(\d+)\.", k).group(1)) for k in keys})


@dataclass
class Codebase:
    """What differs between LLaVA and Bunny for this check; everything else is shared."""

    name: str                # "llava" | "bunny": whose recipe (tests/recipes/)
    build: Callable          # root -> tiny fixture
    train_args: Callable     # (tiny, out, lora) -> upstream flags without --region_layers
    module: str              # training entry point
    load: Callable           # (model_path, model_base) -> (tokenizer, model, image_processor, ctx)
    prompt: Callable         # (tokenizer, tiny) -> input_ids (1, T)
    process: Callable        # (images, image_processor, config) -> pixel tensor


def llava() -> Codebase:
    from llava.constants import IMAGE_TOKEN_INDEX
    from llava.conversation import conv_templates
    from llava.mm_utils import process_images, tokenizer_image_token

    from region_plugin.llava.loading import load_llava
    from region_plugin.tiny import build_tiny_llava, llava_train_args

    def prompt(tok, tiny):
        conv = conv_templates["vicuna_v1"].copy()
        conv.append_message(conv.roles[0], "<image>\nWhat color is the shape?")
        conv.append_message(conv.roles[1], None)
        return tokenizer_image_token(conv.get_prompt(), tok, IMAGE_TOKEN_INDEX, return_tensors="pt")[None]

    return Codebase("llava", build_tiny_llava, lambda t, o, lora: llava_train_args(t, o, lora=lora, cpu=False),
                    "region_plugin.llava.train", load_llava, prompt, process_images)


def bunny() -> Codebase:
    from region_plugin.bunny.loading import load_bunny
    from region_plugin.bunny.source import import_bunny
    from region_plugin.tiny.bunny import build_tiny_bunny, bunny_train_args

    mm, conv_lib = import_bunny("bunny.util.mm_utils"), import_bunny("bunny.conversation")
    index = import_bunny("bunny.constants").IMAGE_TOKEN_INDEX

    def prompt(tok, tiny):
        conv = conv_lib.conv_templates[tiny.version].copy()
        conv.append_message(conv.roles[0], "<image>\nWhat color is the shape?")
        conv.append_message(conv.roles[1], None)
        return mm.tokenizer_image_token(conv.get_prompt(), tok, index, return_tensors="pt")[None]

    return Codebase("bunny", lambda root: build_tiny_bunny(root, "llama3-8b"),
                    lambda t, o, lora: bunny_train_args(t, o, lora=lora, cpu=False),
                    "region_plugin.bunny.train", load_bunny, prompt, mm.process_images)


def changed_layers(out, llm_dir):
    """Decoder layers whose saved weights differ from the base LLM's."""
    import torch
    from safetensors.torch import load_file

    tuned = {}
    for f in os.listdir(out):
        if f.endswith(".safetensors"):
            tuned.update(load_file(os.path.join(out, f)))
    base = load_file(os.path.join(llm_dir, "model.safetensors"))
    return sorted({int(k.split(".")[2]) for k, v in base.items() if k.startswith("model.layers.")
                   and not torch.equal(tuned[k].float(), v.to(tuned[k].dtype).float())})


def main():
    import torch

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--codebase", choices=("llava", "bunny"), default="llava")
    p.add_argument("--workdir", default=None)
    args = p.parse_args()
    assert torch.cuda.is_available(), "gpu_check needs CUDA"
    cb = llava() if args.codebase == "llava" else bunny()
    root = args.workdir or tempfile.mkdtemp(prefix=f"region-gpu-{args.codebase}-")
    tiny = cb.build(os.path.join(root, "tiny"))
    ngpu = torch.cuda.device_count()
    print(f"{args.codebase}: torch {torch.__version__}, {ngpu} x {torch.cuda.get_device_name(0)}", flush=True)

    def train_args(out, lora):
        return cb.train_args(tiny, out, lora) + ["--bf16", "True", "--region_layers", "25%"]

    def recipe(out, steps=3, save_steps=2):
        paths = {"model_name_or_path": tiny.llm, "data_path": tiny.data, "image_folder": tiny.image_folder,
                 "vision_tower": tiny.vision_tower, "pretrain_mm_mlp_adapter": tiny.projector, "output_dir": out,
                 "deepspeed": zero_config(cb.name, 3)}
        if cb.name == "bunny":
            paths.update(model_type=tiny.model_type, version=tiny.version)
        flags = localize(upstream_flags(cb.name), paths, steps=steps, save_steps=save_steps, bf16=True)
        flags[flags.index("--tf32") + 1] = "True"  # GPU: upstream's value
        return flags + ["--region_layers", "25%"]

    def state(out):
        import torch
        from safetensors.torch import load_file

        return {**load_file(os.path.join(out, "adapter_model.safetensors")),
                **torch.load(os.path.join(out, "non_lora_trainables.bin"), map_location="cpu", weights_only=True)}

    # 1. upstream's recipe, one process (python -m, upstream's zero3.json) and ZeRO-3 over all GPUs
    lora_out = os.path.join(root, f"{args.codebase}-bf16-region-lora")
    proc, dt = run([sys.executable, "-m", cb.module, *recipe(lora_out)])
    ok = proc.returncode == 0 and lora_layers(lora_out) == [0, 6]
    report = json.load(open(os.path.join(lora_out, "region_report.json"))) if ok else {}
    check("upstream recipe, region LoRA (1 process)", ok, f"{dt:.0f}s device={report.get('device')} "
          f"peak={report.get('peak_memory', {}).get('gib')} GiB")
    z3 = os.path.join(root, f"{args.codebase}-zero3-region-lora")
    proc, dt = run(["torchrun", "--standalone", f"--nproc_per_node={ngpu}", "-m", cb.module, *recipe(z3)])
    ckpt = os.path.join(z3, "checkpoint-2")
    ok = proc.returncode == 0 and lora_layers(z3) == [0, 6] and os.path.isfile(os.path.join(ckpt, "config.json")) \
        and os.path.isfile(os.path.join(ckpt, "non_lora_trainables.bin"))
    check(f"upstream recipe under ZeRO-3 ({ngpu} rank), complete checkpoint-2", ok, f"{dt:.0f}s")

    # 2. resume from checkpoint-2 reproduces the uninterrupted run
    resumed = os.path.join(root, f"{args.codebase}-zero3-region-lora-resumed")
    if ok:
        import shutil

        shutil.copytree(ckpt, os.path.join(resumed, "checkpoint-2"))
        proc, dt = run(["torchrun", "--standalone", f"--nproc_per_node={ngpu}", "-m", cb.module, *recipe(resumed)])
        ok = proc.returncode == 0
        worst = max((a - b).abs().max().item() for a, b in
                    ((v.float(), state(z3)[k].float()) for k, v in state(resumed).items())) if ok else None
        check("resume from checkpoint-2 == uninterrupted run", ok and worst < 1e-2, f"{dt:.0f}s max diff {worst}")

    # 3. ZeRO-3 full tuning (upstream's zero3.json; --mm_projector_lr kept)
    out = os.path.join(root, f"{args.codebase}-zero3-region-full")
    proc, dt = run(["torchrun", "--standalone", f"--nproc_per_node={ngpu}", "-m", cb.module,
                    *train_args(out, False), "--deepspeed", zero_config(cb.name, 3)])
    ok = proc.returncode == 0
    if ok:
        changed = changed_layers(out, tiny.llm)
        print(f"    changed layers: {changed}")
        ok = changed == [0, 6]
    rep = json.load(open(os.path.join(out, "region_report.json"))) if proc.returncode == 0 else {}
    check(f"ZeRO-3 region full tuning ({ngpu} rank)", ok,
          f"{dt:.0f}s trainable_llm={rep.get('parameters', {}).get('llm')}")

    # 4. upstream loader on the GPU + generate
    from PIL import Image

    tok, model, image_processor, _ = cb.load(lora_out, tiny.llm)
    img = Image.open(os.path.join(tiny.image_folder, "img_000.png")).convert("RGB")
    px = cb.process([img], image_processor, model.config).to(model.device, model.dtype)
    with torch.inference_mode():
        gen = model.generate(cb.prompt(tok, tiny).to(model.device), images=px, do_sample=False, max_new_tokens=8)
    check("upstream loader (cuda, fp16) + generate", gen.shape[0] == 1 and model.device.type == "cuda",
          repr(tok.decode(gen[0], skip_special_tokens=True)))
    del model
    torch.cuda.empty_cache()

    # 5. region-score on the GPU (upstream loader, fp16) agrees with the fp32 CPU pass
    from region_plugin.pruning.cli import main as region_prune
    from region_plugin.scoring import score_checkpoint

    kw = dict(data=tiny.data, image_folder=tiny.image_folder, metrics="bi,mm_bi,angular,attn", num_samples=8,
              progress=False)
    t0 = time.time()
    gpu = score_checkpoint(lora_out, tiny.llm, device="cuda", **kw)
    dt = time.time() - t0
    cpu = score_checkpoint(lora_out, tiny.llm, device="cpu", **kw)
    worst = max(abs(a - b) for m in gpu["metrics"] for a, b in zip(gpu["metrics"][m], cpu["metrics"][m]))
    check("region-score on cuda matches cpu", worst < 2e-2 and gpu["meta"]["device"] == "cuda",
          f"{dt:.0f}s max |gpu - cpu| = {worst:.2e} over {len(gpu['metrics'])} metrics")

    # 6. region-prune of the LoRA output (merge + verification on the GPU) loads with upstream's loader
    pruned = os.path.join(root, f"{args.codebase}-bf16-region-pruned")
    t0 = time.time()
    rc = region_prune(["--model-path", lora_out, "--model-base", tiny.llm, "--out", pruned, "--num-prune", "2",
                       "--data", tiny.data, "--image-folder", tiny.image_folder, "--num-samples", "8"])
    dt = time.time() - t0
    rep = json.load(open(os.path.join(pruned, "prune_report.json"))) if rc == 0 else {}
    ok = rc == 0 and not set(rep["pruned_layers"]) & {0, 6}
    if ok:
        _, model, _, _ = cb.load(pruned, None)
        ok = model.device.type == "cuda" and len(model.get_model().layers) == 6
    verification = rep.get("verification") or {}
    check("region-prune on cuda + upstream loader", ok,
          f"{dt:.0f}s pruned={rep.get('pruned_layers')} cos={verification.get('mean_cosine_final_hidden')}")
    print(f"{sum(results)} passed, {len(results) - sum(results)} failed")
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
