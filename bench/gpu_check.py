"""GPU acceptance check: region training with upstream LLaVA in the settings users run.

Needs CUDA. Runs, on a locally built tiny LLaVA: region LoRA in bf16 (single process), region
LoRA and region full tuning under DeepSpeed ZeRO-3 (torchrun, all visible GPUs), then loads the
LoRA output with upstream's loader on the GPU and generates, scores the LoRA output with
region-score on the GPU (checked against the same scores on CPU) and prunes it with region-prune
(verification on the GPU). Prints one PASS/FAIL line per check.

    python bench/gpu_check.py [--workdir DIR]
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

HERE = os.path.dirname(os.path.abspath(__file__))
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


def main():
    import torch

    from region_plugin.tiny import build_tiny_llava, llava_train_args

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--workdir", default=None)
    args = p.parse_args()
    assert torch.cuda.is_available(), "gpu_check needs CUDA"
    root = args.workdir or tempfile.mkdtemp(prefix="region-gpu-")
    tiny = build_tiny_llava(os.path.join(root, "tiny"))
    ngpu = torch.cuda.device_count()
    print(f"torch {torch.__version__}, {ngpu} x {torch.cuda.get_device_name(0)}", flush=True)

    def train_args(out, lora):
        return llava_train_args(tiny, out, lora=lora, cpu=False) + ["--bf16", "True", "--region_layers", "25%"]

    # 1. single-process bf16 LoRA
    out = os.path.join(root, "llava-bf16-region-lora")
    proc, dt = run([sys.executable, "-m", "region_plugin.llava.train", *train_args(out, True)])
    ok = proc.returncode == 0 and lora_layers(out) == [0, 6]
    report = json.load(open(os.path.join(out, "region_report.json"))) if ok else {}
    check("bf16 region LoRA (1 process)", ok, f"{dt:.0f}s device={report.get('device')} "
          f"peak={report.get('peak_memory', {}).get('gib')} GiB")

    # 2. ZeRO-3 LoRA and full tuning, torchrun over all GPUs
    zero3 = os.path.join(HERE, "zero3.json")
    for lora in (True, False):
        out = os.path.join(root, f"llava-zero3-region-{'lora' if lora else 'full'}")
        a = train_args(out, lora)
        if lora:  # upstream's projector LR group can be empty under ZeRO (scheduler zip error)
            i = a.index("--mm_projector_lr")
            del a[i:i + 2]
        proc, dt = run(["torchrun", "--standalone", f"--nproc_per_node={ngpu}", "-m", "region_plugin.llava.train",
                        *a, "--deepspeed", zero3])
        if lora:
            ok = proc.returncode == 0 and lora_layers(out) == [0, 6]
        else:
            ok = proc.returncode == 0
            if ok:
                from safetensors.torch import load_file

                tuned = {}
                for f in os.listdir(out):
                    if f.endswith(".safetensors"):
                        tuned.update(load_file(os.path.join(out, f)))
                base = load_file(os.path.join(tiny.llm, "model.safetensors"))
                changed = sorted({int(k.split(".")[2]) for k, v in base.items() if k.startswith("model.layers.")
                                  and not torch.equal(tuned[k].float(), v.to(tuned[k].dtype).float())})
                ok = changed == [0, 6]
                print(f"    changed layers: {changed}")
        rep = json.load(open(os.path.join(out, "region_report.json"))) if proc.returncode == 0 else {}
        check(f"ZeRO-3 region {'LoRA' if lora else 'full tuning'} ({ngpu} rank)", ok,
              f"{dt:.0f}s trainable_llm={rep.get('parameters', {}).get('llm')}")

    # 3. upstream loader on the GPU + generate
    from region_plugin.llava.loading import load_llava

    tok, model, proc_img, _ = load_llava(os.path.join(root, "llava-bf16-region-lora"), tiny.llm)
    from llava.constants import IMAGE_TOKEN_INDEX
    from llava.conversation import conv_templates
    from llava.mm_utils import process_images, tokenizer_image_token
    from PIL import Image

    conv = conv_templates["vicuna_v1"].copy()
    conv.append_message(conv.roles[0], "<image>\nWhat color is the shape?")
    conv.append_message(conv.roles[1], None)
    ids = tokenizer_image_token(conv.get_prompt(), tok, IMAGE_TOKEN_INDEX, return_tensors="pt")[None].cuda()
    img = Image.open(os.path.join(tiny.image_folder, "img_000.png")).convert("RGB")
    px = process_images([img], proc_img, model.config).to(model.device, model.dtype)
    with torch.inference_mode():
        gen = model.generate(ids, images=px, image_sizes=[img.size], do_sample=False, max_new_tokens=8)
    check("upstream loader (cuda, fp16) + generate", gen.shape[0] == 1 and model.device.type == "cuda",
          repr(tok.decode(gen[0], skip_special_tokens=True)))
    del model
    torch.cuda.empty_cache()

    # 4. region-score on the GPU (upstream loader, fp16) agrees with the fp32 CPU pass
    from region_plugin.pruning.cli import main as region_prune
    from region_plugin.scoring import score_checkpoint

    lora_out = os.path.join(root, "llava-bf16-region-lora")
    kw = dict(data=tiny.data, image_folder=tiny.image_folder, metrics="bi,mm_bi,angular,attn", num_samples=8,
              progress=False)
    t0 = time.time()
    gpu = score_checkpoint(lora_out, tiny.llm, device="cuda", **kw)
    dt = time.time() - t0
    cpu = score_checkpoint(lora_out, tiny.llm, device="cpu", **kw)
    worst = max(abs(a - b) for m in gpu["metrics"] for a, b in zip(gpu["metrics"][m], cpu["metrics"][m]))
    check("region-score on cuda matches cpu", worst < 2e-2 and gpu["meta"]["device"] == "cuda",
          f"{dt:.0f}s max |gpu - cpu| = {worst:.2e} over {len(gpu['metrics'])} metrics")

    # 5. region-prune of the LoRA output (merge + verification on the GPU) loads with upstream's loader
    pruned = os.path.join(root, "llava-bf16-region-pruned")
    t0 = time.time()
    rc = region_prune(["--model-path", lora_out, "--model-base", tiny.llm, "--out", pruned, "--num-prune", "2",
                       "--data", tiny.data, "--image-folder", tiny.image_folder, "--num-samples", "8"])
    dt = time.time() - t0
    rep = json.load(open(os.path.join(pruned, "prune_report.json"))) if rc == 0 else {}
    tok, model, _, _ = load_llava(pruned, None) if rc == 0 else (None, None, None, None)
    ok = rc == 0 and model.device.type == "cuda" and len(model.get_model().layers) == 6 \
        and not set(rep["pruned_layers"]) & {0, 6}
    check("region-prune on cuda + upstream loader", ok,
          f"{dt:.0f}s pruned={rep.get('pruned_layers')} cos={(rep.get('verification') or {}).get('mean_cosine_final_hidden')}")
    print(f"{sum(results)} passed, {len(results) - sum(results)} failed")
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
