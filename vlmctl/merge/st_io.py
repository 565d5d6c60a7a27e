"""Safetensors read and written one tensor at a time (no mmap, no whole-file load), so the
low-memory merge holds at most one tensor of the model."""

from __future__ import annotations

import json
import math
import re
import struct
from pathlib import Path
from typing import Any

from vlmctl.errors import UsageError, VlmctlError

_ST_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
}


def st_code(dtype) -> str:
    name = str(dtype).replace("torch.", "")
    for code, torch_name in _ST_DTYPES.items():
        if torch_name == name:
            return code
    raise VlmctlError(f"unsupported tensor dtype {dtype} in the base checkpoint")


def read_st_header(path: Path) -> tuple[dict, int]:
    """The safetensors header (name -> dtype/shape/offsets) and where the data begins."""
    with open(path, "rb") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(length))
    return header, 8 + length


class ShardReader:
    """Reads one tensor at a time with plain file reads (no mmap: what is read is all that is
    resident, so peak memory stays one tensor)."""

    def __init__(self, path: Path):
        self.path = path
        self.header, self.start = read_st_header(path)
        self.header.pop("__metadata__", None)
        self._fh = open(path, "rb")  # noqa: SIM115 - closed in close()

    def get(self, name: str):
        """One tensor, read into fresh memory (nothing else of the file stays resident)."""
        import torch

        info = self.header[name]
        begin, end = info["data_offsets"]
        buf = torch.empty(end - begin, dtype=torch.uint8)
        self._fh.seek(self.start + begin)
        view = memoryview(buf.numpy())
        got = 0
        while got < end - begin:
            n = self._fh.readinto(view[got:])
            if not n:
                raise VlmctlError(f"{self.path} is truncated (tensor {name})")
            got += n
        dtype = getattr(torch, _ST_DTYPES[info["dtype"]])
        return buf.view(dtype).reshape(info["shape"])

    def close(self) -> None:
        """Release the file handle."""
        self._fh.close()


class ShardWriter:
    """Writes a safetensors file as a stream: the header (all names, dtypes, shapes) first,
    then each tensor's bytes in order, so no more than one tensor is held at a time."""

    def __init__(self, path: Path, entries: list[tuple[str, str, list[int]]], metadata: dict):
        self.path = path
        header: dict[str, Any] = {"__metadata__": metadata}
        offset = 0
        self._expected = []
        for name, code, shape in entries:
            size = math.prod(shape) * itemsize(code)
            header[name] = {
                "dtype": code,
                "shape": list(shape),
                "data_offsets": [offset, offset + size],
            }
            self._expected.append((name, size))
            offset += size
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        self._fh = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._fh.write(struct.pack("<Q", len(raw)) + raw)
        self._next = 0
        self.total = offset

    def write(self, name: str, tensor) -> None:
        """Append the next tensor's bytes; the order and sizes must match the header."""
        import torch

        want, size = self._expected[self._next]
        if name != want:
            raise RuntimeError(f"shard writer expected {want}, got {name}")
        data = tensor.contiguous().reshape(-1).view(torch.uint8)
        if data.numel() != size:
            raise RuntimeError(f"{name}: {data.numel()} bytes, header says {size}")
        self._fh.write(memoryview(data.numpy()))
        self._next += 1

    def close(self) -> None:
        """Close the file, refusing a shard whose header promises tensors never written."""
        if self._next != len(self._expected):
            raise RuntimeError(f"{self.path}: {len(self._expected) - self._next} tensors unwritten")
        self._fh.close()


def itemsize(code: str) -> int:
    return {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1}.get(
        code, 1
    )


def parse_size(size: str | int) -> int:
    if isinstance(size, int):
        return size
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]i?B|B)?\s*", str(size), flags=re.I)
    if not match:
        raise UsageError(f"--max-shard-size {size!r}: use e.g. 5GB, 500MB")
    unit = (match.group(2) or "B").upper()
    scale = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20}
    scale |= {"GIB": 2**30}
    return int(float(match.group(1)) * scale[unit])
