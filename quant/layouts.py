"""How one quantized layer is written in each output layout: the tensors' specs and their values.

lightx2v: `<layer>.weight`, `<layer>.weight_scale` (+ `weight_global_scale` for nvfp4) in this
pack's canonical layout. comfyui: ComfyUI core's `comfy_quant` layout (int8_tensorwise with
per-row scales, float8_e4m3fn per-tensor, nvfp4 / mxfp8 with blocked scales, high nibble first).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

import torch

from .formats import QuantFormat, QTensor
from .formats.base import E4M3_MAX, round_up, rowwise_absmax_quantize
from .formats.swizzle import swap_nibbles, to_blocked
from .linear import scale_dtype

Spec = tuple[str, torch.dtype, tuple]


def _lightx2v_specs(base: str, n: int, k: int, fmt: QuantFormat) -> list[Spec]:
    specs = [(base + "weight", fmt.weight_dtype, (n, fmt.packed_k(k))),
             (base + "weight_scale", scale_dtype(fmt), tuple(fmt.weight_scale_shape(n, k)))]
    if fmt.name == "nvfp4":
        specs.append((base + "weight_global_scale", torch.float32, ()))
    return specs


def _lightx2v_tensors(base: str, w: torch.Tensor, fmt: QuantFormat) -> list[tuple[str, torch.Tensor]]:
    q = fmt.quantize_weight(w)
    out = [(base + "weight", q.data), (base + "weight_scale", q.scale.to(scale_dtype(fmt)))]
    if q.global_scale is not None:
        out.append((base + "weight_global_scale", q.global_scale.float()))
    return out


COMFY_NAMES = {"int8": "int8_tensorwise", "fp8": "float8_e4m3fn", "nvfp4": "nvfp4", "mxfp8": "mxfp8"}


def _comfy_marker(fmt: QuantFormat) -> torch.Tensor:
    return torch.tensor(list(json.dumps({"format": COMFY_NAMES[fmt.name]}).encode()), dtype=torch.uint8)


def _comfyui_specs(base: str, n: int, k: int, fmt: QuantFormat) -> list[Spec]:
    if fmt.name not in COMFY_NAMES:
        raise ValueError(f"{fmt.name} has no ComfyUI core format; write it with --layout lightx2v")
    scale = {"int8": (torch.float32, (n, 1)), "fp8": (torch.float32, ()),
             "nvfp4": (torch.float8_e4m3fn, (round_up(n, 128), round_up(k // 16, 4))),
             "mxfp8": (torch.float8_e8m0fnu, (round_up(n, 128), round_up(k // 32, 4)))}[fmt.name]
    specs = [(base + "weight", fmt.weight_dtype, (n, fmt.packed_k(k))), (base + "weight_scale", *scale)]
    if fmt.name == "nvfp4":
        specs.append((base + "weight_scale_2", torch.float32, ()))
    return specs + [(base + "comfy_quant", torch.uint8, tuple(_comfy_marker(fmt).shape))]


def _comfyui_tensors(base: str, w: torch.Tensor, fmt: QuantFormat) -> list[tuple[str, torch.Tensor]]:
    if fmt.name == "fp8":
        q = rowwise_absmax_quantize(w.reshape(1, -1), E4M3_MAX, torch.float8_e4m3fn)
        out = [(base + "weight", q.data.reshape(w.shape)), (base + "weight_scale", q.scale.reshape(()))]
    else:
        q: QTensor = fmt.quantize_weight(w)
        if fmt.name == "int8":
            out = [(base + "weight", q.data), (base + "weight_scale", q.scale)]
        elif fmt.name == "nvfp4":
            out = [(base + "weight", swap_nibbles(q.data)), (base + "weight_scale", to_blocked(q.scale)),
                   (base + "weight_scale_2", q.global_scale.float())]
        else:
            out = [(base + "weight", q.data), (base + "weight_scale", to_blocked(q.scale).view(torch.float8_e8m0fnu))]
    return out + [(base + "comfy_quant", _comfy_marker(fmt))]


@dataclass(frozen=True)
class Layout:
    """An output layout: specs(base, N, K, fmt) plans a layer's tensors, tensors(base, w, fmt) makes them."""

    name: str
    specs: Callable[[str, int, int, QuantFormat], list[Spec]]
    tensors: Callable[[str, torch.Tensor, QuantFormat], list[tuple[str, torch.Tensor]]]


LAYOUTS = {
    "lightx2v": Layout("lightx2v", _lightx2v_specs, _lightx2v_tensors),
    "comfyui": Layout("comfyui", _comfyui_specs, _comfyui_tensors),
}
