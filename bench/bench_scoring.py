"""Scoring cost: (one scored pass with all hidden-state metrics) / (one plain forward), same samples, one run.

By default builds a local LLaVA (LLaMA of --hidden/--layers + CLIP), gives it one upstream LoRA
step through `region_plugin.llava.train` so it is a real LLaVA checkpoint, and loads it through
upstream's loader. Or pass --model-path [--model-base] --data --image-folder for a real checkpoint
(on a GPU). Both sides get the same pre-tokenized batches; timings alternate and the median of
--repeats rounds is reported:

    plain    upstream forward: model(input_ids, images, attention_mask)
    scored   upstream image expansion + the same forward with the scoring hooks (bi, mm_bi, angular)
             + folding into running sums
    +attn    the same plus attention weights reduced in the hooks (needs eager attention)

    python bench/bench_scoring.py [--hidden 256 --layers 16 --samples 32 --batch-size 4 --repeats 5]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

HIDDEN = ("bi", "mm_bi", "angular")


def build_checkpoint(root: str, hidden: int, layers: int, samples: int):
    from region_plugin.tiny import (TinyLLaVA, build_data, build_llm, build_projector, build_vision_tower,
                                    llava_train_args)

    llm = build_llm(os.path.join(root, "bench-vicuna"), num_layers=layers, hidden=hidden)
    tower = build_vision_tower(os.path.join(root, "bench-clip"), hidden=64)
    proj = build_projector(os.path.join(root, "pretrain", "mm_projector.bin"), vision_hidden=64, llm_hidden=hidden)
    tiny = TinyLLaVA(root=root, llm=llm, vision_tower=tower, projector=proj, num_layers=layers,
                     **build_data(root, num_samples=samples))
    out = os.path.join(root, "llava-bench-lora")
    proc = subprocess.run([sys.executable, "-m", "region_plugin.llava.train",
                           *llava_train_args(tiny, out, lora=True, steps=1)], capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"building the bench checkpoint failed:\n{proc.stderr[-3000:]}")
    return out, llm, tiny.data, tiny.image_folder


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn) -> float:
    sync()
    t = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=16)
    p.add_argument("--samples", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--model-path")
    p.add_argument("--model-base")
    p.add_argument("--data")
    p.add_argument("--image-folder")
    p.add_argument("--device", default=None)
    args = p.parse_args()

    from region_plugin.llava.data import LlavaAdapter, expand
    from region_plugin.scoring import HiddenStateScorer
    from region_plugin.devices import default_device
    from region_plugin.scoring.records import read_records

    with tempfile.TemporaryDirectory() as root:
        if args.model_path:
            model_path, base, data, images = args.model_path, args.model_base, args.data, args.image_folder
        else:
            model_path, base, data, images = build_checkpoint(root, args.hidden, args.layers, args.samples)
        adapter = LlavaAdapter()
        device = args.device or default_device()
        records = read_records(data, images, args.samples)
        loaded = adapter.load(model_path, base, device, attn_implementation="eager")
        model = loaded.model
        raws = list(adapter.raw_batches(loaded, records, images, args.batch_size))

        def plain():
            with torch.no_grad():
                for raw in raws:
                    model(**raw.plain_inputs(), use_cache=False)

        def scored(metrics):
            def run():
                with HiddenStateScorer(model, metrics) as scorer:
                    for raw in raws:
                        scorer.score(expand(model, raw))
                scorer.result()
            return run

        sides = {"plain": plain, "scored": scored(HIDDEN), "scored+attn": scored(HIDDEN + ("attn",))}
        for fn in sides.values():  # warm-up: first-call costs hit no side
            fn()
        times = {k: [] for k in sides}
        order = list(sides)
        for r in range(args.repeats):  # rotate the order so no side always runs first in a round
            for k in order[r % 3:] + order[:r % 3]:
                times[k].append(timed(sides[k]))
        med = {k: statistics.median(v) for k, v in times.items()}
        tokens = sum(int(expand(model, raw).valid.sum()) for raw in raws)
        print(f"model {model_path} ({len(raws)} batches, {len(records)} samples, {tokens} tokens, device {device}, "
              f"{torch.get_num_threads()} threads, median of {args.repeats})")
        for k in sides:
            print(f"  {k:12s} {med[k]:.4f} s")
        rounds = sorted(s / p for s, p in zip(times["scored"], times["plain"]))
        print(f"scoring/plain ratio (bi, mm_bi, angular): {med['scored'] / med['plain']:.3f}  (target <= 1.3; "
              f"per round {rounds[0]:.3f}..{rounds[-1]:.3f})")
        print(f"scoring/plain ratio with attn (eager attention weights): {med['scored+attn'] / med['plain']:.3f}")


if __name__ == "__main__":
    main()
