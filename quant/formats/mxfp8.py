"""mxfp8 (OCP Microscaling): e4m3 elements, one e8m0 power-of-two scale per 32 along K.

Weight [N, K] and activation [M, K] alike: data e4m3 [rows, K], scale uint8 [rows, K/32] holding
the biased exponent (value 2**(e - 127), torch.float8_e8m0fnu's bit pattern). Scale exponent =
floor(log2(absmax)) - 8 (e4m3's largest exponent), elements saturate at 448, as the OCP spec says.
"""
import torch

from .base import QuantFormat, QTensor, TINY, as_rows, cast_e4m3, group_view

GROUP = 32
E4M3_EMAX = 8


def quantize(x: torch.Tensor) -> QTensor:
    """[rows, K] float -> e4m3 [rows, K] + uint8 e8m0 exponents [rows, K/32]."""
    xf = as_rows(x)
    FORMAT.check_k(xf.shape[1])
    g = group_view(xf, GROUP)
    amax = g.abs().amax(dim=2).clamp(min=TINY)
    exp = (torch.floor(torch.log2(amax)) - E4M3_EMAX).clamp(-127, 127)
    q = cast_e4m3(g / torch.exp2(exp)[..., None]).reshape(xf.shape)
    return QTensor(q, (exp + 127).to(torch.uint8))


def dequantize(q: QTensor, dtype: torch.dtype) -> torch.Tensor:
    """Inverse of quantize."""
    scale = torch.exp2(q.scale.float() - 127)
    g = group_view(q.data.float(), GROUP)
    return (g * scale[..., None]).reshape(q.data.shape).to(dtype)


FORMAT = QuantFormat(
    name="mxfp8",
    weight_dtype=torch.float8_e4m3fn,
    weight_granularity="group32",
    act_granularity="group32",
    k_multiple=GROUP,
    quantize_weight=quantize,
    quantize_activation=quantize,
    dequantize_weight=dequantize,
    dequantize_activation=dequantize,
    weight_scale_shape=lambda n, k: (n, k // GROUP),
    min_sm=(10, 0),
    scale_dtype=torch.uint8,
)
