"""Reference kernel: quantize the activation exactly as the GPU kernels do, dequantize, matmul in fp32.

Runs anywhere (CPU included); it is the function every real kernel must reproduce. `emulated_linear`
is the same function at the input's precision: the GPU emulation path for formats (or shapes) a GPU
has no tensor cores for (memory saved, no speed-up over bf16).
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..formats import QuantFormat, QTensor
from .triton import quant as triton_quant
from .base import finish


def linear(x: Tensor, w: QTensor, bias: Optional[Tensor], fmt: QuantFormat) -> Tensor:
    """x [M, K] float, w [N, K] quantized -> [M, N] in x.dtype."""
    xq = fmt.quantize_activation(x)
    xd = fmt.dequantize_activation(xq, torch.float32)
    wd = fmt.dequantize_weight(w, torch.float32)
    return finish(xd @ wd.t(), bias, x.dtype)


def emulated_linear(x: Tensor, w: QTensor, bias: Optional[Tensor], fmt: QuantFormat) -> Tensor:
    """`linear` at x's precision, for GPUs: the same activation codes (fake-quantized with the format's
    own quantizer), activation and weight dequantized to x.dtype (bf16/fp16), then F.linear (cuBLAS,
    fp32 accumulation, bias in the epilogue). Equals `linear` up to the 16-bit rounding of the
    dequantized operands and of the output; fp32 inputs take exactly `linear`'s math. On CUDA with
    Triton, mxfp8 / nvfp4 fake-quantize and dequantize in one Triton pass each (kernels/triton/microscale.py).
    """
    if x.dtype not in (torch.bfloat16, torch.float16):
        return linear(x, w, bias, fmt)
    if x.is_cuda and fmt.name in triton_quant.MICROSCALE and triton_quant.available():
        from .triton import microscale as triton_microscale  # one Triton pass each instead of ~10 torch passes

        xd = triton_microscale.fake_quantize(x, fmt.name)
        wd = triton_microscale.dequantize_weight(w, fmt.name, x.dtype)
    else:
        xd = fmt.dequantize_activation(fmt.quantize_activation(x), x.dtype)
        wd = fmt.dequantize_weight(w, x.dtype)
    return F.linear(xd, wd, None if bias is None else bias.to(x.dtype))
