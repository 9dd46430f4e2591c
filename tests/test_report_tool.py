"""region-report on real outputs: two upstream training runs (region / all layers) plus the other tools' results."""
from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest

from conftest import read_json
from region_plugin.reporting.cli import main as report

TEXT_DATA = Path(__file__).parent / "data" / "text_tasks"


def _json_of(main, argv):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(argv) == 0, argv
    return buf.getvalue().strip().splitlines()[-1]


@pytest.fixture(scope="module")
def demo_out(tiny, lora_region_run, tmp_path_factory):
    """`make demo`'s analyses (score, revert, prune 1 layer per mode, report) on the tiny region run."""
    from region_plugin.llava.demo_report import RUN, main as demo_report

    lora_dir, _ = lora_region_run
    out = tmp_path_factory.mktemp("demo") / "demo_out"
    out.mkdir()
    (out / "tiny").symlink_to(tiny.root)
    (out / RUN).symlink_to(lora_dir)
    before = sorted(p.name for p in lora_dir.iterdir())
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert demo_report(["--out", str(out), "--prune", "1", "--num-samples", "8"]) == 0
    assert sorted(p.name for p in lora_dir.iterdir()) == before  # inputs only read
    return out, buf.getvalue()


@pytest.fixture(scope="module")
def run_dirs(tiny, lora_region_run, lora_all_run, demo_out):
    """Result dirs as the experiment scripts lay them out: the demo's rows plus an all-layer run, with text evals."""
    from region_plugin.analysis.text_eval import main as eval_text

    out, _ = demo_out
    all_row = out / "runs" / "all-layers"
    all_row.mkdir()
    shutil.copy(lora_all_run[0] / "region_report.json", all_row)
    dirs = {"all-layers": all_row, "region-25": out / "runs" / "region-25", "pruned": out / "runs" / "region-pruned-1"}
    for name, train_dir in (("all-layers", lora_all_run[0]), ("region-25", lora_region_run[0])):
        assert eval_text(["--model-path", str(train_dir), "--model-base", tiny.llm, "--task", "mmlu", "--data",
                          str(TEXT_DATA / "mmlu"), "--num-samples", "1", "--max-new-tokens", "4",
                          "--out", str(dirs[name] / "eval")]) == 0
    return dirs


