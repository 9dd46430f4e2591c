"""region-revert, region-export-llm, region-eval-text on tiny Bunny region runs (upstream Bunny's loader and labels)."""
from bunny_support import require_bunny

BUNNY_SRC = require_bunny()
pytest_plugins = ["bunny_fixtures"]

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from bunny_support import read_json  # noqa: E402
from region_plugin.analysis.export_llm import main as export_llm  # noqa: E402
from region_plugin.analysis.revert import main as revert  # noqa: E402
from region_plugin.analysis.text_eval import main as eval_text  # noqa: E402

TEXT_DATA = Path(__file__).resolve().parents[1] / "data" / "text_tasks"


def _last_json(capsys):
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.parametrize("mt", ["llama3-8b", "phi-2"])
def test_bunny_revert_outside_is_exact_and_export_matches(bunny_run, tiny_bunny, tmp_path, capsys, mt):
    out, _ = bunny_run(mt)
    tiny = tiny_bunny(mt)
    assert read_json(out / "config.json")["region_layers"] == [0, 6]
    assert revert(["--model-path", str(out), "--model-base", tiny.llm, "--backbone", tiny.llm, "--layers", "outside",
                   "--data", tiny.data, "--image-folder", tiny.image_folder, "--num-samples", "4", "--json"]) == 0
    res = _last_json(capsys)
    assert res["layers"] == [1, 2, 3, 4, 5, 7] and res["details"]["before"]["visual"]["tokens"] > 0
    assert res["visual"]["before"] == res["visual"]["after"]
    saved = tmp_path / f"bunny-{mt}-reverted"
    assert revert(["--model-path", str(out), "--model-base", tiny.llm, "--backbone", tiny.llm, "--layers", "0,6",
                   "--data", tiny.data, "--image-folder", tiny.image_folder, "--num-samples", "4", "--json",
                   "--out", str(saved)]) == 0
    res = _last_json(capsys)
    assert res["visual"]["before"] != res["visual"]["after"]
    # upstream Bunny's loader reads the saved checkpoint, and no decoder layer differs from the backbone any more
    from region_plugin.scoring import score_checkpoint

    scores = score_checkpoint(str(saved), metrics=("param_ratio",), backbone=tiny.llm, device="cpu", progress=False)
    assert scores["metrics"]["param_ratio"] == [0.0] * 8
    assert read_json(saved / "config.json")["reverted_layers"] == [0, 6]

    llm_dir = tmp_path / "llm"
    assert export_llm(["--model-path", str(out), "--model-base", tiny.llm, "--out", str(llm_dir), "--json"]) == 0
    report = _last_json(capsys)
    cfg = read_json(llm_dir / "config.json")
    assert cfg["model_type"] == {"llama3-8b": "llama", "phi-2": "phi"}[mt] and cfg["region_layers"] == [0, 6]
    assert report["max_abs_logit_diff_vs_lvlm"] < 1e-4


def test_bunny_eval_text(bunny_run, tiny_bunny, tmp_path):
    out, _ = bunny_run("llama3-8b")
    tiny = tiny_bunny("llama3-8b")
    assert eval_text(["--model-path", str(out), "--model-base", tiny.llm, "--task", "bbh", "--data",
                      str(TEXT_DATA / "bbh"), "--num-samples", "1", "--max-new-tokens", "4", "--out", str(tmp_path)]) == 0
    res = read_json(tmp_path / "text_eval_bbh.json")
    assert res["total"] == 2 and res["conv_mode"] == "llama"
    assert "Please answer this question in a word or phrase." in res["example_prompt"]
