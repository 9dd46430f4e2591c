"""Issue 9: hostile and broken inputs never run code, touch inputs, delete data or pass verification.

Every case drives the real tools (region-layers, region-score, region-prune main()s, upstream
LLaVA's loader behind them) on the tiny checkpoints of conftest.py, and checks three things: the
exit status (2 with a message naming the flag or file, or 0 with a correct result), that the
inputs are byte-identical afterwards, and that nothing half-written is left behind.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import struct
import subprocess
import sys

import pytest

from conftest import run_cli
from region_plugin.cli import main as region_layers
from region_plugin.pruning.cli import main as region_prune
from region_plugin.scoring.cli import main as region_score
from test_pruning_stream import leftovers, tree_digest

MARKER_CODE = "import pathlib; pathlib.Path({marker!r}).write_text('code ran')\n"


# ---------------------------------------------------------------- helpers

def err_of(capsys) -> str:
    captured = capsys.readouterr()
    return captured.err


def assert_refused(rc, err, *needles, out=None):
    assert rc == 2, err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, (needle, err)
    assert "Traceback" not in err
    if out is not None:
        assert not os.path.lexists(out), "a refused run must not create --out"
        assert not leftovers(os.path.dirname(out), os.path.basename(out))


def copy_dir(src, dst):
    shutil.copytree(src, dst, symlinks=False)
    return str(dst)


def score_argv(model, out, tiny, *extra, base=None, samples="2"):
    argv = ["--model-path", str(model), "--data", tiny.data, "--image-folder", tiny.image_folder,
            "--num-samples", samples, "--metrics", "bi", "--out", str(out), "--quiet", *extra]
    return argv + (["--model-base", str(base)] if base else [])


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def write_header(path, header: object, payload: bytes = b"") -> None:
    blob = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob + payload)


@pytest.fixture(scope="module")
def scores_ok(tmp_path_factory):
    path = tmp_path_factory.mktemp("adv-scores") / "scores.json"
    path.write_text(json.dumps({"num_layers": 8, "metrics": {"angular": [0.9, 0.5, 0.4, 0.3, 0.2, 0.25, 0.8, 0.6]}}))
    return str(path)


@pytest.fixture(scope="module")
def projector_dir(lora_region_run, tiny, tmp_path_factory):
    """A projector-only LLaVA dir (config.json + mm_projector.bin) whose NAME contains "mpt" (in "prompt")."""
    d = tmp_path_factory.mktemp("adv-proj") / "llava-prompt-tuned-proj"
    d.mkdir()
    shutil.copy(os.path.join(lora_region_run[0], "config.json"), d / "config.json")
    shutil.copy(os.path.join(tiny.root, "tiny-llava-pretrain", "mm_projector.bin"), d / "mm_projector.bin")
    return d


@pytest.fixture(scope="module")
def mpt_base(tiny, tmp_path_factory):
    """The tiny LLM plus a configuration_mpt.py that leaves a marker file if anyone runs it."""
    root = tmp_path_factory.mktemp("adv-base")
    base = root / "tiny-vicuna"
    copy_dir(tiny.llm, base)
    (base / "configuration_mpt.py").write_text(MARKER_CODE.format(marker=str(root / "RAN")))
    return base, root / "RAN"


# ---------------------------------------------------------------- 1. names never decide the model class or run code

def test_a_projector_dir_with_auto_map_never_runs_its_code(projector_dir, mpt_base, tiny, tmp_path, capsys):
    hostile = tmp_path / "llava-prompt-tuned-proj"
    copy_dir(projector_dir, hostile)
    cfg = json.loads((hostile / "config.json").read_text())
    cfg["auto_map"] = {"AutoConfig": "configuration_mpt.MPTConfig"}
    (hostile / "config.json").write_text(json.dumps(cfg))
    (hostile / "configuration_mpt.py").write_text(MARKER_CODE.format(marker=str(tmp_path / "RAN")))
    base, base_marker = mpt_base
    before = tree_digest(hostile)
    out = tmp_path / "scores"
    assert_refused(region_score(score_argv(hostile, out, tiny, base=base)), err_of(capsys),
                   "auto_map", "--trust-remote-code", out=str(out))
    out = tmp_path / "llava-pruned"
    assert_refused(region_prune(["--model-path", str(hostile), "--model-base", str(base), "--out", str(out),
                                 "--layers", "3", "--no-verify"]), err_of(capsys),
                   "auto_map", "--trust-remote-code", out=str(out))
    assert not (tmp_path / "RAN").exists() and not base_marker.exists()
    assert tree_digest(hostile) == before


def test_names_with_mpt_or_mistral_load_like_any_other_name(projector_dir, mpt_base, llava_merged, tiny, tmp_path,
                                                            capsys):
    """'prompt' contains "mpt", 'attempt' too, 'mistral' picks another class upstream: none of it matters."""
    base, marker = mpt_base
    before = tree_digest(projector_dir)
    assert region_score(score_argv(projector_dir, tmp_path / "proj", tiny, base=base)) == 0, err_of(capsys)
    assert tree_digest(projector_dir) == before  # upstream's mpt branch would copy configuration_mpt.py into it
    assert not marker.exists()

    out = tmp_path / "llava-proj-pruned"
    assert region_prune(["--model-path", str(projector_dir), "--model-base", str(base), "--out", str(out),
                         "--layers", "3", "--no-verify"]) == 0, err_of(capsys)
    assert tree_digest(projector_dir) == before and not marker.exists()

    renamed = tmp_path / "llava-mistral-attempt-merged"
    os.symlink(llava_merged, renamed)
    assert region_score(score_argv(llava_merged, tmp_path / "plain", tiny)) == 0
    assert region_score(score_argv(renamed, tmp_path / "renamed", tiny)) == 0, err_of(capsys)
    a = json.loads((tmp_path / "plain" / "scores.json").read_text())["metrics"]["bi"]
    b = json.loads((tmp_path / "renamed" / "scores.json").read_text())["metrics"]["bi"]
    assert a == b


# ---------------------------------------------------------------- 2./3. --overwrite and interrupted replacement

def test_overwrite_never_deletes_a_directory_it_did_not_write(tiny_llama_sharded, tmp_path, capsys):
    results = tmp_path / "results"
    results.mkdir()
    (results / "table.csv").write_text("precious")
    (results / "prune_report.json").write_text(json.dumps({"not": "ours"}))
    before = tree_digest(results)
    rc = region_prune(["--model-path", str(tiny_llama_sharded), "--mode", "global", "--layers", "1",
                       "--out", str(results), "--overwrite", "--no-verify"])
    assert_refused(rc, err_of(capsys), "--out", "not written by region-prune")
    assert tree_digest(results) == before


def test_an_output_moved_aside_by_a_killed_run_is_restored(tiny_llama_sharded, tmp_path, capsys):
    base = ["--model-path", str(tiny_llama_sharded), "--mode", "global", "--no-verify"]
    out = tmp_path / "pruned"
    assert region_prune(base + ["--out", str(out), "--layers", "1"]) == 0
    old = tree_digest(out)
    # The state SIGKILL leaves between the two renames of an --overwrite: old output moved aside, new not in.
    staging = tmp_path / ".pruned.tmp-killed"
    staging.mkdir()
    (staging / "owner.json").write_text(json.dumps({"pid": dead_pid(), "host": os.uname().nodename}))
    os.rename(out, staging / "replaced")
    os.makedirs(staging / "result")
    assert not out.exists()
    # The next run for the same --out puts the old output back before anything else...
    assert_refused(region_prune(base + ["--out", str(out), "--layers", "2"]), err_of(capsys), "--overwrite")
    assert tree_digest(out) == old and not staging.exists()
    # ...and an --overwrite replaces it, keeping nothing stale.
    assert region_prune(base + ["--out", str(out), "--layers", "2", "--overwrite"]) == 0
    assert json.loads((out / "prune_report.json").read_text())["pruned_layers"] == [2]
    assert not leftovers(tmp_path, "pruned")


def test_stale_staging_dirs_of_dead_runs_are_removed_live_ones_kept(tiny_llama_sharded, tmp_path, capsys):
    dead, live, foreign = (tmp_path / f".pruned.tmp-{n}" for n in ("dead", "live", "foreign"))
    for d, pid in ((dead, dead_pid()), (live, os.getppid())):
        (d / "work").mkdir(parents=True)
        (d / "owner.json").write_text(json.dumps({"pid": pid, "host": os.uname().nodename}))
    (foreign / "x").mkdir(parents=True)  # no owner record: not provably ours, left alone
    assert region_prune(["--model-path", str(tiny_llama_sharded), "--mode", "global", "--no-verify", "--layers", "1",
                         "--out", str(tmp_path / "pruned")]) == 0
    assert not dead.exists() and live.exists() and foreign.exists()
    assert "left by an interrupted run" in capsys.readouterr().out


def test_overwrite_never_deletes_a_directory_holding_only_hidden_files(tiny_llama_sharded, tmp_path, capsys):
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / ".git" / "HEAD").write_text("ref: refs/heads/main")
    rc = region_prune(["--model-path", str(tiny_llama_sharded), "--mode", "global", "--layers", "1",
                       "--out", str(repo), "--overwrite", "--no-verify"])
    assert_refused(rc, err_of(capsys), "not written by region-prune")
    assert (repo / ".git" / "HEAD").read_text() == "ref: refs/heads/main"


def test_score_files_moved_aside_by_a_killed_run_are_restored(tmp_path):
    from region_plugin.outdir import reap_stale

    out = tmp_path / "scores"
    (out).mkdir()
    (out / "scores.csv").write_text("old csv")  # scores.json was moved aside, then SIGKILL
    staging = tmp_path / ".scores.tmp-killed"
    (staging / "replaced-files").mkdir(parents=True)
    (staging / "replaced-files" / "scores.json").write_text("old json")
    (staging / "owner.json").write_text(json.dumps({"pid": dead_pid(), "host": os.uname().nodename}))
    notes = reap_stale(str(out))
    assert (out / "scores.json").read_text() == "old json" and not staging.exists() and len(notes) == 2


def test_swap_of_score_files_is_all_or_nothing(tmp_path):
    from region_plugin.outdir import make_staging, remove_staging, swap_files

    out = tmp_path / "scores"
    out.mkdir()
    for name in ("scores.json", "scores.csv", "scores.png", "notes.txt"):
        (out / name).write_text(f"old {name}")
    before = tree_digest(out)
    root = make_staging(str(out))
    new = os.path.join(root, "result")
    os.mkdir(new)
    for name in ("scores.json", "scores.csv"):  # scores.png missing: its rename fails mid-way
        with open(os.path.join(new, name), "w") as f:
            f.write("new")
    with pytest.raises(FileNotFoundError):
        swap_files(new, str(out), ("scores.json", "scores.csv", "scores.png"), root)
    remove_staging(root)
    assert tree_digest(out) == before and not leftovers(tmp_path, "scores")


def test_region_score_refuses_an_out_whose_png_is_not_a_file(tiny, llava_merged, tmp_path, capsys):
    out = tmp_path / "scores"
    out.mkdir()
    (out / "scores.json").write_text("old")
    (out / "scores.png").mkdir()
    assert_refused(region_score(score_argv(llava_merged, out, tiny)), err_of(capsys), "scores.png")
    assert (out / "scores.json").read_text() == "old"


# ---------------------------------------------------------------- 4. broken weights never pass verification

def test_nan_weights_fail_verification_and_nothing_is_written(llava_merged, tmp_path, capsys):
    from region_plugin.pruning.safetensors_io import read_header

    broken = copy_dir(llava_merged, tmp_path / "llava-bitflip")
    shard = os.path.join(broken, "model.safetensors")
    header, _, start = read_header(shard)
    lo, hi = header["model.layers.1.self_attn.q_proj.weight"]["data_offsets"]
    with open(shard, "r+b") as f:  # fp16 0xFFFF is NaN: a bit-flipped tensor
        f.seek(start + lo)
        f.write(b"\xff" * (hi - lo))
    out = tmp_path / "llava-pruned"
    rc = region_prune(["--model-path", broken, "--out", str(out), "--layers", "3"])
    assert_refused(rc, err_of(capsys), "verification failed", "non-finite", out=str(out))


def test_no_verify_still_refuses_header_shapes_that_disagree_with_the_config(tiny_llama_sharded, tmp_path, capsys):
    from region_plugin.pruning.safetensors_io import read_header

    broken = copy_dir(tiny_llama_sharded, tmp_path / "reshaped")
    index = json.loads((tmp_path / "reshaped" / "model.safetensors.index.json").read_text())["weight_map"]
    name = "model.layers.2.self_attn.q_proj.weight"
    shard = os.path.join(broken, index[name])
    header, meta, start = read_header(shard)
    rows, cols = header[name]["shape"]
    header[name]["shape"] = [rows // 2, cols * 2]  # same bytes, wrong shape
    with open(shard, "rb") as f:
        f.seek(start)
        data = f.read()
    write_header(shard, {"__metadata__": meta, **header}, data)
    out = tmp_path / "pruned"
    rc = region_prune(["--model-path", broken, "--out", str(out), "--mode", "global", "--layers", "1", "--no-verify"])
    assert_refused(rc, err_of(capsys), name, "config", out=str(out))


# ---------------------------------------------------------------- 5. secrets and modes of reports

def test_secrets_are_redacted_from_the_report_command():
    from region_plugin.report import redact_command

    argv = ["train.py", "--hub_token", "hf_SECRET1", "--api-key=SECRET2", "--lr", "2e-4", "--db_password", "SECRET3",
            "--SECRET_sauce=SECRET4", "--aws_access_key_id", "SECRET5", "--push_to_hub", "--output_dir", "out"]
    red = redact_command(argv)
    assert not any(f"SECRET{i}" in a for a in red for i in range(1, 6)), red
    assert "hf_SECRET1" not in red and "--api-key=***" in red and "SECRET3" not in red and "SECRET5" not in red
    assert "--SECRET_sauce=***" in red and red[red.index("--lr") + 1] == "2e-4" and red[-1] == "out"
    assert len(red) == len(argv)


def test_reports_follow_the_umask_and_redact_sys_argv(tmp_path, monkeypatch):
    from region_plugin.report import build_report, write_json_atomic

    monkeypatch.setattr(sys, "argv", ["train.py", "--hub_token", "hf_leak", "--region_layers", "25%"])
    params = {"llm": {"total": 1, "trainable": 1}, "projector": {"total": 0, "trainable": 0}}
    report = build_report([0], 1, params, 1.0, 1.0, "lora")
    assert "hf_leak" not in report["command"] and "--hub_token ***" in report["command"]
    for mask in (0o022, 0o077):
        old = os.umask(mask)
        try:
            write_json_atomic(str(tmp_path / f"r{mask}.json"), report)
        finally:
            os.umask(old)
        assert stat.S_IMODE(os.stat(tmp_path / f"r{mask}.json").st_mode) == 0o666 & ~mask


# ---------------------------------------------------------------- 6. pickles upstream would unpickle

def test_a_malicious_non_lora_trainables_is_refused_before_upstream_unpickles_it(lora_region_run, tiny, tmp_path,
                                                                                  capsys):
    import torch

    hostile = copy_dir(lora_region_run[0], tmp_path / "llava-evil-lora")
    marker = tmp_path / "PWNED"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"base_model.model.model.mm_projector.0.weight": Evil()}, os.path.join(hostile, "non_lora_trainables.bin"))
    before = tree_digest(hostile)
    assert_refused(region_score(score_argv(hostile, tmp_path / "s", tiny, base=tiny.llm)), err_of(capsys),
                   "non_lora_trainables.bin", "weights-only")
    assert_refused(region_prune(["--model-path", hostile, "--model-base", tiny.llm, "--out", str(tmp_path / "p"),
                                 "--layers", "3"]), err_of(capsys), "non_lora_trainables.bin", out=str(tmp_path / "p"))
    assert not marker.exists() and tree_digest(hostile) == before


# ---------------------------------------------------------------- clear errors: files

@pytest.mark.parametrize("case", ["list_header", "no_offsets", "index_not_json", "index_list", "index_escapes"])
def test_damaged_shards_and_indexes_exit_2_naming_the_file(tiny_llama_sharded, tmp_path, capsys, case):
    broken = tmp_path / "broken"
    copy_dir(tiny_llama_sharded, broken)
    index = broken / "model.safetensors.index.json"
    first = sorted(set(json.loads(index.read_text())["weight_map"].values()))[0]
    if case == "list_header":
        write_header(broken / first, [1, 2, 3])
        needle = first
    elif case == "no_offsets":
        write_header(broken / first, {"model.embed_tokens.weight": {"dtype": "F32", "shape": [2]}})
        needle = "data_offsets"
    elif case == "index_not_json":
        index.write_text("{not json")
        needle = "model.safetensors.index.json"
    elif case == "index_list":
        index.write_text("[]")
        needle = "model.safetensors.index.json"
    else:
        index.write_text(json.dumps({"weight_map": {"model.embed_tokens.weight": "../../etc/passwd"}}))
        needle = "not file names"
    out = tmp_path / "pruned"
    rc = region_prune(["--model-path", str(broken), "--out", str(out), "--mode", "global", "--layers", "1",
                       "--no-verify"])
    assert_refused(rc, err_of(capsys), needle, out=str(out))


@pytest.mark.parametrize("value", ["true", "1e8", "100000000", "\"8\"", "-3", "null"])
def test_config_with_a_bad_layer_count_is_refused_quickly(tiny_llama_sharded, tmp_path, capsys, value):
    model = tmp_path / "m"
    copy_dir(tiny_llama_sharded, model)
    cfg = json.loads((model / "config.json").read_text())
    text = json.dumps(cfg).replace('"num_hidden_layers": 8', f'"num_hidden_layers": {value}')
    (model / "config.json").write_text(text)
    assert region_layers(["--model-path", str(model), "25%"]) == 2
    err = err_of(capsys)
    assert "config.json" in err and "Traceback" not in err
    rc = region_prune(["--model-path", str(model), "--out", str(tmp_path / "p"), "--mode", "global", "--layers", "1",
                       "--no-verify"])
    assert_refused(rc, err_of(capsys), "config.json", out=str(tmp_path / "p"))


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", "\"a string\""])
def test_config_that_is_not_a_json_object(tiny_llama_sharded, tmp_path, capsys, text):
    model = tmp_path / "m"
    copy_dir(tiny_llama_sharded, model)
    (model / "config.json").write_text(text)
    assert region_layers(["--model-path", str(model), "25%"]) == 2
    assert "config.json" in err_of(capsys)
    assert_refused(region_prune(["--model-path", str(model), "--out", str(tmp_path / "p"), "--mode", "global",
                                 "--layers", "1"]), err_of(capsys), "config.json", out=str(tmp_path / "p"))


def test_a_fifo_in_the_input_is_refused(llava_merged, tiny_llama_sharded, tiny, tmp_path, capsys):
    model = tmp_path / "llava-fifo"
    copy_dir(llava_merged, model)
    os.mkfifo(model / "tokenizer.model.fifo")
    assert_refused(region_score(score_argv(model, tmp_path / "s", tiny)), err_of(capsys), "tokenizer.model.fifo",
                   "special file", out=str(tmp_path / "s"))
    plain = tmp_path / "plain"
    copy_dir(tiny_llama_sharded, plain)
    os.mkfifo(plain / "tokenizer_config.json.pipe")
    assert_refused(region_prune(["--model-path", str(plain), "--out", str(tmp_path / "p"), "--mode", "global",
                                 "--layers", "1", "--no-verify"]), err_of(capsys), "special file", out=str(tmp_path / "p"))


# ---------------------------------------------------------------- clear errors: what is paired with what

def test_merged_dir_with_model_base_and_lora_without_it(llava_merged, lora_region_run, tiny, tmp_path, capsys):
    for argv, needle in (
        (["--model-path", str(llava_merged), "--model-base", tiny.llm], "drop --model-base"),
        (["--model-path", str(lora_region_run[0])], "--model-base"),
    ):
        assert_refused(region_score(score_argv(argv[1], tmp_path / "s", tiny, *argv[2:])), err_of(capsys), needle,
                       out=str(tmp_path / "s"))
        assert_refused(region_prune(argv + ["--out", str(tmp_path / "p"), "--layers", "3"]), err_of(capsys), needle,
                       out=str(tmp_path / "p"))


def test_lora_dir_with_the_wrong_base_is_refused_before_loading(lora_region_run, tiny, tmp_path, capsys):
    from region_plugin.tiny import build_llm

    wrong = build_llm(str(tmp_path / "llm32"), hidden=32)
    assert_refused(region_score(score_argv(lora_region_run[0], tmp_path / "s", tiny, base=wrong)), err_of(capsys),
                   "--model-base", "hidden_size=32")
    assert_refused(region_prune(["--model-path", str(lora_region_run[0]), "--model-base", wrong, "--out",
                                 str(tmp_path / "p"), "--layers", "3"]), err_of(capsys), "--model-base",
                   out=str(tmp_path / "p"))


def test_checkpoint_in_the_wrong_environment_or_with_the_wrong_model_type(llava_merged, tiny, tmp_path, capsys):
    bunny = tmp_path / "bunny-ckpt"
    copy_dir(llava_merged, bunny)
    cfg = json.loads((bunny / "config.json").read_text())
    cfg["model_type"] = "bunny-llama"
    (bunny / "config.json").write_text(json.dumps(cfg))
    try:
        import bunny as _  # noqa: F401  (the Bunny stack: this case cannot happen there)
        in_llava_env = False
    except Exception:  # noqa: BLE001
        in_llava_env = True
    if in_llava_env:
        assert_refused(region_score(score_argv(bunny, tmp_path / "s", tiny)), err_of(capsys), ".venv-bunny",
                       "make venv-bunny")
        assert_refused(region_prune(["--model-path", str(bunny), "--out", str(tmp_path / "p"), "--layers", "3"]),
                       err_of(capsys), ".venv-bunny", out=str(tmp_path / "p"))
    assert_refused(region_score(score_argv(llava_merged, tmp_path / "s", tiny, "--model-type", "phi-2")),
                   err_of(capsys), "--model-type 'phi-2'", "llava_llama")


def test_data_scoring_on_a_plain_llm_is_refused_before_work(tiny_llama_sharded, tiny, tmp_path, capsys):
    rc = region_prune(["--model-path", str(tiny_llama_sharded), "--out", str(tmp_path / "p"), "--mode", "global",
                       "--num-prune", "2", "--data", tiny.data, "--image-folder", tiny.image_folder])
    assert_refused(rc, err_of(capsys), "--data", "plain language model", out=str(tmp_path / "p"))


def test_checkpoint_n_without_config_is_refused_with_config_it_prunes_like_a_final_lora_dir(lora_region_run, tiny,
                                                                                           tmp_path, capsys):
    run = tmp_path / "run"
    copy_dir(lora_region_run[0], run)
    old = run / "checkpoint-2"  # what older runs saved mid-training: adapter + trainer state only
    old.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors", "trainer_state.json"):
        shutil.copy(run / name, old / name)
    before = tree_digest(run)
    assert_refused(region_score(score_argv(old, tmp_path / "s", tiny, base=tiny.llm)), err_of(capsys),
                   "checkpoint-N", "config.json")
    assert_refused(region_prune(["--model-path", str(old), "--model-base", tiny.llm, "--out", str(tmp_path / "p"),
                                 "--layers", "3"]), err_of(capsys), "config.json", out=str(tmp_path / "p"))
    shutil.copy(run / "config.json", old / "config.json")  # config but no projector: still refused
    assert_refused(region_prune(["--model-path", str(old), "--model-base", tiny.llm, "--out", str(tmp_path / "p"),
                                 "--layers", "3"]), err_of(capsys), "non_lora_trainables.bin", out=str(tmp_path / "p"))
    new = run / "checkpoint-4"  # what runs save now: config.json and non_lora_trainables.bin as well
    new.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors", "config.json", "non_lora_trainables.bin"):
        shutil.copy(run / name, new / name)
    out = tmp_path / "llava-ckpt4-pruned"
    assert region_prune(["--model-path", str(new), "--model-base", tiny.llm, "--out", str(out), "--layers", "3",
                         "--no-verify"]) == 0, err_of(capsys)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "llava_llama" and cfg["num_hidden_layers"] == 7
    from region_plugin.pruning.checkpoint import scan, tensor_names

    assert any("mm_projector" in n for n in tensor_names(scan(str(out))))
    assert {k: v for k, v in tree_digest(run).items() if not k.startswith("checkpoint-")} == \
        {k: v for k, v in before.items() if not k.startswith("checkpoint-")}


# ---------------------------------------------------------------- clear errors: options and data, before weights

@pytest.mark.parametrize("flag,value,needle", [("--device", "banana", "--device 'banana'"),
                                               ("--device", "cuda:99", "--device 'cuda:99'"),
                                               ("--conv-mode", "no_such_template", "--conv-mode")])
def test_bad_options_fail_before_the_merge(lora_region_run, tiny, tmp_path, capsys, flag, value, needle):
    rc = region_prune(["--model-path", str(lora_region_run[0]), "--model-base", tiny.llm, "--out", str(tmp_path / "p"),
                       "--layers", "3", flag, value])
    captured = capsys.readouterr()
    assert_refused(rc, captured.err, needle, out=str(tmp_path / "p"))
    assert "Loading LLaVA" not in captured.out  # upstream's loader never started
    assert_refused(region_score(score_argv(lora_region_run[0], tmp_path / "s", tiny, flag, value, base=tiny.llm)),
                   err_of(capsys), needle, out=str(tmp_path / "s"))


@pytest.mark.parametrize("damage", ["truncated", "not_an_image"])
def test_undecodable_images_are_named_before_loading(lora_region_run, tiny, tmp_path, capsys, damage):
    images = tmp_path / "images"
    copy_dir(tiny.image_folder, images)
    data = (images / "img_001.png").read_bytes()
    (images / "img_001.png").write_bytes(data[: len(data) // 2] if damage == "truncated" else b"hello, not a png")
    argv = ["--model-path", str(lora_region_run[0]), "--model-base", tiny.llm, "--data", tiny.data,
            "--image-folder", str(images), "--num-samples", "4"]
    rc = region_score(argv + ["--out", str(tmp_path / "s"), "--quiet"])
    captured = capsys.readouterr()
    assert_refused(rc, captured.err, "img_001.png", "--image-folder", out=str(tmp_path / "s"))
    assert "Loading LLaVA" not in captured.out
    rc = region_prune(argv + ["--out", str(tmp_path / "p"), "--num-prune", "1"])
    assert_refused(rc, err_of(capsys), "img_001.png", out=str(tmp_path / "p"))


def test_disk_full_is_a_clear_error_and_staging_is_removed(tiny_llama_sharded, tmp_path):
    """A real write limit (RLIMIT_FSIZE, as a full disk or quota gives) hits the shard rewrite."""
    out = tmp_path / "pruned"
    code = ("import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
            "resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, 60_000)); "
            "from region_plugin.pruning.cli import main; "
            f"sys.exit(main(['--model-path', {str(tiny_llama_sharded)!r}, '--out', {str(out)!r}, '--mode', 'global', "
            "'--layers', '1', '--no-verify']))")
    proc = run_cli(["-c", code])
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "disk is full or a size limit" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists() and not leftovers(tmp_path, "pruned")


# ---------------------------------------------------------------- specs and score files

@pytest.mark.parametrize("spec", ["٣", "３,５", "uniform:٣", "٣٣%", "9" * 5000, "uniform:" + "9" * 5000,
                                  "1-" + "9" * 5000, "-5%", "nan%", "inf%", "1e1%"])
def test_specs_are_ascii_bounded_and_named(spec, capsys):
    assert region_layers(["--num-layers", "8", spec]) == 2
    err = err_of(capsys)
    assert err.startswith("error: --region_layers") and "Exceeds the limit" not in err


def test_a_huge_layer_count_is_refused_not_parsed_for_minutes(capsys):
    assert region_layers(["--num-layers", "100000000", "0-99999999"]) == 2
    assert "num_layers" in err_of(capsys)


@pytest.mark.parametrize("values", ["[Infinity, 1, 2, 3, 4, 5, 6, 7]", "[true, 1, 2, 3, 4, 5, 6, 7]",
                                    "[NaN, 1, 2, 3, 4, 5, 6, 7]", "[" + "9" * 5000 + ", 1, 2, 3, 4, 5, 6, 7]"])
def test_scores_must_be_finite_numbers(tiny_llama_sharded, tmp_path, capsys, values):
    path = tmp_path / "scores.json"
    path.write_text('{"metrics": {"angular": ' + values + "}}")
    assert region_layers(["--num-layers", "8", f"top:2:angular:{path}"]) == 2
    assert "scores file" in err_of(capsys)
    rc = region_prune(["--model-path", str(tiny_llama_sharded), "--out", str(tmp_path / "p"), "--mode", "global",
                       "--num-prune", "2", "--scores", str(path), "--no-verify"])
    assert_refused(rc, err_of(capsys), "--scores", out=str(tmp_path / "p"))


def test_layer_lists_have_one_parser(tiny_llama_sharded, tmp_path, capsys):
    from region_plugin.pruning.choose import parse_layer_list as prune_list
    from region_plugin.spec import parse_layer_list

    assert prune_list("5,1-2", 8) == parse_layer_list("5,1-2", 8) == [1, 2, 5]
    rc = region_prune(["--model-path", str(tiny_llama_sharded), "--out", str(tmp_path / "p"), "--mode", "global",
                       "--layers", "３", "--no-verify"])
    assert_refused(rc, err_of(capsys), "--layers '３'", out=str(tmp_path / "p"))


def test_training_paths_with_mpt_inside_a_word_are_refused(tiny, tmp_path):
    """Upstream train.py: `'mpt' in model_name_or_path` -> trust_remote_code=True; the lead wires this check."""
    from region_plugin.input_checks import check_training_model_path

    attempt = tmp_path / "attempt-vicuna"
    os.symlink(tiny.llm, attempt)
    with pytest.raises(ValueError, match="--model_name_or_path .*contains 'mpt'.*model_type is 'llama'"):
        check_training_model_path(str(attempt))
    check_training_model_path(tiny.llm)  # no "mpt": nothing to say


def test_a_result_without_the_projector_is_never_written(llava_merged, tmp_path, capsys):
    """A LLaVA checkpoint must come out as a LLaVA checkpoint: here its projector tensors are missing."""
    from region_plugin.pruning.safetensors_io import read_header

    broken = copy_dir(llava_merged, tmp_path / "llava-no-projector")
    shard = os.path.join(broken, "model.safetensors")
    header, meta, start = read_header(shard)
    with open(shard, "rb") as f:
        f.seek(start)
        data = f.read()
    renamed = {k.replace("mm_projector", "mm_unrelated"): v for k, v in header.items()}
    write_header(shard, {"__metadata__": meta, **renamed}, data)
    out = tmp_path / "llava-pruned"
    rc = region_prune(["--model-path", broken, "--out", str(out), "--layers", "3", "--no-verify"])
    assert_refused(rc, err_of(capsys), "mm_projector", "would not be an LVLM", out=str(out))


def test_region_score_disk_full_keeps_the_old_outputs(tmp_path):
    out = tmp_path / "scores"
    out.mkdir()
    for name in ("scores.json", "scores.csv", "scores.png"):
        (out / name).write_text(f"old {name}")
    before = tree_digest(out)
    scores = {"num_layers": 4, "metrics": {"bi": [0.1, 0.2, 0.3, 0.4]}, "meta": {}}
    code = ("import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
            "import matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot; "
            "resource.setrlimit(resource.RLIMIT_FSIZE, (4000, 4000)); "
            "from region_plugin.scoring.output import write_outputs; from region_plugin.scoring import ScoringError\n"
            f"try: write_outputs({scores!r}, {str(out)!r})\n"
            "except ScoringError as e: print(e); sys.exit(2)")
    proc = run_cli(["-c", code])
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "disk is full or a size limit" in proc.stdout and "Traceback" not in proc.stderr
    assert tree_digest(out) == before and not leftovers(tmp_path, "scores")


def test_a_damaged_adapter_file_is_named_before_loading(lora_region_run, tiny, tmp_path, capsys):
    lora = tmp_path / "llava-damaged-lora"
    copy_dir(lora_region_run[0], lora)
    data = (lora / "adapter_model.safetensors").read_bytes()
    (lora / "adapter_model.safetensors").write_bytes(data[: len(data) // 3])
    assert_refused(region_score(score_argv(lora, tmp_path / "s", tiny, base=tiny.llm)), err_of(capsys),
                   "adapter_model.safetensors", "truncated", out=str(tmp_path / "s"))
    assert_refused(region_prune(["--model-path", str(lora), "--model-base", tiny.llm, "--out", str(tmp_path / "p"),
                                 "--layers", "3"]), err_of(capsys), "adapter_model.safetensors",
                   out=str(tmp_path / "p"))


def test_region_score_never_writes_into_an_input(lora_region_run, tiny, tmp_path, capsys):
    lora = lora_region_run[0]
    before = tree_digest(lora)
    for out in (lora, os.path.join(lora, "scores")):
        assert_refused(region_score(score_argv(lora, out, tiny, base=tiny.llm)), err_of(capsys), "--out",
                       "input --model-path")
    assert tree_digest(lora) == before and not os.path.exists(os.path.join(lora, "scores"))


def test_ctrl_c_between_the_two_renames_of_an_overwrite_loses_nothing(tiny_llama_sharded, tmp_path):
    """A real SIGINT delivered right after the old output is moved aside (fault injected at that rename)."""
    out = tmp_path / "pruned"
    base = ["--model-path", str(tiny_llama_sharded), "--mode", "global", "--no-verify", "--out", str(out)]
    assert region_prune(base + ["--layers", "1"]) == 0
    code = ("import os, signal, sys\n"
            "signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, even if launched in the background\n"
            "from region_plugin.pruning.cli import main\n"
            "real = os.rename\n"
            "def rename(src, dst):\n"
            "    real(src, dst)\n"
            f"    if src == {str(out)!r}:\n"
            "        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C lands between the two renames\n"
            "os.rename = rename\n"
            f"sys.exit(main({base + ['--layers', '2', '--overwrite']!r}))\n")
    proc = run_cli(["-c", code])
    assert proc.returncode != 0 and "KeyboardInterrupt" in proc.stderr  # the interrupt was delivered
    report = json.loads((out / "prune_report.json").read_text())  # an output is in place, complete
    assert report["pruned_layers"] == [2] and (out / "config.json").is_file()  # swap finished, then the interrupt
    assert not leftovers(tmp_path, "pruned")


def test_checkpoint_n_of_a_run_killed_before_its_final_save_is_refused(lora_region_run, tiny, tmp_path, capsys):
    """No config.json anywhere, but the Trainer's training_args.bin names upstream LLaVA's TrainingArguments:
    merging it as a plain peft adapter would write a plain LLaMA without projector, so it is refused."""
    import torch
    from llava.train.train import TrainingArguments

    ckpt = tmp_path / "run" / "checkpoint-2"
    ckpt.mkdir(parents=True)
    for name in ("adapter_config.json", "adapter_model.safetensors", "trainer_state.json"):
        shutil.copy(os.path.join(lora_region_run[0], name), ckpt / name)
    torch.save(TrainingArguments(output_dir=str(tmp_path / "run")), ckpt / "training_args.bin")  # as Trainer saves it
    out = tmp_path / "llava-pruned"
    rc = region_prune(["--model-path", str(ckpt), "--model-base", tiny.llm, "--out", str(out), "--layers", "3",
                       "--mode", "global", "--no-verify"])
    assert_refused(rc, err_of(capsys), "checkpoint-N", "config.json", out=str(out))
