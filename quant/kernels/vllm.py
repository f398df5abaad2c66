"""Kernel "vllm": vLLM's CUTLASS W8A8 GEMM with vLLM's own per-token activation quantizers.

Mirrors LightX2V `MMWeightWint8channelAint8channeldynamicVllm` / `MMWeightWfp8channelAfp8channeldynamicVllm`
(lightx2v/common/ops/mm/mm_weight.py, ModelTC/LightX2V): activation by
`vllm._custom_ops.scaled_int8_quant(x, symmetric=True)` / `scaled_fp8_quant(x, None,
use_per_token_if_dynamic=True)` (scale fp32 [M, 1]), GEMM on the weight viewed column-major [K, N]
with scale_b fp32 [N, 1] and the bias fused. LightX2V calls the raw `torch.ops._C.cutlass_scaled_mm(out, ...)`;
this calls its public wrapper `_custom_ops.cutlass_scaled_mm(a, b, scale_a, scale_b, out_dtype, bias)`
(vllm-project/vllm), which runs that op and falls back to vLLM's Triton GEMM when K or
N is not a multiple of 16. Epilogue writes fp16/bf16 only; bias must be in that dtype.
"""
from typing import Optional

from torch import Tensor

from ..formats import QuantFormat, QTensor
from .base import Kernel, bias_as, half_dtype, library_attr, library_probe

_OPS = "vllm._custom_ops"


def _quantize(x: Tensor, fmt_name: str) -> tuple[Tensor, Tensor]:
    """vLLM's dynamic per-token quantizer: (int8 or e4m3 [M, K], fp32 scale [M, 1])."""
    if fmt_name == "int8":
        q, scale, _azp = library_attr(_OPS, "scaled_int8_quant")(x, scale=None, azp=None, symmetric=True)
        return q, scale
    return library_attr(_OPS, "scaled_fp8_quant")(x, None, scale_ub=None, use_per_token_if_dynamic=True)


def linear(x: Tensor, w: QTensor, bias: Optional[Tensor], fmt: QuantFormat) -> Tensor:
    """x [M, K] on CUDA -> [M, N] in x.dtype."""
    q, scale = _quantize(x.contiguous(), fmt.name)
    dtype = half_dtype(x)
    out = library_attr(_OPS, "cutlass_scaled_mm")(q, w.data.t(), scale, w.scale, dtype, bias_as(bias, dtype))
    return out.to(x.dtype)


KERNEL = Kernel(
    name="vllm",
    formats=frozenset({"int8", "fp8"}),
    install_hint="pip install vllm (it pins its own torch version; Linux + CUDA only)",
    probe=library_probe("vllm", {"int8": (7, 5), "fp8": (8, 9)}),
    linear=linear,
)
