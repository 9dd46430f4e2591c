"""Timing and memory measurement shared by the benches.

Times are wall clock and process CPU time around a call followed by a device synchronize; sides
are interleaved (the order rotates every round) so drift and other processes' load hit every side
alike, and medians are reported. Memory is counted as live tensor bytes (see `LiveBytes`), identical on every device.
"""
from __future__ import annotations

import os
import platform
import statistics
import time
import weakref
from typing import Callable, Dict, List

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


def synchronize(device: str) -> None:
    """Wait for queued device work, so a wall-clock interval covers it (no-op on CPU)."""
    if torch.device(device).type == "cpu":
        return
    acc = getattr(torch, "accelerator", None)
    if acc is not None and hasattr(acc, "synchronize"):
        acc.synchronize()
    elif torch.device(device).type == "cuda":  # torch without the accelerator API
        torch.cuda.synchronize()


CLOCKS = ("wall", "process")


def timed(fn: Callable[[], object], device: str) -> Dict[str, float]:
    """Wall-clock and process-CPU seconds of one call (device work included through a synchronize).

    Process CPU time is the steadier clock on a shared CPU: a step that other tenants deschedule
    takes longer on the wall but not in CPU time. With one torch thread it equals the wall time of
    the same step on an idle core; on an accelerator only the wall clock means anything.
    """
    synchronize(device)
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    synchronize(device)
    return {"wall": time.perf_counter() - w0, "process": time.process_time() - c0}


def interleaved(sides: Dict[str, Callable[[], object]], device: str, warmup: int, repeats: int,
                log: Callable[[str], None] = lambda s: None) -> Dict[str, Dict[str, List[float]]]:
    """`warmup` untimed calls of every side, then `repeats` timed rounds in a rotating order.

    Returns {side: {"wall": [...], "process": [...]}}, one entry per round.
    """
    names = list(sides)
    for w in range(warmup):
        for name in names:
            sides[name]()
        synchronize(device)
        log(f"warm-up {w + 1}/{warmup} done")
    times = {name: {clock: [] for clock in CLOCKS} for name in names}
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            for clock, value in timed(sides[name], device).items():
                times[name][clock].append(value)
        log("round {}/{}: {}".format(r + 1, repeats, ", ".join(
            f"{n} {times[n]['wall'][-1]:.3f}s (cpu {times[n]['process'][-1]:.3f}s)" for n in names)))
    return times


def median(values: List[float]) -> float:
    return statistics.median(values)


def spread(num: List[float], den: List[float]) -> List[float]:
    """[min, median, max] of the per-round ratios (same round, adjacent in time): how stable a ratio is."""
    ratios = sorted(a / b for a, b in zip(num, den))
    return [round(ratios[0], 4), round(statistics.median(ratios), 4), round(ratios[-1], 4)]


def _storage_key(t: torch.Tensor):
    try:
        st = t.untyped_storage()
    except (RuntimeError, NotImplementedError):  # tensors without storage
        return None, None
    return st, (t.device.type, t.device.index, st.data_ptr())


class LiveBytes(TorchDispatchMode):
    """Peak bytes of tensor storages created while active (freed ones leave the count).

    Every op output whose storage is new is counted until Python frees that storage. Counting
    tensors rather than asking an allocator gives one method on CPU and accelerators alike;
    allocator caching and fragmentation are left out on purpose (they are not the model's cost).
    """

    def __init__(self, existing=()):
        super().__init__()
        self.live = 0
        self.peak = 0
        self._known = {key for key in (_storage_key(t)[1] for t in existing) if key is not None}
        self._tracked = {}

    def _free(self, key, nbytes):
        self._tracked.pop(key, None)
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                st, key = _storage_key(t)
                if key is None or key in self._known or key in self._tracked or st.nbytes() == 0:
                    continue
                self._tracked[key] = weakref.finalize(st, self._free, key, st.nbytes())
                self.live += st.nbytes()
                self.peak = max(self.peak, self.live)
        return out


def resident_tensors(model: torch.nn.Module, optimizer_state=None) -> List[torch.Tensor]:
    """Parameters, buffers, gradients and optimizer state: what a configuration keeps between steps."""
    tensors = list(model.parameters()) + list(model.buffers())
    tensors += [p.grad for p in model.parameters() if p.grad is not None]
    if optimizer_state is not None:
        for state in optimizer_state.values():
            tensors += [v for v in state.values() if isinstance(v, torch.Tensor)]
    return tensors


def storage_bytes(tensors: List[torch.Tensor]) -> int:
    """Bytes of the distinct storages under `tensors` (views and tied weights counted once)."""
    seen = {}
    for t in tensors:
        st, key = _storage_key(t)
        if key is not None:
            seen[key] = st.nbytes()
    return sum(seen.values())


def peak_bytes(step: Callable[[], object], resident: List[torch.Tensor], inputs=()) -> Dict[str, int]:
    """Resident bytes plus the peak of what one call of `step` allocates on top (`inputs` count as neither)."""
    static = storage_bytes(resident)
    with LiveBytes(list(resident) + list(inputs)) as tracker:
        step()
    return {"resident": static, "step_peak": tracker.peak, "peak": static + tracker.peak}


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: str) -> dict:
    """Device name and package versions, recorded beside every figure."""
    import transformers

    info = {"device": device, "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(), "threads": torch.get_num_threads(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    try:
        import peft

        info["peft"] = peft.__version__
    except ImportError:
        pass
    dev = torch.device(device)
    if dev.type == "cpu":
        info["device_name"] = _cpu_name()
    elif dev.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(dev.index or 0)
    else:
        info["device_name"] = dev.type
    return info
