"""Activation quantization shared by every kernel adapter: the fastest implementation here.

Uses the fused Triton quantizer (kernels.triton_quant: one pass per token) on CUDA when Triton is
importable, else the reference quantizer of the format (plain torch). Both produce the same QTensor
layout (see quant/formats); the Triton block-128 scales are column-major, same shape and values.
"""
import torch

from ..formats import QTensor, get_format
from .triton import quant as triton_quant


def quantize_activation(x: torch.Tensor, fmt_name: str) -> QTensor:
    """x [M, K] float -> QTensor in fmt_name's activation layout."""
    fmt = get_format(fmt_name)
    if x.is_cuda and fmt_name in triton_quant.FORMATS and triton_quant.available():
        fmt.check_k(x.shape[-1])
        return triton_quant.quantize(x, fmt_name)
    return fmt.quantize_activation(x)
