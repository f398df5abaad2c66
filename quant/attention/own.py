"""Attention "qattn" / "qattn-accurate": the pack's own quantized attention (quant/attention/triton).

qattn: Q/K int8 (K's per-channel mean removed), P/V e4m3, fp32 softmax and accumulation; qattn-accurate:
the same with P/V in 16 bit. The Triton package is imported at first use (the probe's import error is the
reason it cannot run); its `unsupported_reason` is the per-call rule (head dim, dtype, GPU, Triton).
The call takes SDPA where a kernel measured slower than SDPA, or no faster (bench/results/h200-attention.md,
H200): fp8 below 4096 keys (Wan cross-attention, 512 keys: 0.66-0.74x; 2048: the Hopper kernel 1.15x, the Triton
kernel 1.00x; 4096: 1.33x), the accurate mode below 8192 (the Hopper kernel at 4096 keys: 1.14x, at 2048: 1.01x;
the Triton kernel, which runs it at D 64, was not measured below 16384), both below 500k query rows B*H*Lq (Flux
1x24x4608: 0.66x / 0.76x); the accurate mode also at head dim 96 (0.90x). Measured faster: fp8 1.61-1.72x on Wan
self-attention with the Hopper (Gluon) kernel at D 128 (the Triton kernel alone: 1.26-1.32x; D 64 / 96: 1.10x /
1.08x), accurate 1.31-1.41x at D 128 with the Hopper kernel (the Triton kernel: 1.06-1.08x) and 1.05x at D 64.
"""
from __future__ import annotations

import importlib
from functools import partial
from types import ModuleType
from typing import Optional

import torch
from torch import Tensor

from ..kernels.base import NATIVE, UNAVAILABLE, Availability
from .base import AttentionKernel

MIN_KEYS, MIN_KEYS_ACCURATE, MIN_ROWS = 4096, 8192, 500_000  # from H200 measurements (see above)
_HINT = "pip install triton (Linux wheels ship with PyTorch)"


_PACKAGE: list[ModuleType] = []  # the imported package, once (torch.compile traces a list read, not an import)


def _package() -> ModuleType:
    """quant.attention.triton, imported at the first call (relative to this package, whatever name it is loaded
    under). The probe imports it when a node selects the kernel, so compiled code only reads the cache."""
    if not _PACKAGE:
        _PACKAGE.append(importlib.import_module(__package__ + ".triton"))
    return _PACKAGE[0]


def probe(device: torch.device) -> Availability:
    """Runs where the package imports and its own check accepts a small bf16 [1, 1, 1, 128] input on device."""
    try:
        pkg = _package()
    except ImportError as e:
        return Availability(UNAVAILABLE, f"the own attention kernel does not import ({e})", missing=True)
    x = torch.empty((1, 1, 1, 128), dtype=torch.bfloat16, device=device)
    reason = pkg.unsupported_reason(x, x, x)
    return Availability(NATIVE) if reason is None else Availability(UNAVAILABLE, reason)


def _check(q: Tensor, k: Tensor, v: Tensor) -> Optional[str]:
    return _package().unsupported_reason(q, k, v)


def _run(q: Tensor, k: Tensor, v: Tensor, scale: Optional[float], accurate: bool) -> Tensor:
    return _package().quantized_attention(q, k, v, scale=scale, accurate=accurate)


def _kernel(name: str, accurate: bool, what: str, fast_head_dims: tuple[int, ...], min_keys: int) -> AttentionKernel:
    return AttentionKernel(name=name, description=f"the pack's own quantized attention (Triton / Gluon): {what}",
                           install_hint=_HINT, probe=probe, run=partial(_run, accurate=accurate), cuda_only=False,
                           quantized=True, check=_check, min_keys=min_keys, min_rows=MIN_ROWS,
                           fast_head_dims=fast_head_dims)


KERNELS = (
    _kernel("qattn", False, "int8 Q/K, fp8 P/V (warp-specialized Gluon kernel on sm90); measured on Hopper only", (),
            MIN_KEYS),
    _kernel("qattn-accurate", True, "int8 Q/K, 16-bit P/V (closer to SDPA; the same Gluon kernel on sm90); measured "
            "on Hopper only", (64, 128), MIN_KEYS_ACCURATE),
)
