"""Read quantized checkpoints of every layout into this pack's layout; detect what a file holds.

Layouts read:
- float: plain bf16/fp16/fp32 (quantized later, while loading);
- lightx2v: `<layer>.weight` int8/e4m3 [N, K] + `<layer>.weight_scale` ([N, 1], any float dtype;
  block-128 [ceil(N/128), K/128]); single files, sharded folders (`*.safetensors.index.json`,
  `save_by_block`), and LightX2V's T5/CLIP `.pth` files (torch.load with weights_only=True only);
- comfyui: `<layer>.comfy_quant` (uint8 JSON) or the `_quantization_metadata` header, with
  `weight_scale` (per-tensor or per-row), `weight_scale_2` (nvfp4 global), blocked block scales;
- scaled_fp8: ComfyUI's legacy marker `scaled_fp8` + per-tensor `scale_weight`.
Canonical layout (what QuantLinear stores) is described in quant/linear.py.
"""
from __future__ import annotations

import glob
import json
import mmap
import os
import pickle
from dataclasses import dataclass, field
from typing import Optional

import torch

from ..formats.base import ceil_div
from ..formats.swizzle import from_blocked, swap_nibbles
from .safetensors_file import CheckpointError, TensorInfo, read_header

_DROP_SUFFIXES = (".comfy_quant", ".input_scale", ".scale_input")


@dataclass(frozen=True)
class Detected:
    """What a checkpoint holds, from headers only: layout, quantized format (None = float), its files,
    and the safetensors `__metadata__` of its files merged (empty for .pth)."""

    layout: str
    format: Optional[str]
    files: tuple
    quantized_layers: int
    metadata: dict = field(default_factory=dict, compare=False, repr=False)


