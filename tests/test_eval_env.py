"""This environment carries what upstream LLaVA's model_vqa* eval scripts import (they run via region-run-upstream)."""
import ast
import importlib.util
from pathlib import Path

import llava


def test_every_import_of_upstream_vqa_eval_scripts_resolves():
    scripts = sorted((Path(llava.__file__).parent / "eval").glob("model_vqa*.py"))
    assert scripts
    missing = set()
    for script in scripts:
        for node in ast.walk(ast.parse(script.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
            missing |= {f"{script.name}: {n}" for n in names if importlib.util.find_spec(n.split(".")[0]) is None}
    assert not missing, sorted(missing)
