"""What a checkpoint directory holds: its weight shards (safetensors or .bin), and everything else.

Only the format transformers would load is read (safetensors first, as `from_pretrained` does);
other weight copies in the directory are not carried over, since they would not be pruned.
"""
from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Tuple

from ..input_checks import check_regular_files as _check_regular_files
from ..model_config import load_json_object
from .errors import PruneError
from .safetensors_io import TORCH_TO_ST, Entry, range_writer, read_header

SAFE_INDEX, SAFE_SINGLE = "model.safetensors.index.json", "model.safetensors"
BIN_INDEX, BIN_SINGLE = "pytorch_model.bin.index.json", "pytorch_model.bin"
# Files that are weights of some framework: never copied verbatim into a pruned checkpoint.
WEIGHT_PATTERNS = ("*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin", "pytorch_model*.bin.index.json",
                   "tf_model*.h5", "tf_model*.h5.index.json", "flax_model*.msgpack", "flax_model*.msgpack.index.json",
                   "model*.gguf", "*.ckpt")
# Training-run state whose shapes no longer match a pruned model: not copied either.
STALE_PATTERNS = ("optimizer*.pt", "scheduler*.pt", "rng_state*.pth")


@dataclass
class CheckpointFiles:
    """The weight shards to read, their format, and the other top-level files."""

    root: str
    fmt: str                      # "safetensors" | "bin"
    shards: List[str]             # file names under root, in load order
    others: List[str] = field(default_factory=list)   # non-weight files to copy
    skipped: List[str] = field(default_factory=list)  # other weight copies / optimizer state, not carried over
    subdirs: List[str] = field(default_factory=list)  # not copied


def _shards_from_index(root: str, index: str) -> List[str]:
    path = os.path.join(root, index)
    try:
        weight_map = load_json_object(path, "shard index").get("weight_map")
    except ValueError as e:
        raise PruneError(str(e)) from None
    if not isinstance(weight_map, dict) or not weight_map:
        raise PruneError(f"{path}: no weight_map; the index is damaged")
    bad = [s for s in weight_map.values() if not isinstance(s, str) or os.path.basename(s) != s or s in ("", ".", "..")]
    if bad:
        raise PruneError(f"{path}: weight_map names {bad[:3]!r}, which are not file names in the checkpoint "
                         "directory; the index is damaged")
    shards = list(dict.fromkeys(weight_map.values()))
    missing = [s for s in shards if not os.path.isfile(os.path.join(root, s))]
    if missing:
        raise PruneError(f"{path} lists shards that are not in the directory: {missing}")
    return shards


def check_regular_files(root: str, flag: str = "--model-path") -> None:
    """`input_checks.check_regular_files` as a PruneError."""
    try:
        _check_regular_files(root, flag)
    except ValueError as e:
        raise PruneError(str(e)) from None


def scan(root: str, flag: str = "--model-path") -> CheckpointFiles:
    """Classify the files of a merged checkpoint dir; raise if it holds no loadable weights."""
    if not os.path.isdir(root):
        raise PruneError(f"{flag} {root!r} is not a directory")
    check_regular_files(root, flag)
    names = sorted(os.listdir(root))
    if os.path.isfile(os.path.join(root, SAFE_INDEX)):
        fmt, shards = "safetensors", _shards_from_index(root, SAFE_INDEX)
    elif os.path.isfile(os.path.join(root, SAFE_SINGLE)):
        fmt, shards = "safetensors", [SAFE_SINGLE]
    elif os.path.isfile(os.path.join(root, BIN_INDEX)):
        fmt, shards = "bin", _shards_from_index(root, BIN_INDEX)
    elif os.path.isfile(os.path.join(root, BIN_SINGLE)):
        fmt, shards = "bin", [BIN_SINGLE]
    else:
        raise PruneError(f"{flag} {root!r} has no {SAFE_SINGLE}, {SAFE_INDEX}, {BIN_SINGLE} or {BIN_INDEX}; "
                         "pass a merged checkpoint dir (or a LoRA dir with --model-base)")
    files = CheckpointFiles(root=root, fmt=fmt, shards=shards)
    for name in names:
        path = os.path.join(root, name)
        if os.path.isdir(path):
            files.subdirs.append(name)
        elif any(fnmatch.fnmatch(name, p) for p in WEIGHT_PATTERNS + STALE_PATTERNS):
            if name not in shards:
                files.skipped.append(name)
        elif name != "config.json" and not name.startswith("."):
            files.others.append(name)
    return files


def tensor_names(files: CheckpointFiles) -> List[str]:
    """All tensor names, from headers / index only (no tensor data is read for safetensors)."""
    names: List[str] = []
    for shard, table in iter_shard_tables(files, headers_only=True):
        names.extend(table)
    return names


def _bin_writer(tensor):
    """A byte source writing one (memory-mapped) tensor's raw little-endian bytes."""
    def write(dst) -> None:
        import torch

        t = tensor.detach().contiguous().reshape(-1)
        if t.numel():
            dst.write(memoryview(t.view(dtype=torch.uint8).numpy()))
    return write


def _bin_entries(path: str) -> Dict[str, Tuple[str, List[int], int, object]]:
    import torch

    try:  # memory-mapped: tensor bytes are read only when written
        sd = torch.load(path, map_location=lambda storage, loc: storage, weights_only=True, mmap=True)
    except RuntimeError:  # legacy (pre-zipfile) format cannot be memory-mapped
        sd = torch.load(path, map_location=lambda storage, loc: storage, weights_only=True)
    out = {}
    for name, t in sd.items():
        if not isinstance(t, torch.Tensor):
            raise PruneError(f"{path}: entry {name!r} is a {type(t).__name__}, not a tensor; this is not a "
                             "state-dict checkpoint")
        dtype = TORCH_TO_ST.get(str(t.dtype).replace("torch.", ""))
        if dtype is None:
            raise PruneError(f"{path}: tensor {name!r} has dtype {t.dtype}, which safetensors cannot store")
        out[name] = (dtype, list(t.shape), t.numel() * t.element_size(), t)
    return out


def iter_shard_tables(files: CheckpointFiles, headers_only: bool = False
                      ) -> Iterator[Tuple[str, Dict[str, Tuple[str, List[int], int, object]]]]:
    """Per shard: {tensor name: (dtype tag, shape, nbytes, byte source)}; one shard in memory at a time."""
    for shard in files.shards:
        path = os.path.join(files.root, shard)
        if files.fmt == "safetensors":
            try:
                header, _, start = read_header(path)
            except (ValueError, OSError) as e:
                raise PruneError(f"cannot read {path}: {e}") from None
            ordered = sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0])
            yield shard, {name: (t["dtype"], t["shape"], t["data_offsets"][1] - t["data_offsets"][0],
                                 None if headers_only else range_writer(path, start + t["data_offsets"][0],
                                                                         t["data_offsets"][1] - t["data_offsets"][0]))
                          for name, t in ordered}
        else:
            table = _bin_entries(path)
            yield shard, {name: (d, s, n, None if headers_only else _bin_writer(t)) for name, (d, s, n, t) in table.items()}


def make_entry(name: str, spec) -> Entry:
    dtype, shape, nbytes, write = spec
    return Entry(name=name, dtype=dtype, shape=shape, nbytes=nbytes, write=write)
