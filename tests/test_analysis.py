"""region-revert, region-export-llm, region-eval-text on the tiny region-LoRA run (real upstream LLaVA code)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from conftest import read_json
from region_plugin.analysis.export_llm import main as export_llm
from region_plugin.analysis.revert import main as revert
from region_plugin.analysis.text_eval import main as eval_text
from region_plugin.analysis.text_tasks import parse_bbh, parse_choice

DATA = Path(__file__).parent / "data" / "text_tasks"


def _json_line(capsys):
    out = capsys.readouterr().out.strip().splitlines()
    return json.loads(out[-1])


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "text.txt"
    path.write_text("The shape is red. It is a circle.\n\nA blue square on a white background.\n\n"
                    "USER: What color is the shape? ASSISTANT: The shape is green.\n")
    return path


def _revert_args(tiny, lora_dir, layers, *extra):
    return ["--model-path", str(lora_dir), "--model-base", tiny.llm, "--backbone", tiny.llm, "--layers", layers,
            "--data", tiny.data, "--image-folder", tiny.image_folder, "--num-samples", "6", "--json", *extra]


# ---------------- region-revert ----------------

def test_revert_untouched_layers_changes_nothing_exactly(tiny, lora_region_run, text_file, capsys):
    """Region [0, 6]: layer 3 and `outside` (1-5, 7) were never trained, so perplexities are bit-identical."""
    lora_dir, _ = lora_region_run
    assert read_json(lora_dir / "config.json")["region_layers"] == [0, 6]
    for spec, layers in (("3", [3]), ("outside", [1, 2, 3, 4, 5, 7])):
        assert revert(_revert_args(tiny, lora_dir, spec, "--text-data", str(text_file))) == 0
        res = _json_line(capsys)
        assert res["layers"] == layers
        assert res["tensors_reverted"] == 9 * len(layers)  # 7 Linear + 2 norms per LLaMA layer
        assert res["visual"]["before"] == res["visual"]["after"]
        assert res["text"]["before"] == res["text"]["after"]
        assert res["details"]["before"]["visual"]["tokens"] > 0 and res["details"]["before"]["text"]["tokens"] > 0


def test_revert_region_layers_restores_the_backbone(tiny, lora_region_run, tmp_path, capsys):
    """Reverting the trained layers changes perplexity, and the saved checkpoint holds the backbone there."""
    from region_plugin.scoring import score_checkpoint

    lora_dir, _ = lora_region_run
    out = tmp_path / "llava-tiny-reverted"
    assert revert(_revert_args(tiny, lora_dir, "0,6", "--out", str(out))) == 0
    res = _json_line(capsys)
    assert res["layers"] == [0, 6] and res["text"] is None
    assert res["visual"]["before"] != res["visual"]["after"]
    cfg = read_json(out / "config.json")
    assert cfg["reverted_layers"] == [0, 6] and cfg["region_layers"] == []
    assert read_json(out / "revert_report.json")["visual"] == res["visual"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind
    # upstream's loader reads it back, and no decoder layer differs from the backbone any more
    scores = score_checkpoint(str(out), metrics=("param_ratio",), backbone=tiny.llm, device="cpu", progress=False)
    assert scores["metrics"]["param_ratio"] == [0.0] * 8


def test_revert_bad_input_exits_2_before_loading(tiny, lora_region_run, tmp_path, capsys):
    lora_dir, _ = lora_region_run
    other = tmp_path / "other-llm"  # a backbone of another depth: only config.json, no weights needed
    other.mkdir()
    cfg = read_json(Path(tiny.llm) / "config.json")
    (other / "config.json").write_text(json.dumps({**cfg, "num_hidden_layers": 4}))
    no_region = tmp_path / "llava-no-region"
    no_region.mkdir()
    (no_region / "config.json").write_text(json.dumps({k: v for k, v in read_json(lora_dir / "config.json").items()
                                                       if k != "region_layers"}))
    cases = [
        (_revert_args(tiny, lora_dir, "8"), "--layers"),
        (_revert_args(tiny, lora_dir, "bogus"), "--layers"),
        (["--model-path", str(no_region), "--backbone", tiny.llm, "--layers", "outside", "--data", tiny.data,
          "--image-folder", tiny.image_folder], "records no region_layers"),
        (["--model-path", str(lora_dir), "--model-base", tiny.llm, "--backbone", str(other), "--layers", "3",
          "--data", tiny.data, "--image-folder", tiny.image_folder], "--backbone"),
        (_revert_args(tiny, lora_dir, "3")[:-5] + ["--image-folder", str(tmp_path)], "--image-folder"),
        (_revert_args(tiny, lora_dir, "3", "--text-data", str(tmp_path / "missing.txt")), "--text-data"),
        (_revert_args(tiny, lora_dir, "3", "--out", str(lora_dir / "inside")), "lies inside the input"),
        (["--model-path", str(lora_dir), "--backbone", tiny.llm, "--layers", "3", "--data", tiny.data,
          "--image-folder", tiny.image_folder], "--model-base"),
    ]
    for argv, needle in cases:
        assert revert(argv) == 2, argv
        err = capsys.readouterr().err
        assert needle in err, err
        assert "Loading" not in err


# ---------------- region-export-llm ----------------

def test_export_llm_is_the_language_model_alone(tiny, lora_region_run, llava_merged, tmp_path, capsys):
    """LoRA merged, projector and tower dropped; plain transformers loads it and matches upstream's merge."""
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, AutoTokenizer

    lora_dir, _ = lora_region_run
    out = tmp_path / "tiny-llm"
    assert export_llm(["--model-path", str(lora_dir), "--model-base", tiny.llm, "--out", str(out), "--json"]) == 0
    report = _json_line(capsys)
    assert report["max_abs_logit_diff_vs_lvlm"] == 0.0
    cfg = read_json(out / "config.json")
    assert cfg["model_type"] == "llama" and cfg["architectures"] == ["LlamaForCausalLM"]
    assert cfg["region_layers"] == [0, 6] and not [k for k in cfg if k.startswith("mm_")]
    with safe_open(str(out / "model.safetensors"), "pt") as exported, \
            safe_open(str(llava_merged / "model.safetensors"), "pt") as merged:
        keys = set(exported.keys())
        assert keys == {k for k in merged.keys() if "vision_tower" not in k and "mm_projector" not in k}
        for k in keys:  # exactly upstream's merge (scripts/merge_lora_weights.py), minus the multimodal parts
            assert torch.equal(exported.get_tensor(k), merged.get_tensor(k)), k
    llm = AutoModelForCausalLM.from_pretrained(str(out))
    tok = AutoTokenizer.from_pretrained(str(out))
    ids = tok("The shape is red.", return_tensors="pt").input_ids
    assert ids.tolist() == AutoTokenizer.from_pretrained(tiny.llm)("The shape is red.", return_tensors="pt").input_ids.tolist()
    assert llm(ids).logits.shape[-1] == cfg["vocab_size"]


