"""Consumer main loops of the experimental Gluon attention (bench/gluon_attention.py): the online softmax
of one tile and the two schedules ("deep" and FA3's), with the stage releases and the e4m3 register keeper.
Layouts: S [BM, BLOCK_N] int32 and O [BM, DP] fp32 in the wgmma accumulator layout `mma`, P in e4m3 in the
wgmma A-operand layout `dot`; K stages [BLOCK_N, DP] int8, V^T stages [DP, BLOCK_N] e4m3 in shared memory.
"""
from __future__ import annotations

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (fence_async_shared, mbarrier, warpgroup_mma,
                                                              warpgroup_mma_wait)

MAGIC_I = gl.constexpr(0x4B400000)  # bits of 12582912.0 = 1.5 * 2**23
MAGIC_F = gl.constexpr(12582912.0)
P_LOG2 = gl.constexpr(8.0)  # P is scaled by 2**8 before the e4m3 cast (clear of e4m3 subnormals)


@gluon.jit
def _release(bar, pred, SYNC: gl.constexpr):
    """Arrive once on an empty barrier (one elected thread); SYNC first joins all warps of the partition,
    needed when it spans two warpgroups (the elected thread's wgmma wait covers its own warpgroup only).
    Triton 3.6 already puts a partition-wide bar.sync before every mbarrier arrive (checked in the SASS),
    so SYNC only makes that explicit."""
    if SYNC:
        gl.thread_barrier()
    mbarrier.arrive(bar, count=1, pred=pred)


@gluon.jit
def _keep(x):
    """Identity that the compiler cannot see through: a use of an e4m3 wgmma A operand placed after the
    wgmma wait that retires it, so its registers stay untouched while the wgmma reads them
    (warpgroup_mma_wait's deps reject 8-bit tensors in Triton 3.6)."""
    return gl.inline_asm_elementwise("mov.b32 $0, $1;", "=r,r", [x], dtype=gl.float8e4nv, is_pure=False, pack=4)


@gluon.jit
def _softmax(s, cs, m_i, l_i, col0, LK, MASK: gl.constexpr, mma: gl.constexpr, dot: gl.constexpr):
    """One tile of the online softmax. s [BM, BLOCK_N] int32 scores (layout mma), cs [BM] their scale
    (q scale * k block scale), m_i / l_i [BM] running max / sum. Returns P * 2**P_LOG2 in e4m3 in the
    wgmma A-operand layout `dot` (or in `mma` when dot is None), the accumulator rescale alpha, and the new
    m_i, l_i."""
    sf = (s + MAGIC_I).to(gl.float32, bitcast=True)  # value + MAGIC_F, exact for |value| < 2**22
    if MASK:
        cols = col0 + gl.arange(0, s.shape[1], layout=gl.SliceLayout(0, mma))
        valid = gl.expand_dims(cols < LK, 0)
        smax = gl.max(gl.where(valid, sf, 0.0), 1)
    else:
        smax = gl.max(sf, 1)
    m_new = gl.maximum(m_i, (smax - MAGIC_F) * cs)
    alpha = gl.exp2(m_i - m_new)
    bias = m_new + MAGIC_F * cs - P_LOG2
    x = sf * gl.expand_dims(cs, 1) - gl.expand_dims(bias, 1)
    if MASK:
        x = gl.where(valid, x, float("-inf"))
    p = gl.exp2(x)
    l_i = l_i * alpha + gl.sum(p, 1)
    p8 = p.to(gl.float8e4nv)
    if dot is not None:
        p8 = gl.convert_layout(p8, dot)
    return p8, alpha, m_new, l_i


