"""Experimental Hopper (sm90) quantized attention in Triton's Gluon dialect, FlashAttention-3 structure.

Same math and operands as quant/attention/triton/kernel.py in its fp8 mode with the Q pre-pass (Q8 . K8^T in
int8 -> int32, the magic-number int32 -> fp32 conversion folded into the row bias, online softmax in the
exp2 domain, P * 2**P_LOG2 and V in e4m3, fp32 accumulator), D = 128 only. Operands (quantize.py):
q8 [BH * Lq, DP] int8, qs [BH * Lq] fp32 (softmax scale * log2 e folded in), k8 [BH * Lk_pad, DP] int8,
ks [BH, Lk_pad / BLOCK_N] fp32, vt [BH * DP, Lk_pad] e4m3, vs [BH, DP] fp32. Output o [B, Lq, H, D].

Structure (one program per BLOCK_M queries x (batch, head)):
- a producer warp (worker partition) loads the Q tile(s) once and K / V^T tiles into a ring of STAGES
  shared-memory stages with TMA; per stage a ready and an empty mbarrier for K and for V separately;
- consumer warpgroup(s) run the wgmmas (S = Q8 K8^T from shared memory, O += P8 Vt^T with P8 in registers as
  the A operand) and the softmax. Two schedules:
  * "deep" (DEEP=True): the QK^T of tile j+1 is issued before the softmax of tile j, which therefore
    overlaps both QK^T(j+1) and PV(j-1) on the tensor cores (two wgmma groups in flight; PV(j) stays in
    flight across the loop back-edge and is retired by the next tile's wait(0));
  * "fa3" (DEEP=False): FA3's IntraWGOverlap, QK^T(j) and PV(j-1) issued together, the softmax of tile j
    overlaps PV(j-1); with PINGPONG two consumer warpgroups (separate partitions) take turns issuing
    their wgmmas (mbarrier ping-pong in place of FA3's named barriers) so one's softmax overlaps the
    other's GEMMs. P8 is loop-carried here, which costs ~150 PRMT (byte repacking) per tile in the SASS.
All variants compile for sm90 under Triton 3.6 with no spills and no ptxas wgmma serialisation.
Variants are named in CONFIGS; `attention(q, k, v, scale, cfg)` is the host entry point.

Status (H200, 2026-12-04; bench/results/h200-attention.md, "Gluon"): not used by the pack. Every variant
passes the small ragged checks; the fastest, wg1_deep_s3, is 1.34-1.45x SDPA (1.09-1.13x the shipped Triton
kernel) but returned NaN at the large shapes, so it is wrong somewhere; the other variants were correct at
the large shapes and slower than the Triton kernel (0.83-0.97x).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, mbarrier, tma
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

from quant.attention.triton.quantize import quantize, quantize_q

from .gluon_attention_loops import loop_deep, loop_deep_smem, loop_fa3

LOG2E = 1.4426950408889634
BLOCK_N = 128  # keys per tile


class Config(NamedTuple):
    """One kernel variant: consumers (partitions of 4 warps, or one partition of `cons_warps` warps),
    pipeline depth, schedule and register split."""
    ncons: int  # consumer partitions (1, or 2 = ping-pong pair of warpgroups)
    cons_warps: int  # warps per consumer partition (4 or 8); BLOCK_M = 16 * cons_warps * ncons
    stages: int  # K / V^T shared-memory ring depth
    deep: bool  # schedule: QK^T(j+1) before softmax(j) (True) or FA3 IntraWGOverlap (False)
    pingpong: bool  # ncons == 2 only: warpgroups alternate their wgmma issue
    maxnreg: int  # registers per thread at launch (sets CTAs per SM); partitions then re-split them
    cons_regs: int = 240  # registers of a worker consumer partition (ncons == 2)
    prod_regs: int = 24  # registers of the producer partition
    p_bufs: int = 0  # deep schedule: P through shared memory in this many buffers (0: P in registers)

    @property
    def block_m(self) -> int:
        return 16 * self.cons_warps * self.ncons


CONFIGS = {
    # 64 rows, one warpgroup + producer warp, 2 CTAs / SM (8 warps x 128 regs; consumer gets 232).
    "wg1_deep_s2": Config(1, 4, 2, True, False, 128),
    "wg1_deep_s3": Config(1, 4, 3, True, False, 128),
    "wg1_fa3_s2": Config(1, 4, 2, False, False, 128),
    # the same with P through shared memory: 2 buffers (3 stages would not leave room for 2 CTAs / SM) or 1
    "wg1_deep_s2_p2": Config(1, 4, 2, True, False, 128, p_bufs=2),
    "wg1_deep_s3_p1": Config(1, 4, 3, True, False, 128, p_bufs=1),
    # two consumer warpgroups (128 rows, K / V tiles shared), deep schedule, P through shared memory
    "pp2_deep_s3_p2": Config(2, 4, 3, True, False, 168, p_bufs=2),
    "pp2_deep_s4_p2": Config(2, 4, 4, True, False, 168, p_bufs=2),
    "pp2_deep_s3_p1": Config(2, 4, 3, True, False, 168, p_bufs=1),
    # 128 rows, one 8-warp partition (two warpgroups as one program), 1 CTA / SM (12 warps x 168 regs).
    "wg2x1_deep_s2": Config(1, 8, 2, True, False, 168),
    # 128 rows, two 4-warp consumer partitions, FA3 schedule with / without ping-pong, 1 CTA / SM.
    "pp2_fa3_s2": Config(2, 4, 2, False, True, 168),
    "pp2_fa3_s3": Config(2, 4, 3, False, True, 168),
    "pp2_fa3_nopp_s2": Config(2, 4, 2, False, False, 168),
    # (two 4-warp partitions with the deep schedule: ptxas serialises the wgmmas, "insufficient register
    # resources", so it is not listed)
}
DEFAULT = "wg1_deep_s2"


@gluon.jit
def _consumer(q_smem, k_smem, v_smem, p_smem, q_bar, k_ready, k_empty, v_ready, v_empty, turn, qs_ptr, ks_ptr, vs_ptr,
              o_ptr, H, LQ, LK, nkb, sob, sol, soh, WG: gl.constexpr, CW: gl.constexpr,
              STAGES: gl.constexpr, DEEP: gl.constexpr, PINGPONG: gl.constexpr, PBUF: gl.constexpr):
    """Consumer partition WG (CW warps, BM = 16 * CW query rows: rows WG * BM.. of the program's block).
    Runs the main loop on q_smem.index(WG) and stores O / l * vs as bf16 into o [B, Lq, H, D]
    (rows >= Lq dropped)."""
    BM: gl.constexpr = q_smem.shape[1]
    DP: gl.constexpr = q_smem.shape[2]
    BN: gl.constexpr = k_smem.shape[1]
    mma: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[CW, 1], instr_shape=[16, 128, 32])
    dot: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma, k_width=4)
    SYNC: gl.constexpr = CW > 4
    NCONS: gl.constexpr = q_smem.shape[0]
    pid_m = gl.program_id(0)
    bh = gl.program_id(1)
    row0 = pid_m * (BM * NCONS) + WG * BM
    rows = row0 + gl.arange(0, BM, layout=gl.SliceLayout(1, mma))
    cols = gl.arange(0, DP, layout=gl.SliceLayout(0, mma))
    qs = gl.load(qs_ptr + bh * LQ + rows, mask=rows < LQ, other=0.0)
    ks_row = ks_ptr + bh * nkb
    turn_mine = turn.index(WG)
    turn_other = turn.index(1 - WG)
    if PINGPONG:
        if WG == 1:
            mbarrier.arrive(turn_other, count=1)  # warpgroup 0 issues first
    q_s = q_smem.index(WG)
    mbarrier.wait(q_bar.index(0), 0)
    if PBUF > 0:
        acc, l_i = loop_deep_smem(q_s, k_smem, v_smem, p_smem, k_ready, k_empty, v_ready, v_empty, ks_row, qs, nkb,
                                  LK, PBUF, WG * PBUF, STAGES, BM, BN, DP, mma, SYNC)
    elif DEEP:
        acc, l_i = loop_deep(q_s, k_smem, v_smem, k_ready, k_empty, v_ready, v_empty, ks_row, qs, nkb, LK,
                              STAGES, BM, BN, DP, mma, dot, SYNC)
    else:
        acc, l_i = loop_fa3(q_s, k_smem, v_smem, k_ready, k_empty, v_ready, v_empty, ks_row, qs, nkb, LK,
                             turn_mine, turn_other, PINGPONG, STAGES, BM, BN, DP, mma, dot, SYNC)
    vs = gl.load(vs_ptr + bh * DP + cols)
    out = acc * gl.expand_dims(1.0 / l_i, 1) * gl.expand_dims(vs, 0)
    b = (bh // H).to(gl.int64)
    h = (bh % H).to(gl.int64)
    offs = b * sob + h * soh + gl.expand_dims(rows.to(gl.int64) * sol, 1) + gl.expand_dims(cols, 0)
    gl.store(o_ptr + offs, out.to(o_ptr.dtype.element_ty), mask=gl.expand_dims(rows < LQ, 1))


@gluon.jit
def _producer(q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, k_ready, k_empty, v_ready, v_empty, q_row,
              kv0, vt0, nkb, STAGES: gl.constexpr):
    """Producer warp: TMA loads of the NCONS Q tiles (once), then per key tile j the K tile [BN, DP] of
    k8 and the V^T tile [DP, BN] of vt into stage j % STAGES, after the consumers freed it."""
    NCONS: gl.constexpr = q_smem.shape[0]
    BM: gl.constexpr = q_smem.shape[1]
    BN: gl.constexpr = k_smem.shape[1]
    mbarrier.expect(q_bar.index(0), NCONS * q_desc.block_type.nbytes)
    for i in gl.static_range(NCONS):
        tma.async_copy_global_to_shared(q_desc, [q_row + i * BM, 0], q_bar.index(0), q_smem.index(i))
    for j in range(nkb):
        st = j % STAGES
        ph = ((j // STAGES) & 1) ^ 1  # fresh barriers pass a wait on parity 1
        mbarrier.wait(k_empty.index(st), ph)
        mbarrier.expect(k_ready.index(st), k_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(k_desc, [kv0 + j * BN, 0], k_ready.index(st), k_smem.index(st))
        mbarrier.wait(v_empty.index(st), ph)
        mbarrier.expect(v_ready.index(st), v_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(v_desc, [vt0, j * BN], v_ready.index(st), v_smem.index(st))


@gluon.jit
def attn_fwd_kernel(q_desc, k_desc, v_desc, qs_ptr, ks_ptr, vs_ptr, o_ptr, H, LQ, LK, LK_PAD, sob, sol, soh,
                    NCONS: gl.constexpr, CW: gl.constexpr, STAGES: gl.constexpr, DEEP: gl.constexpr,
                    PINGPONG: gl.constexpr, CONS_REGS: gl.constexpr, PROD_REGS: gl.constexpr, PBUF: gl.constexpr):
    """Grid (cdiv(Lq, NCONS * BM), B * H). q_desc: q8 tiles [BM, DP]; k_desc: k8 tiles [BN, DP];
    v_desc: vt tiles [DP, BN]. Allocates the shared-memory rings and barriers and forks the partitions."""
    BM: gl.constexpr = q_desc.block_type.shape[0]
    DP: gl.constexpr = q_desc.block_type.shape[1]
    BN: gl.constexpr = k_desc.block_type.shape[0]
    pid_m = gl.program_id(0)
    bh = gl.program_id(1)
    nkb = LK_PAD // BN

    q_smem = gl.allocate_shared_memory(q_desc.dtype, [NCONS, BM, DP], q_desc.layout)
    k_smem = gl.allocate_shared_memory(k_desc.dtype, [STAGES, BN, DP], k_desc.layout)
    v_smem = gl.allocate_shared_memory(v_desc.dtype, [STAGES, DP, BN], v_desc.layout)
    P_ALLOC: gl.constexpr = PBUF if PBUF > 0 else 1
    p_smem = gl.allocate_shared_memory(gl.float8e4nv, [NCONS * P_ALLOC, BM, BN],
                                       gl.NVMMASharedLayout.get_default_for([BM, BN], gl.float8e4nv))
    q_bar = gl.allocate_shared_memory(gl.int64, [1, 1], mbarrier.MBarrierLayout())
    k_ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    k_empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    v_ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    v_empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    turn = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    mbarrier.init(q_bar.index(0), count=1)
    for i in gl.static_range(STAGES):
        mbarrier.init(k_ready.index(i), count=1)
        mbarrier.init(v_ready.index(i), count=1)
        mbarrier.init(k_empty.index(i), count=NCONS)
        mbarrier.init(v_empty.index(i), count=NCONS)
    for i in gl.static_range(2):
        mbarrier.init(turn.index(i), count=1)
    fence_async_shared()

    q_row = bh * LQ + pid_m * (NCONS * BM)
    kv0 = bh * LK_PAD
    vt0 = bh * DP
    if NCONS == 1:
        gl.warp_specialize([
            (_consumer, (q_smem, k_smem, v_smem, p_smem, q_bar, k_ready, k_empty, v_ready, v_empty, turn, qs_ptr, ks_ptr,
                         vs_ptr, o_ptr, H, LQ, LK, nkb, sob, sol, soh, 0, CW, STAGES, DEEP, PINGPONG, PBUF)),
            (_producer, (q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, k_ready, k_empty, v_ready, v_empty,
                         q_row, kv0, vt0, nkb, STAGES)),
        ], [1], [PROD_REGS])
    else:
        gl.warp_specialize([
            (_consumer, (q_smem, k_smem, v_smem, p_smem, q_bar, k_ready, k_empty, v_ready, v_empty, turn, qs_ptr, ks_ptr,
                         vs_ptr, o_ptr, H, LQ, LK, nkb, sob, sol, soh, 0, CW, STAGES, DEEP, PINGPONG, PBUF)),
            (_consumer, (q_smem, k_smem, v_smem, p_smem, q_bar, k_ready, k_empty, v_ready, v_empty, turn, qs_ptr, ks_ptr,
                         vs_ptr, o_ptr, H, LQ, LK, nkb, sob, sol, soh, 1, CW, STAGES, DEEP, PINGPONG, PBUF)),
            (_producer, (q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, k_ready, k_empty, v_ready, v_empty,
                         q_row, kv0, vt0, nkb, STAGES)),
        ], [CW, 1], [CONS_REGS, PROD_REGS])


# ----------------------------------------------------------------------------------------------------------
# host side
# ----------------------------------------------------------------------------------------------------------
def _desc(t: torch.Tensor, block: list[int], dtype) -> TensorDescriptor:
    """TMA descriptor over a 2-D row-major tensor with the default NVMMA (128-byte swizzle) layout."""
    layout = gl.NVMMASharedLayout.get_default_for(block, dtype)
    return TensorDescriptor(t, list(t.shape), list(t.stride()), block, layout)


def launch(q8, qs, ops, out, heads: int, lq: int, lk: int, cfg: Config) -> None:
    """Runs attn_fwd_kernel on quantized operands (q8/qs from quantize_q, ops from quantize) into out
    [B, Lq, H, D] (bf16 / fp16, unit channel stride)."""
    dp = ops.k8.shape[1]
    if ops.lk_pad // BLOCK_N < 2:  # the deep schedules need two key tiles
        cfg = cfg._replace(deep=False, p_bufs=0)
    bm = 16 * cfg.cons_warps
    q_desc = _desc(q8, [bm, dp], gl.int8)
    k_desc = _desc(ops.k8, [BLOCK_N, dp], gl.int8)
    v_desc = _desc(ops.v, [dp, BLOCK_N], gl.float8e4nv)
    bh = ops.ks.shape[0]
    grid = (triton.cdiv(lq, cfg.block_m), bh)
    attn_fwd_kernel[grid](q_desc, k_desc, v_desc, qs, ops.ks, ops.vs, out, heads, lq, lk, ops.lk_pad,
                          out.stride(0), out.stride(1), out.stride(2), NCONS=cfg.ncons, CW=cfg.cons_warps,
                          STAGES=cfg.stages, DEEP=cfg.deep, PINGPONG=cfg.pingpong, CONS_REGS=cfg.cons_regs,
                          PROD_REGS=cfg.prod_regs, PBUF=cfg.p_bufs, num_warps=cfg.cons_warps, maxnreg=cfg.maxnreg)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, cfg: Config | str = DEFAULT
              ) -> torch.Tensor:
    """q [B, H, Lq, D], k/v [B, H, Lk, D] (any strides, D = 128) -> [B, H, Lq, D] in q.dtype, a view of
    storage [B, Lq, H, D]. Quantizes with the pack's pre-pass (quantize, quantize_q), then the Gluon kernel."""
    if isinstance(cfg, str):
        cfg = CONFIGS[cfg]
    bsz, heads, lq, d = q.shape
    lk = k.shape[2]
    if d != 128:
        raise ValueError(f"gluon attention: head dim {d} (only 128)")
    ops = quantize(k, v, BLOCK_N, False)
    q8, qs = quantize_q(q, scale * LOG2E)
    out = torch.empty(bsz, lq, heads, d, device=q.device, dtype=q.dtype)
    launch(q8, qs, ops, out, heads, lq, lk, cfg)
    return out.transpose(1, 2)
