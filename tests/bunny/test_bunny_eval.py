"""Upstream Bunny's eval and merge scripts run off the GPU through region-run-upstream, unedited."""
from bunny_support import require_bunny

BUNNY_SRC = require_bunny()
pytest_plugins = ["bunny_fixtures"]

import ast  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402

from bunny_support import read_json, run_py, tail  # noqa: E402
from region_plugin.run_upstream import script_command  # noqa: E402


def test_model_vqa_loader_answers_on_cpu(bunny_run, tiny_bunny, tmp_path):
    out, _ = bunny_run("llama3-8b")
    tiny = tiny_bunny("llama3-8b")
    answers = tmp_path / "answers.jsonl"
    proc = run_py(script_command("bunny.eval.model_vqa_loader", "--model-path", out, "--model-base", tiny.llm,
                                 "--model-type", "llama3-8b", "--image-folder", tiny.image_folder,
                                 "--question-file", tiny.questions, "--answers-file", answers,
                                 "--conv-mode", tiny.version, "--temperature", "0", "--max_new_tokens", "6",
                                 device="cpu"))
    assert proc.returncode == 0, tail(proc)
    rows = [json.loads(line) for line in answers.read_text().splitlines()]
    assert rows and all(isinstance(r["text"], str) for r in rows)


def test_merge_lora_weights_script_on_cpu(bunny_run, tiny_bunny, tmp_path):
    """script/merge_lora_weights.py moves the tower to 'cuda'; redirected, it merges on the CPU."""
    out, _ = bunny_run("llama3-8b")
    merged = tmp_path / "bunny-llama3-merged"
    proc = run_py(script_command(BUNNY_SRC / "script" / "merge_lora_weights.py", "--model-path", out,
                                 "--model-base", tiny_bunny("llama3-8b").llm, "--model-type", "llama3-8b",
                                 "--save-model-path", merged, device="cpu"))
    assert proc.returncode == 0, tail(proc)
    cfg = read_json(merged / "config.json")
    assert cfg["model_type"].startswith("bunny") and cfg["region_layers"] == [0, 6]


def test_every_import_of_upstream_eval_scripts_resolves():
    missing = set()
    for script in sorted((BUNNY_SRC / "bunny" / "eval").glob("model_vqa*.py")):
        for node in ast.walk(ast.parse(script.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
            missing |= {f"{script.name}: {n}" for n in names
                        if n.split(".")[0] != "bunny" and importlib.util.find_spec(n.split(".")[0]) is None}
    assert not missing, sorted(missing)
