"""Training cost of region tuning vs all-layer tuning, whole training runs (the paper's Sec 5.2).

Builds a local LLaVA (LLaMA + CLIP, sizes below) and runs upstream's stage-2 finetune through
`region_plugin.llava.train` with identical flags (gradient checkpointing on, as upstream's
scripts), without and with `--region_layers`: after one warm-up run, --repeats pairs of runs in
alternating order, and prints the median ratios of train wall time, trainable parameters and
peak memory read from the `region_report.json` files. CPU by default; on a GPU add --bf16.
Per-step costs against the no-LoRA floor at LLaMA-7B shapes: bench/train_step.py.

    python bench/bench_region_cost.py --hidden 512 --layers 16 --steps 20 [--repeats 3] [--full] [--bf16]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
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


def train(tiny, out: str, region: str | None, full: bool, steps: int, bf16: bool, lora_r: int = 128) -> dict:
    from region_plugin.tiny import llava_train_args

    args = llava_train_args(tiny, out, lora=not full, steps=steps, cpu=not bf16)
    args += ["--per_device_train_batch_size", "8", "--gradient_checkpointing", "True"]
    if not full:  # upstream's finetune_lora.sh: r=128, alpha=256
        args += ["--lora_r", str(lora_r), "--lora_alpha", str(2 * lora_r)]
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
    p.add_argument("--repeats", type=int, default=3, help="pairs of runs; medians are compared")
    p.add_argument("--lora-r", type=int, default=128, help="LoRA rank (alpha = 2r; upstream: 128)")
    args = p.parse_args()
    runs = {"all": [], "region": []}
    with tempfile.TemporaryDirectory() as root:
        tiny = build(root, args.hidden, args.layers, samples=8 * args.steps)
        # Warm-up run so that first-run costs (imports, kernel compilation) hit neither side.
        train(tiny, os.path.join(root, "llava-warmup-lora"), args.region, args.full, 2, args.bf16, args.lora_r)
        for r in range(args.repeats):  # alternate which side runs first, so drift hits both alike
            for side in (("all", "region") if r % 2 == 0 else ("region", "all")):
                out = os.path.join(root, f"llava-{side}-lora-{r}")
                runs[side].append(train(tiny, out, args.region if side == "region" else None, args.full,
                                        args.steps, args.bf16, args.lora_r))
    base, region = runs["all"][0], runs["region"][0]
    mode = "full" if args.full else f"lora r={args.lora_r}"
    print(f"model: LLaMA hidden={args.hidden} layers={args.layers}, {mode}, {args.steps} steps, gradient "
          f"checkpointing, device={base['device']}, median of {args.repeats} alternating pairs")
    print(f"region {args.region} -> {region['region_layers']}")
    wall = {side: statistics.median(r["train_wall_seconds"] for r in runs[side]) for side in runs}
    pairs = sorted(r["train_wall_seconds"] / a["train_wall_seconds"] for a, r in zip(runs["all"], runs["region"]))
    print(f"{'train wall time':22s}: all {wall['all']:.2f} s, region {wall['region']:.2f} s, ratio "
          f"{wall['region'] / wall['all']:.3f} (pairs {pairs[0]:.3f}..{pairs[-1]:.3f})")
    b, r = base["parameters"]["llm"]["trainable"], region["parameters"]["llm"]["trainable"]
    print(f"{'trainable LLM params':22s}: all {b:,}, region {r:,}, ratio {r / b:.3f}")
    mem = {side: statistics.median(x["peak_memory"]["bytes"] for x in runs[side]) for side in runs}
    print(f"{'peak memory':22s}: all {mem['all'] / 2**30:.3f} GiB, region {mem['region'] / 2**30:.3f} GiB, ratio "
          f"{mem['region'] / mem['all']:.3f} ({base['peak_memory']['kind']})")


if __name__ == "__main__":
    main()
