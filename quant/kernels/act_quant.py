"""Activation quantization shared by every kernel adapter: the fastest implementation here.

Uses the fused Triton quantizer on CUDA when it is available, else the reference quantizer of the
format (plain torch). Both produce the same QTensor layout (see quant/formats).
"""
import torch

from ..formats import QTensor, get_format


def quantize_activation(x: torch.Tensor, fmt_name: str) -> QTensor:
    """x [M, K] float -> QTensor in fmt_name's activation layout."""
    return get_format(fmt_name).quantize_activation(x)
