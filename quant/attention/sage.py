"""Attention "sage1": SageAttention (`pip install sageattention`; 1.x is pure Triton: int8 Q/K with K
smoothing, fp16 P/V). `sageattn(q, k, v, tensor_layout="HND", is_causal=False, sm_scale=...)` takes the
registry's [B, H, L, D] as is and returns [B, H, Lq, D]. Measured on an H200: 0.75x SDPA (issue 16)."""
from __future__ import annotations

from typing import Optional

from torch import Tensor

from .base import LIBRARY_MIN_KEYS, AttentionKernel, library_fn, library_probe

MODULES = ("sageattention",)


def run(q: Tensor, k: Tensor, v: Tensor, scale: Optional[float]) -> Tensor:
    """[B, H, L, D] in -> [B, H, Lq, D] in q.dtype."""
    return library_fn(MODULES, "sageattn")(q, k, v, tensor_layout="HND", is_causal=False, sm_scale=scale)


KERNEL = AttentionKernel(
    name="sage1",
    description="SageAttention (int8 Q/K, fp16 P/V; 1.x is pure Triton)",
    install_hint="pip install sageattention==1.0.6",
    probe=library_probe(MODULES, (8, 0)),
    run=run,
    head_dims=(64, 96, 128),
    quantized=True,
    min_keys=LIBRARY_MIN_KEYS,
)
