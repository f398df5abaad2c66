"""int8, symmetric: weight per output channel [N, 1], activation per token [M, 1]; scale = absmax / 127."""
import torch

from .base import INT8_MAX, QuantFormat, QTensor, rowwise_absmax_quantize, rowwise_dequantize


def quantize(x: torch.Tensor) -> QTensor:
    """[rows, K] float -> int8 [rows, K] + fp32 scale [rows, 1] (round half to even, clamp +-127)."""
    return rowwise_absmax_quantize(x, INT8_MAX, torch.int8)


FORMAT = QuantFormat(
    name="int8",
    weight_dtype=torch.int8,
    weight_granularity="channel",
    act_granularity="token",
    k_multiple=1,
    quantize_weight=quantize,
    quantize_activation=quantize,
    dequantize_weight=rowwise_dequantize,
    dequantize_activation=rowwise_dequantize,
    weight_scale_shape=lambda n, k: (n, 1),
)
