"""region-prune on the tiny region-trained LLaVA: the result is a normal checkpoint for upstream's loader and eval."""
import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import run_cli
from region_plugin.run_upstream import script_command
from region_plugin.pruning.cli import main
from test_pruning_stream import leftovers, tree_digest

REGION = [0, 6]  # lora_region_run: 25% of 8 layers


@pytest.fixture(scope="module")
def scores_file(tmp_path_factory):
    """Scores that make the REGION layers the most redundant: region mode must still spare them."""
    path = tmp_path_factory.mktemp("scores") / "scores.json"
    path.write_text(json.dumps({"num_layers": 8, "metrics": {"angular": [0.01, 0.5, 0.4, 0.3, 0.2, 0.25, 0.02, 0.6],
                                                             "bi": [9, 1, 9, 9, 9, 9, 9, 2]}}))
    return path


def upstream_load(path):
    from llava.model.builder import load_pretrained_model
    from llava.mm_utils import get_model_name_from_path

    name = get_model_name_from_path(str(path))
    assert "llava" in name and "lora" not in name
    return load_pretrained_model(str(path), None, name, device="cpu", device_map="cpu")


def image_batch(tiny, tokenizer, image_processor, model):
    from PIL import Image

    from llava.constants import IMAGE_TOKEN_INDEX
    from llava.conversation import conv_templates
    from llava.mm_utils import process_images, tokenizer_image_token

    conv = conv_templates["vicuna_v1"].copy()
    conv.append_message(conv.roles[0], "<image>\nWhat color is the shape?")
    conv.append_message(conv.roles[1], None)
    ids = tokenizer_image_token(conv.get_prompt(), tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt")[None]
    image = Image.open(f"{tiny.image_folder}/img_000.png").convert("RGB")
    return ids, process_images([image], image_processor, model.config).to(model.dtype), [image.size]


def vqa_answers(model_dir, tiny, tmp_path):
    answers = tmp_path / "answers.jsonl"
    proc = run_cli(script_command("llava.eval.model_vqa_loader",
                                  "--model-path", model_dir, "--image-folder", tiny.image_folder,
                                  "--question-file", tiny.questions, "--answers-file", answers,
                                  "--conv-mode", "vicuna_v1", "--temperature", "0", "--max_new_tokens", "6",
                                  device="cpu"))
    assert proc.returncode == 0, proc.stderr[-4000:]
    return [json.loads(line) for line in answers.read_text().splitlines()]


def test_region_prune_merged_llava_loads_generates_and_evaluates(llava_merged, scores_file, tiny, tmp_path):
    before = tree_digest(llava_merged)
    out = tmp_path / "llava-tiny-region-pruned"
    assert main(["--model-path", str(llava_merged), "--out", str(out), "--num-prune", "2",
                 "--scores", str(scores_file), "--data", tiny.data, "--image-folder", tiny.image_folder]) == 0
    assert tree_digest(llava_merged) == before

    report = json.loads((out / "prune_report.json").read_text())
    assert report["pruned_layers"] == [4, 5]  # lowest angular OUTSIDE the region, though 0 and 6 score lower
    assert report["pruned_scores"] == {"4": 0.2, "5": 0.25}
    assert report["region_layers_before"] == REGION and report["region_layers_after"] == [0, 4]
    v = report["verification"]
    assert 0 < v["mean_cosine_final_hidden"] < 1 and v["num_samples"] == 4 and "loss_change" in v

    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["num_hidden_layers"], cfg["region_layers"], cfg["pruned_layers"], cfg["pruned_from"]) == (6, [0, 4], [4, 5], 8)
    orig, new = load_file(f"{llava_merged}/model.safetensors"), load_file(f"{out}/model.safetensors")
    assert sorted({int(k.split(".")[2]) for k in new if k.startswith("model.layers.")}) == list(range(6))
    for old_i, new_i in zip(REGION, cfg["region_layers"]):  # remapped region -> the same weights
        for k in [k for k in orig if k.startswith(f"model.layers.{old_i}.")]:
            assert torch.equal(new[k.replace(f"layers.{old_i}.", f"layers.{new_i}.", 1)], orig[k])
    for k in [k for k in orig if not k.startswith("model.layers.")]:  # projector, vision tower, embeddings ...
        assert torch.equal(new[k], orig[k])

    tokenizer, model, image_processor, _ = upstream_load(out)
    assert len(model.model.layers) == 6 and model.config.region_layers == [0, 4]
    ids, pixels, sizes = image_batch(tiny, tokenizer, image_processor, model)
    with torch.inference_mode():
        gen = model.generate(ids, images=pixels, image_sizes=sizes, do_sample=False, max_new_tokens=5)
    assert 1 <= gen.shape[1] <= 6
    rows = vqa_answers(out, tiny, tmp_path)
    assert [r["question_id"] for r in rows] == [0, 1] and all(r["model_id"] == out.name for r in rows)


