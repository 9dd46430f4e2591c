"""Training cost of region tuning vs all-layer tuning, measured in one run (the paper's Sec 5.2).

Builds a local LLaVA (LLaMA + CLIP, sizes below), runs upstream's stage-2 finetune through
`region_plugin.llava.train` twice with identical flags, once without and once with
`--region_layers`, and prints the ratios of train wall time, trainable parameters and peak memory
read from the two `region_report.json` files. CPU by default; on a GPU add --bf16.

    python bench/bench_region_cost.py --hidden 512 --layers 16 --steps 20 [--full] [--bf16]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile


def build(root: str, hidden: int, layers: int, samples: int) -> object:
    from region_plugin.tiny import build_data, build_llm, build_projector, build_vision_tower, TinyLLaVA

    llm = build_llm(os.path.join(root, "bench-vicuna"), num_layers=layers, hidden=hidden)
    tower = build_vision_tower(os.path.join(root, "bench-clip"), hidden=64)
    proj = build_projector(os.path.join(root, "pretrain", "mm_projector.bin"), vision_hidden=64, llm_hidden=hidden)
    data = build_data(root, num_samples=samples)
    return TinyLLaVA(root=root, llm=llm, vision_tower=tower, projector=proj, num_layers=layers, **data)


def train(tiny, out: str, region: str | None, full: bool, steps: int, bf16: bool) -> dict:
    from region_plugin.tiny import llava_train_args

    args = llava_train_args(tiny, out, lora=not full, steps=steps, cpu=not bf16)
    args += ["--per_device_train_batch_size", "8", "--gradient_checkpointing", "False"]
    if bf16:
        args += ["--bf16", "True"]  # later flags win in HfArgumentParser
    if region:
        args += ["--region_layers", region]
    proc = subprocess.run([sys.executable, "-m", "region_plugin.llava.train", *args], capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"training failed ({region or 'all layers'}):\n{proc.stderr[-3000:]}")
    with open(os.path.join(out, "region_report.json")) as f:
        return json.load(f)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=16)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--region", default="25%")
    p.add_argument("--full", action="store_true", help="full tuning instead of LoRA")
    p.add_argument("--bf16", action="store_true", help="bf16 on a GPU (upstream's setting)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as root:
        tiny = build(root, args.hidden, args.layers, samples=8 * args.steps)
        # Warm-up run so that first-run costs (imports, kernel compilation) hit neither side.
        train(tiny, os.path.join(root, "llava-warmup-lora"), args.region, args.full, 2, args.bf16)
        base = train(tiny, os.path.join(root, "llava-all-lora"), None, args.full, args.steps, args.bf16)
        region = train(tiny, os.path.join(root, "llava-region-lora"), args.region, args.full, args.steps, args.bf16)
    mode = "full" if args.full else "lora"
    print(f"model: LLaMA hidden={args.hidden} layers={args.layers}, {mode}, {args.steps} steps, device={base['device']}")
    print(f"region {args.region} -> {region['region_layers']}")
    for key, label in (("train_wall_seconds", "train wall time"),):
        print(f"{label:22s}: all {base[key]:.2f} s, region {region[key]:.2f} s, ratio {region[key] / base[key]:.3f}")
    b, r = base["parameters"]["llm"]["trainable"], region["parameters"]["llm"]["trainable"]
    print(f"{'trainable LLM params':22s}: all {b:,}, region {r:,}, ratio {r / b:.3f}")
    bm, rm = base["peak_memory"]["bytes"], region["peak_memory"]["bytes"]
    print(f"{'peak memory':22s}: all {bm / 2**30:.3f} GiB, region {rm / 2**30:.3f} GiB, ratio {rm / bm:.3f}"
          f" ({base['peak_memory']['kind']})")


if __name__ == "__main__":
    main()