def test_report_tables_and_figures(run_dirs, tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "report"
    argv = [str(run_dirs[k]) for k in ("all-layers", "region-25", "pruned")] + ["--out", str(out), "--json"]
    assert report(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["baseline"] == "all-layers"
    assert set(summary["figures"]) == {"layers.png", "cost.png", "pruning.png", "scores_heatmap.png", "revert.png"}
    for name in summary["figures"]:
        with Image.open(out / name) as im:
            assert im.size[0] > 300 and im.size[1] > 200
    md = (out / "report.md").read_text()
    runs_table = md.split("## Runs")[1].split("\n## ")[0]
    rows = {line.split(" | ")[0].strip("| ").replace(" (baseline)", ""): line for line in runs_table.splitlines()
            if line.startswith("| ")}
    # % relative to the all-layer run, from the two real region_report.json files
    region, full = (read_json(run_dirs[k] / "region_report.json") for k in ("region-25", "all-layers"))
    ratio = 100 * region["parameters"]["llm"]["trainable"] / full["parameters"]["llm"]["trainable"]
    assert round(ratio, 1) == 25.0
    assert f"{region['parameters']['llm']['trainable']:,} ({ratio:.1f}%)" in rows["region-25"]
    assert "2: 0,6" in rows["region-25"] and "all 8" in rows["all-layers"]
    mmlu = [read_json(run_dirs[k] / "eval" / "text_eval_mmlu.json")["accuracy"] for k in ("region-25", "all-layers")]
    if mmlu[1]:
        assert f"{100 * mmlu[0]:.2f} ({100 * mmlu[0] / mmlu[1]:.1f}%)" in rows["region-25"]
    revert = json.loads((run_dirs["region-25"] / "revert_outside.json").read_text())
    assert f"| region-25 | 1,2,3,4,5,7 | {revert['visual']['before']:.4f} | {revert['visual']['after']:.4f} |" in md
    prune = read_json(run_dirs["pruned"] / "llava-tiny-region-pruned-1" / "prune_report.json")
    assert f"| region-pruned-1 | region | 1 | {prune['pruned_layers'][0]} |" in md
    assert prune["pruned_layers"][0] not in (0, 6)
    # a second run replaces the report it made, and nothing is left beside it
    assert report(argv[:-1]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


def test_report_bad_input_exits_2(run_dirs, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    run = str(run_dirs["region-25"])
    cases = [([str(tmp_path / "missing"), "--out", str(tmp_path / "r")], "not a directory"),
             ([str(empty), "--out", str(tmp_path / "r")], "holds none of"),
             ([run, "--out", str(tmp_path / "r"), "--baseline", "nope"], "--baseline"),
             ([run, "--out", str(foreign)], "not written by region-report"),
             ([run, "--out", str(Path(run) / "report")], "lies inside the input")]
    for argv, needle in cases:
        assert report(argv) == 2, argv
        assert needle in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "mine" and not (tmp_path / "r").exists()


# ---------------- scripts/experiments (DRY_RUN=1) and the benchmark recorder ----------------

REPO = Path(__file__).resolve().parents[1]


def _dry_run(script, tmp_path, **env):
    import os
    import subprocess
    import sys

    full = {**os.environ, "DRY_RUN": "1", "EXP_ROOT": str(tmp_path / "exp"),
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", **env}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "experiments" / script)], capture_output=True, text=True,
                          env=full, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "exp").exists()  # printed, nothing ran
    return proc.stdout.splitlines()


@pytest.mark.parametrize("codebase", ["llava", "bunny"])
def test_experiment_scripts_dry_run(tmp_path, codebase):
    from region_plugin.spec import format_layers, uniform_layers

    trainer = f"region_plugin.{codebase}.train"
    lines = _dry_run("table2.sh", tmp_path, CODEBASE=codebase)
    trains = [l for l in lines if trainer in l]
    assert len(trains) == 7 and "--region_layers" not in trains[0]
    assert [l.split("--region_layers ")[1].split()[0] for l in trains[1:]] == \
        [f"uniform:{k}" for k in (16, 8, 6, 4, 2, 1)]
    for k in (16, 8, 6, 4, 2, 1):  # the resolved lists printed are the paper's (uniform_layers reproduces them)
        assert f"# {k} layers: {format_layers(uniform_layers(k, 32))}" in lines
    assert "# 8 layers: 0,4,8,12,18,22,26,30" in lines and "# 4 layers: 0,10,20,30" in lines
    assert sum("region-eval-text" in l and "--task mmlu" in l and "--shots 5" in l for l in lines) == 7
    assert sum("region-eval-text" in l and "--task bbh" in l and "--shots 0" in l for l in lines) == 7
    assert lines[-1].startswith("region-report ") and lines[-1].count("/layers-") == 7

    lines = _dry_run("table1.sh", tmp_path, CODEBASE=codebase)
    specs = [l.split("--region_layers ")[1].split()[0] for l in lines if trainer in l and "--region_layers" in l]
    assert specs[:4] == ["0-7", "12-19", "24-31", "uniform:8"]
    assert [s.split(":")[2] for s in specs[4:]] == ["bi", "mm_bi", "angular", "attn", "param_ratio", "param_angular"]
    assert all(s.startswith("top:8:") and s.endswith("/all/scores/scores.json") for s in specs[4:])

    lines = _dry_run("fig4.sh", tmp_path, CODEBASE=codebase)
    prunes = [l for l in lines if l.startswith("region-prune ")]
    assert [(l.split("--mode ")[1].split()[0], l.split("--num-prune ")[1].split()[0]) for l in prunes] == \
        [("region", str(k)) for k in range(1, 5)] + [("global", str(k)) for k in range(1, 5)]
    assert all("region-0" in l.split("--model-path ")[1].split()[0] for l in prunes[:4])
    assert all("global-0" in l.split("--model-path ")[1].split()[0] for l in prunes[4:])

    lines = _dry_run("fig2.sh", tmp_path, CODEBASE=codebase)
    assert sum(trainer in l for l in lines) == 6 and sum("data-25.json" in l and trainer in l for l in lines) == 2

    lines = _dry_run("table3.sh", tmp_path, CODEBASE=codebase)
    bases = [l.split("--model_name_or_path ")[1].split()[0] for l in lines if trainer in l]
    if codebase == "llava":
        assert bases == ["lmsys/vicuna-7b-v1.5"] * 2 + ["lmsys/vicuna-13b-v1.5"] * 2
        assert f"# LLaVA-1.5 13b: 25% = {format_layers(uniform_layers(10, 40))}" in lines  # 40 layers
    else:
        assert len(bases) == 4


def test_record_benchmark_from_an_upstream_log(tmp_path):
    from region_plugin.reporting.record import main as record

    log = tmp_path / "pope.log"  # what upstream's eval_pope.py prints, one block per category
    log.write_text("".join(f"Category: {c}, # samples: 3000\nTP\tFP\tTN\tFN\t\n1\t2\t3\t4\nAccuracy: 0.8\n"
                           f"F1 score: {f}\n" for c, f in (("adversarial", 0.8), ("popular", 0.85), ("random", 0.9))))
    assert record(["--run", str(tmp_path / "run"), "--name", "POPE", "--log", str(log), "--pattern", "F1 score:"]) == 0
    (tmp_path / "tv.log").write_text("Samples: 5000\nAccuracy: 58.21%\n")
    assert record(["--run", str(tmp_path / "run"), "--name", "TextVQA", "--log", str(tmp_path / "tv.log"),
                   "--pattern", "Accuracy:"]) == 0
    assert read_json(tmp_path / "run" / "benchmarks.json") == pytest.approx({"POPE": 85.0, "TextVQA": 58.21})
    assert record(["--run", str(tmp_path / "run"), "--name", "X", "--log", str(log), "--pattern", "BLEU:"]) == 2


def test_demo_analyses_end_with_a_report(demo_out):
    """`make demo`'s second half: score, revert (`outside` exact, region not), prune, and where the report is."""
    out, stdout = demo_out
    assert stdout.strip().splitlines()[-1].startswith(f"report: {out / 'report' / 'report.md'}")
    assert {"revert.png", "pruning.png", "scores_heatmap.png", "cost.png"} <= {p.name for p in (out / "report").iterdir()}
    row = out / "runs" / "region-25"
    outside, region = (json.loads((row / f"revert_{k}.json").read_text()) for k in ("outside", "region"))
    assert outside["layers"] == [1, 2, 3, 4, 5, 7] and outside["visual"]["before"] == outside["visual"]["after"]
    assert region["layers"] == [0, 6] and region["visual"]["after"] != region["visual"]["before"]


@pytest.mark.slow
def test_table2_script_runs_end_to_end_on_the_tiny_model(tiny, tmp_path):
    """table2.sh for real (2 counts): upstream training through the plugin, the text tasks, region-report."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "EXP_ROOT": str(tmp_path / "exp"), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "WANDB_DISABLED": "true",
           "DRY_RUN": "0", "LAUNCHER": f"{sys.executable} -m", "ZERO_CONFIG": "", "BENCHMARKS": "", "NUM_LAYERS": "8", "COUNTS": "8 2",
           "MODEL_NAME": "llava-tiny", "MODEL_BASE": tiny.llm, "DATA_PATH": tiny.data, "IMAGE_FOLDER": tiny.image_folder,
           "VISION_TOWER": tiny.vision_tower, "PRETRAIN_MM": tiny.projector, "MMLU_DIR": str(TEXT_DATA / "mmlu"),
           "BBH_DIR": str(TEXT_DATA / "bbh"),
           "TRAIN_ARGS": "--bf16 False --tf32 False --use_cpu True --max_steps 2 --per_device_train_batch_size 4 "
                         "--model_max_length 256 --dataloader_num_workers 0 --lora_r 8 --lora_alpha 16"}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "experiments" / "table2.sh")], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    exp = tmp_path / "exp" / "table2-llava"
    assert read_json(exp / "layers-2" / "llava-tiny-layers-2-lora" / "config.json")["region_layers"] == [0, 6]
    assert read_json(exp / "layers-8" / "llava-tiny-layers-8-lora" / "region_report.json")["region_layers"] is None
    for run in ("layers-8", "layers-2"):
        for task in ("mmlu", "bbh"):
            assert read_json(exp / run / "eval" / f"text_eval_{task}.json")["total"] > 0
    summary = read_json(exp / "report" / "report.json")
    assert summary["baseline"] == "layers-8" and "layers.png" in summary["figures"]
    assert "| layers-2 | 2: 0,6 |" in (exp / "report" / "report.md").read_text()
