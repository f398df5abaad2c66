"""Main kernel of the quantized attention: one program per (BLOCK_M queries, batch x head), non-causal.

Quantizes its own BLOCK_M queries per token to int8 (q [B, H, Lq, D], any strides; masked loads), or with
Q_PRE reads them quantized by quantize_q (q8 [BH * Lq, DP] through a TMA descriptor, scales qs [BH * Lq]),
and reads the pre-pass's operands (quantize.py) through TMA descriptors: k8 [BH * Lk_pad, DP] int8 and
either vt [BH * DP, Lk_pad] e4m3 (P @ V in e4m3, P scaled by 2**P_LOG2 so it stays clear of e4m3's
subnormals) or v [BH * Lk_pad, DP] in the input dtype (accurate mode, P in that dtype too).
Scores: int8 dot -> int32; the int32 -> fp32 conversion is the magic-number trick (int + bits of 1.5 * 2**23,
read as fp32, is the value + 1.5 * 2**23 exactly while |value| < 2**22, true for D <= 128) and the offset
is folded into the row bias, so a score costs one FMA (q scale * k block scale, softmax scale and log2(e)
are already in the q scale). Online softmax in the exp2 domain, fp32 accumulator; only the last key tile
masks (padded keys -> -inf). Output o [B, Lq, H, D] (any strides, unit channel stride), rows < Lq stored.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from .configs import Config
from .quantize import INT8_MAX, TINY, quantize, quantize_q, to_int8

LOG2E = 1.4426950408889634
MAGIC_I = tl.constexpr(0x4B400000)  # bits of 12582912.0 = 1.5 * 2**23
MAGIC_F = tl.constexpr(12582912.0)
P_LOG2_FP8 = tl.constexpr(8.0)  # fp8 mode: P is scaled by 2**8 before its e4m3 cast (clear of e4m3 subnormals)


@triton.jit
def _scores(q, k_desc, row):
    """q [BLOCK_M, DP] int8 times the key tile at row -> int32 scores read as fp32 (value + MAGIC_F)."""
    k = k_desc.load([row, 0])
    s = tl.dot(q, k.T, out_dtype=tl.int32)
    return (s + MAGIC_I).to(tl.float32, bitcast=True)


@triton.jit
def _update(acc, l_i, m_i, sf, cs, v_desc, kv_row, vt_row, j, LK, BLOCK_N: tl.constexpr, P_LOG2: tl.constexpr,
            MASK: tl.constexpr, ACCURATE: tl.constexpr):
    """One key tile of the online softmax: sf [BLOCK_M, BLOCK_N] offset scores, cs [BLOCK_M] their scale."""
    if MASK:
        valid = (j * BLOCK_N + tl.arange(0, BLOCK_N)) < LK
        smax = tl.max(tl.where(valid[None, :], sf, 0.0), 1)
    else:
        smax = tl.max(sf, 1)
    m_new = tl.maximum(m_i, (smax - MAGIC_F) * cs)
    alpha = tl.math.exp2(m_i - m_new)
    l_i = l_i * alpha
    acc = acc * alpha[:, None]
    m_i = m_new
    x = sf * cs[:, None] - (m_i + MAGIC_F * cs - P_LOG2)[:, None]
    if MASK:
        x = tl.where(valid[None, :], x, float("-inf"))
    p = tl.math.exp2(x)
    l_i += tl.sum(p, 1)
    if ACCURATE:
        v = v_desc.load([kv_row, 0])
        acc = tl.dot(p.to(v.dtype), v, acc)
    else:
        vt = v_desc.load([vt_row, j * BLOCK_N])
        acc = tl.dot(p.to(tl.float8e4nv), vt.T, acc)
    return acc, l_i, m_i


@triton.jit
def attn_kernel(q_ptr, sqb, sqh, sql, sqd, qk_scale, q_desc, qs_ptr, k_desc, v_desc, ks_ptr, vs_ptr, o_ptr, H, LQ,
                LK, LK_PAD, sob, sol, soh,
                D: tl.constexpr, DP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                ACCURATE: tl.constexpr, PIPE: tl.constexpr, Q_PRE: tl.constexpr):
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    P_LOG2: tl.constexpr = 0.0 if ACCURATE else P_LOG2_FP8
    nkb = LK_PAD // BLOCK_N
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, DP)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    if Q_PRE:
        q = q_desc.load([bh * LQ + pid_m * BLOCK_M, 0])
        qs = tl.load(qs_ptr + bh.to(tl.int64) * LQ + rows, mask=rows < LQ, other=0.0)
    else:
        q_ptrs = q_ptr + b * sqb + h * sqh + rows.to(tl.int64)[:, None] * sql + cols[None, :] * sqd
        q = tl.load(q_ptrs, mask=(rows[:, None] < LQ) & (cols[None, :] < D), other=0.0).to(tl.float32)
        amax = tl.maximum(tl.max(tl.abs(q), 1), TINY)
        q = to_int8(q, (1.0 / amax * INT8_MAX)[:, None])
        qs = amax * (qk_scale / INT8_MAX)
    kv0 = bh * LK_PAD
    vt0 = bh * DP
    ks_base = ks_ptr + bh * nkb
    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, DP), tl.float32)
    if PIPE:
        sf = _scores(q, k_desc, kv0)
        for j in range(nkb - 1):
            sf_next = _scores(q, k_desc, kv0 + (j + 1) * BLOCK_N)
            cs = qs * tl.load(ks_base + j)
            acc, l_i, m_i = _update(acc, l_i, m_i, sf, cs, v_desc, kv0 + j * BLOCK_N, vt0, j, LK,
                                    BLOCK_N, P_LOG2, False, ACCURATE)
            sf = sf_next
    else:
        for j in range(nkb - 1):
            sf = _scores(q, k_desc, kv0 + j * BLOCK_N)
            cs = qs * tl.load(ks_base + j)
            acc, l_i, m_i = _update(acc, l_i, m_i, sf, cs, v_desc, kv0 + j * BLOCK_N, vt0, j, LK,
                                    BLOCK_N, P_LOG2, False, ACCURATE)
        sf = _scores(q, k_desc, kv0 + (nkb - 1) * BLOCK_N)
    cs = qs * tl.load(ks_base + nkb - 1)
    acc, l_i, m_i = _update(acc, l_i, m_i, sf, cs, v_desc, kv0 + (nkb - 1) * BLOCK_N, vt0, nkb - 1, LK,
                            BLOCK_N, P_LOG2, True, ACCURATE)
    out = acc / l_i[:, None]
    if not ACCURATE:
        out = out * tl.load(vs_ptr + bh * DP + cols)[None, :]
    ptrs = o_ptr + b * sob + h * soh + rows.to(tl.int64)[:, None] * sol + cols[None, :]
    tl.store(ptrs, out.to(o_ptr.dtype.element_ty), mask=(rows[:, None] < LQ) & (cols[None, :] < D))


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, accurate: bool,
              cfg: Config) -> torch.Tensor:
    """q [B, H, Lq, D], k/v [B, H, Lk, D] (any strides) -> [B, H, Lq, D] in q.dtype, storage [B, Lq, H, D]."""
    bsz, heads, lq, d = q.shape
    lk = k.shape[2]
    ops = quantize(k, v, cfg.block_n, accurate)
    dp = ops.k8.shape[1]
    bm, bn = cfg.block_m, cfg.block_n
    k_desc = TensorDescriptor(ops.k8, list(ops.k8.shape), [dp, 1], [bn, dp])
    v_box = [bn, dp] if accurate else [dp, bn]
    v_desc = TensorDescriptor(ops.v, list(ops.v.shape), [ops.v.stride(0), 1], v_box)
    q_desc, qs = k_desc, ops.ks  # unread placeholders unless cfg.q_prepass
    if cfg.q_prepass:
        q8, qs = quantize_q(q, scale * LOG2E)
        q_desc = TensorDescriptor(q8, list(q8.shape), [dp, 1], [bm, dp])
    out = torch.empty(bsz, lq, heads, d, device=q.device, dtype=q.dtype)
    vs = ops.vs if ops.vs is not None else ops.ks
    grid = (triton.cdiv(lq, bm), bsz * heads)
    attn_kernel[grid](q, *q.stride(), scale * LOG2E, q_desc, qs, k_desc, v_desc, ops.ks, vs, out, heads, lq, lk,
                      ops.lk_pad, out.stride(0), out.stride(1), out.stride(2), D=d, DP=dp, BLOCK_M=bm, BLOCK_N=bn,
                      ACCURATE=accurate, PIPE=cfg.pipe, Q_PRE=cfg.q_prepass, num_warps=cfg.num_warps,
                      num_stages=cfg.num_stages, maxnreg=cfg.maxnreg or None)
    return out.transpose(1, 2)