@gluon.jit
def loop_deep(q_s, k_smem, v_smem, k_ready, k_empty, v_ready, v_empty, ks_ptr, qs, nkb, LK,
               STAGES: gl.constexpr, BM: gl.constexpr, BN: gl.constexpr, DP: gl.constexpr,
               mma: gl.constexpr, dot: gl.constexpr, SYNC: gl.constexpr):
    """Main loop, deep schedule (nkb >= 2). Iteration j (entry: S_j and P_{j-1} in registers, O rescaled to
    m_{j-1}): issue PV(j-1) and QK^T(j+1), run softmax(j) while both are on the tensor cores, wait(0), rescale
    O. Every wgmma is retired by the wait of the iteration that issued it, and the in-flight A operand
    P_{j-1} is the loop-carried value that the `_keep` after the wait reads again: ptxas does not keep an
    in-flight wgmma's A registers alive by itself, so a P produced in one iteration and still read by a wgmma
    in the next gets its registers reused by the next softmax (found as NaN rows at large shapes; the SASS
    showed the A registers overwritten before WARPGROUP.DEPBAR). Returns O [BM, DP] fp32 and l [BM]."""
    row_l: gl.constexpr = gl.SliceLayout(1, mma)
    m_i = gl.full([BM], float("-inf"), gl.float32, row_l)
    l_i = gl.full([BM], 0.0, gl.float32, row_l)
    acc = gl.full([BM, DP], 0.0, gl.float32, mma)
    zero_s = gl.full([BM, BN], 0, gl.int32, mma)

    mbarrier.wait(k_ready.index(0), 0)
    s = warpgroup_mma(q_s, k_smem.index(0).permute((1, 0)), zero_s, use_acc=False, is_async=True)
    s = warpgroup_mma_wait(num_outstanding=0, deps=[s])
    _release(k_empty.index(0), True, SYNC)
    mbarrier.wait(k_ready.index(1 % STAGES), (1 // STAGES) & 1)
    s_tok = warpgroup_mma(q_s, k_smem.index(1 % STAGES).permute((1, 0)), zero_s, use_acc=False, is_async=True)
    p8, alpha, m_i, l_i = _softmax(s, qs * gl.load(ks_ptr), m_i, l_i, 0, LK, False, mma, dot)
    s = warpgroup_mma_wait(num_outstanding=0, deps=[s_tok])
    _release(k_empty.index(1 % STAGES), True, SYNC)
    for j in range(1, nkb - 1):
        sv = (j - 1) % STAGES
        mbarrier.wait(v_ready.index(sv), ((j - 1) // STAGES) & 1)
        a_tok = warpgroup_mma(p8, v_smem.index(sv).permute((1, 0)), acc, is_async=True)
        sk = (j + 1) % STAGES
        mbarrier.wait(k_ready.index(sk), ((j + 1) // STAGES) & 1)
        s_tok = warpgroup_mma(q_s, k_smem.index(sk).permute((1, 0)), zero_s, use_acc=False, is_async=True)
        p_new, alpha, m_i, l_i = _softmax(s, qs * gl.load(ks_ptr + j), m_i, l_i, 0, LK, False, mma, dot)
        acc, s = warpgroup_mma_wait(num_outstanding=0, deps=[a_tok, s_tok])
        p8 = _keep(p8)
        _release(v_empty.index(sv), True, SYNC)
        _release(k_empty.index(sk), True, SYNC)
        acc = acc * gl.expand_dims(alpha, 1)
        p8 = p_new
    last = nkb - 1
    sv = (last - 1) % STAGES
    mbarrier.wait(v_ready.index(sv), ((last - 1) // STAGES) & 1)
    a_tok = warpgroup_mma(p8, v_smem.index(sv).permute((1, 0)), acc, is_async=True)
    p_new, alpha, m_i, l_i = _softmax(s, qs * gl.load(ks_ptr + last), m_i, l_i, last * BN, LK, True, mma, dot)
    acc = warpgroup_mma_wait(num_outstanding=0, deps=[a_tok])
    p8 = _keep(p8)
    _release(v_empty.index(sv), True, SYNC)
    acc = acc * gl.expand_dims(alpha, 1)
    sv = last % STAGES
    mbarrier.wait(v_ready.index(sv), (last // STAGES) & 1)
    a_tok = warpgroup_mma(p_new, v_smem.index(sv).permute((1, 0)), acc, is_async=True)
    acc = warpgroup_mma_wait(num_outstanding=0, deps=[a_tok])
    p_new = _keep(p_new)
    _release(v_empty.index(sv), True, SYNC)
    return acc, l_i


@gluon.jit
def _store_p(p_smem, buf, p):
    """P tile [BM, BLOCK_N] e4m3 (layout mma) -> p_smem.index(buf), made visible to the async proxy."""
    p_smem.index(buf).store(p)
    fence_async_shared()


@gluon.jit
def loop_deep_smem(q_s, k_smem, v_smem, p_smem, k_ready, k_empty, v_ready, v_empty, ks_ptr, qs, nkb, LK,
                   PBUF: gl.constexpr, P0: gl.constexpr, STAGES: gl.constexpr, BM: gl.constexpr,
                   BN: gl.constexpr, DP: gl.constexpr, mma: gl.constexpr, SYNC: gl.constexpr):
    """Deep schedule (nkb >= 2) with P through shared memory, buffers P0 .. P0 + PBUF - 1 of p_smem
    [*, BM, BN] e4m3 (one set per consumer partition): PV(j-1) reads
    P_{j-1} from there, so no wgmma operand lives in registers and P needs no register layout change.
    PBUF 2: P_j is stored while PV(j-1) reads the other buffer; PBUF 1: P_j is stored after the wait that
    retires PV(j-1). Returns O [BM, DP] fp32 and l [BM]."""
    row_l: gl.constexpr = gl.SliceLayout(1, mma)
    m_i = gl.full([BM], float("-inf"), gl.float32, row_l)
    l_i = gl.full([BM], 0.0, gl.float32, row_l)
    acc = gl.full([BM, DP], 0.0, gl.float32, mma)
    zero_s = gl.full([BM, BN], 0, gl.int32, mma)

    mbarrier.wait(k_ready.index(0), 0)
    s = warpgroup_mma(q_s, k_smem.index(0).permute((1, 0)), zero_s, use_acc=False, is_async=True)
    s = warpgroup_mma_wait(num_outstanding=0, deps=[s])
    _release(k_empty.index(0), True, SYNC)
    mbarrier.wait(k_ready.index(1 % STAGES), (1 // STAGES) & 1)
    s_tok = warpgroup_mma(q_s, k_smem.index(1 % STAGES).permute((1, 0)), zero_s, use_acc=False, is_async=True)
    p8, alpha, m_i, l_i = _softmax(s, qs * gl.load(ks_ptr), m_i, l_i, 0, LK, False, mma, None)
    _store_p(p_smem, P0, p8)
    s = warpgroup_mma_wait(num_outstanding=0, deps=[s_tok])
    _release(k_empty.index(1 % STAGES), True, SYNC)
    gl.thread_barrier()
    for j in range(1, nkb - 1):
        sv = (j - 1) % STAGES
        mbarrier.wait(v_ready.index(sv), ((j - 1) // STAGES) & 1)
        a_tok = warpgroup_mma(p_smem.index(P0 + (j - 1) % PBUF), v_smem.index(sv).permute((1, 0)), acc, is_async=True)
        sk = (j + 1) % STAGES
        mbarrier.wait(k_ready.index(sk), ((j + 1) // STAGES) & 1)
        s_tok = warpgroup_mma(q_s, k_smem.index(sk).permute((1, 0)), zero_s, use_acc=False, is_async=True)
        p8, alpha, m_i, l_i = _softmax(s, qs * gl.load(ks_ptr + j), m_i, l_i, 0, LK, False, mma, None)
        if PBUF == 2:
            _store_p(p_smem, P0 + j % 2, p8)
        acc, s = warpgroup_mma_wait(num_outstanding=0, deps=[a_tok, s_tok])
        if PBUF == 1:
            _store_p(p_smem, P0, p8)
        _release(v_empty.index(sv), True, SYNC)
        _release(k_empty.index(sk), True, SYNC)
        gl.thread_barrier()
        acc = acc * gl.expand_dims(alpha, 1)
    last = nkb - 1
    sv = (last - 1) % STAGES
    mbarrier.wait(v_ready.index(sv), ((last - 1) // STAGES) & 1)
    a_tok = warpgroup_mma(p_smem.index(P0 + (last - 1) % PBUF), v_smem.index(sv).permute((1, 0)), acc, is_async=True)
    p8, alpha, m_i, l_i = _softmax(s, qs * gl.load(ks_ptr + last), m_i, l_i, last * BN, LK, True, mma, None)
    if PBUF == 2:
        _store_p(p_smem, P0 + last % 2, p8)
    acc = warpgroup_mma_wait(num_outstanding=0, deps=[a_tok])
    if PBUF == 1:
        _store_p(p_smem, P0, p8)
    _release(v_empty.index(sv), True, SYNC)
    gl.thread_barrier()
    acc = acc * gl.expand_dims(alpha, 1)
    sv = last % STAGES
    mbarrier.wait(v_ready.index(sv), (last // STAGES) & 1)
    a_tok = warpgroup_mma(p_smem.index(P0 + last % PBUF), v_smem.index(sv).permute((1, 0)), acc, is_async=True)
    acc = warpgroup_mma_wait(num_outstanding=0, deps=[a_tok])
    _release(v_empty.index(sv), True, SYNC)
    return acc, l_i


@gluon.jit
def _fa3_step(j, s_unused, acc, p8, m_i, l_i, q_s, k_smem, v_smem, k_ready, k_empty, v_ready, v_empty,
              ks_ptr, qs, LK, turn_mine, turn_other, MASK: gl.constexpr, PINGPONG: gl.constexpr,
              STAGES: gl.constexpr, BM: gl.constexpr, BN: gl.constexpr,
              mma: gl.constexpr, dot: gl.constexpr, SYNC: gl.constexpr):
    """One tile j >= 1 of the FA3 schedule: issue QK^T(j) and PV(j-1) (under the ping-pong turn), wait(1)
    for QK^T(j), softmax(j) while PV(j-1) runs, wait(0), rescale O. acc is a tensor on entry and exit."""
    sk = j % STAGES
    sv = (j - 1) % STAGES
    mbarrier.wait(k_ready.index(sk), (j // STAGES) & 1)
    mbarrier.wait(v_ready.index(sv), ((j - 1) // STAGES) & 1)
    if PINGPONG:
        mbarrier.wait(turn_mine, j & 1)
    s_tok = warpgroup_mma(q_s, k_smem.index(sk).permute((1, 0)), gl.full([BM, BN], 0, gl.int32, mma),
                          use_acc=False, is_async=True)
    a_tok = warpgroup_mma(p8, v_smem.index(sv).permute((1, 0)), acc, is_async=True)
    if PINGPONG:
        mbarrier.arrive(turn_other, count=1)
    ks_j = gl.load(ks_ptr + j)
    s = warpgroup_mma_wait(num_outstanding=1, deps=[s_tok])
    _release(k_empty.index(sk), True, SYNC)
    p8_new, alpha, m_i, l_i = _softmax(s, qs * ks_j, m_i, l_i, j * BN, LK, MASK, mma, dot)
    acc = warpgroup_mma_wait(num_outstanding=0, deps=[a_tok])
    p8 = _keep(p8)
    _release(v_empty.index(sv), True, SYNC)
    acc = acc * gl.expand_dims(alpha, 1)
    return acc, p8_new, m_i, l_i


@gluon.jit
def loop_fa3(q_s, k_smem, v_smem, k_ready, k_empty, v_ready, v_empty, ks_ptr, qs, nkb, LK, turn_mine,
              turn_other, PINGPONG: gl.constexpr, STAGES: gl.constexpr, BM: gl.constexpr, BN: gl.constexpr,
              DP: gl.constexpr, mma: gl.constexpr, dot: gl.constexpr, SYNC: gl.constexpr):
    """Main loop, FA3 IntraWGOverlap schedule (optionally ping-pong between two consumer warpgroups: every
    wgmma issue point waits for this warpgroup's turn and passes the turn on). Returns O and l."""
    row_l: gl.constexpr = gl.SliceLayout(1, mma)
    m_i = gl.full([BM], float("-inf"), gl.float32, row_l)
    l_i = gl.full([BM], 0.0, gl.float32, row_l)
    acc = gl.full([BM, DP], 0.0, gl.float32, mma)

    mbarrier.wait(k_ready.index(0), 0)
    if PINGPONG:
        mbarrier.wait(turn_mine, 0)
    s = warpgroup_mma(q_s, k_smem.index(0).permute((1, 0)), gl.full([BM, BN], 0, gl.int32, mma),
                      use_acc=False, is_async=True)
    if PINGPONG:
        mbarrier.arrive(turn_other, count=1)
    s = warpgroup_mma_wait(num_outstanding=0, deps=[s])
    _release(k_empty.index(0), True, SYNC)
    p8, alpha, m_i, l_i = _softmax(s, qs * gl.load(ks_ptr), m_i, l_i, 0, LK, True, mma, dot)
    for j in range(1, nkb - 1):
        acc, p8, m_i, l_i = _fa3_step(j, s, acc, p8, m_i, l_i, q_s, k_smem, v_smem, k_ready, k_empty, v_ready,
                                      v_empty, ks_ptr, qs, LK, turn_mine, turn_other, False, PINGPONG, STAGES,
                                      BM, BN, mma, dot, SYNC)
    if nkb > 1:
        acc, p8, m_i, l_i = _fa3_step(nkb - 1, s, acc, p8, m_i, l_i, q_s, k_smem, v_smem, k_ready, k_empty,
                                      v_ready, v_empty, ks_ptr, qs, LK, turn_mine, turn_other, True, PINGPONG,
                                      STAGES, BM, BN, mma, dot, SYNC)
    last = nkb - 1
    sv = last % STAGES
    mbarrier.wait(v_ready.index(sv), (last // STAGES) & 1)
    if PINGPONG:
        mbarrier.wait(turn_mine, nkb & 1)
    a_tok = warpgroup_mma(p8, v_smem.index(sv).permute((1, 0)), acc, is_async=True)
    if PINGPONG:
        mbarrier.arrive(turn_other, count=1)
    acc = warpgroup_mma_wait(num_outstanding=0, deps=[a_tok])
    p8 = _keep(p8)
    _release(v_empty.index(sv), True, SYNC)
    return acc, l_i
