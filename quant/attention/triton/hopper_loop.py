"""Consumer main loop of the Hopper (sm90) attention kernel (hopper.py), written in Gluon.

Layouts: S [BM, BN] int32 and O [BM, DP] fp32 in the wgmma accumulator layout `mma`; K stages [BN, DP] int8 and P
buffers [BM, BN] in shared memory (128-byte swizzle), P in V's dtype; Q [BM, DP] int8 in shared memory. fp8 mode:
V^T stages [DP, BN] e4m3 with their keys in quantize.key_order, P's columns in the same order; accurate mode: V
stages [BN, DP] in the input dtype (bf16 / fp16, the wgmma reads them N-major), P in that dtype. Math as
kernel.py's: int8 scores, the magic-number int32 -> fp32 conversion folded into the row bias, online softmax in
the exp2 domain, fp32 accumulator; the fp8 mode scales P by 2**P_LOG2 before its e4m3 cast.

Schedule (three consumer warpgroups at 160 registers a thread, hopper.py): iteration j issues QK^T(j) and
PV(j-1), waits for S_j only and runs softmax(j) while PV(j-1) is on the tensor cores (FlashAttention-3's
within a warpgroup); the other consumers' wgmmas keep the tensor cores busy while one waits for its S. Q stays
in shared memory. H200: 1.06-1.08x (fp8) and 1.10-1.19x (accurate) a "deep" schedule with two consumers at 240
registers (QK^T(j+1) and PV(j-1) in flight during softmax(j), a second S in registers), which it replaced.
One wait retires the PV, so no wgmma is in flight across the loop's back edge, and P goes through one
shared-memory buffer per consumer, stored after that wait (P_j overwrites P_{j-1}): the three barriers per tile
(two placed by Triton's shared-memory hazard analysis, one around the stage release) then all fall after the
wait, where the warpgroup's warps are in step (H200: 3-6% faster than a P stored during the softmax). A P in
registers as the PV wgmma's A operand was measured faster but wrong: ptxas does not keep an in-flight wgmma's A
registers alive, and reused them for the next softmax (NaN rows on the H200; bench/results/h200-attention.md);
keeping them alive costs a repack of Triton's 8-bit values every tile (698 SASS instructions per tile instead
of 521).
"""
from __future__ import annotations

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (fence_async_shared, mbarrier, warpgroup_mma,
                                                              warpgroup_mma_wait)

from .hopper_rescale import TAU_ACCURATE, rescale_lazy
from .kernel import MAGIC_F, MAGIC_I, P_LOG2_FP8

# partition-wide barrier: gl.thread_barrier up to Triton 3.6, gl.barrier from 3.7 on
_barrier = getattr(gl, "thread_barrier", None) or gl.barrier


@gluon.jit
def release(bar):
    """Arrive once on a stage's empty barrier (one elected thread, after the wgmma wait that retired its reads)."""
    mbarrier.arrive(bar, count=1)


@gluon.jit
def softmax_tile(s, cs, m_i, l_i, col0, LK, MASK: gl.constexpr, P_LOG2: gl.constexpr, P_DTYPE: gl.constexpr,
                 mma: gl.constexpr, TAU: gl.constexpr):
    """One tile of the online softmax. s [BM, BN] int32 scores (layout mma), cs [BM] their scale (q scale *
    k block scale), m_i / l_i [BM] running max / sum; MASK: keys >= LK get -inf (last tile only); TAU > 0: the
    running max moves only where a row's max passes it by more than TAU (hopper_rescale). Returns P * 2**P_LOG2
    in P_DTYPE (layout mma), the accumulator rescale alpha, the new m_i, l_i, and where the max moved (int32)."""
    si = s + MAGIC_I  # the bits of value + MAGIC_F (exact for |value| < 2**22): positive floats, ordered as ints
    sf = si.to(gl.float32, bitcast=True)
    if MASK:
        cols = col0 + gl.arange(0, s.shape[1], layout=gl.SliceLayout(0, mma))
        valid = gl.expand_dims(cols < LK, 0)
        smax = gl.max(gl.where(valid, si, 0), 1)
    else:
        smax = gl.max(si, 1)  # int32 max: 3-input VIMNMX3 on sm90 (H200: 1.04-1.06x the float max, fp8 mode)
    smax = (smax.to(gl.float32, bitcast=True) - MAGIC_F) * cs
    if TAU > 0:
        moved = smax > m_i + TAU
        m_new = gl.where(moved, smax, m_i)
    else:
        m_new = gl.maximum(m_i, smax)
        moved = m_new > m_i
    alpha = gl.exp2(m_i - m_new)
    bias = m_new + MAGIC_F * cs - P_LOG2
    x = sf * gl.expand_dims(cs, 1) - gl.expand_dims(bias, 1)
    if MASK:
        x = gl.where(valid, x, float("-inf"))
    p = gl.exp2(x)
    l_i = l_i * alpha + gl.sum(p, 1)
    return p.to(P_DTYPE), alpha, m_new, l_i, moved.to(gl.int32)