def test_export_llm_bad_input_exits_2(tiny, lora_region_run, tmp_path, capsys):
    lora_dir, _ = lora_region_run
    existing = tmp_path / "exists"
    existing.mkdir()
    odd = tmp_path / "llava-odd"
    odd.mkdir()
    (odd / "config.json").write_text(json.dumps({"model_type": "llava_gpt9", "num_hidden_layers": 8}))
    bunny = tmp_path / "bunny-elsewhere"  # a Bunny checkpoint in the LLaVA environment: named fix, no load
    bunny.mkdir()
    (bunny / "config.json").write_text(json.dumps({"model_type": "bunny-llama", "num_hidden_layers": 8}))
    cases = [
        (["--model-path", str(bunny), "--out", str(tmp_path / "new")], ".venv-bunny"),
        (["--model-path", str(lora_dir), "--model-base", tiny.llm, "--out", str(existing)], "already exists"),
        (["--model-path", str(lora_dir), "--out", str(tmp_path / "new")], "--model-base"),
        (["--model-path", str(lora_dir), "--model-base", tiny.llm, "--out", str(lora_dir / "x")], "lies inside"),
        (["--model-path", str(odd), "--out", str(tmp_path / "new")], "llava_gpt9"),
    ]
    for argv, needle in cases:
        assert export_llm(argv) == 2, argv
        assert needle in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


# ---------------- region-eval-text ----------------

def test_answer_matching():
    from region_plugin.analysis.text_tasks import Item

    assert parse_choice("B") == "B" and parse_choice("(C) because ...") == "C"
    assert parse_choice("The answer is D.") == "D" and parse_choice("A, since 1+1=2") == "A"
    assert parse_choice("I am not sure") is None
    item = Item("t", "t/0", [], "False", ["False", "True"])
    assert parse_bbh("False, because not True is False", item) == "False"
    assert parse_bbh("It is true.", item) == "True"
    valid = Item("t", "t/0", [], "invalid", ["invalid", "valid"])
    assert parse_bbh("The argument is invalid.", valid) == "invalid"
    assert parse_bbh("(B) 12/25/1937", Item("d", "d/0", [], "(B)")) == "(B)"


