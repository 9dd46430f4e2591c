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


def read_header(path: str) -> Tuple[Dict[str, dict], Dict[str, str], int]:
    """(tensors, __metadata__, data start offset) of a safetensors file; reads only the header."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path}: too short to be a safetensors file")
        (n,) = struct.unpack("<Q", raw)
        size = os.path.getsize(path)
        if n > size - 8:
            raise ValueError(f"{path}: header length {n} exceeds the file size {size}; the file is truncated")
        header = json.loads(f.read(n))
    meta = header.pop("__metadata__", None) or {}
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
