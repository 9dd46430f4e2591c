"""region-score on the tiny LLaVA with real upstream code: image masks, hook scores, CLI, bad input."""
from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from conftest import read_json, run_cli
from region_plugin.adapters import get_adapter
from region_plugin.scoring import HiddenStateScorer
from region_plugin.scoring.cli import main as region_score
from region_plugin.spec import parse_region_layers
from region_plugin.tiny import build_llm
from region_plugin.training import RegionRun

ALL = "bi,mm_bi,angular,attn,param_ratio,param_angular"


@pytest.fixture(scope="module")
def merged(tiny, llava_merged):
    """The merged tiny LLaVA loaded through the LLaVA adapter (upstream's loader)."""
    adapter = get_adapter(None)
    return adapter, adapter.load(str(llava_merged), None, "cpu")


def _record(i, question):
    return {"id": f"q{i}", "image": f"img_{i:03d}.png",
            "conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": "A red square."}]}


def test_image_mask_comes_from_the_real_expansion(tiny, merged):
    from llava.constants import IMAGE_TOKEN_INDEX
    from llava.mm_utils import tokenizer_image_token
    from region_plugin.llava.data import build_prompt, encode, expand

    adapter, loaded = merged
    model = loaded.model
    records = [_record(0, "<image>\nWhat color is the shape?"),
               _record(1, "What color is the shape in <image> this picture? Answer briefly."),
               _record(2, "What shape is it?")]  # no placeholder: upstream's eval puts the image first
    raw = encode(records, tiny.image_folder, loaded.tokenizer, loaded.image_processor, model.config, "vicuna_v1")
    batch = expand(model, raw)
    features = model.encode_images(raw.images)  # [3, 16, hidden]: 32 px / patch 8 -> 16 image tokens
    starts = []
    for i, rec in enumerate(records):
        ids = tokenizer_image_token(build_prompt(rec, "vicuna_v1"), loaded.tokenizer, IMAGE_TOKEN_INDEX)
        p = ids.index(IMAGE_TOKEN_INDEX)  # text tokens before the placeholder
        starts.append(p)
        n = len(ids) - 1 + features.shape[1]
        expected = torch.zeros(batch.valid.shape[1], dtype=torch.bool)
        expected[p:p + features.shape[1]] = True
        assert torch.equal(batch.image[i], expected), f"record {i}: image tokens not at {p}..{p + 15}"
        assert batch.valid[i].sum() == n
        emb = batch.inputs["inputs_embeds"][i]
        torch.testing.assert_close(emb[batch.image[i]], features[i])                  # the image features
        text_ids = torch.tensor([t for t in ids if t != IMAGE_TOKEN_INDEX])
        torch.testing.assert_close(emb[batch.valid[i] & ~batch.image[i]], model.get_model().embed_tokens(text_ids))
    assert starts[1] > starts[0] + 5 and starts[2] == starts[0]  # middle vs first


def test_hook_scores_match_an_independent_computation(tiny, merged):
    """bi / mm_bi / angular from the hooks equal the same formulas on output_hidden_states (final norm removed)."""
    from region_plugin.scoring.records import read_records

    adapter, loaded = merged
    model = loaded.model
    records = read_records(tiny.data, tiny.image_folder, 6)
    batches = list(adapter.batches(loaded, records, tiny.image_folder, batch_size=3))
    with HiddenStateScorer(model, ("bi", "mm_bi", "angular")) as scorer:
        for b in batches:
            scorer.score(b)
    got = scorer.result()
    norm = model.model.norm
    model.model.norm = torch.nn.Identity()  # so the last hidden state is the last layer's raw output
    try:
        sums = torch.zeros(8, 4, dtype=torch.float64)
        counts = torch.zeros(3, dtype=torch.float64)
        with torch.no_grad():
            for b in batches:
                hs = model(**b.inputs, output_hidden_states=True).hidden_states
                v, im = b.valid, b.image
                for l in range(8):
                    cos = torch.nn.functional.cosine_similarity(hs[l].double(), hs[l + 1].double(), dim=-1)
                    sums[l] += torch.stack([cos[v].sum(), cos[im].sum(), cos[v & ~im].sum(),
                                            (torch.arccos(cos.clamp(-1, 1)) / math.pi)[v].sum()])
                counts += torch.stack([v.sum(), im.sum(), (v & ~im).sum()]).double()
    finally:
        model.model.norm = norm
    mean = sums[:, :3] / counts
    assert counts[1] == 16 * 6
    torch.testing.assert_close(torch.tensor(got["bi"], dtype=torch.float64), 1 - mean[:, 0], atol=2e-5, rtol=0)
    torch.testing.assert_close(torch.tensor(got["mm_bi"], dtype=torch.float64), 1 - (mean[:, 1] + mean[:, 2]) / 2,
                               atol=2e-5, rtol=0)
    torch.testing.assert_close(torch.tensor(got["angular"], dtype=torch.float64), sums[:, 3] / counts[0],
                               atol=2e-4, rtol=0)


