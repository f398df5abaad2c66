"""Per-token x per-channel W8A8 with the activation quantizer inside one persistent GEMM launch (Hopper+, large M).

y[M, N] = quant(x)[M, K] @ W[N, K]^T * sa[M] * sw[N] + bias, x bf16/fp16, W int8/e4m3 (K-major).
One program per SM claims work items in order from an atomic counter. Two kinds of item:
- Q(r): quantize the BLOCK_M tokens of row block r (absmax pass, then codes; the quantizer's own math,
  triton_quant._to_q) into the scratch q [M, K] and sa [M], then raise flag r (release);
- G(r, n): one output tile; waits for flag r (acquire), then the GEMM over K (A from q through L2, W
  through TMA) with scales, bias and cast in the epilogue.
The list runs in groups of GROUP_M row blocks (tiles column-major inside a group, so a W tile is reused
by the group while it sits in L2); the Q items of group g + LOOKAHEAD are spread through group g's
tiles. Programs busy with memory-bound Q items overlap programs in compute-bound G items, which two
back-to-back launches (quantizer, then GEMM) cannot do. A G item's Q was claimed earlier by a running
program, so the waits always end (no co-residency assumption).
sync [1 + row blocks] int32, zeroed per call: the work counter, then one flag per row block.
"""
from __future__ import annotations

import triton
import triton.language as tl

from .triton_quant import _to_q


@triton.jit
def _decode(item, R, T, GROUP_M: tl.constexpr, LOOKAHEAD: tl.constexpr):
    """Work item -> (is_q, row block, column tile); row block -1 for an empty Q slot."""
    prefix = min(LOOKAHEAD * GROUP_M, R)
    i = item - prefix
    span = GROUP_M * (T + 1)
    g = i // span
    s = i % span
    j = s // (T + 1)
    u = s % (T + 1)
    size_g = min(GROUP_M, R - g * GROUP_M)
    q_row = (g + LOOKAHEAD) * GROUP_M + j
    t = j * T + u - 1
    is_q = (item < prefix) | (u == 0)
    row = tl.where(item < prefix, item, tl.where(u == 0, tl.where(q_row < R, q_row, -1), g * GROUP_M + t % size_g))
    return is_q, row, t // size_g