def test_eval_text_mmlu_and_bbh(tiny, lora_region_run, tmp_path, capsys):
    """The paper's protocol through upstream's template and generate, on local MMLU/BBH files."""
    from region_plugin.analysis.text_tasks import BBH_PROMPT, MMLU_PROMPT, predict

    lora_dir, _ = lora_region_run
    base = ["--model-path", str(lora_dir), "--model-base", tiny.llm, "--out", str(tmp_path), "--max-new-tokens", "8"]
    assert eval_text(base + ["--task", "mmlu", "--data", str(DATA / "mmlu"), "--json"]) == 0
    line = _json_line(capsys)
    res = read_json(tmp_path / "text_eval_mmlu.json")
    n_test = sum(1 for f in (DATA / "mmlu" / "test").iterdir() for _ in f.read_text().splitlines())
    assert res["total"] == line["total"] == n_test and "items" not in line
    assert res["shots"] == 5 and set(res["per_task"]) == {"arithmetic", "shapes"}
    assert res["accuracy"] == sum(r["correct"] for r in res["items"]) / n_test
    from region_plugin.analysis.text_tasks import Item
    for row in res["items"]:
        assert row["prediction"] == predict(row["reply"], Item("", "", [], row["target"]), "mmlu")
        assert row["correct"] == (row["prediction"] == row["target"])
    prompt = res["example_prompt"]  # 5 dev shots answered in upstream's vicuna_v1 template, then the question
    assert prompt.count(MMLU_PROMPT) == 6 and prompt.count("ASSISTANT:") == 6 and prompt.endswith("ASSISTANT:")
    assert "What is 1 + 1?" in prompt and "ASSISTANT: B</s>" in prompt and "What is 4 + 4?" in prompt

    assert eval_text(base + ["--task", "bbh", "--data", str(DATA / "bbh"), "--num-samples", "2"]) == 0
    res = read_json(tmp_path / "text_eval_bbh.json")
    assert res["shots"] == 0 and res["total"] == 4 and set(res["per_task"]) == {"boolean_expressions",
                                                                                 "date_understanding"}
    assert res["example_prompt"].count(BBH_PROMPT) == 1


def test_eval_text_bad_input_exits_2(tiny, lora_region_run, tmp_path, capsys):
    lora_dir, _ = lora_region_run
    bad = tmp_path / "badmmlu"
    bad.mkdir()
    (bad / "x_test.csv").write_text("only,three,columns\n")
    base = ["--model-path", str(lora_dir), "--model-base", tiny.llm]
    cases = [
        (base + ["--task", "mmlu", "--data", str(tmp_path / "nope")], "--data"),
        (base + ["--task", "mmlu", "--data", str(bad), "--shots", "0"], "not MMLU format"),
        (base + ["--task", "mmlu", "--data", str(DATA / "mmlu"), "--shots", "6"], "--shots 6"),
        (base + ["--task", "bbh", "--data", str(DATA / "mmlu")], "BBH"),
        (base + ["--task", "bbh", "--data", str(DATA / "bbh"), "--conv-mode", "nope"], "--conv-mode"),
    ]
    for argv, needle in cases:
        assert eval_text(argv) == 2, argv
        assert needle in capsys.readouterr().err


# ---------------- real weights: SmolLM2-135M-Instruct inside LLaVA, real MMLU / BBH text, real photos ----------------

import re  # noqa: E402
import sys  # noqa: E402

import real_weights as rw  # noqa: E402

real = pytest.mark.skipif(rw.skip_reason() is not None, reason=rw.skip_reason() or "")
# lm-eval's MMLU dev questions (flan CoT prompts): question, four options, "... The answer is (X)."
MMLU_BLOCK = re.compile(r"^Q: (.*)\n\(A\) (.*) \(B\) (.*) \(C\) (.*) \(D\) (.*)\nA: .*The answer is \(([ABCD])\)\.?\s*$",
                        re.S)


@pytest.fixture(scope="module")
def real_llava(tiny, tmp_path_factory):
    """(SmolLM2 dir, an upstream-loadable LLaVA dir holding exactly its weights + a random projector/tower)."""
    root = os.environ.get("REGION_FIXTURE_CACHE") or os.path.join(sys.prefix, "region-fixtures")
    if not os.access(os.path.dirname(root), os.W_OK):
        root = str(tmp_path_factory.mktemp("region-fixtures"))
    llm = rw.build_smollm2(root)
    out = tmp_path_factory.mktemp("real") / "llava-smollm2"
    return llm, rw.build_llava_on(llm, str(out), tiny.vision_tower)


