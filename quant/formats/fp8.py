"""fp8 e4m3, symmetric: weight per output channel [N, 1], activation per token [M, 1]; scale = absmax / 448.

Data float8_e4m3fn [rows, K], scale fp32 [rows, 1].
"""
import torch

from .base import E4M3_MAX, rowwise_format

FORMAT = rowwise_format("fp8", torch.float8_e4m3fn, E4M3_MAX, min_sm=(8, 9))
quantize = FORMAT.quantize_weight
