"""fp8 e4m3 block-128 (DeepSeek-V3 / DeepGEMM recipe).

Weight [N, K]: one fp32 scale per 128x128 block -> scale [ceil(N/128), K/128].
Activation [M, K]: one fp32 scale per 1x128 group along K -> scale [M, K/128].
K must be a multiple of 128; N may be ragged (the last block row is partial).
"""
import torch

from .base import E4M3_MAX, TINY, QuantFormat, QTensor, as_rows, cast_e4m3, ceil_div, group_view

BLOCK = 128


def quantize_weight(w: torch.Tensor) -> QTensor:
    """[N, K] float -> e4m3 [N, K] + fp32 scale [ceil(N/128), K/128]."""
    wf = as_rows(w)
    n, k = wf.shape
    FORMAT.check_k(k)
    nb = ceil_div(n, BLOCK)
    padded = torch.nn.functional.pad(wf, (0, 0, 0, nb * BLOCK - n))
    blocks = padded.reshape(nb, BLOCK, k // BLOCK, BLOCK)
    scale = blocks.abs().amax(dim=(1, 3)).clamp(min=TINY) / E4M3_MAX
    q = cast_e4m3(blocks / scale[:, None, :, None]).reshape(nb * BLOCK, k)[:n]
    return QTensor(q, scale)


def dequantize_weight(q: QTensor, dtype: torch.dtype) -> torch.Tensor:
    """Inverse of quantize_weight."""
    n, k = q.data.shape
    s = q.scale.float().repeat_interleave(BLOCK, 0)[:n].repeat_interleave(BLOCK, 1)[:, :k]
    return (q.data.float() * s).to(dtype)


def quantize_activation(x: torch.Tensor) -> QTensor:
    """[M, K] float -> e4m3 [M, K] + fp32 scale [M, K/128] (per token, per 128 along K)."""
    xf = as_rows(x)
    FORMAT.check_k(xf.shape[1])
    g = group_view(xf, BLOCK)
    scale = g.abs().amax(dim=2).clamp(min=TINY) / E4M3_MAX
    return QTensor(cast_e4m3(g / scale[..., None]).reshape(xf.shape), scale)


def dequantize_activation(q: QTensor, dtype: torch.dtype) -> torch.Tensor:
    """Inverse of quantize_activation."""
    g = group_view(q.data.float(), BLOCK)
    return (g * q.scale.float()[..., None]).reshape(q.data.shape).to(dtype)


FORMAT = QuantFormat(
    name="fp8_block128",
    weight_dtype=torch.float8_e4m3fn,
    weight_granularity="block128x128",
    act_granularity="group128",
    k_multiple=BLOCK,
    quantize_weight=quantize_weight,
    quantize_activation=quantize_activation,
    dequantize_weight=dequantize_weight,
    dequantize_activation=dequantize_activation,
    weight_scale_shape=lambda n, k: (ceil_div(n, BLOCK), k // BLOCK),
    min_sm=(8, 9),
)
