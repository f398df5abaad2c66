"""How one quantized layer is written in each output layout: the tensors' specs and their values.

lightx2v: `<layer>.weight`, `<layer>.weight_scale` (+ `weight_global_scale` for nvfp4) in this
pack's canonical layout. comfyui: ComfyUI core's `comfy_quant` layout (int8_tensorwise with
per-row scales, float8_e4m3fn per-tensor, nvfp4 / mxfp8 with blocked scales, high nibble first).

Both layouts also name each layer's format for ComfyUI core in the header
(`__metadata__["_quantization_metadata"]`, which LightX2V ignores), so that core's own loaders either
read the file right or stop with a message: core's name where core reads the layer as written (every
comfyui layer; lightx2v int8, which is core's per-row int8_tensorwise), else a name core has no
format for, which says what to do (core raises it as an unknown format: KeyError).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

import torch

from ..formats import QuantFormat
from ..formats.base import E4M3_MAX, round_up, rowwise_absmax_quantize
from ..formats.swizzle import swap_nibbles, to_blocked

Spec = tuple[str, torch.dtype, tuple]


def _lightx2v_specs(base: str, n: int, k: int, fmt: QuantFormat) -> list[Spec]:
    specs = [(base + "weight", fmt.weight_dtype, (n, fmt.packed_k(k))),
             (base + "weight_scale", fmt.scale_dtype, tuple(fmt.weight_scale_shape(n, k)))]
    if fmt.has_global_scale:
        specs.append((base + "weight_global_scale", torch.float32, ()))
    return specs


def _lightx2v_tensors(base: str, w: torch.Tensor, fmt: QuantFormat) -> list[tuple[str, torch.Tensor]]:
    q = fmt.quantize_weight(w)
    out = [(base + "weight", q.data), (base + "weight_scale", q.scale.to(fmt.scale_dtype))]
    if q.global_scale is not None:
        out.append((base + "weight_global_scale", q.global_scale.float()))
    return out


@dataclass(frozen=True)
class ComfyFormat:
    """How ComfyUI core stores one of our formats: its `comfy_quant` name, the weight_scale's dtype and
    shape for an [N, K] weight, and the layer's tensors besides the marker (weight first)."""

    core_name: str
    scale: Callable[[int, int], tuple[torch.dtype, tuple]]
    tensors: Callable[[str, torch.Tensor, QuantFormat], list[tuple[str, torch.Tensor]]]
    extra: tuple = ()  # specs after weight_scale: (suffix, dtype, shape)


def _int8_rows(base: str, w: torch.Tensor, fmt: QuantFormat) -> list[tuple[str, torch.Tensor]]:
    q = fmt.quantize_weight(w)
    return [(base + "weight", q.data), (base + "weight_scale", q.scale)]


def _fp8_tensor(base: str, w: torch.Tensor, fmt: QuantFormat) -> list[tuple[str, torch.Tensor]]:
    q = rowwise_absmax_quantize(w.reshape(1, -1), E4M3_MAX, torch.float8_e4m3fn)
    return [(base + "weight", q.data.reshape(w.shape)), (base + "weight_scale", q.scale.reshape(()))]


def _nvfp4_blocked(base: str, w: torch.Tensor, fmt: QuantFormat) -> list[tuple[str, torch.Tensor]]:
    q = fmt.quantize_weight(w)
    return [(base + "weight", swap_nibbles(q.data)), (base + "weight_scale", to_blocked(q.scale)),
            (base + "weight_scale_2", q.global_scale.float())]


def _mxfp8_blocked(base: str, w: torch.Tensor, fmt: QuantFormat) -> list[tuple[str, torch.Tensor]]:
    q = fmt.quantize_weight(w)
    return [(base + "weight", q.data), (base + "weight_scale", to_blocked(q.scale).view(torch.float8_e8m0fnu))]