@triton.jit
def _w8a8_overlap_kernel(x_ptr, q_ptr, sa_ptr, b_desc, c_desc, sb_ptr, bias_ptr, sync_ptr, M, N, K,
                         stride_xm, stride_qm,
                         HAS_BIAS: tl.constexpr, IS_INT: tl.constexpr, QMAX: tl.constexpr, TINY_: tl.constexpr,
                         BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                         QBLOCK_K: tl.constexpr, GROUP_M: tl.constexpr, LOOKAHEAD: tl.constexpr):
    R = tl.cdiv(M, BLOCK_M)
    T = tl.cdiv(N, BLOCK_N)
    total = min(LOOKAHEAD * GROUP_M, R) + R * (T + 1)  # the leading Q items, then a Q slot per T tiles
    acc_dtype = tl.int32 if IS_INT else tl.float32
    offs_k = tl.arange(0, BLOCK_K)
    offs_qk = tl.arange(0, QBLOCK_K)
    item = tl.atomic_add(sync_ptr, 1)
    while item < total:
        is_q, r, n = _decode(item, R, T, GROUP_M, LOOKAHEAD)
        rm = r * BLOCK_M + tl.arange(0, BLOCK_M)
        mmask = rm < M
        rows = rm.to(tl.int64)
        if is_q:
            if r >= 0:
                xrow = x_ptr + rows[:, None] * stride_xm + offs_qk[None, :]
                qrow = q_ptr + rows[:, None] * stride_qm + offs_qk[None, :]
                amax = tl.zeros((BLOCK_M,), dtype=tl.float32)
                for k0 in range(0, K, QBLOCK_K):
                    kmask = mmask[:, None] & (k0 + offs_qk < K)[None, :]
                    xv = tl.load(xrow + k0, mask=kmask, other=0.0).to(tl.float32)
                    amax = tl.maximum(amax, tl.max(tl.abs(xv), axis=1))
                sa = tl.maximum(amax, TINY_) / QMAX
                for k0 in range(0, K, QBLOCK_K):
                    kmask = mmask[:, None] & (k0 + offs_qk < K)[None, :]
                    xv = tl.load(xrow + k0, mask=kmask, other=0.0).to(tl.float32)
                    tl.store(qrow + k0, _to_q(xv, sa[:, None], QMAX, IS_INT).to(q_ptr.dtype.element_ty), mask=kmask)
                tl.store(sa_ptr + rows, sa, mask=mmask)
                tl.debug_barrier()
                tl.atomic_xchg(sync_ptr + 1 + r, 1, sem="release")
        else:
            while tl.atomic_add(sync_ptr + 1 + r, 0, sem="acquire") == 0:
                pass
            on = n * BLOCK_N
            a_ptrs = q_ptr + rows[:, None] * stride_qm + offs_k[None, :]
            acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=acc_dtype)
            for k0 in range(0, K, BLOCK_K):
                a = tl.load(a_ptrs + k0, mask=mmask[:, None] & (k0 + offs_k < K)[None, :], other=0.0,
                            cache_modifier=".cg")
                b = b_desc.load([on, k0])
                acc = tl.dot(a, b.T, acc, out_dtype=acc_dtype)
            rn = on + tl.arange(0, BLOCK_N)
            sa = tl.load(sa_ptr + rows, mask=mmask, other=0.0, cache_modifier=".cg")
            sb = tl.load(sb_ptr + rn, mask=rn < N, other=0.0)
            out = acc.to(tl.float32) * sa[:, None] * sb[None, :]
            if HAS_BIAS:
                out += tl.load(bias_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
            c_desc.store([r * BLOCK_M, on], out.to(c_desc.dtype))
        item = tl.atomic_add(sync_ptr, 1)


def launch(x, w, sw, bias, meta: dict, programs: int):
    """x [M, K] float, w [N, K] int8/e4m3, sw [N, 1] fp32, bias [N] or None -> [M, N] in x.dtype.

    meta: BLOCK_M, BLOCK_N, BLOCK_K, QBLOCK_K, GROUP_M, LOOKAHEAD, num_warps, num_stages.
    """
    import torch
    from triton.tools.tensor_descriptor import TensorDescriptor

    from ..formats.base import E4M3_MAX, INT8_MAX, TINY, ceil_div

    m, k = x.shape
    n = w.shape[0]
    is_int = w.dtype == torch.int8
    consts = {key: v for key, v in meta.items() if key not in ("num_warps", "num_stages")}
    bm, bn, bk = consts["BLOCK_M"], consts["BLOCK_N"], consts["BLOCK_K"]
    q = torch.empty((m, k), device=x.device, dtype=w.dtype)
    sa = torch.empty((m,), device=x.device, dtype=torch.float32)
    sync = torch.zeros((1 + ceil_div(m, bm),), device=x.device, dtype=torch.int32)
    c = torch.empty((m, n), device=x.device, dtype=x.dtype)
    b_desc = TensorDescriptor(w, [n, k], [w.stride(0), 1], [bn, bk])
    c_desc = TensorDescriptor(c, [m, n], [c.stride(0), 1], [bm, bn])
    _w8a8_overlap_kernel[(programs,)](x, q, sa, b_desc, c_desc, sw, bias if bias is not None else sw, sync, m, n, k,
                                      x.stride(0), q.stride(0), HAS_BIAS=bias is not None, IS_INT=is_int,
                                      QMAX=INT8_MAX if is_int else E4M3_MAX, TINY_=TINY, **consts,
                                      num_warps=meta["num_warps"], num_stages=meta["num_stages"])
    return c
