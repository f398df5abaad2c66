"""Attention "kitchen-int8": comfy-kitchen's `sage_attention.int8_attention(q, k, v, *, scale=None,
attn_mask=None)` (ComfyUI core's kernel library, 0.2.40+; CUDA backend: block-Hadamard-rotated int8 Q/K,
int8 P) on the registry's [B, H, L, D]. Measured on an H200: 0.80x SDPA (issue 16)."""
from __future__ import annotations

from typing import Optional

from torch import Tensor

from .base import LIBRARY_MIN_KEYS, AttentionKernel, library_fn, library_probe

MODULES = ("comfy_kitchen.sage_attention",)


def run(q: Tensor, k: Tensor, v: Tensor, scale: Optional[float]) -> Tensor:
    """[B, H, L, D] in -> [B, H, Lq, D] in q.dtype."""
    return library_fn(MODULES, "int8_attention")(q, k, v, scale=scale).to(q.dtype)


KERNEL = AttentionKernel(
    name="kitchen-int8",
    description="comfy-kitchen int8_attention (ComfyUI core's kernel library)",
    install_hint="pip install -U comfy-kitchen (0.2.40 or newer)",
    probe=library_probe(MODULES, (8, 0)),
    run=run,
    head_dims=(64, 128),
    quantized=True,
    min_keys=LIBRARY_MIN_KEYS,
)