def checkpoint_files(path: str) -> list[str]:
    """The files of a checkpoint: one file, or the shards of a folder (index json first, else every *.safetensors)."""
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise CheckpointError(f"{path}: no such file or folder")
    for index in sorted(glob.glob(os.path.join(path, "*.safetensors.index.json"))):
        try:
            weight_map = json.load(open(index))["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"{index}: not a valid safetensors index ({e})") from None
        files = sorted(set(weight_map.values()))
        missing = [f for f in files if not os.path.isfile(os.path.join(path, f))]
        if missing:
            raise CheckpointError(f"{index}: shard(s) missing: {', '.join(missing)}")
        return [os.path.join(path, f) for f in files]
    files = sorted(glob.glob(os.path.join(path, "*.safetensors")))
    if not files:
        raise CheckpointError(f"{path}: folder holds no .safetensors files")
    return files


def read_headers(path: str) -> tuple[dict[str, tuple[str, TensorInfo]], dict[str, str]]:
    """All tensors of a (possibly sharded) safetensors checkpoint: name -> (file, info), merged metadata.
    Each file's header is parsed once."""
    out, meta = {}, {}
    for f in checkpoint_files(path):
        tensors, m = read_header(f)
        meta.update(m)
        for name, info in tensors.items():
            out[name] = (f, info)
    return out, meta


def _layer_formats(weight: TensorInfo, scale: Optional[TensorInfo]) -> set:
    """Formats one quantized layer can be, from its weight and scale header entries.

    Small layers can be ambiguous (a [128, 128] fp8 weight with one scale is per-channel-expanded
    fp8 and block-128 alike); detect() intersects the candidates of all layers.
    """
    if weight.dtype == "I8":
        return {"int8"}
    if weight.dtype == "U8":
        return {"nvfp4"}
    if weight.dtype != "F8_E4M3":
        raise CheckpointError(f"unsupported quantized weight dtype {weight.dtype}")
    if scale is not None and scale.dtype in ("U8", "F8_E8M0"):
        return {"mxfp8"}
    n, k = weight.shape
    shape = () if scale is None else tuple(scale.shape)
    out = set()
    if shape in ((), (1,), (1, 1), (n,), (n, 1)):
        out.add("fp8")
    if shape == (ceil_div(n, 128), ceil_div(k, 128)):
        out.add("fp8_block128")
    if not out:
        raise CheckpointError(f"fp8 weight [{n}, {k}] with a weight_scale of shape {shape}: not a known layout")
    return out


def _pick_format(candidates: list, path: str) -> Optional[str]:
    """The one format every layer can be (fp8 first when still ambiguous); error on a mixed file."""
    if not candidates:
        return None
    common = set.intersection(*candidates)
    if not common:
        raise CheckpointError(f"{path}: mixes quantized formats {sorted(set.union(*candidates))}; "
                              "one format per file is supported")
    return next(f for f in ("int8", "fp8", "fp8_block128", "mxfp8", "nvfp4") if f in common)


def detect(path: str) -> Detected:
    """Tell the layout and quantized format of a checkpoint: from headers alone for safetensors, a memory map for .pth."""
    if path.endswith((".pth", ".pt")):
        return load_state_dict(path)[1]
    return detect_headers(path, *read_headers(path))


def detect_headers(path: str, tensors: dict[str, tuple[str, TensorInfo]], meta: dict[str, str]) -> Detected:
    """detect() from headers already parsed by read_headers(path)."""
    files = tuple(sorted({f for f, _ in tensors.values()}))
    if "scaled_fp8" in tensors:
        n = sum(1 for k in tensors if k.endswith(".scale_weight"))
        return Detected("scaled_fp8", "fp8", files, n, meta)
    comfy = any(k.endswith(".comfy_quant") for k in tensors) or "_quantization_metadata" in meta
    written = _written_layout(meta)
    comfy = comfy if written is None else written == "comfyui"
    candidates = []
    for name, (_, info) in tensors.items():
        if name.endswith(".weight") and info.dtype in ("I8", "U8", "F8_E4M3"):
            scale = tensors.get(name + "_scale")
            candidates.append(_layer_formats(info, scale and scale[1]))
    fmt = _pick_format(candidates, path)
    if fmt is None:
        return Detected("float", None, files, 0, meta)
    return Detected("comfyui" if comfy else "lightx2v", fmt, files, len(candidates), meta)


def _written_layout(meta: dict) -> Optional[str]:
    """The layout this pack's converter recorded in a file's header ("lightx2v" / "comfyui"), None for
    files from elsewhere (or from before it recorded one): a lightx2v file of ours names its formats for
    ComfyUI core in `_quantization_metadata` too, and stays lightx2v."""
    try:
        layout = json.loads(meta.get("comfyui_quantized", "{}")).get("layout")
    except (ValueError, TypeError, AttributeError):
        return None
    return layout if layout in ("lightx2v", "comfyui") else None


def _mmap_tensors(path: str, tensors: dict[str, TensorInfo]) -> dict[str, torch.Tensor]:
    """Every tensor of one safetensors file (its parsed header: `tensors`) as a zero-copy view of the
    mapped file (pages load on use)."""
    with open(path, "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    data_start = 8 + int.from_bytes(mm[:8], "little")
    out = {}
    for name, info in tensors.items():
        nbytes = info.end - info.begin
        raw = (torch.frombuffer(mm, dtype=torch.uint8, count=nbytes, offset=data_start + info.begin)
               if nbytes else torch.empty(0, dtype=torch.uint8))
        out[name] = raw.view(info.torch_dtype).reshape(info.shape)
    return out


def load_pth(path: str) -> dict[str, torch.Tensor]:
    """A LightX2V T5/CLIP .pth file, unpickled with weights_only=True (never arbitrary code)."""
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
        raise CheckpointError(f"{path}: refused: not a weights-only PyTorch file, or corrupt ({str(e).splitlines()[0]})") from None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path}: does not hold a flat dict of tensors")
    return sd


def load_state_dict(path: str) -> tuple[dict[str, torch.Tensor], Detected]:
    """Tensors of a checkpoint in this pack's layout (memory-mapped where possible) and what it held."""
    if path.endswith((".pth", ".pt")):
        sd = load_pth(path)
        cands = [_layer_formats(_info(v), _info(sd.get(k + "_scale"))) for k, v in sd.items()
                 if k.endswith(".weight") and v.dtype in (torch.int8, torch.uint8, torch.float8_e4m3fn)]
        det = Detected("lightx2v", _pick_format(cands, path), (path,), len(cands))
        return sd, det
    headers, meta = read_headers(path)
    det = detect_headers(path, headers, meta)
    per_file: dict[str, dict[str, TensorInfo]] = {}
    for name, (f, info) in headers.items():
        per_file.setdefault(f, {})[name] = info
    sd = {}
    for f in det.files:
        sd.update(_mmap_tensors(f, per_file[f]))
    if det.layout == "comfyui":
        _from_comfyui(sd)
    elif det.layout == "scaled_fp8":
        _from_scaled_fp8(sd)
    return sd, det


def _info(t: Optional[torch.Tensor]) -> Optional[TensorInfo]:
    if t is None:
        return None
    names = {torch.int8: "I8", torch.uint8: "U8", torch.float8_e4m3fn: "F8_E4M3", torch.float8_e8m0fnu: "F8_E8M0"}
    return TensorInfo(names.get(t.dtype, "F32"), tuple(t.shape), 0, 0)


def _per_row(scale: torch.Tensor, n: int, key: str) -> torch.Tensor:
    """Per-tensor or per-row scale -> fp32 [N, 1] (a per-tensor scale is the same for every row: lossless)."""
    s = scale.float()
    if s.numel() == 1:
        return s.reshape(1, 1).expand(n, 1).clone()
    if s.numel() == n:
        return s.reshape(n, 1)
    raise CheckpointError(f"'{key}' has shape {tuple(scale.shape)}: expected a scalar or [{n}, 1]")


def _from_comfyui(sd: dict) -> None:
    """ComfyUI `comfy_quant` layers -> canonical layout, in place."""
    for wkey in [k for k in sd if k.endswith(".weight")]:
        w = sd[wkey]
        if w.dtype not in (torch.int8, torch.uint8, torch.float8_e4m3fn):
            continue
        skey = wkey + "_scale"
        if skey not in sd:
            raise CheckpointError(f"'{wkey}' is quantized ({w.dtype}) but '{skey}' is missing")
        n = w.shape[0]
        if w.dtype == torch.uint8:
            k = w.shape[1] * 2
            sd[wkey] = swap_nibbles(w)
            sd[skey] = from_blocked(sd[skey], n, k // 16)
            g = sd.pop(wkey + "_scale_2", None)
            if g is None:
                raise CheckpointError(f"'{wkey}' is nvfp4 but '{wkey}_scale_2' is missing")
            sd[wkey[: -len("weight")] + "weight_global_scale"] = g.float().reshape(())
        elif sd[skey].dtype == torch.float8_e8m0fnu:
            sd[skey] = from_blocked(sd[skey], n, w.shape[1] // 32).view(torch.uint8)
        else:
            sd[skey] = _per_row(sd[skey], n, skey)
    for key in [k for k in sd if k.endswith(_DROP_SUFFIXES)]:
        del sd[key]


def _from_scaled_fp8(sd: dict) -> None:
    """Legacy `scaled_fp8` files (per-tensor scale_weight) -> canonical fp8 per-row, in place."""
    sd.pop("scaled_fp8")
    for skey in [k for k in sd if k.endswith(".scale_weight")]:
        wkey = skey[: -len("scale_weight")] + "weight"
        if wkey not in sd:
            raise CheckpointError(f"'{skey}' has no weight '{wkey}'")
        sd[wkey + "_scale"] = _per_row(sd.pop(skey), sd[wkey].shape[0], skey)
    for key in [k for k in sd if k.endswith(_DROP_SUFFIXES)]:
        del sd[key]
