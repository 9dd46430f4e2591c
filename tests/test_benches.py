"""Smoke tests of the performance benches at the tiny shape, so they keep running as the code moves.

They check the JSON contract and that the numbers are sane, not the performance targets (those
are measured at `small` / `7b-slice`, see bench/RESULTS.md).
"""
import json

from conftest import REPO, run_cli


def last_json(proc):
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_train_step_tiny(tmp_path):
    r = last_json(run_cli([REPO / "bench" / "train_step.py", "--shape", "tiny", "--device", "cpu", "--steps", "1",
                           "--warmup", "1", "--threads", "1", "--json", "--workdir", tmp_path], timeout=300))
    for key in ("region_over_all", "region_over_floor", "overhead_share", "peak_mem_region_over_all", "shape",
                "device"):
        assert key in r, key
    assert (r["shape"], r["device"], r["layers"], r["region_layers"]) == ("tiny", "cpu", 8, [0, 6])
    assert all(s > 0 for s in r["seconds"].values())
    # Exact bookkeeping: LoRA only on the 2 region layers, the floor trains the projector alone.
    t = r["trainable_params"]
    assert t["floor"] < t["region_full"] < t["all"] and t["floor"] < t["region"] < t["all"]
    assert (t["region"] - t["floor"]) * 4 == t["all"] - t["floor"]
    assert 0 < r["peak_mem_region_over_all"] < 1


def test_prune_infer_tiny(tmp_path):
    r = last_json(run_cli([REPO / "bench" / "prune_infer.py", "--shape", "tiny", "--device", "cpu", "--steps", "1",
                           "--new-tokens", "4", "--threads", "1", "--json", "--workdir", tmp_path], timeout=300))
    assert (r["layers"], r["num_prune"], r["ideal"]) == (8, 4, 2.0)
    assert not set(r["pruned_layers"]) & set(r["region_layers"])
    assert r["speedup"] > 0 and abs(r["speedup_over_ideal"] - r["speedup"] / r["ideal"]) < 1e-3
