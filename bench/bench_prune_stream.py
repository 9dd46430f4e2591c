"""Streaming cost of region-prune, measured in one run: time vs `cp -r`, peak RSS vs the largest shard.

Builds a multi-shard LLaMA checkpoint locally (float16, sizes below; default ~0.5 GB in ~100 MB
shards, with `region_layers` in config.json) in a child process, then runs `region-prune` in a
child process (`--no-verify`: the streaming rewrite alone) and `cp -r` of the same directory, and
prints the ratios. Peak RSS is `wait4`'s ru_maxrss of each child (Linux keeps the high-water mark
across fork+exec, so this parent never imports torch and stays small).

    python bench/bench_prune_stream.py [--layers 16 --hidden 1024 --shard-size 100MB --format safetensors|bin]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build(path: str, layers: int, hidden: int, vocab: int, shard_size: str, fmt: str) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from region_plugin.spec import uniform_layers

    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=int(hidden * 2.75),
                      num_hidden_layers=layers, num_attention_heads=hidden // 64, num_key_value_heads=hidden // 64,
                      tie_word_embeddings=False, torch_dtype="float16")
    cfg.region_layers = uniform_layers(max(1, layers // 4), layers)
    torch.manual_seed(0)
    torch.set_default_dtype(torch.float16)
    model = LlamaForCausalLM(cfg)
    torch.set_default_dtype(torch.float32)
    model.save_pretrained(path, max_shard_size=shard_size, safe_serialization=(fmt == "safetensors"))
    del model


def run_child(cmd, env=None):
    """(seconds, peak RSS bytes, returncode, output) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - start, usage.ru_maxrss * 1024, proc.returncode, out.decode(errors="replace")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=16)
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--shard-size", default="100MB")
    p.add_argument("--format", choices=("safetensors", "bin"), default="safetensors")
    p.add_argument("--num-prune", type=int, default=4)
    p.add_argument("--workdir", help="where to build (default: a temporary directory, removed at the end)")
    p.add_argument("--build-only", metavar="PATH", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.build_only:
        build(args.build_only, args.layers, args.hidden, args.vocab, args.shard_size, args.format)
        return 0

    work = args.workdir or tempfile.mkdtemp(prefix="bench-prune-")
    os.makedirs(work, exist_ok=True)
    src, pruned, copied = (os.path.join(work, n) for n in ("llava-bench-src", "llava-bench-pruned", "bench-copy"))
    try:
        env = {**os.environ, "PYTHONPATH": REPO, "OMP_NUM_THREADS": "1"}
        if not os.path.isdir(src):
            secs, _, rc, out = run_child([sys.executable, os.path.abspath(__file__), "--build-only", src,
                                          "--layers", str(args.layers), "--hidden", str(args.hidden), "--vocab",
                                          str(args.vocab), "--shard-size", args.shard_size, "--format", args.format],
                                         env)
            if rc:
                print(out)
                return rc
            print(f"built {src} in {secs:.1f} s")
        shards = [f for f in os.listdir(src) if f.endswith((".safetensors", ".bin"))]
        sizes = [os.path.getsize(os.path.join(src, f)) for f in shards]
        rng = random.Random(0)
        scores = os.path.join(work, "scores.json")
        with open(scores, "w") as f:
            json.dump({"metrics": {"angular": [rng.random() for _ in range(args.layers)]}}, f)

        for d in (pruned, copied):
            shutil.rmtree(d, ignore_errors=True)
        run_child(["cp", "-r", src, copied])  # warm the page cache so both timed runs read the same way
        shutil.rmtree(copied)
        # What the pruner must import anyway: nothing heavy for safetensors, torch for .bin (torch.load).
        imports = "import region_plugin.pruning.cli" + ("; import torch" if args.format == "bin" else "")
        base_s, base_rss, _, _ = run_child([sys.executable, "-c", imports], env)
        prune_s, prune_rss, rc, out = run_child([sys.executable, "-m", "region_plugin.pruning", "--model-path", src,
                                                 "--out", pruned, "--num-prune", str(args.num_prune),
                                                 "--scores", scores, "--no-verify"], env)
        if rc:
            print(out)
            return rc
        cp_s, cp_rss, _, _ = run_child(["cp", "-r", src, copied])

        with open(os.path.join(pruned, "config.json")) as f:
            cfg = json.load(f)
        assert cfg["num_hidden_layers"] == args.layers - args.num_prune, cfg
        out_bytes = sum(os.path.getsize(os.path.join(pruned, f)) for f in os.listdir(pruned))
        mb = 1 << 20
        print(out.strip().splitlines()[-1])
        print(f"checkpoint            : {args.format}, {len(shards)} shards, {sum(sizes) / mb:.0f} MB total, "
              f"largest shard {max(sizes) / mb:.0f} MB; output {out_bytes / mb:.0f} MB")
        print(f"prune time / cp time  : {prune_s:.2f} s / {cp_s:.2f} s = {prune_s / cp_s:.2f} "
              f"(python + imports alone: {base_s:.2f} s)")
        print(f"peak RSS              : {prune_rss / mb:.0f} MB (python + imports alone: {base_rss / mb:.0f} MB; "
              f"cp: {cp_rss / mb:.0f} MB)")
        print(f"peak RSS / largest shard: {prune_rss / max(sizes):.2f} ({(prune_rss - base_rss) / max(sizes):.2f} above "
              f"the imports); peak RSS / total: {prune_rss / sum(sizes):.3f}")
        return 0
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
