"""Attention "fa3" / "fa3-fp8": FlashAttention-3's forward (Hopper only), from the prebuilt `fa3-fwd` wheel
(`fa3_fwd_interface`) or a FlashAttention-3 build (`flash_attn_interface`).

`flash_attn_func(q, k, v, softmax_scale=None, causal=False, q_descale=None, k_descale=None, v_descale=None)`
takes q/k/v [B, L, H, D] (the transposed views of the registry's [B, H, L, D]: no copies for ComfyUI's
[B, L, H*D] tensors). The `fa3-fwd` wheel has no fp16 kernels, so fp16 inputs are cast to bf16 and the output
back. fa3-fp8 quantizes Q/K/V to e4m3 per (batch, head) in torch (one pass each; descales [B, H] fp32),
so its cost includes that pass; short key sequences (cross-attention) take SDPA.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..formats.base import E4M3_MAX
from .base import LIBRARY_MIN_KEYS, AttentionKernel, first, library_fn, library_probe

MODULES = ("fa3_fwd_interface", "flash_attn_interface")
_HINT = ("pip install fa3-fwd (prebuilt FlashAttention-3 forward for Hopper), or build FlashAttention-3 "
         "(flash-attention/hopper: python setup.py install)")
_PROBE = library_probe(MODULES, (9, 0), (9, 0))


def _bld(t: Tensor) -> Tensor:
    """[B, H, L, D] -> [B, L, H, D] bf16 (a view for bf16; fp16 is cast: the wheel has no fp16 kernels)."""
    return t.transpose(1, 2).to(torch.bfloat16)


def _fp8(t: Tensor) -> tuple[Tensor, Tensor]:
    """[B, H, L, D] -> (e4m3 [B, L, H, D], descale [B, H] fp32): per (batch, head) absmax / 448."""
    amax = t.abs().amax(dim=(2, 3)).float().clamp(min=1e-12)
    x = t.transpose(1, 2) * (E4M3_MAX / amax).to(t.dtype)[:, None, :, None]  # <= 448 up to 16-bit rounding
    return x.to(torch.float8_e4m3fn), amax / E4M3_MAX


def run(q: Tensor, k: Tensor, v: Tensor, scale: Optional[float]) -> Tensor:
    """FlashAttention-3 bf16: [B, H, L, D] in -> [B, H, Lq, D] in q.dtype."""
    out = first(library_fn(MODULES, "flash_attn_func")(_bld(q), _bld(k), _bld(v), softmax_scale=scale, causal=False))
    return out.transpose(1, 2).to(q.dtype)


def run_fp8(q: Tensor, k: Tensor, v: Tensor, scale: Optional[float]) -> Tensor:
    """FlashAttention-3 e4m3 with per-head descales: [B, H, L, D] in -> [B, H, Lq, D] in q.dtype."""
    (q8, qd), (k8, kd), (v8, vd) = _fp8(q), _fp8(k), _fp8(v)
    fn = library_fn(MODULES, "flash_attn_func")
    out = first(fn(q8, k8, v8, softmax_scale=scale, causal=False, q_descale=qd, k_descale=kd, v_descale=vd))
    return out.transpose(1, 2).to(q.dtype)


KERNELS = (
    AttentionKernel(name="fa3", description="FlashAttention-3 bf16 (Hopper; fp16 inputs cast to bf16)",
                    install_hint=_HINT, probe=_PROBE, run=run, head_dims=(64, 96, 128, 192, 256)),
    AttentionKernel(name="fa3-fp8", description="FlashAttention-3 fp8: e4m3 Q/K/V per head, quantized by a torch pass "
                    "(Hopper)", install_hint=_HINT, probe=_PROBE, run=run_fp8, head_dims=(64, 128, 256),
                    quantized=True, min_keys=LIBRARY_MIN_KEYS),
)
