"""Kernel "q8f": q8_kernels' Ada (sm89) W8A8 GEMMs `q8_linear` (int8) and `fp8_linear` (e4m3).

Mirrors LightX2V `MMWeightWint8channelAint8channeldynamicQ8F` / `MMWeightWfp8channelAfp8channeldynamicQ8F`
(lightx2v/common/ops/mm/mm_weight.py, ModelTC/LightX2V) against
q8_kernels/functional/linear.py and csrc/gemm/q8_gemm_api.cpp (KONAKONA666/q8_kernels 9cee3f3d,
2024-12-27): `q8_linear(a, b [N, K], bias fp32, scale_a fp32 [M], scale_b fp32 [N], fuse_gelu, out_dtype)`
and `fp8_linear(a, b, bias, scale_a, scale_b, use_hadamard=False, out_dtype)`; given pre-quantized
operands with scales they skip their Hadamard path. `a` is [batch, M, K] (sent as [1, M, K]); the
result is [batch, M, N]; the kernel writes bf16 (or fp8) only. Activations use the shared quantizer
(LightX2V takes vLLM's or its Triton one, not q8_kernels').
"""
from typing import Optional

import torch
from torch import Tensor

from ..formats import QuantFormat, QTensor
from .act_quant import quantize_activation
from .base import Kernel, bias_as, library_attr, library_probe

_MODULE = "q8_kernels.functional.linear"


def linear(x: Tensor, w: QTensor, bias: Optional[Tensor], fmt: QuantFormat) -> Tensor:
    """x [M, K] on an sm89 GPU -> [M, N] in x.dtype."""
    xq = quantize_activation(x, fmt.name)
    a = xq.data.contiguous().unsqueeze(0)
    scales = (xq.scale.contiguous(), w.scale)
    b32 = bias_as(bias, torch.float32)
    if fmt.weight_dtype == torch.int8:
        out = library_attr(_MODULE, "q8_linear")(a, w.data, b32, *scales, fuse_gelu=False, out_dtype=torch.bfloat16)
    else:
        out = library_attr(_MODULE, "fp8_linear")(a, w.data, b32, *scales, use_hadamard=False, out_dtype=torch.bfloat16)
    return out.reshape(x.shape[0], w.data.shape[0]).to(x.dtype)


KERNEL = Kernel(
    name="q8f",
    formats=frozenset({"int8", "fp8"}),
    install_hint="build q8_kernels from source (github.com/KONAKONA666/q8_kernels); Ada GPUs (sm89) only",
    probe=library_probe("q8_kernels", {"int8": (8, 9), "fp8": (8, 9)}, max_cc=(8, 9)),
    linear=linear,
)
