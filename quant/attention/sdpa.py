"""Attention "sdpa": torch's F.scaled_dot_product_attention. Runs everywhere, any dtype and head dim; the
fallback of every kernel (masked calls included)."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..kernels.base import NATIVE, Availability
from .base import AttentionKernel


def attention(q: Tensor, k: Tensor, v: Tensor, scale: Optional[float] = None, mask: Optional[Tensor] = None) -> Tensor:
    """q [B, H, Lq, D], k/v [B, H, Lk, D] -> [B, H, Lq, D]; mask broadcastable to [B, H, Lq, Lk] (bool: True
    keeps a key, float: added to the scores)."""
    extra = {} if scale is None else {"scale": scale}
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, **extra)


def probe(device: torch.device) -> Availability:
    """Native everywhere."""
    return Availability(NATIVE)


KERNEL = AttentionKernel(
    name="sdpa",
    description="torch scaled_dot_product_attention (16/32-bit, any head dim); runs everywhere",
    install_hint="",
    probe=probe,
    run=attention,
    dtypes=frozenset({torch.float16, torch.bfloat16, torch.float32}),
    cuda_only=False,
)
