"""Quantize a float weight with the scales of an existing quantized weight (LoRA merge / unpatch safety).

ComfyUI's LoRA merge backs up only `weight`, never its scales, so a patched weight must be
requantized against the scales it already has: values beyond the old range saturate.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .formats import QTensor, QuantFormat
from .formats.base import INT8_MAX, TINY, cast_e4m3
from .formats.nvfp4 import encode_e2m1, pack

_ONE = {torch.int8: 1, torch.float8_e4m3fn: 1.0, torch.uint8: 0x22}  # the code of 1.0 (nvfp4: two packed)


def element_scales(fmt: QuantFormat, like: QTensor) -> Tensor:
    """fp32 [N, K]: the factor each stored element is multiplied by when dequantized."""
    ones = torch.full(like.data.shape, _ONE[fmt.weight_dtype], device=like.data.device).to(fmt.weight_dtype)
    return fmt.dequantize_weight(QTensor(ones, like.scale, like.global_scale), torch.float32)


def requantize_like(fmt: QuantFormat, w: Tensor, like: QTensor) -> QTensor:
    """Float w [N, K] -> QTensor with like's scales (no new scales; out-of-range values saturate)."""
    x = w.float() / element_scales(fmt, like).clamp(min=TINY)
    if fmt.weight_dtype == torch.int8:
        data = x.round().clamp(-INT8_MAX, INT8_MAX).to(torch.int8)
    elif fmt.weight_dtype == torch.float8_e4m3fn:
        data = cast_e4m3(x)
    else:
        data = pack(encode_e2m1(x))
    return QTensor(data, like.scale, like.global_scale)
