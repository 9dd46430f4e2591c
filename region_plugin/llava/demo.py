"""`make demo`: the whole region workflow on an embedded tiny LLaVA, with real upstream code, on CPU.

1. build a tiny LLaVA locally (LLaMA 8 layers + sentencepiece, CLIP 32 px, shape images);
2. run upstream's stage-2 LoRA finetune through `region_plugin.llava.train --region_layers 25%`;
3. merge and load the result with upstream's `load_pretrained_model`;
4. ask it a question about an image; 5. print the cost report.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

MARKER = ".region-demo"


def stage(i: int, text: str) -> None:
    print(f"\n[{i}/5] {text}", flush=True)


def prepare_out(out: str) -> None:
    """Reuse only a directory an earlier demo created; never delete anything else."""
    if os.path.exists(out):
        if not os.path.isfile(os.path.join(out, MARKER)):
            sys.exit(f"error: --out {out!r} exists and was not made by the demo; pick another --out")
        shutil.rmtree(out)
    os.makedirs(out)
    open(os.path.join(out, MARKER), "w").close()


def load(model_dir: str, base: str):
    """Upstream's loader merges the LoRA dir into the base (our wrapper only picks device/dtype)."""
    from .loading import load_llava

    tokenizer, model, image_processor, _ = load_llava(model_dir, base)
    if not getattr(model.config, "region_layers", None):
        raise RuntimeError(f"{model_dir}/config.json does not record region_layers")
    return tokenizer, model, image_processor


def ask(tokenizer, model, image_processor, image_path: str, question: str) -> str:
    import torch
    from PIL import Image

    from llava.constants import IMAGE_TOKEN_INDEX
    from llava.conversation import conv_templates
    from llava.mm_utils import process_images, tokenizer_image_token

    conv = conv_templates["vicuna_v1"].copy()
    conv.append_message(conv.roles[0], "<image>\n" + question)
    conv.append_message(conv.roles[1], None)
    ids = tokenizer_image_token(conv.get_prompt(), tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt")[None]
    image = Image.open(image_path).convert("RGB")
    pixels = process_images([image], image_processor, model.config).to(model.device, model.dtype)
    with torch.inference_mode():
        out = model.generate(ids.to(model.device), attention_mask=torch.ones_like(ids).to(model.device),
                             images=pixels, image_sizes=[image.size], do_sample=False, max_new_tokens=12,
                             pad_token_id=tokenizer.unk_token_id)
    return tokenizer.decode(out[0], skip_special_tokens=True).strip()


def color_example(data_path: str):
    """The first training sample with a color question: (image name, question, reference answer)."""
    with open(data_path) as f:
        for rec in json.load(f):
            turns = rec["conversations"]
            for q, a in zip(turns[::2], turns[1::2]):
                if "color" in q["value"]:
                    return rec["image"], q["value"].replace("<image>\n", ""), a["value"]
    raise RuntimeError(f"{data_path} has no color question")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="region-demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="demo_out", help="working directory (recreated; default demo_out)")
    p.add_argument("--region_layers", default="25%", help="region spec (default 25%%)")
    p.add_argument("--steps", type=int, default=60, help="training steps (default 60)")
    args = p.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    t0 = time.time()

    from region_plugin.tiny import build_tiny_llava, llava_train_args

    prepare_out(args.out)
    stage(1, f"building an embedded tiny LLaVA in {args.out}/tiny (no downloads)")
    tiny = build_tiny_llava(os.path.join(args.out, "tiny"), num_samples=96)
    print(f"      LLM {tiny.llm} ({tiny.num_layers} layers), vision tower {tiny.vision_tower}, data {tiny.data}")

    stage(2, f"upstream LLaVA stage-2 LoRA finetune via region_plugin, --region_layers {args.region_layers}")
    run_dir = os.path.join(args.out, "llava-tiny-region-lora")
    from .train import main as train_main

    train_args = llava_train_args(tiny, run_dir, lora=True, steps=args.steps) + ["--region_layers", args.region_layers]
    code = train_main(train_args)
    if code:
        return code

    stage(3, "merging the LoRA output with upstream load_pretrained_model(model_path, model_base, name)")
    tokenizer, model, image_processor = load(run_dir, tiny.llm)
    print(f"      loaded {type(model).__name__}, region_layers={model.config.region_layers}")

    image, question, reference = color_example(tiny.data)
    stage(4, f"asking about {image}: {question!r}")
    reply = ask(tokenizer, model, image_processor, os.path.join(tiny.image_folder, image), question)
    print(f"      model says        : {reply!r}")
    print(f"      training data says: {reference!r}")

    stage(5, "cost report (also in llava-tiny-region-lora/region_report.json)")
    from region_plugin.report import format_report

    with open(os.path.join(run_dir, "region_report.json")) as f:
        print(format_report(json.load(f)))
    print(f"\ndemo finished in {time.time() - t0:.0f} s; outputs in {args.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
