"""Kernel "triton": this pack's own Triton W8A8 GEMMs (gemm.py, gemm_tma.py) + one-pass quantizers (quant.py).

int8 (sm80+) and fp8 (sm89+): activation quantized per token, then one GEMM with the per-token x
per-channel scales, bias and output cast in its epilogue (a persistent TMA GEMM for M >= 4096 on sm90+).
fp8 block-128 (sm89+): per-(1x128) x per-(128x128) scales applied in the main loop; the activation
quantized by the one-pass Triton quantizer. Launches go through launch.py (direct launches and plans).

The linear is the torch custom op `comfyui_quantized::triton_w8a8_linear` (with a fake kernel), so
torch.compile / TorchCompileModel graphs keep it as one node; eager calls skip the op's dispatch.
Importing this module never launches anything; on a machine without CUDA or Triton the probe says why
it cannot run.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ...formats import QuantFormat, QTensor
from ..base import UNAVAILABLE, Availability, Kernel, cuda_probe, fp32

_MIN_CC = {"int8": (8, 0), "fp8": (8, 9), "fp8_block128": (8, 9)}


_IMPORT_ERROR: list = []  # memo of import_error(): [None] or [the error's text]


def import_error() -> Optional[str]:
    """Why this kernel's modules (GEMMs, quantizers, launches) do not import with the installed Triton, or None."""
    if not _IMPORT_ERROR:
        try:
            from . import gemm, launch  # noqa: F401
            from . import quant
            if quant.triton is None:
                raise ImportError("triton.language / libdevice did not import")
            _IMPORT_ERROR.append(None)
        except Exception as e:  # noqa: BLE001 - any failure means the kernel cannot run; the text says which
            _IMPORT_ERROR.append(f"{type(e).__name__}: {e}")
    return _IMPORT_ERROR[0]


def probe(fmt_name: str, device: torch.device) -> Availability:
    """Native on CUDA GPUs with the tensor cores for fmt_name when the kernel's modules import with this Triton."""
    avail = cuda_probe(device, _MIN_CC[fmt_name], module="triton")
    if not avail.runs:
        return avail
    err = import_error()
    if err is not None:
        import triton

        return Availability(UNAVAILABLE, f"the Triton kernels do not import with triton {triton.__version__} ({err})")
    return avail


_MODS: list = []  # (gemm, quant.quantize, launch), imported on first use


def _w8a8_linear(x: Tensor, w: Tensor, w_scale: Tensor, bias: Optional[Tensor], fmt_name: str) -> Tensor:
    """x [..., K] float -> [..., N] in x.dtype; w [N, K] int8/e4m3 with its scales (see quant/formats).

    Quantizer + GEMM over x as [M, K]; a shape's later calls replay the recorded launches on x as it
    comes (launch.py's plans)."""
    if not _MODS:
        from . import gemm, launch
        from .quant import quantize

        _MODS.extend((gemm, quantize, launch))
    gemm, quantize, launch = _MODS
    key = launch.plan_key(x, w, w_scale, bias, fmt_name)
    plan = launch.lookup(key)
    if plan is not None:
        out = plan(x, w, w_scale, bias, key[-1])
        if out is not None:
            return out
    out_shape = (*x.shape[:-1], w.shape[0])
    x2 = x if x.dim() == 2 else x.reshape(-1, x.shape[-1])
    with launch.recording() as log:
        xq = quantize(x2, fmt_name)
        out = gemm.w8a8_gemm(xq.data, xq.scale, w, w_scale, bias, x.dtype, grouped=fmt_name == "fp8_block128")
    launch.record(key, log, x2, xq.data, xq.scale, w, w_scale, bias, out, out_shape)
    return out if x.dim() == 2 else out.view(out_shape)


w8a8_linear = torch.library.custom_op("comfyui_quantized::triton_w8a8_linear", _w8a8_linear, mutates_args=())


@w8a8_linear.register_fake
def _(x, w, w_scale, bias, fmt_name):
    return x.new_empty((x.shape[0], w.shape[0]))


def linear(x: Tensor, w: QTensor, bias: Optional[Tensor], fmt: QuantFormat) -> Tensor:
    """x [..., K] on CUDA -> [..., N] in x.dtype."""
    fmt.check_k(x.shape[-1])
    scale = fp32(w.scale)
    if torch.compiler.is_compiling():  # the custom op over [M, K]: one opaque graph node
        out = w8a8_linear(x.reshape(-1, x.shape[-1]), w.data, scale, bias, fmt.name)
        return out.reshape(*x.shape[:-1], out.shape[-1])
    # Eager: the implementation directly (the custom-op dispatch costs ~tens of us a call, which shows
    # at small M), on x as it comes.
    return _w8a8_linear(x, w.data, scale, bias, fmt.name)


KERNEL = Kernel(
    name="triton",
    formats=frozenset(_MIN_CC),
    install_hint="pip install triton (Linux wheels ship with PyTorch; 3.3 or newer)",
    probe=probe,
    linear=linear,
    leading_dims=True,
)
