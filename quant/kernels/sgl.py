"""Kernel "sgl": sgl-kernel's CUTLASS W8A8 GEMMs (`int8_scaled_mm`, `fp8_scaled_mm`).

Mirrors LightX2V `MMWeightWfp8channelAfp8channeldynamicSgl` and `MMWeightWint8channelAint8channeldynamicSglActVllm`
(lightx2v/common/ops/mm/mm_weight.py + sgl_kernel.py, ModelTC/LightX2V) against
sgl-kernel/python/sgl_kernel/gemm.py (sgl-project/sglang): `*_scaled_mm(mat_a [M, K]
row-major, mat_b [K, N] column-major, scales_a fp32 [M], scales_b fp32 [N], out_dtype fp16/bf16, bias
in out_dtype)`. fp8 activations use sgl-kernel's `sgl_per_token_quant_fp8(x, q, scale [M, 1])` as
LightX2V does; int8 activations use the shared quantizer (LightX2V takes sglang's or vLLM's: sgl-kernel
has no per-token int8 quantizer).
"""
from typing import Optional

import torch
from torch import Tensor

from ..formats import QuantFormat, QTensor
from .act_quant import quantize_activation
from .base import Kernel, bias_as, half_dtype, library_attr, library_probe

_GEMM = {"int8": "int8_scaled_mm", "fp8": "fp8_scaled_mm"}


def _quantize(x: Tensor, fmt_name: str) -> tuple[Tensor, Tensor]:
    """Per-token activation quantization: (int8 or e4m3 [M, K], fp32 scale [M, 1])."""
    if fmt_name == "int8":
        xq = quantize_activation(x, "int8")
        return xq.data, xq.scale
    x = x.contiguous()
    q = torch.empty_like(x, dtype=torch.float8_e4m3fn)
    scale = torch.empty((x.shape[0], 1), dtype=torch.float32, device=x.device)
    library_attr("sgl_kernel", "sgl_per_token_quant_fp8")(x, q, scale)
    return q, scale


def linear(x: Tensor, w: QTensor, bias: Optional[Tensor], fmt: QuantFormat) -> Tensor:
    """x [M, K] on CUDA -> [M, N] in x.dtype."""
    q, scale = _quantize(x, fmt.name)
    dtype = half_dtype(x)
    gemm = library_attr("sgl_kernel", _GEMM[fmt.name])
    return gemm(q, w.data.t(), scale, w.scale, dtype, bias_as(bias, dtype)).to(x.dtype)


KERNEL = Kernel(
    name="sgl",
    formats=frozenset(_GEMM),
    install_hint="pip install sgl-kernel (its wheels pin one torch version)",
    probe=library_probe("sgl_kernel", {"int8": (8, 0), "fp8": (8, 9)}),
    linear=linear,
)
