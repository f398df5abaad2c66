"""Whole text / vision encoders at real shapes in bf16 vs every linear quantized (`bench.linears --encoders`).

T5-XXL: the text encoder of Wan (umT5-XXL) and Flux (T5 v1.1-XXL), 512 tokens; CLIP ViT-H/14: Wan 2.1
i2v's image encoder, 257 tokens. At these M each linear is short on the GPU, so the eager CPU cost of a
call shows: besides the GPU time the rows give the host time to issue one forward.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable

import torch
from torch import nn

from .models import add_ratios, mha, per_method, random_linear

F = torch.nn.functional


class T5Layer(nn.Module):
    """Pre-RMS-norm self-attention (no biases, unscaled scores, an additive position bias) and a
    gated-GELU FFN: wo(gelu(wi_0 x) * wi_1 x)."""

    def __init__(self, dim: int, heads: int, ffn: int, device=None, dtype=torch.bfloat16):
        super().__init__()
        self.heads = heads
        for nm, i, o in (("q", dim, dim), ("k", dim, dim), ("v", dim, dim), ("o", dim, dim),
                         ("wi_0", dim, ffn), ("wi_1", dim, ffn), ("wo", ffn, dim)):
            setattr(self, nm, random_linear(i, o, bias=False, device=device, dtype=dtype))
        self.norms = nn.Parameter(torch.ones(2, dim, device=device, dtype=dtype), requires_grad=False)

    def forward(self, x: torch.Tensor, pos_bias: torch.Tensor) -> torch.Tensor:
        h = F.rms_norm(x, x.shape[-1:], self.norms[0], eps=1e-6)
        x = x + self.o(mha(self.q(h), self.k(h), self.v(h), self.heads, attn_mask=pos_bias, scale=1.0))
        h = F.rms_norm(x, x.shape[-1:], self.norms[1], eps=1e-6)
        return x + self.wo(F.gelu(self.wi_0(h), approximate="tanh") * self.wi_1(h))


class T5Encoder(nn.Module):
    """T5-XXL encoder stack (24 layers, d 4096, 64 heads, FFN 10240); x [B, L, d] -> [B, L, d]. The
    relative position bias [1, heads, L, L] is random and computed once (its buckets cost nothing here)."""

    def __init__(self, layers=24, dim=4096, heads=64, ffn=10240, device=None, dtype=torch.bfloat16):
        super().__init__()
        self.dim, self.heads = dim, heads
        self.layers = nn.ModuleList(T5Layer(dim, heads, ffn, device, dtype) for _ in range(layers))
        self.norm = nn.Parameter(torch.ones(dim, device=device, dtype=dtype), requires_grad=False)

    def forward(self, x: torch.Tensor, pos_bias: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, pos_bias)
        return F.rms_norm(x, x.shape[-1:], self.norm, eps=1e-6)

    def inputs(self, tokens: int, device) -> tuple:
        gen = torch.Generator(device=device).manual_seed(0)
        dt = self.norm.dtype
        return (torch.randn(1, tokens, self.dim, device=device, generator=gen).to(dt),
                torch.randn(1, self.heads, tokens, tokens, device=device, generator=gen).to(dt))


class ClipLayer(nn.Module):
    """Pre-LayerNorm self-attention (biased q/k/v/out projections) and a GELU MLP fc2(gelu(fc1 x))."""

    def __init__(self, dim: int, heads: int, mlp: int, device=None, dtype=torch.bfloat16):
        super().__init__()
        self.heads = heads
        for nm, i, o in (("q", dim, dim), ("k", dim, dim), ("v", dim, dim), ("out", dim, dim),
                         ("fc1", dim, mlp), ("fc2", mlp, dim)):
            setattr(self, nm, random_linear(i, o, device=device, dtype=dtype))
        self.ln1 = nn.LayerNorm(dim, device=device, dtype=dtype)
        self.ln2 = nn.LayerNorm(dim, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln1(x)
        x = x + self.out(mha(self.q(h), self.k(h), self.v(h), self.heads))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class ClipVision(nn.Module):
    """CLIP ViT-H/14 vision tower after the patch embedding (32 layers, width 1280, 16 heads, MLP 5120);
    x [B, 257, d] -> [B, 257, d]."""

    def __init__(self, layers=32, dim=1280, heads=16, mlp=5120, device=None, dtype=torch.bfloat16):
        super().__init__()
        self.dim = dim
        self.layers = nn.ModuleList(ClipLayer(dim, heads, mlp, device, dtype) for _ in range(layers))
        self.post_ln = nn.LayerNorm(dim, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.post_ln(x)

    def inputs(self, tokens: int, device) -> tuple:
        gen = torch.Generator(device=device).manual_seed(0)
        return (torch.randn(1, tokens, self.dim, device=device, generator=gen).to(self.post_ln.weight.dtype),)


# Forwards before timing: compile and autotune on the first, the launch plans (kernels.triton_plan) are
# recorded on the third call of each shape; the timer's own estimate of a forward's length comes after.
WARMUP_FORWARDS = 3

# bf16 and every method are timed in turn this many times: on the device host the CPU's speed drifts
# by up to 2x between seconds (bench/NOTES.md v9), and these forwards are bound by it.
ROUNDS = 3

# name -> (model class, tokens)
ENCODERS: dict[str, tuple[type, int]] = {"t5xxl": (T5Encoder, 512), "clip-h": (ClipVision, 257)}


def host_ms(fn: Callable[[], object], device: torch.device, runs: int = 9) -> float:
    """Median wall-clock milliseconds to issue fn() (the GPU drained before each run): the CPU cost."""
    times = []
    for _ in range(runs):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return statistics.median(times)


def bench_encoder(name: str, mm_types: list[str], device: torch.device, timer,
                  model: nn.Module | None = None, rounds: int = ROUNDS) -> list[dict]:
    """One encoder's forward in bf16 and with every linear quantized (each native mm_type): time, ratio
    and host (enqueue) time, medians over `rounds` rounds, and each round's ratio. `model` overrides
    the real-size one (tests use tiny ones)."""
    cls, tokens = ENCODERS[name]
    if model is None:
        model = cls(device=device)
    args = model.inputs(tokens, device)

    def measure():
        fn = lambda: model(*args)  # noqa: E731
        for _ in range(WARMUP_FORWARDS):
            fn()
        return dict(encoder=name, tokens=tokens, ms=timer(fn), host_ms=host_ms(fn, device))

    return combine_rounds([add_ratios(per_method(model, mm_types, device, measure), "ms") for _ in range(rounds)])


def combine_rounds(runs: list[list[dict]]) -> list[dict]:
    """One row per method (first round's order): median ms, host ms and ratio over the rounds it ran in,
    plus `round_ratios`, each round's ratio to that round's bf16."""
    by: dict[str, list[dict]] = {}
    for rows in runs:
        for r in rows:
            by.setdefault(r["method"], []).append(r)
    out = []
    for rs in by.values():
        ratios = [r["ratio"] for r in rs if r["ratio"] is not None]
        out.append(dict(rs[0], ms=statistics.median(r["ms"] for r in rs),
                        host_ms=statistics.median(r["host_ms"] for r in rs),
                        ratio=statistics.median(ratios) if ratios else None, round_ratios=ratios))
    return out
