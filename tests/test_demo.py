"""`make demo` end to end (fewer steps): builds, trains through upstream, merges, answers, reports."""
from conftest import read_json, run_cli


def test_demo_runs_every_stage(tmp_path):
    out = tmp_path / "demo"
    proc = run_cli(["-m", "region_plugin.llava.demo", "--out", str(out), "--steps", "3"])
    assert proc.returncode == 0, proc.stderr[-4000:]
    for i in range(1, 6):
        assert f"[{i}/5]" in proc.stdout
    assert "model says" in proc.stdout and "== region cost report ==" in proc.stdout
    report = read_json(out / "llava-tiny-region-lora" / "region_report.json")
    assert report["region_layers"] == [0, 6]


def test_demo_refuses_a_directory_it_did_not_make(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("user data")
    proc = run_cli(["-m", "region_plugin.llava.demo", "--out", str(tmp_path / "mine")])
    assert proc.returncode != 0 and "was not made by the demo" in proc.stderr
    assert (tmp_path / "mine" / "keep.txt").read_text() == "user data"