def test_lora_dir_plus_base_is_merged_then_pruned(lora_region_run, scores_file, tiny, tmp_path, capsys):
    lora_dir, _ = lora_region_run
    before = tree_digest(lora_dir)
    out = tmp_path / "llava-tiny-adapter-pruned"
    assert main(["--model-path", str(lora_dir), "--model-base", tiny.llm, "--out", str(out), "--num-prune", "1",
                 "--scores", str(scores_file), "--metric", "bi", "--verify-samples", "2"]) == 0
    assert tree_digest(lora_dir) == before and not leftovers(tmp_path, out.name)
    report = json.loads((out / "prune_report.json").read_text())
    assert report["merged_from_lora"] and report["pruned_layers"] == [1] and report["metric"] == "bi"
    assert report["region_layers_after"] == [0, 5] and report["verification"]["num_samples"] == 2
    assert not any(p.name.startswith(("adapter_", "non_lora")) for p in out.iterdir())

    from llava.model.builder import load_pretrained_model
    _, merged_ref, _, _ = load_pretrained_model(str(lora_dir), tiny.llm, "llava-tiny-region-lora",
                                                device="cpu", device_map="cpu")
    _, model, _, _ = upstream_load(out)
    ref = merged_ref.state_dict()
    for k, v in model.state_dict().items():  # layer i of the pruned model = layer i (+1 past the gap) of the merge
        if k.startswith("model.layers."):
            i = int(k.split(".")[2])
            v_ref = ref[k.replace(f"layers.{i}.", f"layers.{i if i < 1 else i + 1}.", 1)]
            assert torch.equal(v, v_ref), k
    rows = vqa_answers(out, tiny, tmp_path)
    assert [r["question_id"] for r in rows] == [0, 1]


def test_pruned_llava_equals_the_merged_model_with_the_layer_skipped(llava_merged, tiny, tmp_path):
    j = 3
    out = tmp_path / "llava-tiny-minus-3"
    assert main(["--model-path", str(llava_merged), "--out", str(out), "--layers", str(j), "--no-verify"]) == 0
    tokenizer, full, image_processor, _ = upstream_load(llava_merged)
    _, pruned, _, _ = upstream_load(out)
    full.float(), pruned.float()
    ids, pixels, sizes = image_batch(tiny, tokenizer, image_processor, full)
    with torch.inference_mode():
        full_logits = full(input_ids=ids, images=pixels.float(), image_sizes=sizes).logits
        full.model.layers = torch.nn.ModuleList(l for i, l in enumerate(full.model.layers) if i != j)
        skipped = full(input_ids=ids, images=pixels.float(), image_sizes=sizes, use_cache=False).logits
        got = pruned(input_ids=ids, images=pixels.float(), image_sizes=sizes).logits
    assert (full_logits - skipped).abs().max() > 1e-3
    torch.testing.assert_close(got, skipped, rtol=0, atol=1e-5)


def test_region_and_global_modes_on_llava(llava_merged, scores_file, tmp_path, capsys):
    src = str(llava_merged)
    x = tmp_path / "llava-x"
    assert main(["--model-path", src, "--out", str(x), "--layers", "5,6"]) == 2
    assert "visual-region layers [6]" in capsys.readouterr().err
    assert main(["--model-path", src, "--out", str(x), "--num-prune", "6", "--scores", str(scores_file)]) == 2
    assert "--num-prune 1..5" in capsys.readouterr().err
    assert not x.exists() and not leftovers(tmp_path, x.name)

    out = tmp_path / "tiny-global-pruned"  # no "llava" in the name: warned
    assert main(["--model-path", src, "--out", str(out), "--num-prune", "2", "--scores", str(scores_file),
                 "--mode", "global", "--no-verify"]) == 0
    assert "lacks 'llava'" in capsys.readouterr().err
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["pruned_layers"] == [0, 6] and cfg["region_layers"] == [] and cfg["num_hidden_layers"] == 6


def test_data_is_scored_with_region_scores_scorer(llava_merged, tiny, tmp_path):
    from region_plugin.scoring import score_checkpoint

    out = tmp_path / "llava-tiny-scored-pruned"
    assert main(["--model-path", str(llava_merged), "--out", str(out), "--num-prune", "3", "--data", tiny.data,
                 "--image-folder", tiny.image_folder, "--num-samples", "8", "--verify-samples", "2"]) == 0
    report = json.loads((out / "prune_report.json").read_text())
    expected = score_checkpoint(str(llava_merged), data=tiny.data, image_folder=tiny.image_folder,
                                metrics=("angular",), num_samples=8, progress=False)["metrics"]["angular"]
    assert report["scores"] == pytest.approx(expected, abs=1e-6) and report["scores_from"] == "scored on --data"
    outside = [i for i in range(8) if i not in REGION]
    assert report["pruned_layers"] == sorted(sorted(outside, key=lambda i: expected[i])[:3])

    bad = tmp_path / "broken.json"
    bad.write_text(json.dumps([{"id": "x", "image": "missing.png", "conversations": [
        {"from": "human", "value": "<image>\nhi"}, {"from": "gpt", "value": "yo"}]}]))
    assert main(["--model-path", str(llava_merged), "--out", str(tmp_path / "llava-y"), "--num-prune", "1",
                 "--data", str(bad), "--image-folder", tiny.image_folder]) == 2
    assert not (tmp_path / "llava-y").exists() and not leftovers(tmp_path, "llava-y")
