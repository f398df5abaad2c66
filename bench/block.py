"""Whole Wan 2.1-14B transformer block in bf16 vs every linear quantized, with the linear/attention split.

Used by `python -m bench --block`; timings come from the caller's timer.
"""
from __future__ import annotations

import torch
from torch import nn

from .models import add_ratios, mha, per_method, random_linear


class WanBlock(nn.Module):
    """One Wan 2.1 transformer block at real shapes (RoPE left out): adaLN modulation, self-attention
    with RMS-normed q/k, cross-attention to the text tokens, GELU(tanh) FFN; SDPA attention."""

    LINEARS = ("sq", "sk", "sv", "so", "cq", "ck", "cv", "co", "f0", "f2")

    def __init__(self, dim=5120, heads=40, ffn=13824, device=None, dtype=torch.bfloat16):
        super().__init__()
        self.dim, self.heads = dim, heads
        for nm in self.LINEARS:
            i, o = (ffn, dim) if nm == "f2" else (dim, ffn) if nm == "f0" else (dim, dim)
            setattr(self, nm, random_linear(i, o, device=device, dtype=dtype))
        self.norms = nn.Parameter(torch.ones(4, dim, device=device, dtype=dtype), requires_grad=False)
        self.modulation = nn.Parameter(torch.randn(6, dim, device=device, dtype=dtype) * 0.02, requires_grad=False)

    def _rms(self, t, i):
        return torch.nn.functional.rms_norm(t, (self.dim,), self.norms[i], eps=1e-6)

    def attn(self, q, k, v):
        return mha(q, k, v, self.heads)

    def forward(self, x, ctx):
        F = torch.nn.functional
        sh1, sc1, g1, sh2, sc2, g2 = self.modulation.unbind(0)
        h = F.layer_norm(x, (self.dim,), eps=1e-6) * (1 + sc1) + sh1
        x = x + self.so(self.attn(self._rms(self.sq(h), 0), self._rms(self.sk(h), 1), self.sv(h))) * g1
        h = F.layer_norm(x, (self.dim,), eps=1e-6)
        x = x + self.co(self.attn(self._rms(self.cq(h), 2), self._rms(self.ck(ctx), 3), self.cv(ctx)))
        h = F.layer_norm(x, (self.dim,), eps=1e-6) * (1 + sc2) + sh2
        return x + self.f2(F.gelu(self.f0(h), approximate="tanh")) * g2

    def linears_only(self, h, ctx, hid):
        """Every linear of the block once, on inputs of the real shapes (the linear part of the split)."""
        for nm in ("sq", "sk", "sv", "so", "cq", "co"):
            getattr(self, nm)(h)
        self.ck(ctx), self.cv(ctx), self.f0(h), self.f2(hid)


def bench_block(tokens: int, mm_types: list[str], device: torch.device, timer) -> list[dict]:
    """Whole-block time in bf16 and with every linear quantized (each native mm_type), with the split."""
    blk = WanBlock(device=device)
    x = torch.randn(1, tokens, blk.dim, device=device, dtype=torch.bfloat16)
    ctx = torch.randn(1, 512, blk.dim, device=device, dtype=torch.bfloat16)
    hid = torch.randn(1, tokens, blk.f0.out_features, device=device, dtype=torch.bfloat16)
    q = torch.randn_like(x)
    with torch.no_grad():
        attn_ms = timer(lambda: (blk.attn(q, q, q), blk.attn(q, ctx, ctx)))

    def measure():
        block_ms = timer(lambda: blk(x, ctx))
        lin_ms = timer(lambda: blk.linears_only(x, ctx, hid))
        return dict(block_ms=block_ms, linear_ms=lin_ms, attn_ms=attn_ms, other_ms=block_ms - lin_ms - attn_ms,
                    linear_share=lin_ms / block_ms)

    return add_ratios(per_method(blk, mm_types, device, measure), "block_ms")
