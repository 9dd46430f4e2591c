"""Outputs of region training load, merge, generate and evaluate with UNCHANGED upstream LLaVA code."""
import json

import torch
from safetensors.torch import load_file

from conftest import run_cli
from region_plugin.run_upstream import script_command


def _load(lora_dir, base):
    from llava.model.builder import load_pretrained_model
    from llava.mm_utils import get_model_name_from_path

    name = get_model_name_from_path(str(lora_dir))
    assert "llava" in name and "lora" in name  # upstream picks its LoRA branch from the name
    return load_pretrained_model(str(lora_dir), base, name, device="cpu", device_map="cpu")


def test_upstream_loader_merges_only_region_layers(lora_region_run, tiny):
    out, _ = lora_region_run
    tokenizer, model, image_processor, _ = _load(out, tiny.llm)
    assert model.config.region_layers == [0, 6]
    base = load_file(f"{tiny.llm}/model.safetensors")
    merged = {k: v.float() for k, v in model.state_dict().items()}
    changed = sorted({int(k.split(".")[2]) for k, v in base.items()
                      if k.startswith("model.layers.") and not torch.allclose(merged[k], v.half().float())})
    assert changed == [0, 6]
    for k in ("model.embed_tokens.weight", "lm_head.weight", "model.norm.weight"):
        assert torch.equal(merged[k], base[k].half().float())
    assert not any("lora" in k for k in merged)

    from llava.constants import IMAGE_TOKEN_INDEX
    from llava.conversation import conv_templates
    from llava.mm_utils import process_images, tokenizer_image_token
    from PIL import Image

    conv = conv_templates["vicuna_v1"].copy()
    conv.append_message(conv.roles[0], "<image>\nWhat color is the shape?")
    conv.append_message(conv.roles[1], None)
    ids = tokenizer_image_token(conv.get_prompt(), tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt")[None]
    image = Image.open(f"{tiny.image_folder}/img_000.png").convert("RGB")
    pixels = process_images([image], image_processor, model.config).to(model.device, torch.float16)
    with torch.inference_mode():
        gen = model.generate(ids, images=pixels, image_sizes=[image.size], do_sample=False, max_new_tokens=6)
    assert gen.shape[0] == 1 and 1 <= gen.shape[1] <= 7  # new tokens (+ a start token with inputs_embeds)
    assert isinstance(tokenizer.decode(gen[0], skip_special_tokens=True), str)


def test_upstream_model_vqa_loader_answers(lora_region_run, tiny, tmp_path):
    out, _ = lora_region_run
    answers = tmp_path / "answers.jsonl"
    proc = run_cli(script_command("llava.eval.model_vqa_loader",
                                  "--model-path", out, "--model-base", tiny.llm, "--image-folder", tiny.image_folder,
                                  "--question-file", tiny.questions, "--answers-file", answers,
                                  "--conv-mode", "vicuna_v1", "--temperature", "0", "--max_new_tokens", "8",
                                  device="cpu"))
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = [json.loads(line) for line in answers.read_text().splitlines()]
    assert [r["question_id"] for r in rows] == [0, 1]
    assert all(isinstance(r["text"], str) and r["model_id"] == out.name for r in rows)