# Our format name -> core's layout (int8 per row, fp8 per tensor, nvfp4 / mxfp8 with blocked scales).
COMFY_FORMATS = {
    "int8": ComfyFormat("int8_tensorwise", lambda n, k: (torch.float32, (n, 1)), _int8_rows),
    "fp8": ComfyFormat("float8_e4m3fn", lambda n, k: (torch.float32, ()), _fp8_tensor),
    "nvfp4": ComfyFormat("nvfp4", lambda n, k: (torch.float8_e4m3fn, (round_up(n, 128), round_up(k // 16, 4))),
                         _nvfp4_blocked, (("weight_scale_2", torch.float32, ()),)),
    "mxfp8": ComfyFormat("mxfp8", lambda n, k: (torch.float8_e8m0fnu, (round_up(n, 128), round_up(k // 32, 4))),
                         _mxfp8_blocked),
}
COMFY_NAMES = {name: c.core_name for name, c in COMFY_FORMATS.items()}


def _comfy_marker(fmt: QuantFormat) -> torch.Tensor:
    return torch.tensor(list(json.dumps({"format": COMFY_NAMES[fmt.name]}).encode()), dtype=torch.uint8)


def _comfy(fmt: QuantFormat) -> ComfyFormat:
    if fmt.name not in COMFY_FORMATS:
        raise ValueError(f"{fmt.name} has no ComfyUI core format; write it with --layout lightx2v")
    return COMFY_FORMATS[fmt.name]


def _comfyui_specs(base: str, n: int, k: int, fmt: QuantFormat) -> list[Spec]:
    c = _comfy(fmt)
    specs = [(base + "weight", fmt.weight_dtype, (n, fmt.packed_k(k))), (base + "weight_scale", *c.scale(n, k))]
    specs += [(base + suffix, dtype, shape) for suffix, dtype, shape in c.extra]
    return specs + [(base + "comfy_quant", torch.uint8, tuple(_comfy_marker(fmt).shape))]


def _comfyui_tensors(base: str, w: torch.Tensor, fmt: QuantFormat) -> list[tuple[str, torch.Tensor]]:
    return _comfy(fmt).tensors(base, w, fmt) + [(base + "comfy_quant", _comfy_marker(fmt))]


# lightx2v-layout formats that are core's own layout as well (same tensors, same scales).
_CORE_READS_LIGHTX2V = {"int8": "int8_tensorwise"}


def _lightx2v_core_name(fmt: QuantFormat) -> str:
    """What the header tells core a lightx2v-layout layer is: core's name, or a refusal that says what to do."""
    if fmt.name in _CORE_READS_LIGHTX2V:
        return _CORE_READS_LIGHTX2V[fmt.name]
    other = " or convert it with --layout comfyui" if fmt.name in COMFY_FORMATS else ""
    return (f"{fmt.name} in the LightX2V layout (comfyui-quantized): ComfyUI core cannot load it; use the "
            f"comfyui-quantized loaders{other}")


def _comfyui_core_name(fmt: QuantFormat) -> str:
    return _comfy(fmt).core_name


@dataclass(frozen=True)
class Layout:
    """An output layout: specs(base, N, K, fmt) plans a layer's tensors, tensors(base, w, fmt) makes them,
    core_name(fmt) is the layer's format as the header tells ComfyUI core (see the module docstring)."""

    name: str
    specs: Callable[[str, int, int, QuantFormat], list[Spec]]
    tensors: Callable[[str, torch.Tensor, QuantFormat], list[tuple[str, torch.Tensor]]]
    core_name: Callable[[QuantFormat], str]

    def core_metadata(self, layers: list[str], fmt: QuantFormat) -> str:
        """The `_quantization_metadata` header value for these layer names (without `.weight`)."""
        name = self.core_name(fmt)
        return json.dumps({"format_version": "1.0", "layers": {layer: {"format": name} for layer in layers}})


LAYOUTS = {
    "lightx2v": Layout("lightx2v", _lightx2v_specs, _lightx2v_tensors, _lightx2v_core_name),
    "comfyui": Layout("comfyui", _comfyui_specs, _comfyui_tensors, _comfyui_core_name),
}
