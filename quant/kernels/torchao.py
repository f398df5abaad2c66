"""Kernel "torchao": torchao's int8 per-token x per-channel matmul and its fp8 rowwise scaled-mm wrapper.

int8 mirrors LightX2V `MMWeightWint8channelAint8channeldynamicTorchao` (lightx2v/common/ops/mm/mm_weight.py,
ModelTC/LightX2V): `torchao.quantization.utils._quantize_activation_per_token_absmax(x)`
(int8, scale [M, 1] in x's dtype, absmax/127) and `_quant_int8_per_token_matmul(x_int8, x_scales,
w_int8_t [K, N], w_scales [1, N], output_dtype)` (names with a leading underscore since torchao 0.13,
without before; the matmul is gone from torchao main since 2026-08-07, pytorch/ao 927fded4, i.e. 0.19).
The activation is quantized by the pack's shared one-pass quantizer (kernels.act_quant: int8, scale fp32
[M, 1] = absmax/127, the same codes as torchao's quantizer given fp32 input; the clamp of all-zero rows
differs, 1e-12 vs torchao's 1e-5): torchao's generic `quantize_affine` in eager mode made many passes
over x and was most of the 0.12x measured on an H100. torchao's matmul
(`safe_int_mm`) copies a non-contiguous [K, N] weight view before `torch._int_mm` on every call (as in
LightX2V); no torchao entry point takes the [N, K] layout without it (its Triton int_scaled_matmul needs
TORCHAO_AUTOTUNER_ENABLE), so the copy stays: N*K bytes read + written per call, no cache kept.

fp8: LightX2V's `MMWeightWfp8channelAfp8channeldynamicTorchao` quantizes per token in plain torch and calls
`torch._scaled_mm(..., use_fast_accum=True)`; here the same call goes through torchao's
`torchao.float8.inference.addmm_float8_unwrapped_inference(a, a_scale [M, 1], b [K, N] column-major,
b_scale [1, N], output_dtype, bias=..., use_fast_accum)` (pytorch/ao 36027d82, 2026-08-21), with the
shared activation quantizer. Rowwise-scaled fp8 writes bf16 only.
"""
from typing import Optional

import torch
from torch import Tensor

from ..formats import QuantFormat, QTensor
from .act_quant import quantize_activation
from .base import Kernel, bias_as, finish, library_attr, library_probe

_UTILS = "torchao.quantization.utils"


def _int8(x: Tensor, w: QTensor, bias: Optional[Tensor]) -> Tensor:
    matmul = library_attr(_UTILS, "_quant_int8_per_token_matmul", "quant_int8_per_token_matmul")
    xq = quantize_activation(x, "int8")
    out = matmul(xq.data, xq.scale, w.data.t(), w.scale.t(), output_dtype=torch.float32)
    return finish(out, bias, x.dtype)


def _fp8(x: Tensor, w: QTensor, bias: Optional[Tensor]) -> Tensor:
    xq = quantize_activation(x, "fp8")
    addmm = library_attr("torchao.float8.inference", "addmm_float8_unwrapped_inference")
    out = addmm(xq.data, xq.scale, w.data.t(), w.scale.t(), output_dtype=torch.bfloat16,
                bias=bias_as(bias, torch.bfloat16), use_fast_accum=True)
    return out.to(x.dtype)


_LINEAR = {"int8": _int8, "fp8": _fp8}


def linear(x: Tensor, w: QTensor, bias: Optional[Tensor], fmt: QuantFormat) -> Tensor:
    """x [M, K] on CUDA -> [M, N] in x.dtype."""
    return _LINEAR[fmt.name](x, w, bias)


KERNEL = Kernel(
    name="torchao",
    formats=frozenset(_LINEAR),
    install_hint="pip install torchao (int8 needs torchao <= 0.18: later releases dropped its int8 matmul)",
    probe=library_probe("torchao", {"int8": (8, 0), "fp8": (8, 9)}),
    linear=linear,
)
