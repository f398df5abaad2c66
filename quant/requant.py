"""Requantize a patched float weight (LoRA) against the scales the layer already has.

A merged LoRA gets fresh scales (the layer's `set_weight` quantizes afresh and keeps the old scales to put
back on unpatch). This module serves the two ComfyUI paths that store codes alone, without a place for new
scales: in-place updates (`copy_to_param`: hook keyframes, `weight_inplace_update`) and `return_weight`
(checkpoint saving, old LowVramPatch). There the old scales must stay, and values the patch pushes past the
old range saturate; requantize_like counts them so the caller can say so.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .formats import QTensor, QuantFormat
from .formats.base import E2M1_MAX, E4M3_MAX, INT8_MAX, TINY, cast_e4m3
from .formats.nvfp4 import encode_e2m1, pack

_ONE = {torch.int8: 1, torch.float8_e4m3fn: 1.0, torch.uint8: 0x22}  # the code of 1.0 (nvfp4: two packed)
_LIMIT = {torch.int8: INT8_MAX, torch.float8_e4m3fn: E4M3_MAX, torch.uint8: E2M1_MAX}  # largest code magnitude


def element_scales(fmt: QuantFormat, like: QTensor) -> Tensor:
    """fp32 [N, K]: the factor each stored element is multiplied by when dequantized."""
    ones = torch.full(like.data.shape, _ONE[fmt.weight_dtype], device=like.data.device).to(fmt.weight_dtype)
    return fmt.dequantize_weight(QTensor(ones, like.scale, like.global_scale), torch.float32)


def requantize_like(fmt: QuantFormat, w: Tensor, like: QTensor) -> tuple[QTensor, int]:
    """Float w [N, K] -> (QTensor with like's scales, how many elements lay beyond what those scales can
    represent and were clipped). No new scales."""
    x = w.float() / element_scales(fmt, like).clamp(min=TINY)
    clipped = int((x.abs() > _LIMIT[fmt.weight_dtype] * (1 + 1e-6)).sum())
    if fmt.weight_dtype == torch.int8:
        data = x.round().clamp(-INT8_MAX, INT8_MAX).to(torch.int8)
    elif fmt.weight_dtype == torch.float8_e4m3fn:
        data = cast_e4m3(x)
    else:
        data = pack(encode_e2m1(x))
    return QTensor(data, like.scale, like.global_scale), clipped