@gluon.jit
def _rows_of(x, acc):
    """Row vector x in the row layout of the accumulator acc (a no-op when they already match)."""
    return gl.expand_dims(gl.convert_layout(x, gl.SliceLayout(1, acc.type.layout)), 1)


@gluon.jit
def _rescaled(acc, alpha, moved, LAZY: gl.constexpr):
    """O * alpha by rows: the accurate mode skips threads whose rows kept their max (hopper_rescale)."""
    if LAZY:
        acc = rescale_lazy(acc, _rows_of(alpha, acc), moved)
    else:
        acc = acc * _rows_of(alpha, acc)
    return acc


@gluon.jit
def store_p(p_smem, buf, p, ACCURATE: gl.constexpr):
    """P tile [BM, BN] (layout mma) -> p_smem.index(buf), made visible to the wgmma (async proxy). In e4m3 the
    columns are relabelled first (column 16a + 8b + 2u + e -> 16a + 4u + 2b + e, free in registers): each thread
    then holds 4 adjacent bytes per row, and the store is 4 stmatrix instead of 32 two-byte stores per thread.
    The values tile V^T is stored with its keys in the same order (quantize.key_order), so P V is unchanged.
    A 16-bit P (accurate mode) already holds 4 adjacent bytes per row and is stored as it is."""
    BM: gl.constexpr = p.shape[0]
    BN: gl.constexpr = p.shape[1]
    if not ACCURATE:
        p = gl.reshape(gl.permute(gl.reshape(p, [BM, BN // 16, 2, 4, 2]), [0, 1, 3, 2, 4]), [BM, BN])
    p_smem.index(buf).store(p)
    fence_async_shared()


@gluon.jit
def _qk(q_s, k_smem, k_ready, j, STAGES: gl.constexpr, zero_s):
    """Waits for key tile j and issues S = Q K_j^T (async, int32)."""
    st = j % STAGES
    mbarrier.wait(k_ready.index(st), (j // STAGES) & 1)
    return warpgroup_mma(q_s, k_smem.index(st).permute((1, 0)), zero_s, use_acc=False, is_async=True)


@gluon.jit
def _pv(p_smem, v_smem, v_ready, acc, j, P0: gl.constexpr, STAGES: gl.constexpr, ACCURATE: gl.constexpr):
    """Waits for value tile j and issues O += P_j V_j (async) with P_j from buffer P0."""
    st = j % STAGES
    mbarrier.wait(v_ready.index(st), (j // STAGES) & 1)
    v = v_smem.index(st)
    if not ACCURATE:
        v = v.permute((1, 0))  # V^T stage [DP, BN] -> [BN, DP], K-major as e4m3 wgmma operands must be
    return warpgroup_mma(p_smem.index(P0), v, acc, is_async=True)


@gluon.jit
def _retire(acc, p, alpha, moved, p_smem, empty, j, P0: gl.constexpr, STAGES: gl.constexpr,
            ACCURATE: gl.constexpr):
    """After the wait that retired PV(j - 1): frees its stage, stores P_j in its place, rescales O."""
    _barrier()  # PV(j - 1) retired in every warp: its stage and P buffer are free
    release(empty.index((j - 1) % STAGES))
    store_p(p_smem, P0, p, ACCURATE)
    _barrier()  # P_j stored and fenced by every thread before the next PV reads it
    return _rescaled(acc, alpha, moved, ACCURATE)


@gluon.jit
def attend(q_s, k_smem, v_smem, p_smem, k_ready, v_ready, empty, ks_ptr, qs, nkb, LK,
           P0: gl.constexpr, STAGES: gl.constexpr, ACCURATE: gl.constexpr, mma: gl.constexpr, mma_o: gl.constexpr):
    """The main loop over nkb >= 2 key tiles for BM query rows (q_s [BM, DP] in shared memory, qs [BM] their
    scales, ks_ptr the head's key-block scales) in either mode (ACCURATE: 16-bit P and V). P buffer P0 of p_smem.
    A stage (K and V tile) is released once, after the PV that last reads it. S uses layout mma, O mma_o (the
    P V wgmma's: its K step depends on the operand width). Returns O [BM, DP] fp32 (unnormalised) and l [BM]
    (sum of P * 2**P_LOG2), both in mma_o's rows."""
    P_LOG2: gl.constexpr = 0.0 if ACCURATE else P_LOG2_FP8
    TAU: gl.constexpr = TAU_ACCURATE if ACCURATE else 0.0  # fp8: the exact running max
    PD: gl.constexpr = p_smem.dtype
    BM: gl.constexpr = q_s.shape[0]
    DP: gl.constexpr = q_s.shape[1]
    BN: gl.constexpr = k_smem.shape[1]
    row_l: gl.constexpr = gl.SliceLayout(1, mma)
    m_i = gl.full([BM], float("-inf"), gl.float32, row_l)
    l_i = gl.full([BM], 0.0, gl.float32, row_l)
    acc = gl.full([BM, DP], 0.0, gl.float32, mma_o)
    zero_s = gl.full([BM, BN], 0, gl.int32, mma)

    s = warpgroup_mma_wait(num_outstanding=0, deps=[_qk(q_s, k_smem, k_ready, 0, STAGES, zero_s)])
    p, alpha, m_i, l_i, moved = softmax_tile(s, qs * gl.load(ks_ptr), m_i, l_i, 0, LK, False, P_LOG2, PD, mma,
                                             TAU)
    store_p(p_smem, P0, p, ACCURATE)
    _barrier()  # every thread's P stores are done before any wgmma reads them
    for j in range(1, nkb - 1):  # S_j first, PV(j - 1) in flight during softmax(j)
        s_tok = _qk(q_s, k_smem, k_ready, j, STAGES, zero_s)
        a_tok = _pv(p_smem, v_smem, v_ready, acc, j - 1, P0, STAGES, ACCURATE)
        s = warpgroup_mma_wait(num_outstanding=1, deps=[s_tok])
        p, alpha, m_i, l_i, moved = softmax_tile(s, qs * gl.load(ks_ptr + j), m_i, l_i, 0, LK, False, P_LOG2,
                                                 PD, mma, TAU)
        acc = warpgroup_mma_wait(num_outstanding=0, deps=[a_tok])
        acc = _retire(acc, p, alpha, moved, p_smem, empty, j, P0, STAGES, ACCURATE)
    last = nkb - 1
    s_tok = _qk(q_s, k_smem, k_ready, last, STAGES, zero_s)
    a_tok = _pv(p_smem, v_smem, v_ready, acc, last - 1, P0, STAGES, ACCURATE)
    s = warpgroup_mma_wait(num_outstanding=1, deps=[s_tok])
    p, alpha, m_i, l_i, moved = softmax_tile(s, qs * gl.load(ks_ptr + last), m_i, l_i, last * BN, LK, True, P_LOG2,
                                             PD, mma, TAU)
    acc = warpgroup_mma_wait(num_outstanding=0, deps=[a_tok])
    acc = _retire(acc, p, alpha, moved, p_smem, empty, last, P0, STAGES, ACCURATE)
    acc = warpgroup_mma_wait(num_outstanding=0,
                             deps=[_pv(p_smem, v_smem, v_ready, acc, last, P0, STAGES, ACCURATE)])
    release(empty.index(last % STAGES))
    return acc, gl.convert_layout(l_i, gl.SliceLayout(1, mma_o))
