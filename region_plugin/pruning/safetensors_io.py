"""Read safetensors headers and write safetensors files tensor by tensor, without building them in memory.

A pruned shard is its input shard minus some byte ranges: we rewrite the JSON header and copy
the kept ranges file-to-file (`os.copy_file_range` where available), so peak memory is a copy
buffer, not a shard. `.bin` tensors (already memory-mapped) are written one at a time.
"""
from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

COPY_CHUNK = 16 << 20

# torch dtype name -> safetensors dtype tag
TORCH_TO_ST = {"float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16", "int64": "I64",
               "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL",
               "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2"}


@dataclass
class Entry:
    """One tensor to write: its output name, safetensors dtype, shape, byte size, and a byte source."""

    name: str
    dtype: str
    shape: List[int]
    nbytes: int
    write: Callable[[object], None]  # writes exactly nbytes to the open output file


# bytes per element of each safetensors dtype tag
ITEM_SIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4,
             "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _check_entry(path: str, name: str, t) -> None:
    """One header entry must be {dtype, shape, data_offsets} whose byte range fits dtype x shape exactly."""
    where = f"{path}: tensor {name!r}"
    if not isinstance(t, dict):
        raise ValueError(f"{where} is a {type(t).__name__} in the header, not an object; the file is damaged")
    dtype, shape, offsets = t.get("dtype"), t.get("shape"), t.get("data_offsets")
    if dtype not in ITEM_SIZE:
        raise ValueError(f"{where} has dtype {dtype!r}, not a safetensors dtype; the file is damaged")
    if not (isinstance(shape, list) and all(_is_int(d) for d in shape)):
        raise ValueError(f"{where} has shape {shape!r}, not a list of sizes; the file is damaged")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)
            and offsets[0] <= offsets[1]):
        raise ValueError(f"{where} has data_offsets {offsets!r}, not [start, end]; the file is damaged")
    numel = 1
    for d in shape:
        numel *= d
    if offsets[1] - offsets[0] != numel * ITEM_SIZE[dtype]:
        raise ValueError(f"{where}: {dtype} {shape} needs {numel * ITEM_SIZE[dtype]} bytes but data_offsets span "
                         f"{offsets[1] - offsets[0]}; the header is damaged")


def read_header(path: str) -> Tuple[Dict[str, dict], Dict[str, str], int]:
    """(tensors, __metadata__, data start offset) of a safetensors file; reads only the header.

    Every entry is checked (dtype, shape, byte range = dtype x shape), so a damaged or hostile
    header is refused here with the file named, before any byte is copied.
    """
    if not os.path.isfile(path):
        raise ValueError(f"{path}: not a regular file")
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path}: too short to be a safetensors file")
        (n,) = struct.unpack("<Q", raw)
        size = os.path.getsize(path)
        if n > size - 8:
            raise ValueError(f"{path}: header length {n} exceeds the file size {size}; the file is truncated")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: the header is not valid JSON ({e}); the file is damaged") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: the header is a JSON {type(header).__name__}, not an object; the file is damaged")
    meta = header.pop("__metadata__", None) or {}
    for name, t in header.items():
        _check_entry(path, name, t)
    end = max((t["data_offsets"][1] for t in header.values()), default=0)
    if 8 + n + end > size:
        raise ValueError(f"{path}: tensor data ends at byte {8 + n + end} but the file has {size}; it is truncated")
    return header, meta, 8 + n


def _copy_range(src, dst, offset: int, length: int) -> None:
    copy_file_range = getattr(os, "copy_file_range", None)
    if copy_file_range is not None:
        try:
            done = 0
            while done < length:
                n = copy_file_range(src.fileno(), dst.fileno(), length - done, offset + done)
                if n == 0:
                    raise OSError("unexpected end of file")
                done += n
            return
        except OSError:
            if done:
                raise
    src.seek(offset)
    left = length
    while left:
        buf = src.read(min(left, COPY_CHUNK))
        if not buf:
            raise OSError(f"unexpected end of {src.name}")
        dst.write(buf)
        left -= len(buf)


def range_writer(src_path: str, offset: int, length: int) -> Callable[[object], None]:
    """A byte source copying `length` bytes at `offset` of `src_path` into the output file."""
    def write(dst) -> None:
        dst.flush()
        with open(src_path, "rb") as src:
            _copy_range(src, dst, offset, length)
    return write


def write_file(path: str, entries: List[Entry], metadata: Optional[Dict[str, str]] = None) -> int:
    """Write a safetensors file from entries in order; returns the tensor bytes written."""
    header: Dict[str, dict] = {"__metadata__": {"format": "pt", **(metadata or {})}}
    offset = 0
    for e in entries:
        header[e.name] = {"dtype": e.dtype, "shape": list(e.shape), "data_offsets": [offset, offset + e.nbytes]}
        offset += e.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # keep tensor data 8-byte aligned, as the reference writer does
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for e in entries:
            start = f.tell()
            e.write(f)
            f.seek(0, os.SEEK_END)
            if f.tell() - start != e.nbytes:
                raise IOError(f"{path}: wrote {f.tell() - start} bytes for {e.name}, expected {e.nbytes}")
    return offset
