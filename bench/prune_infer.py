"""Inference speed of a LLaVA checkpoint against its k-layer pruned twin made by `region-prune`, one run.

Builds a merged LLaVA-1.5-style checkpoint of the shape (random weights, uniform 25% region in
its config), prunes it with the real `region-prune` (layers ranked on local data by the angular
metric, only outside the region), loads both through upstream's `load_pretrained_model` and times
upstream's `generate` on the same image + prompt, greedy, KV cache on:

    prefill   generate(max_new_tokens=1): vision tower + projector + one pass over the prompt
    request   generate of 1 + --new-tokens tokens (min_new_tokens forces the length)

Sides are interleaved in a rotating order after a warm-up and medians compared. `speedup` is the
request-time ratio, `ideal` = N / (N - k), `speedup_over_ideal` their ratio.

    python bench/prune_infer.py --shape small|7b-slice [--num-prune 4] [--device ...] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import torch  # noqa: E402

from benchkit import build  # noqa: E402
from benchkit.measure import CLOCKS, environment, interleaved, median, spread  # noqa: E402
from benchkit.shapes import SHAPES, get_shape  # noqa: E402

TARGET = 0.95


def log(msg: str) -> None:
    print(f"[prune_infer] {msg}", file=sys.stderr, flush=True)


def prune(ckpt: str, out: str, num_prune: int, data: dict, device: str) -> dict:
    """Run region-prune as a user would; return its prune_report.json."""
    from region_plugin.pruning.cli import REPORT_NAME, main as region_prune

    rc = region_prune(["--model-path", ckpt, "--out", out, "--num-prune", str(num_prune), "--data", data["data"],
                       "--image-folder", data["image_folder"], "--num-samples", "4", "--no-verify",
                       "--device", device])
    if rc:
        raise SystemExit(f"region-prune failed with exit code {rc}")
    with open(os.path.join(out, REPORT_NAME)) as f:
        return json.load(f)


class Generator:
    """Upstream loader + upstream generate on one image and prompt, greedy, with a fixed output length."""

    def __init__(self, path: str, device: str, image: str):
        from PIL import Image
        from llava.constants import IMAGE_TOKEN_INDEX
        from llava.conversation import conv_templates
        from llava.mm_utils import process_images, tokenizer_image_token

        from region_plugin.llava.loading import load_llava

        self.tokenizer, self.model, processor, _ = load_llava(path, None, device)
        conv = conv_templates["vicuna_v1"].copy()
        conv.append_message(conv.roles[0], "<image>\nDescribe the image in detail.")
        conv.append_message(conv.roles[1], None)
        ids = tokenizer_image_token(conv.get_prompt(), self.tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt")
        self.input_ids = ids[None].to(self.model.device)
        pil = Image.open(image).convert("RGB")
        self.images = process_images([pil], processor, self.model.config).to(self.model.device, self.model.dtype)
        self.image_sizes = [pil.size]
        self.layers = len(self.model.get_model().layers)

    def __call__(self, new_tokens: int):
        with torch.inference_mode():
            out = self.model.generate(self.input_ids, images=self.images, image_sizes=self.image_sizes,
                                      do_sample=False, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                      use_cache=True, pad_token_id=self.tokenizer.pad_token_id or 0)
        # From inputs_embeds, transformers 4.37 starts the output with a BOS placeholder.
        if out.shape[1] not in (new_tokens, new_tokens + 1):
            raise RuntimeError(f"generate returned {out.shape[1]} tokens, expected {new_tokens}")
        return out


def main() -> int:
    from region_plugin.devices import default_device

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", choices=sorted(SHAPES), default="small")
    p.add_argument("--num-prune", type=int, default=4)
    p.add_argument("--device", default=None, help="default: the machine's accelerator, else cpu")
    p.add_argument("--layers", type=int, help="decoder layers before pruning (default: the shape's)")
    p.add_argument("--new-tokens", type=int, help="decoded tokens per request (default 32 on CPU, 128 otherwise)")
    p.add_argument("--steps", type=int, default=5, help="timed rounds (median over these)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--clock", choices=CLOCKS, default="wall",
                   help="wall time (default) or process CPU time (CPU only, with --threads 1)")
    p.add_argument("--workdir", help="build here and keep it (default: a temporary directory)")
    p.add_argument("--json", action="store_true", help="print the result as JSON on the last line")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or default_device()
    on_cpu = torch.device(device).type == "cpu"
    if args.clock == "process" and not on_cpu:
        p.error("--clock process measures CPU time: use it with --device cpu")
    shape = get_shape(args.shape, args.layers)
    n, k = shape.infer_layers, args.num_prune
    new_tokens = args.new_tokens or (32 if on_cpu else 128)
    work = args.workdir or tempfile.mkdtemp(prefix="bench-prune-infer-")
    try:
        log(f"building {shape.name}: hidden {shape.hidden}, {n} layers, vocab {shape.vocab} in {work}")
        tower = build.vision_tower(os.path.join(work, "bench-clip"), shape)
        data = build.data(os.path.join(work, "data"), shape, samples=4)
        ckpt = build.llava_checkpoint(os.path.join(work, f"llava-{shape.name}"), shape, n, tower, device,
                                      torch.float16)
        pruned_dir = os.path.join(work, f"llava-{shape.name}-pruned")
        if os.path.isdir(pruned_dir):
            shutil.rmtree(pruned_dir)
        report = prune(ckpt, pruned_dir, k, data, device)
        log(f"region-prune removed layers {report['pruned_layers']} (region {report['region_layers_before']})")
        image = os.path.join(data["image_folder"], "img_000.png")
        models = {"base": Generator(ckpt, device, image), "pruned": Generator(pruned_dir, device, image)}
        assert models["pruned"].layers == n - k, (models["pruned"].layers, n, k)
        sides = {}
        for name, gen in models.items():
            sides[f"{name}_prefill"] = lambda g=gen: g(1)
            sides[f"{name}_request"] = lambda g=gen: g(1 + new_tokens)
        times = interleaved(sides, device, args.warmup, args.steps, log)
        med = {s: median(times[s][args.clock]) for s in sides}
        decode = {m: new_tokens / max(med[f"{m}_request"] - med[f"{m}_prefill"], 1e-9) for m in models}
        ideal = n / (n - k)
        speedup = med["base_request"] / med["pruned_request"]
        prefill_speedup = med["base_prefill"] / med["pruned_prefill"]
        result = {
            "shape": shape.name, "device": device, "dtype": str(models["base"].model.dtype).replace("torch.", ""),
            "layers": n, "num_prune": k, "pruned_layers": report["pruned_layers"],
            "region_layers": report["region_layers_before"], "prompt_tokens": int(models["base"].input_ids.shape[1])
            - 1 + shape.image_tokens, "new_tokens": new_tokens, "clock": args.clock, "warmup": args.warmup,
            "steps": args.steps,
            "seconds": {s: round(v, 4) for s, v in med.items()},
            "prefill_seconds": {m: round(med[f"{m}_prefill"], 4) for m in models},
            "decode_tokens_per_s": {m: round(v, 2) for m, v in decode.items()},
            "speedup": round(speedup, 4), "ideal": round(ideal, 4), "speedup_over_ideal": round(speedup / ideal, 4),
            "prefill_speedup": round(prefill_speedup, 4),
            "decode_speedup": round(decode["pruned"] / decode["base"], 4),
            "round_spread": {"speedup": spread(times["base_request"][args.clock], times["pruned_request"][args.clock])},
            "env": environment(device),
        }
        result["prefill_over_ideal"] = round(result["prefill_speedup"] / ideal, 4)
        result["decode_over_ideal"] = round(result["decode_speedup"] / ideal, 4)
        show(result)
        if args.json:
            print(json.dumps(result))
        return 0
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


def show(r: dict) -> None:
    print(f"{r['shape']} on {r['device']} ({r['env']['device_name']}, {r['dtype']}, {r['env']['threads']} threads): "
          f"{r['layers']} -> {r['layers'] - r['num_prune']} layers (removed {r['pruned_layers']}, region "
          f"{r['region_layers']}), prompt {r['prompt_tokens']} tokens + {r['new_tokens']} new, median "
          f"{r['clock']} time of {r['steps']} interleaved rounds")
    for m in ("base", "pruned"):
        print(f"  {m:7s} prefill {r['prefill_seconds'][m]:.4f} s, decode {r['decode_tokens_per_s'][m]:.2f} tokens/s, "
              f"request {r['seconds'][m + '_request']:.4f} s")
    verdict = "met" if r["speedup_over_ideal"] >= TARGET else "MISSED"
    print(f"  speedup {r['speedup']} (prefill {r['prefill_speedup']}, decode {r['decode_speedup']}), ideal "
          f"{r['ideal']}, speedup_over_ideal {r['speedup_over_ideal']} (target >= {TARGET}: {verdict}); speedup "
          f"per round min/median/max {r['round_spread']['speedup']}")


if __name__ == "__main__":
    sys.exit(main())
