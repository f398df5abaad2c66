"""Reference kernel: quantize the activation exactly as the GPU kernels do, dequantize, matmul in fp32.

Runs anywhere (CPU included); it is the function every real kernel must reproduce, and the
emulation path for formats a GPU has no tensor cores for (memory saved, no speed-up).
"""
from typing import Optional

import torch
from torch import Tensor

from ..formats import QuantFormat, QTensor
from .base import EMULATED, Availability, Kernel, finish


def linear(x: Tensor, w: QTensor, bias: Optional[Tensor], fmt: QuantFormat) -> Tensor:
    """x [M, K] float, w [N, K] quantized -> [M, N] in x.dtype."""
    xq = fmt.quantize_activation(x)
    xd = fmt.dequantize_activation(xq, torch.float32)
    wd = fmt.dequantize_weight(w, torch.float32)
    return finish(xd @ wd.t(), bias, x.dtype)


KERNEL = Kernel(
    name="reference",
    formats=frozenset({"int8", "fp8", "fp8_block128", "mxfp8", "nvfp4"}),
    install_hint="",
    probe=lambda fmt, device: Availability(EMULATED, "reference math (dequantize + float matmul)"),
    linear=linear,
)
