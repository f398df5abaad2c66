"""fp8 e4m3, symmetric: weight per output channel [N, 1], activation per token [M, 1]; scale = absmax / 448."""
import torch

from .base import E4M3_MAX, QuantFormat, QTensor, rowwise_absmax_quantize, rowwise_dequantize


def quantize(x: torch.Tensor) -> QTensor:
    """[rows, K] float -> float8_e4m3fn [rows, K] + fp32 scale [rows, 1]."""
    return rowwise_absmax_quantize(x, E4M3_MAX, torch.float8_e4m3fn)


FORMAT = QuantFormat(
    name="fp8",
    weight_dtype=torch.float8_e4m3fn,
    weight_granularity="channel",
    act_granularity="token",
    k_multiple=1,
    quantize_weight=quantize,
    quantize_activation=quantize,
    dequantize_weight=rowwise_dequantize,
    dequantize_activation=rowwise_dequantize,
    weight_scale_shape=lambda n, k: (n, 1),
)
