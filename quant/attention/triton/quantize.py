"""Pre-pass of the quantized attention: K, V ([B, H, Lk, D], any strides) -> the main kernel's operands.

Two launches, each reading K and V at most once (Q is quantized per token by the main kernel as it loads it, or, in
configs with `q_prepass`, by `quantize_q`: q8 [BH * Lq, DP] int8, qs [BH * Lq] fp32 with the softmax scale):
1. `_stats_kernel`: per (batch x head, chunk of CHUNK keys) the column sums of K and (fp8 mode only: the
   accurate mode does not read V here) the column absmax of V, partials [BH, chunks, DP] fp32 (no atomics,
   deterministic).
2. `_quant_kv_kernel`: K minus its per-channel mean over the keys (softmax-invariant) to int8 per block of
   BLOCK_N keys, k8 [BH * Lk_pad, DP], ks [BH, Lk_pad / BLOCK_N]; V per channel to e4m3, stored
   transposed (K-major for the P @ V tensor-core product) vt [BH * DP, Lk_pad], scale vs [BH, DP]; with
   key_perm the keys of each group of 16 are stored in the order the Hopper kernel writes P's columns in
   (`key_order`); in the accurate mode V is copied unquantized (v16 [BH * Lk_pad, DP], input dtype) instead.
Lk_pad rounds Lk up to BLOCK_N and DP the head dim up to a power of two; padded keys and channels are
zeros, so the main loop needs no masks but the last tile's -inf on padded keys.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import triton
import triton.language as tl

from ...formats import base

ceil_div = base.ceil_div
E4M3_MAX = tl.constexpr(base.E4M3_MAX)
INT8_MAX = tl.constexpr(base.INT8_MAX)
TINY = tl.constexpr(base.TINY)

CHUNK = 2048  # keys per program of the statistics pass
KV_BLOCKS = 8  # key blocks per program of the K/V quantizer (amortises its read of the partials)
ROWS = 32  # rows per step of the statistics pass and per program of the Q quantizer
# 4 warps per program in each launch: H200 sweep at B2 H40 L32760 (bench/results/h200-attention.md), statistics
# 0.33 ms (4.1 TB/s) against 0.63 ms with 64 rows and 8 warps, K/V quantizer 0.61 against 0.82 ms with 8 warps


class Operands(NamedTuple):
    """What the main kernel reads (layouts in the module docstring): v is vt (e4m3) or v16; vs None if accurate."""
    k8: torch.Tensor
    ks: torch.Tensor
    v: torch.Tensor
    vs: Optional[torch.Tensor]
    lk_pad: int


@triton.jit
def _stats_kernel(k_ptr, v_ptr, ksum_ptr, vmax_ptr, H, L, skb, skh, skl, skd, svb, svh, svl, svd,
                  D: tl.constexpr, DP: tl.constexpr, CHUNK: tl.constexpr, ROWS: tl.constexpr, V_MAX: tl.constexpr):
    chunk = tl.program_id(0)
    bh = tl.program_id(1)
    nchunks = tl.num_programs(0)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    cols = tl.arange(0, DP)
    ksum = tl.zeros((ROWS, DP), tl.float32)
    vmax = tl.zeros((ROWS, DP), tl.float32)
    for r0 in range(chunk * CHUNK, tl.minimum(chunk * CHUNK + CHUNK, L), ROWS):
        rows = (r0 + tl.arange(0, ROWS)).to(tl.int64)
        mask = (rows[:, None] < L) & (cols[None, :] < D)
        k = tl.load(k_ptr + b * skb + h * skh + rows[:, None] * skl + cols[None, :] * skd, mask=mask, other=0.0)
        ksum += k.to(tl.float32)
        if V_MAX:
            v = tl.load(v_ptr + b * svb + h * svh + rows[:, None] * svl + cols[None, :] * svd, mask=mask, other=0.0)
            vmax = tl.maximum(vmax, tl.abs(v.to(tl.float32)))
    out = (bh * nchunks + chunk) * DP + cols
    tl.store(ksum_ptr + out, tl.sum(ksum, 0))
    if V_MAX:
        tl.store(vmax_ptr + out, tl.max(vmax, 0))


@triton.jit
def to_int8(x, inv_scale):
    """fp32 values times 1/scale -> int8 codes (round half away from zero, clamped to +-127)."""
    y = tl.minimum(tl.maximum(x * inv_scale, -127.0), 127.0)
    return (y + tl.where(y >= 0, 0.5, -0.5)).to(tl.int8)


@triton.jit
def _quant_q_kernel(q_ptr, q8_ptr, qs_ptr, H, L, sqb, sqh, sql, sqd, qk_scale,
                    D: tl.constexpr, DP: tl.constexpr, ROWS: tl.constexpr):
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, DP)
    mask = (rows[:, None] < L) & (cols[None, :] < D)
    q = tl.load(q_ptr + b * sqb + h * sqh + rows.to(tl.int64)[:, None] * sql + cols[None, :] * sqd,
                mask=mask, other=0.0).to(tl.float32)
    amax = tl.maximum(tl.max(tl.abs(q), 1), TINY)
    out_rows = bh.to(tl.int64) * L + rows
    tl.store(q8_ptr + out_rows[:, None] * DP + cols[None, :], to_int8(q, (1.0 / amax * INT8_MAX)[:, None]),
             mask=rows[:, None] < L)
    tl.store(qs_ptr + out_rows, amax * (qk_scale / INT8_MAX), mask=rows < L)


@triton.jit
def key_order(x, BLOCK_N: tl.constexpr, DP: tl.constexpr):
    """Rows of x [BLOCK_N, DP] reordered within each group of 16: row 16a + 8b + 2u + e goes to 16a + 4u + 2b + e,
    the column order in which hopper_loop.store_p writes P (the same reshape and permute)."""
    return tl.reshape(tl.permute(tl.reshape(x, [BLOCK_N // 16, 2, 4, 2, DP]), [0, 2, 1, 3, 4]), [BLOCK_N, DP])


@triton.jit
def _quant_kv_kernel(k_ptr, v_ptr, ksum_ptr, vmax_ptr, k8_ptr, ks_ptr, vo_ptr, vs_ptr, H, L, L_PAD, NCHUNKS,
                     skb, skh, skl, skd, svb, svh, svl, svd,
                     D: tl.constexpr, DP: tl.constexpr, BLOCK_N: tl.constexpr, NCHUNKS_P: tl.constexpr,
                     KV_BLOCKS: tl.constexpr, ACCURATE: tl.constexpr, KEY_PERM: tl.constexpr):
    bh = tl.program_id(1)
    nkb = L_PAD // BLOCK_N
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    cols = tl.arange(0, DP)
    chunks = tl.arange(0, NCHUNKS_P)
    part = (bh * NCHUNKS + chunks)[:, None] * DP + cols[None, :]
    pmask = chunks[:, None] < NCHUNKS
    mean = tl.sum(tl.load(ksum_ptr + part, mask=pmask, other=0.0), 0) / L
    if not ACCURATE:
        vmax = tl.maximum(tl.max(tl.load(vmax_ptr + part, mask=pmask, other=0.0), 0), TINY)
        if tl.program_id(0) == 0:
            tl.store(vs_ptr + bh * DP + cols, vmax / E4M3_MAX)
    for blk in range(tl.program_id(0) * KV_BLOCKS, tl.minimum(tl.program_id(0) * KV_BLOCKS + KV_BLOCKS, nkb)):
        rows = blk * BLOCK_N + tl.arange(0, BLOCK_N)
        mask = (rows[:, None] < L) & (cols[None, :] < D)
        r64 = rows.to(tl.int64)
        k = tl.load(k_ptr + b * skb + h * skh + r64[:, None] * skl + cols[None, :] * skd, mask=mask, other=0.0)
        k = tl.where(mask, k.to(tl.float32) - mean[None, :], 0.0)
        amax = tl.maximum(tl.max(tl.max(tl.abs(k), 1), 0), TINY)
        out_rows = bh.to(tl.int64) * L_PAD + rows
        tl.store(k8_ptr + out_rows[:, None] * DP + cols[None, :], to_int8(k, 1.0 / amax * INT8_MAX))
        tl.store(ks_ptr + bh * nkb + blk, amax / INT8_MAX)
        v = tl.load(v_ptr + b * svb + h * svh + r64[:, None] * svl + cols[None, :] * svd, mask=mask, other=0.0)
        if ACCURATE:
            tl.store(vo_ptr + out_rows[:, None] * DP + cols[None, :], v)
        else:
            v8 = tl.clamp(v.to(tl.float32) * (1.0 / vmax * E4M3_MAX)[None, :], -E4M3_MAX, E4M3_MAX).to(tl.float8e4nv)
            if KEY_PERM:
                v8 = key_order(v8, BLOCK_N, DP)
            vt_rows = bh.to(tl.int64) * DP + cols
            tl.store(vo_ptr + vt_rows[:, None] * L_PAD + rows[None, :], tl.trans(v8))


def quantize(k: torch.Tensor, v: torch.Tensor, block_n: int, accurate: bool, key_perm: bool = False) -> Operands:
    """k/v [B, H, Lk, D] (any strides) -> the main kernel's Operands (keys padded to block_n); key_perm: vt's
    keys in the Hopper kernel's order (`key_order`, fp8 mode only)."""
    if key_perm and accurate:
        raise ValueError("quantize: key_perm reorders the e4m3 V^T of the fp8 mode; the accurate mode has none")
    bsz, heads, lk, d = k.shape
    bh = bsz * heads
    dp = triton.next_power_of_2(d)
    lk_pad = ceil_div(lk, block_n) * block_n
    nkb = lk_pad // block_n
    nchunks = ceil_div(lk, CHUNK)
    dev = k.device
    f32 = torch.float32
    ksum = torch.empty(bh, nchunks, dp, device=dev, dtype=f32)
    vmax = ksum if accurate else torch.empty(bh, nchunks, dp, device=dev, dtype=f32)  # unused if accurate
    _stats_kernel[(nchunks, bh)](k, v, ksum, vmax, heads, lk, *k.stride(), *v.stride(),
                                 D=d, DP=dp, CHUNK=CHUNK, ROWS=ROWS, V_MAX=not accurate, num_warps=4)
    k8 = torch.empty(bh * lk_pad, dp, device=dev, dtype=torch.int8)
    ks = torch.empty(bh, nkb, device=dev, dtype=f32)
    if accurate:
        vo, vs = torch.empty(bh * lk_pad, dp, device=dev, dtype=v.dtype), None
    else:
        vo = torch.empty(bh * dp, lk_pad, device=dev, dtype=torch.float8_e4m3fn)
        vs = torch.empty(bh, dp, device=dev, dtype=f32)
    _quant_kv_kernel[(ceil_div(nkb, KV_BLOCKS), bh)](
        k, v, ksum, vmax, k8, ks, vo, vs if vs is not None else ks, heads, lk, lk_pad, nchunks, *k.stride(),
        *v.stride(), D=d, DP=dp, BLOCK_N=block_n, NCHUNKS_P=triton.next_power_of_2(nchunks), KV_BLOCKS=KV_BLOCKS,
        ACCURATE=accurate, KEY_PERM=key_perm, num_warps=4)
    return Operands(k8, ks, vo, vs, lk_pad)


def quantize_q(q: torch.Tensor, qk_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """q [B, H, Lq, D] (any strides) -> q8 [BH * Lq, DP] int8 per token, qs [BH * Lq] fp32 (code scale times
    qk_scale, the softmax scale times log2 e); padded channels are zeros."""
    bsz, heads, lq, d = q.shape
    dp = triton.next_power_of_2(d)
    q8 = torch.empty(bsz * heads * lq, dp, device=q.device, dtype=torch.int8)
    qs = torch.empty(bsz * heads * lq, device=q.device, dtype=torch.float32)
    _quant_q_kernel[(ceil_div(lq, ROWS), bsz * heads)](q, q8, qs, heads, lq, *q.stride(), qk_scale,
                                                       D=d, DP=dp, ROWS=ROWS, num_warps=4)
    return q8, qs