def _real_mmlu(out: Path, subjects: int = 2, shots: int = 2) -> Path:
    """Real MMLU dev questions from lm-eval as the standard per-subject CSVs (first `shots` = dev split)."""
    import csv

    with open(os.path.join(rw.package_dir("lm_eval"), "tasks", "mmlu", "flan_cot_fewshot", "_cot_prompts.json")) as f:
        prompts = json.load(f)
    written = 0
    for subject in sorted(prompts):
        rows = [list(m.groups()) for m in (MMLU_BLOCK.match(b.strip()) for b in
                                            re.split(r"\n\n(?=Q: )", prompts[subject].strip())) if m]
        if len(rows) < shots + 2:
            continue
        name = subject.replace("mmlu_", "")
        for split, part in (("dev", rows[:shots]), ("test", rows[shots:])):
            (out / split).mkdir(parents=True, exist_ok=True)
            with open(out / split / f"{name}_{split}.csv", "w", newline="") as f:
                csv.writer(f).writerows(part)
        written += 1
        if written == subjects:
            return out
    raise AssertionError("lm-eval's MMLU prompts changed format")


@real
def test_real_export_gives_back_the_real_llm(real_llava, tmp_path, capsys):
    """Tied embeddings, GQA, 30 layers: the exported LLM is SmolLM2 tensor for tensor, logits equal the LVLM's."""
    from safetensors import safe_open

    llm, lvlm = real_llava
    out = tmp_path / "smollm2-again"
    assert export_llm(["--model-path", lvlm, "--out", str(out), "--json"]) == 0
    assert _json_line(capsys)["max_abs_logit_diff_vs_lvlm"] == 0.0
    cfg = read_json(out / "config.json")
    assert cfg["model_type"] == "llama" and cfg["tie_word_embeddings"] and cfg["num_hidden_layers"] == 30
    with safe_open(str(out / "model.safetensors"), "pt") as got, \
            safe_open(os.path.join(llm, "model.safetensors"), "pt") as want:
        assert set(got.keys()) == set(want.keys())
        assert all(torch.equal(got.get_tensor(k), want.get_tensor(k).to(torch.float16)) for k in want.keys())


@real
def test_real_text_perplexity_and_revert(real_llava, tmp_path, capsys):
    """Text perplexity equals an independent computation on the plain LLM; reverting an untuned model is exact."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    llm, lvlm = real_llava
    texts = rw.bbh_exemplars()[::20][:2]
    text_file = tmp_path / "bbh.jsonl"
    text_file.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    images = rw.photo_folder(str(tmp_path / "photos"), size=64)
    # SmolLM2's tokenizer (no BOS) does not fit vicuna_v1's label masking (upstream: "tokenization mismatch"),
    # so the answers are scored with the stage-1 `plain` template: image, then the answer
    assert revert(["--model-path", lvlm, "--backbone", llm, "--layers", "uniform:8", "--data", rw.photo_records("vqa"),
                   "--image-folder", images, "--text-data", str(text_file), "--num-samples", "2", "--conv-mode",
                   "plain", "--json"]) == 0
    res = _json_line(capsys)
    assert res["visual"]["before"] == res["visual"]["after"] and res["text"]["before"] == res["text"]["after"]
    # the same token-weighted NLL computed directly on SmolLM2 (as upstream's loader rounds it: float16 -> float32)
    tok = AutoTokenizer.from_pretrained(llm)
    model = LlamaForCausalLM.from_pretrained(llm, torch_dtype=torch.float16).float().eval()
    total, count = 0.0, 0
    with torch.inference_mode():
        for t in texts:
            ids = tok(t, return_tensors="pt").input_ids
            logits = model(ids).logits[0, :-1]
            total += float(torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum"))
            count += ids.shape[1] - 1
    assert res["details"]["before"]["text"]["tokens"] == count
    assert res["text"]["before"] == pytest.approx(float(torch.tensor(total / count).exp()), rel=1e-3)
    assert res["text"]["before"] < 50  # a real instruct LM on real BBH text, not a broken label shift


@real
def test_real_mmlu_protocol_elicits_letters(real_llava, tmp_path):
    """The paper's MMLU prompt on a real instruct LLM: every reply is an option letter, cut at the end of its turn."""
    _, lvlm = real_llava
    data = _real_mmlu(tmp_path / "mmlu")
    assert eval_text(["--model-path", lvlm, "--task", "mmlu", "--data", str(data), "--shots", "2",
                      "--max-new-tokens", "8", "--out", str(tmp_path / "res")]) == 0
    res = read_json(tmp_path / "res" / "text_eval_mmlu.json")
    assert res["total"] == 6 and all(r["prediction"] in ("A", "B", "C", "D") for r in res["items"])
    assert not any("USER:" in r["reply"] or "</s>" in r["reply"] for r in res["items"])
