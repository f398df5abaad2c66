"""Kernel "torch": PyTorch's own low-precision GEMMs (no extra package).

int8: torch._int_mm (int32 out) + one fused Triton scale/bias/cast pass (kernels.triton_gemm.scale_epilogue;
plain torch ops without Triton); fp8: torch._scaled_mm rowwise (scales and
bias fused); fp8 block-128: F.scaled_mm with BlockWise1x128 x BlockWise128x128 (torch >= 2.10,
sm90); mxfp8 / nvfp4: F.scaled_mm BlockWise1x32 / 1x16 on sm100 (not verified: no Blackwell here),
emulated elsewhere (reference.emulated_linear: same codes, 16-bit dequantize + cuBLAS GEMM).
Activations are quantized with the shared quantizer (kernels.act_quant).
"""
import functools
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..formats import FORMATS, QuantFormat, QTensor
from ..formats.base import round_up
from . import reference
from .triton import quant as triton_quant
from .act_quant import quantize_activation
from .base import EMULATED, Availability, Kernel, bias_as, capability, finish, fp32

_MIN_CC = {"fp8_block128": (9, 0)}  # cuBLAS blockwise scaled_mm: Hopper; other formats: the format's min_sm


def probe(fmt_name: str, device: torch.device) -> Availability:
    """Native where the GPU has the tensor cores (and torch the op), emulated elsewhere."""
    cc = capability(device)
    if cc is None:
        return Availability(EMULATED, "no CUDA GPU: reference math on the CPU")
    need = _MIN_CC.get(fmt_name, FORMATS[fmt_name].min_sm)
    if cc < need:
        return Availability(EMULATED, f"{fmt_name} tensor cores need sm{need[0]}{need[1]}+, this GPU is sm{cc[0]}{cc[1]}")
    if fmt_name != "int8" and fmt_name != "fp8" and not hasattr(F, "scaled_mm"):
        return Availability(EMULATED, f"torch {torch.__version__} lacks F.scaled_mm (needs 2.10+)")
    return Availability("native")


def _int8(x: Tensor, w: QTensor, bias: Optional[Tensor]) -> Tensor:
    xq = quantize_activation(x, "int8")
    m = x.shape[0]
    a = xq.data if m > 16 else F.pad(xq.data, (0, 0, 0, 17 - m))
    acc = torch._int_mm(a, w.data.t())[:m]
    sw = fp32(w.scale)
    if triton_quant.available():  # scales, bias and cast in one pass over the int32 result
        from .triton.gemm import scale_epilogue

        return scale_epilogue(acc, xq.scale, sw, bias, x.dtype)
    out = acc.float().mul_(xq.scale).mul_(sw.t())
    return finish(out, bias, x.dtype)


def _fp8(x: Tensor, w: QTensor, bias: Optional[Tensor]) -> Tensor:
    xq = quantize_activation(x, "fp8")
    # use_fast_accum: Hopper's fp8 tensor-core accumulation without periodic promotion (what torchao and
    # LightX2V use for inference; measured ~15-25% faster on an H100 at equal output error).
    sw = fp32(w.scale)
    out = torch._scaled_mm(xq.data, w.data.t(), scale_a=xq.scale, scale_b=sw.t(),
                           bias=bias_as(bias, torch.bfloat16), out_dtype=torch.bfloat16, use_fast_accum=True)
    return out if out.dtype == x.dtype else out.to(x.dtype)


def _block_scale_b(s: Tensor) -> Tensor:
    """Weight scales [N/128, K/128] -> what cuBLAS takes (checked on an H100, torch 2.11, and as torch's
    own tests build it): the transpose [L4, N/128] of a row-major [N/128, L4] buffer, L4 = K/128
    rounded up to a multiple of 4 (padding columns are zero)."""
    nb, kb = s.shape
    l4 = round_up(kb, 4)
    if l4 != kb or not s.is_contiguous():
        padded = s.new_zeros(nb, l4)
        padded[:, :kb] = s
        s = padded
    return s.t()


def _block_scale_a(s: Tensor) -> Tensor:
    """Activation scales [M, K/128] -> column-major, strides (1, M) exactly (torch 2.11 checks it);
    the Triton quantizer already writes this layout (for M % 4 == 0)."""
    return s if s.stride(0) == 1 and s.stride(1) == s.shape[0] else s.t().contiguous().t()


_BLOCK_BIAS = [True]  # whether this torch's blockwise scaled_mm takes a bias (learned on first call)


def _fp8_block128(x: Tensor, w: QTensor, bias: Optional[Tensor]) -> Tensor:
    m = x.shape[0]
    if m % 4:  # cuBLAS blockwise needs M % 4 == 0 (CUBLAS_STATUS_NOT_SUPPORTED otherwise, H100): pad zero tokens
        x = F.pad(x, (0, 0, 0, 4 - m % 4))
    xq = quantize_activation(x, "fp8_block128")
    scale_a = _block_scale_a(xq.scale)
    args = (xq.data, w.data.t(), scale_a, F.ScalingType.BlockWise1x128,
            _block_scale_b(w.scale.float()), F.ScalingType.BlockWise128x128)
    if bias is not None and _BLOCK_BIAS[0]:
        try:
            return F.scaled_mm(*args, bias=bias.to(torch.bfloat16), output_dtype=torch.bfloat16)[:m].to(x.dtype)
        except (RuntimeError, ValueError):
            _BLOCK_BIAS[0] = False
    out = F.scaled_mm(*args, output_dtype=torch.bfloat16)
    out = out[:m]
    if bias is not None:
        out.add_(bias.to(out.dtype))
    return out.to(x.dtype)


_NATIVE = {"int8": _int8, "fp8": _fp8, "fp8_block128": _fp8_block128}


_cached_probe = functools.lru_cache(maxsize=None)(probe)


def linear(x: Tensor, w: QTensor, bias: Optional[Tensor], fmt: QuantFormat) -> Tensor:
    """x [M, K] on CUDA -> [M, N]; formats without a native path here (or shapes cuBLAS refuses:
    K or N not a multiple of 16) run the reference math at x's precision (reference.emulated_linear)."""
    k, n = x.shape[1], w.data.shape[0]
    if (_cached_probe(fmt.name, x.device).status != "native" or fmt.name not in _NATIVE
            or (fmt.weight_dtype != torch.int8 and (k % 16 or n % 16))):
        return reference.emulated_linear(x, w, bias, fmt)
    return _NATIVE[fmt.name](x, w, bias)


KERNEL = Kernel(
    name="torch",
    formats=frozenset(FORMATS),
    install_hint="ships with PyTorch",
    probe=probe,
    linear=linear,
)
