"""The cost report of a training run (the paper's Sec 5.2 measure), written as region_report.json."""
from __future__ import annotations

import json
import os
import resource
import socket
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

import torch

REPORT_NAME = "region_report.json"


def world_size() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def device_kind() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.cuda.current_device())
    return "cpu"


def peak_memory() -> Dict[str, Any]:
    """Peak accelerator memory when there is one, else peak resident set size; max over ranks."""
    if torch.cuda.is_available():
        kind, value = "cuda_max_memory_allocated", torch.cuda.max_memory_allocated()
    else:
        kind, value = "max_rss", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        device = torch.device("cuda", torch.cuda.current_device()) if torch.distributed.get_backend() == "nccl" else None
        t = torch.tensor([value], dtype=torch.float64, device=device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        value = int(t.item())
    return {"kind": kind, "bytes": int(value), "gib": round(value / 2**30, 3)}


def build_report(region_layers: Optional[List[int]], num_layers: int, params: Dict[str, Dict[str, int]],
                 train_seconds: float, total_seconds: float, mode: str, **extra: Any) -> Dict[str, Any]:
    n_dev = world_size()
    total = sum(p["total"] for p in params.values())
    trainable = sum(p["trainable"] for p in params.values())
    report = {
        "region_layers": region_layers,
        "num_layers": num_layers,
        "region_fraction": round(len(region_layers) / num_layers, 4) if region_layers else 1.0,
        "tuning": mode,
        "parameters": {**params, "all": {"total": total, "trainable": trainable}},
        "trainable_fraction_llm": round(params["llm"]["trainable"] / max(params["llm"]["total"], 1), 6),
        "train_wall_seconds": round(train_seconds, 3),
        "total_wall_seconds": round(total_seconds, 3),
        "num_devices": n_dev,
        "device": device_kind(),
        "device_hours": round(n_dev * train_seconds / 3600, 6),
        "peak_memory": peak_memory(),
        "host": socket.gethostname(),
        "command": " ".join(redact_command(sys.argv)),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    report.update(extra)
    if isinstance(report["command"], (list, tuple)):  # a caller's own argv: redacted here as well
        report["command"] = " ".join(redact_command(list(report["command"])))
    return report


SECRET_WORDS = ("token", "key", "secret", "password")
REDACTED = "***"


def _is_secret_flag(flag: str) -> bool:
    name = flag.lstrip("-").lower()
    return flag.startswith("-") and any(word in name for word in SECRET_WORDS)


def redact_command(argv: List[str]) -> List[str]:
    """`argv` with the value of every flag whose name holds token/key/secret/password replaced by ***.

    Reports are shared (and committed); `--hub_token hf_...` must never end up in one. Both
    `--flag value` and `--flag=value` are redacted; the flag names stay, so the command still reads.
    """
    out: List[str] = []
    redact_next = False
    for arg in argv:
        arg = str(arg)
        if redact_next and not (arg.startswith("--") and len(arg) > 2):
            out.append(REDACTED)
            redact_next = False
            continue
        redact_next = False
        flag, eq, _ = arg.partition("=")
        if _is_secret_flag(flag):
            out.append(f"{flag}={REDACTED}" if eq else arg)
            redact_next = not eq
        else:
            out.append(arg)
    return out


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json_atomic(path: str, data: Any) -> None:
    """Write JSON next to `path` then rename, so a reader never sees half a file.

    The file gets the mode a plain `open(path, "w")` would give (0666 minus the umask), not
    mkstemp's 0600: teammates on a shared filesystem can read the report.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=directory)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def format_report(report: Dict[str, Any]) -> str:
    p = report["parameters"]
    region = report["region_layers"]
    lines = [
        "== region cost report ==",
        f"region layers     : {region if region is not None else 'all (no --region_layers)'}"
        f" of {report['num_layers']}",
        f"tuning            : {report['tuning']}",
        f"trainable / total : LLM {p['llm']['trainable']:,} / {p['llm']['total']:,}"
        f" ({100 * report['trainable_fraction_llm']:.2f}%), projector {p['projector']['trainable']:,}"
        f" / {p['projector']['total']:,}",
        f"train wall time   : {report['train_wall_seconds']:.1f} s on {report['num_devices']} x {report['device']}"
        f" = {report['device_hours']:.4f} device-hours",
        f"peak memory       : {report['peak_memory']['gib']:.3f} GiB ({report['peak_memory']['kind']})",
    ]
    return "\n".join(lines)
