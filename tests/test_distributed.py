"""ZeRO-3 dtype alignment on real zero.Init-partitioned parameters, and the `region-layers` CLI."""
import json

from conftest import HELPERS, run_cli


def test_align_zero3_dtypes_casts_only_params_outside_zero_init():
    proc = run_cli([str(HELPERS / "zero3_dtype_probe.py")])  # first run builds a DeepSpeed op (~30 s)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["partitioned"] == ["0.bias", "0.weight", "1.bias", "1.weight"]
    assert out["before"]["projector.weight"] == "torch.float32" and out["before"]["0.weight"] == "torch.bfloat16"
    assert set(out["after"].values()) == {"torch.bfloat16"}
    assert out["cast"] == 2 and out["plain"] == 0  # projector weight + bias; nothing without ZeRO-3


def test_region_layers_cli(tiny):
    proc = run_cli(["-m", "region_plugin.cli", "--model-path", tiny.llm, "25%"])
    assert proc.returncode == 0 and proc.stdout.strip() == "0,6"
    proc = run_cli(["-m", "region_plugin.cli", "--num-layers", "32", "uniform:8"])
    assert proc.stdout.strip() == "0,4,8,12,18,22,26,30"
    proc = run_cli(["-m", "region_plugin.cli", "--num-layers", "32", "0-40"])
    assert proc.returncode == 2 and "layer 32 is out of range" in proc.stderr
