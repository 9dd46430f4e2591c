"""region-score and region-prune on tiny Bunny checkpoints, through upstream Bunny's own loader and image expansion."""
from bunny_support import require_bunny

BUNNY_SRC = require_bunny()
pytest_plugins = ["bunny_fixtures"]

import dataclasses  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from bunny_support import generate, read_json  # noqa: E402
from region_plugin.bunny.data import scoring_adapter  # noqa: E402
from region_plugin.bunny.loading import load_bunny  # noqa: E402
from region_plugin.bunny.source import import_bunny  # noqa: E402
from region_plugin.pruning.cli import main as prune_main  # noqa: E402
from region_plugin.scoring.cli import main as score_main  # noqa: E402
from region_plugin.tiny.bunny import build_bunny_checkpoint  # noqa: E402

IMAGE_TOKENS = (32 // 8) ** 2  # tiny SigLIP: 32 px images, patch 8


def test_image_mask_comes_from_upstream_expansion(bunny_run, tiny_bunny, tmp_path):
    out, _ = bunny_run("phi-2")
    tiny = tiny_bunny("phi-2")
    renamed = tmp_path / "phi2-region-adapter"  # no "lora" in the name: routing goes by the files
    shutil.copytree(out, renamed)
    adapter = scoring_adapter("phi-2")
    loaded = adapter.load(str(renamed), tiny.llm, "cpu")
    assert loaded.model.config.region_layers == [0, 6] and not any("lora" in k for k in loaded.model.state_dict())
    records = json.loads(open(tiny.data).read())[:3]
    batch = next(adapter.batches(loaded, records, tiny.image_folder, batch_size=3))
    assert batch.image.sum(dim=1).tolist() == [IMAGE_TOKENS] * 3
    assert (batch.image <= batch.valid).all() and batch.inputs["inputs_embeds"].shape[:2] == batch.valid.shape


def test_score_then_prune_lora_checkpoint_round_trip(bunny_run, tiny_bunny, tmp_path, capsys):
    out, _ = bunny_run("llama3-8b")
    tiny = tiny_bunny("llama3-8b")
    scores_dir = tmp_path / "scores"
    # no --model-type: the LoRA dir's config.json ("bunny-llama") selects Bunny's llama3-8b path
    assert score_main(["--model-path", str(out), "--model-base", tiny.llm,
                       "--data", tiny.data, "--image-folder", tiny.image_folder, "--metrics", "bi,mm_bi,angular",
                       "--num-samples", "8", "--out", str(scores_dir), "--top", "2", "--quiet"]) == 0
    scores = read_json(scores_dir / "scores.json")
    assert scores["num_layers"] == 8 and scores["meta"]["model_type"] == "llama3-8b"
    assert scores["meta"]["conv_mode"] == "llama"  # Bunny-Llama-3's template, not LLaVA's
    for name in ("bi", "mm_bi", "angular"):
        assert len(scores["metrics"][name]) == 8 and all(math.isfinite(v) for v in scores["metrics"][name])

    pruned = tmp_path / "bunny-llama3-8b-region-pruned"
    assert prune_main(["--model-path", str(out), "--model-base", tiny.llm, "--out", str(pruned), "--num-prune", "2",
                       "--scores", str(scores_dir / "scores.json"), "--data", tiny.data,
                       "--image-folder", tiny.image_folder]) == 0
    report = read_json(pruned / "prune_report.json")
    angular = scores["metrics"]["angular"]
    expected = sorted(sorted((i for i in range(8) if i not in (0, 6)), key=lambda i: angular[i])[:2])
    assert report["merged_from_lora"] and report["pruned_layers"] == expected
    assert report["region_layers_before"] == [0, 6]
    kept = [i for i in range(8) if i not in expected]
    assert report["region_layers_after"] == [kept.index(0), kept.index(6)]
    assert 0 < report["verification"]["mean_cosine_final_hidden"] <= 1

    builder = import_bunny("bunny.model.builder")
    tokenizer, model, image_processor, _ = builder.load_pretrained_model(str(pruned), None, pruned.name, "llama3-8b",
                                                                         device="cpu")
    assert model.config.num_hidden_layers == 6 and len(model.model.layers) == 6
    assert model.config.region_layers == report["region_layers_after"]
    assert [layer.self_attn.layer_idx for layer in model.model.layers] == list(range(6))
    ids, _ = generate(tokenizer, model.float(), image_processor, tiny)
    assert ids.shape[1] > 6


def _identity_layer(model_dir, layer: int) -> None:
    """Zero the output projections of one decoder layer: it then adds nothing to the residual stream."""
    path = f"{model_dir}/model.safetensors"
    from safetensors.torch import save_file

    state = load_file(path)
    zeroed = [k for k in state if k.startswith(f"model.layers.{layer}.")
              and k.endswith(("self_attn.o_proj.weight", "mlp.down_proj.weight"))]
    assert len(zeroed) == 2, zeroed
    for k in zeroed:
        state[k] = torch.zeros_like(state[k])
    save_file(state, path, metadata={"format": "pt"})


def _final_hidden(model_dir, model_type):
    tokenizer, model, _, _ = load_bunny(str(model_dir), None, model_type, device="cpu")
    ids = tokenizer("USER: What color is the shape? ASSISTANT: The shape is red.", return_tensors="pt").input_ids
    with torch.inference_mode():
        return model(input_ids=ids, output_hidden_states=True).hidden_states[-1]


@pytest.mark.parametrize("model_type,extra,field", [
    ("minicpm", {"scale_depth": 1.4}, "scale_depth"),            # residual scale / sqrt(depth)
    ("qwen1.5-1.8b", {"max_window_layers": 6}, "max_window_layers"),  # compared with layer_idx
    ("phi-3", {}, None),                                          # no per-layer field; tuple caches by layer_idx
])
def test_pruning_per_layer_config_fields_keeps_the_function(tiny_bunny, tmp_path, model_type, extra, field):
    """Pruning a layer that adds nothing must leave the model's output unchanged, config fields included."""
    tiny = tiny_bunny("phi-2")
    src = build_bunny_checkpoint(str(tmp_path / f"bunny-{model_type}"), model_type, tiny.vision_tower,
                                 initializer_range=0.2, region_layers=[0, 6], **extra)
    _identity_layer(src, 3)
    out = tmp_path / f"bunny-{model_type}-pruned"
    assert prune_main(["--model-path", src, "--out", str(out), "--layers", "3", "--no-verify"]) == 0
    before, after = _final_hidden(src, model_type), _final_hidden(out, model_type)
    assert torch.allclose(before, after, atol=1e-4), (before - after).abs().max()
    cfg = read_json(out / "config.json")
    assert cfg["num_hidden_layers"] == 7 and cfg["region_layers"] == [0, 5] and cfg["pruned_layers"] == [3]
    if field == "scale_depth":
        assert cfg["scale_depth"] == pytest.approx(1.4 * math.sqrt(7 / 8))
    elif field == "max_window_layers":
        assert cfg["max_window_layers"] == 5  # kept layers 0,1,2,4,5 lie below the old threshold 6
    builder = import_bunny("bunny.model.builder")
    tokenizer, model, image_processor, _ = builder.load_pretrained_model(str(out), None, out.name, model_type,
                                                                         device="cpu")
    assert len(model.model.layers) == 7
    conv = dataclasses.replace(tiny, version={"minicpm": "minicpm", "phi-3": "phi3"}.get(model_type, "bunny"))
    ids, _ = generate(tokenizer, model.float(), image_processor, conv)
    assert ids.shape[1] > 6
