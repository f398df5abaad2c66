"""int8, symmetric: weight per output channel [N, 1], activation per token [M, 1]; scale = absmax / 127.

Values are rounded half to even and clamped to +-127; data int8 [rows, K], scale fp32 [rows, 1].
"""
import torch

from .base import INT8_MAX, rowwise_format

FORMAT = rowwise_format("int8", torch.int8, INT8_MAX, min_sm=(7, 5))
quantize = FORMAT.quantize_weight
