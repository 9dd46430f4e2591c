"""Scoring cost: (one scored pass with all hidden-state metrics) / (one plain forward), same samples, one run.

By default builds a local LLaVA (LLaMA of --hidden/--layers + CLIP), gives it one upstream LoRA
step through `region_plugin.llava.train` so it is a real LLaVA checkpoint, and loads it through
upstream's loader twice, with the attention implementation `region-score` picks for each metric
set: the default one (sdpa / flash) for the hidden-state metrics, eager when `attn` is asked for.
Each ratio compares sides on the same model, so it measures the scoring and nothing else. Or pass
--model-path [--model-base] --data --image-folder for a real checkpoint (on a GPU). All sides get
the same pre-tokenized batches; timings rotate and the median of --repeats rounds is reported:

    plain          upstream forward: model(input_ids, images, attention_mask), default attention
    scored         upstream image expansion + the same forward with the scoring hooks (bi, mm_bi,
                   angular) + folding into running sums, default attention (as region-score runs it)
    plain_eager    the plain forward on the eager-attention model
    scored+attn    the scored pass plus attention weights reduced in the hooks, eager attention

    python bench/bench_scoring.py [--hidden 256 --layers 16 --samples 32 --batch-size 4 --repeats 5] [--threads 1 --clock process]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchkit.measure import CLOCKS, timed  # noqa: E402

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
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--clock", choices=CLOCKS, default="wall",
                   help="wall time (default) or process CPU time (CPU only, with --threads 1: steadier when shared)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

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
        # The attention implementation region-score uses for each metric set (scoring/api.py).
        loaded = adapter.load(model_path, base, device, attn_implementation=None)
        eager = adapter.load(model_path, base, device, attn_implementation="eager")
        model, model_eager = loaded.model, eager.model
        raws = list(adapter.raw_batches(loaded, records, images, args.batch_size))

        def plain(m):
            def run():
                with torch.no_grad():
                    for raw in raws:
                        m(**raw.plain_inputs(), use_cache=False)
            return run

        def scored(m, metrics):
            def run():
                with HiddenStateScorer(m, metrics) as scorer:
                    for raw in raws:
                        scorer.score(expand(m, raw))
                scorer.result()
            return run

        sides = {"plain": plain(model), "scored": scored(model, HIDDEN),
                 "plain_eager": plain(model_eager), "scored+attn": scored(model_eager, HIDDEN + ("attn",))}
        for fn in sides.values():  # warm-up: first-call costs hit no side
            fn()
        times = {k: [] for k in sides}
        order = list(sides)
        for r in range(args.repeats):  # rotate the order so no side always runs first in a round
            k0 = r % len(order)
            for k in order[k0:] + order[:k0]:
                times[k].append(timed(sides[k], device)[args.clock])
        med = {k: statistics.median(v) for k, v in times.items()}
        tokens = sum(int(expand(model, raw).valid.sum()) for raw in raws)
        # What each model really runs (transformers 4.37 drops attn_implementation="eager" when upstream's
        # loader passes a config object, i.e. for a LoRA dir + base: sdpa then falls back per call).
        attn = getattr(model.config, "_attn_implementation", None)
        attn_e = getattr(model_eager.config, "_attn_implementation", None)
        print(f"model {model_path} ({len(raws)} batches, {len(records)} samples, {tokens} tokens, device {device}, "
              f"{torch.get_num_threads()} threads, median {args.clock} time of {args.repeats})")
        for k in sides:
            print(f"  {k:12s} {med[k]:.4f} s")
        rounds = sorted(s / p for s, p in zip(times["scored"], times["plain"]))
        print(f"scoring/plain ratio (bi, mm_bi, angular; both {attn} attention): "
              f"{med['scored'] / med['plain']:.3f}  (target <= 1.3; per round {rounds[0]:.3f}..{rounds[-1]:.3f})")
        print(f"scoring/plain ratio with attn (both loaded as region-score loads for attn: {attn_e} attention): "
              f"{med['scored+attn'] / med['plain_eager']:.3f}")
        print(f"plain forward, attn-load / default-load ({attn_e} / {attn}): {med['plain_eager'] / med['plain']:.3f}")


if __name__ == "__main__":
    main()
