"""Safetensors at the byte level: validated header reading and a streaming, atomic writer.

Header reading never touches tensor data; the writer lays the header out first (from planned
dtypes and shapes), then streams tensors one at a time, so peak memory is one tensor. Output goes
to `<dst>.tmp-<pid>` and is renamed into place only after the last byte.
"""
from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from typing import Iterable, Iterator, Optional

import torch

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
    "F8_E8M0": torch.float8_e8m0fnu,
}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
MAX_HEADER = 100 * 1024 * 1024


class CheckpointError(ValueError):
    """A file that cannot be read as what it claims to be; the message names the file and the problem."""


@dataclass(frozen=True)
class TensorInfo:
    """One tensor's header entry: dtype name (safetensors spelling), shape, byte range in the data section."""

    dtype: str
    shape: tuple
    begin: int
    end: int

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]


def read_header(path: str) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Parse and validate a safetensors header: (tensors by name, __metadata__). Reads no tensor data."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: {size} bytes, too short to be a safetensors file (truncated?)")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER or 8 + n > size:
            raise CheckpointError(f"{path}: not a safetensors file, or truncated (header claims {n} bytes, file has {size})")
        try:
            raw = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{path}: corrupt safetensors header ({e})") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: corrupt safetensors header (not a JSON object)")
    meta = raw.pop("__metadata__", None) or {}
    tensors, data_len = {}, size - 8 - n
    for name, e in raw.items():
        try:
            begin, end = e["data_offsets"]
            info = TensorInfo(e["dtype"], tuple(e["shape"]), begin, end)
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: corrupt header entry for '{name}'") from None
        if info.dtype not in DTYPES:
            raise CheckpointError(f"{path}: tensor '{name}' has unsupported dtype {info.dtype}")
        if end > data_len:
            raise CheckpointError(f"{path}: truncated: tensor '{name}' ends at byte {end} of a {data_len}-byte data section")
        numel = 1
        for d in info.shape:
            numel *= d
        if (end - begin) != numel * DTYPES[info.dtype].itemsize:
            raise CheckpointError(f"{path}: corrupt header: '{name}' size does not match its shape {info.shape}")
        tensors[name] = info
    return tensors, meta


def read_tensor(path: str, name: str, info: Optional[TensorInfo] = None) -> torch.Tensor:
    """Read one tensor from a safetensors file (only its bytes)."""
    if info is None:
        info = read_header(path)[0][name]
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        f.seek(8 + n + info.begin)
        buf = bytearray(f.read(info.end - info.begin))
    if len(buf) != info.end - info.begin:
        raise CheckpointError(f"{path}: truncated while reading '{name}'")
    t = torch.frombuffer(buf, dtype=torch.uint8) if buf else torch.empty(0, dtype=torch.uint8)
    return t.view(info.torch_dtype).reshape(info.shape)


def tensor_bytes(t: torch.Tensor) -> bytes:
    """Raw little-endian bytes of a CPU tensor (any dtype, fp8 included)."""
    t = t.detach().to("cpu").contiguous()
    return t.reshape(-1).view(torch.uint8).numpy().tobytes()


def plan_header(plan: Iterable[tuple[str, torch.dtype, tuple]], metadata: Optional[dict] = None) -> bytes:
    """Header bytes (length prefix included) for tensors written in `plan` order."""
    header, offset = {}, 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name, dtype, shape in plan:
        numel = 1
        for d in shape:
            numel *= d
        nbytes = numel * dtype.itemsize
        header[name] = {"dtype": DTYPE_NAMES[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    body = json.dumps(header, separators=(",", ":")).encode()
    body += b" " * (-len(body) % 8)
    return struct.pack("<Q", len(body)) + body


def write_streaming(dst: str, plan: list[tuple[str, torch.dtype, tuple]],
                    tensors: Iterator[tuple[str, torch.Tensor]], metadata: Optional[dict] = None) -> None:
    """Write tensors (yielded in plan order, each matching its planned dtype/shape) to dst atomically."""
    tmp = f"{dst}.tmp-{os.getpid()}"
    expected = {name: (dtype, tuple(shape)) for name, dtype, shape in plan}
    order = [name for name, _, _ in plan]
    try:
        with open(tmp, "wb") as f:
            f.write(plan_header(plan, metadata))
            i = 0
            for name, t in tensors:
                if i >= len(order) or name != order[i] or (t.dtype, tuple(t.shape)) != expected[name]:
                    raise RuntimeError(f"internal error: tensor '{name}' {t.dtype} {tuple(t.shape)} does not match the plan")
                f.write(tensor_bytes(t))
                i += 1
            if i != len(order):
                raise RuntimeError(f"internal error: {len(order) - i} planned tensors were not written")
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
