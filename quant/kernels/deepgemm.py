"""Kernel "deepgemm": DeepGEMM's Hopper fp8 block-128 GEMM (1x128 activation, 128x128 weight scales).

Mirrors LightX2V `MMWeightWfp8block128Afp8channelgroup128dynamicDeepgemmActSgl`
(lightx2v/common/ops/mm/mm_weight.py, ModelTC/LightX2V), which calls
`deep_gemm.gemm_fp8_fp8_bf16_nt((x, sfa), (w, sfb), out)`; DeepGEMM renamed it `fp8_gemm_nt(a, b, d,
c=None, recipe=None)` in 2025-07 (deepseek-ai/DeepGEMM 9da4a23; read at 54e22612, 2026-06-23). Both
take x e4m3 [M, K] + sfa fp32 [M, K/128], w e4m3 [N, K] + sfb fp32 [ceil(N/128), K/128] contiguous, and
write d bf16 [M, N]; both make sfa TMA-aligned MN-major themselves, and on sm90 the new one's default
recipe for fp32 scales is (1, 128, 128), so one positional call serves either. No fused bias: it is
added after. Activations use the shared quantizer (LightX2V uses sgl-kernel's per-token-group one).
"""
from typing import Optional

import torch
from torch import Tensor

from ..formats import QuantFormat, QTensor
from .act_quant import quantize_activation
from .base import Kernel, finish, library_attr, library_probe


def linear(x: Tensor, w: QTensor, bias: Optional[Tensor], fmt: QuantFormat) -> Tensor:
    """x [M, K] on an sm90 GPU -> [M, N] in x.dtype."""
    xq = quantize_activation(x, fmt.name)
    out = torch.empty((x.shape[0], w.data.shape[0]), dtype=torch.bfloat16, device=x.device)
    gemm = library_attr("deep_gemm", "fp8_gemm_nt", "gemm_fp8_fp8_bf16_nt")
    gemm((xq.data, xq.scale), (w.data, w.scale.contiguous()), out)
    return finish(out.float(), bias, x.dtype)


KERNEL = Kernel(
    name="deepgemm",
    formats=frozenset({"fp8_block128"}),
    install_hint=("build DeepGEMM from source (github.com/deepseek-ai/DeepGEMM; the PyPI deep-gemm 1.0.0 "
                  "is an empty placeholder); Hopper GPUs (sm90) only"),
    probe=library_probe("deep_gemm", {"fp8_block128": (9, 0)}, max_cc=(9, 0)),
    linear=linear,
)