def _check_outputs(out, num_layers=8):
    scores = read_json(out / "scores.json")
    assert scores["num_layers"] == num_layers
    for name, values in scores["metrics"].items():
        assert len(values) == num_layers and all(math.isfinite(v) for v in values), name
    with open(out / "scores.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["layer", *scores["metrics"]] and len(rows) == num_layers + 1
    assert (out / "scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return scores


def test_region_score_on_a_lora_dir_end_to_end(tiny, lora_region_run, tmp_path):
    lora_dir = lora_region_run[0]
    out = tmp_path / "scores"
    proc = run_cli(["-m", "region_plugin.scoring", "--model-path", str(lora_dir), "--model-base", tiny.llm,
                    "--data", tiny.data, "--image-folder", tiny.image_folder, "--metrics", ALL,
                    "--backbone", tiny.llm, "--num-samples", "8", "--out", str(out), "--top", "2", "--metric",
                    "param_ratio"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    scores = _check_outputs(out)
    assert list(scores["metrics"]) == ["bi", "mm_bi", "mm_bi_image", "mm_bi_text", "angular", "angular_last",
                                       "attn", "param_ratio", "param_angular"]
    assert scores["meta"]["samples"] == 8 and len(scores["per_instance"]["attn"]["values"]) == 8
    # LoRA trained region [0, 6] only: exactly those layers moved away from the backbone.
    for m in ("param_ratio", "param_angular"):
        moved = [i for i, v in enumerate(scores["metrics"][m]) if v > 0]
        assert moved == [0, 6], (m, scores["metrics"][m])
    printed = proc.stdout.strip().splitlines()[-1]
    assert printed == "0,6"
    # The printed value and the importance spec both work as --region_layers, resolved as training does.
    for spec in (printed, f"top:2:param_ratio:{out / 'scores.json'}"):
        run = RegionRun.from_argv(["--model_name_or_path", tiny.llm, "--region_layers", spec])[0]
        assert run.layers == [0, 6]
    assert parse_region_layers(f"top:3:bi:{out / 'scores.json'}", 8) == sorted(
        sorted(range(8), key=lambda i: -scores["metrics"]["bi"][i])[:3])


def test_region_score_on_a_merged_dir(tiny, llava_merged, tmp_path, capsys):
    out = tmp_path / "merged-scores"
    out.mkdir()
    (out / "notes.txt").write_text("mine")  # a user's file in --out is left alone
    rc = region_score(["--model-path", str(llava_merged), "--data", tiny.data, "--image-folder",
                       tiny.image_folder, "--metrics", "bi,mm_bi,angular,attn", "--num-samples", "6", "--angular-n",
                       "2", "--out", str(out), "--top", "3", "--metric", "angular", "--quiet"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err[-3000:]
    scores = _check_outputs(out)
    assert (out / "notes.txt").read_text() == "mine"
    assert scores["meta"]["angular_n"] == 2 and scores["meta"]["samples"] == 6
    assert 0 < min(scores["metrics"]["attn"]) and max(scores["metrics"]["attn"]) < 2
    top = parse_region_layers(captured.out.strip().splitlines()[-1], 8)
    assert len(top) == 3 and top == parse_region_layers(f"top:3:angular:{out / 'scores.json'}", 8)


def _bad_data(tmp_path, tiny, kind):
    records = json.load(open(tiny.data))
    path = tmp_path / "data.json"
    if kind == "missing_image":
        records[1]["image"] = "nope.png"
        path.write_text(json.dumps(records))
    elif kind == "not_a_list":
        path.write_text(json.dumps({"data": records}))
    else:
        path.write_text(json.dumps([{"image": r["image"], "text": "hi"} for r in records]))
    return str(path)


@pytest.mark.parametrize("case,expected", [
    ("missing_image", r"--image-folder .* is missing 1 image\(s\) named in --data .*'nope.png' \(id 'tiny-1'\)"),
    ("not_a_list", r"--data .* is not LLaVA format: the top level is a dict"),
    ("no_conversations", r"--data .* is not LLaVA format: record 0 .* has no \"conversations\" list"),
    ("backbone_layers", r"--backbone .* has 6 decoder layers but --model-path has 8"),
    ("backbone_shapes", r"--backbone .* has hidden_size=32 but --model-path has hidden_size=64"),
    ("unknown_metric", r"--metrics: unknown metric\(s\) \['bogus'\]"),
    ("top_too_large", r"--top 9 must be in 1..8"),
])
def test_bad_input_fails_before_loading(tiny, lora_region_run, tmp_path, capsys, case, expected):
    args = {"--data": tiny.data, "--metrics": ALL, "--backbone": tiny.llm}
    if case in ("missing_image", "not_a_list", "no_conversations"):
        args["--data"] = _bad_data(tmp_path, tiny, case)
    elif case == "backbone_layers":
        args["--backbone"] = build_llm(str(tmp_path / "llm6"), num_layers=6)
    elif case == "backbone_shapes":
        args["--backbone"] = build_llm(str(tmp_path / "llm32"), hidden=32)
    elif case == "unknown_metric":
        args["--metrics"] = "bi,bogus"
    argv = ["--model-path", str(lora_region_run[0]), "--model-base", tiny.llm, "--image-folder", tiny.image_folder,
            "--out", str(tmp_path / "out"), *[x for kv in args.items() for x in kv]]
    if case == "top_too_large":
        argv += ["--top", "9"]
    assert region_score(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ")
    assert __import__("re").search(expected, captured.err), captured.err
    assert "Loading LLaVA" not in captured.out  # upstream's loader never started
    assert not (tmp_path / "out").exists()


def test_checkpoint_config_picks_the_codebase_without_model_type():
    """A Bunny checkpoint's config.json names its codebase; LLaVA's (or none) keeps the LLaVA adapter."""
    assert get_adapter(None, {"model_type": "llava_llama"}).name == "llava"
    assert get_adapter(None, None).name == "llava"
    assert get_adapter(None, {"model_type": "bunny-llama"}).name == "llama3-8b"
    assert get_adapter(None, {"model_type": "bunny-phi"}).name == "phi-2"
    assert get_adapter("phi-1.5", {"model_type": "bunny-phi"}).name == "phi-1.5"  # --model-type overrides
    with pytest.raises(ValueError, match="--model-type"):
        get_adapter(None, {"model_type": "bunny-unknown"})
