"""Hopper (sm90) kernel of the quantized attention, warp-specialized, in Triton's Gluon dialect.

Same operands and math as kernel.py with the Q pre-pass (quantize.py: q8 [BH * Lq, DP] int8 and qs [BH * Lq]
fp32 with the softmax scale * log2 e, k8 [BH * Lk_pad, DP] int8 and ks [BH, Lk_pad / BN] fp32; fp8 mode: vt
[BH * DP, Lk_pad] e4m3 with its keys in quantize.key_order and vs [BH, DP] fp32; accurate mode: v16
[BH * Lk_pad, DP] in the input dtype), head dim 128 only. Output o [B, Lq, H, D] (unit channel stride), rows
>= Lq dropped.

Structure (FlashAttention-3's): one program per 3 x 64 query rows x (batch, head); a producer warp loads the
consumers' Q tiles once and K / V^T tiles into a ring of STAGES shared-memory stages with TMA (a ready mbarrier for
K and for V per stage, one empty mbarrier per stage that every consumer arrives on after its last read of it, the
PV); three consumer warpgroups of 64 rows each share the ring and run hopper_loop.attend. Measured on the H200
(Triton 3.6) at the Wan shapes (bench/results/h200-attention.md): fp8 1.61-1.72x SDPA, accurate 1.31-1.41x. Gluon
is Triton's experimental dialect: this path is taken on sm90 with Triton >= MIN_TRITON (run on 3.6; 3.8 compiles
it, not run on a GPU), and a compile failure on another Triton falls back to the Triton kernel (see __init__.py).
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, mbarrier, tma
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

from .hopper_loop import attend
from .kernel import LOG2E
from .quantize import Operands, quantize, quantize_q

MIN_TRITON = (3, 6)
HEAD_DIM = 128


CONSUMERS = 3  # consumer warpgroups per program (they share the K / V ring; hopper_loop)
_NCONS = gl.constexpr(CONSUMERS)  # the same, inside the kernel (its partition list names each)


class Launch(NamedTuple):
    """Launch shape (H200 A/Bs in bench/results/h200-attention.md: fp8 with three consumers, 3 and 5 stages
    within 1% of 4)."""
    block_n: int = 128  # keys per tile
    rows: int = 64  # query rows per consumer warpgroup
    stages: int = 4
    maxnreg: int = 128  # registers a thread at launch, 1 program per SM: 16 warps
    consumer_regs: int = 160  # 3 x 128 x 160 + 128 x 24 of the SM's 65536
    producer_regs: int = 24


LAUNCH = Launch()
# 16-bit V and P: 3 stages (4 would need 264 KB of shared memory of the 227 KB; 2 measured 0.85x)
LAUNCH_ACCURATE = Launch(stages=3)


def version_reason() -> Optional[str]:
    """None when this Triton is one the kernel was built for, else why not."""
    have = tuple(int(x) for x in triton.__version__.split(".")[:2] if x.isdigit())
    if have < MIN_TRITON:
        return f"triton {triton.__version__} < {MIN_TRITON[0]}.{MIN_TRITON[1]}"
    return None


def shape_reason(head_dim: int, keys: int, cfg: Launch = LAUNCH) -> Optional[str]:
    """None when the kernel takes this head dim and key count (two key tiles at least), else why not."""
    if head_dim != HEAD_DIM:
        return f"head dim {head_dim} (the Hopper kernel takes {HEAD_DIM})"
    if keys <= cfg.block_n:
        return f"{keys} keys (the Hopper kernel needs more than {cfg.block_n})"
    return None


@gluon.jit
def _consumer(q_smem, k_smem, v_smem, p_smem, q_bar, k_ready, v_ready, empty, qs_ptr, ks_ptr,
              vs_ptr, o_ptr, H, LQ, LK, nkb, sob, sol, soh, WG: gl.constexpr, STAGES: gl.constexpr,
              ACCURATE: gl.constexpr):
    """Consumer warpgroup WG: rows WG * BM.. of the program's block; stores O / l (times vs in fp8 mode) into o."""
    BM: gl.constexpr = q_smem.shape[1]
    DP: gl.constexpr = q_smem.shape[2]
    NCONS: gl.constexpr = q_smem.shape[0]
    KO: gl.constexpr = 16 if ACCURATE else 32  # the P V wgmma's K step: 16-bit or 8-bit operands
    BN: gl.constexpr = k_smem.shape[1]
    mma: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, BN, 32])
    mma_o: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, DP, KO])
    bh = gl.program_id(1)
    row0 = gl.program_id(0) * (BM * NCONS) + WG * BM
    rows = row0 + gl.arange(0, BM, layout=gl.SliceLayout(1, mma))
    qs = gl.load(qs_ptr + bh * LQ + rows, mask=rows < LQ, other=0.0)
    mbarrier.wait(q_bar.index(0), 0)
    acc, l_i = attend(q_smem.index(WG), k_smem, v_smem, p_smem, k_ready, v_ready, empty, ks_ptr + bh * nkb, qs,
                      nkb, LK, WG, STAGES, ACCURATE, mma, mma_o)
    rows = row0 + gl.arange(0, BM, layout=gl.SliceLayout(1, mma_o))
    cols = gl.arange(0, DP, layout=gl.SliceLayout(0, mma_o))
    out = acc * gl.expand_dims(1.0 / l_i, 1)
    if not ACCURATE:
        out = out * gl.expand_dims(gl.load(vs_ptr + bh * DP + cols), 0)
    b = (bh // H).to(gl.int64)
    h = (bh % H).to(gl.int64)
    offs = b * sob + h * soh + gl.expand_dims(rows.to(gl.int64) * sol, 1) + gl.expand_dims(cols, 0)
    gl.store(o_ptr + offs, out.to(o_ptr.dtype.element_ty), mask=gl.expand_dims(rows < LQ, 1))


@gluon.jit
def _producer(q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, k_ready, v_ready, empty, q_row,
              kv0, vt0, nkb, STAGES: gl.constexpr, ACCURATE: gl.constexpr):
    """Producer warp: TMA loads of the consumers' Q tiles (once), then per key tile j the K tile [BN, DP] and
    the V^T tile [DP, BN] (accurate mode: the V tile [BN, DP]) into stage j % STAGES once every consumer freed
    it (empty)."""
    NCONS: gl.constexpr = q_smem.shape[0]
    BM: gl.constexpr = q_smem.shape[1]
    BN: gl.constexpr = k_smem.shape[1]
    mbarrier.expect(q_bar.index(0), NCONS * q_desc.block_type.nbytes)
    for i in gl.static_range(NCONS):
        tma.async_copy_global_to_shared(q_desc, [q_row + i * BM, 0], q_bar.index(0), q_smem.index(i))
    for j in range(nkb):
        st = j % STAGES
        ph = ((j // STAGES) & 1) ^ 1  # fresh barriers pass a wait on parity 1
        mbarrier.wait(empty.index(st), ph)
        mbarrier.expect(k_ready.index(st), k_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(k_desc, [kv0 + j * BN, 0], k_ready.index(st), k_smem.index(st))
        mbarrier.expect(v_ready.index(st), v_desc.block_type.nbytes)
        if ACCURATE:
            tma.async_copy_global_to_shared(v_desc, [kv0 + j * BN, 0], v_ready.index(st), v_smem.index(st))
        else:
            tma.async_copy_global_to_shared(v_desc, [vt0, j * BN], v_ready.index(st), v_smem.index(st))


@gluon.jit
def attn_kernel(q_desc, k_desc, v_desc, qs_ptr, ks_ptr, vs_ptr, o_ptr, H, LQ, LK, LK_PAD, sob, sol, soh,
                STAGES: gl.constexpr, CONS_REGS: gl.constexpr, PROD_REGS: gl.constexpr,
                ACCURATE: gl.constexpr):
    """Grid (cdiv(Lq, 3 * BM), B * H). q_desc: q8 tiles [BM, DP]; k_desc: k8 tiles [BN, DP]; v_desc: vt
    tiles [DP, BN] (accurate mode: v16 tiles [BN, DP]). Allocates the shared-memory rings, P buffers (in V's
    dtype) and barriers, then forks the partitions."""
    BM: gl.constexpr = q_desc.block_type.shape[0]
    DP: gl.constexpr = q_desc.block_type.shape[1]
    BN: gl.constexpr = k_desc.block_type.shape[0]
    PD: gl.constexpr = v_desc.dtype
    bh = gl.program_id(1)
    nkb = LK_PAD // BN
    q_smem = gl.allocate_shared_memory(q_desc.dtype, [_NCONS, BM, DP], q_desc.layout)
    k_smem = gl.allocate_shared_memory(k_desc.dtype, [STAGES, BN, DP], k_desc.layout)
    v_smem = gl.allocate_shared_memory(v_desc.dtype, [STAGES, v_desc.block_type.shape[0], v_desc.block_type.shape[1]],
                                       v_desc.layout)
    p_smem = gl.allocate_shared_memory(PD, [_NCONS, BM, BN], gl.NVMMASharedLayout.get_default_for([BM, BN], PD))
    q_bar = gl.allocate_shared_memory(gl.int64, [1, 1], mbarrier.MBarrierLayout())
    k_ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    v_ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    mbarrier.init(q_bar.index(0), count=1)
    for i in gl.static_range(STAGES):
        mbarrier.init(k_ready.index(i), count=1)
        mbarrier.init(v_ready.index(i), count=1)
        mbarrier.init(empty.index(i), count=_NCONS)
    fence_async_shared()

    q_row = bh * LQ + gl.program_id(0) * (_NCONS * BM)
    gl.warp_specialize([
        (_consumer, (q_smem, k_smem, v_smem, p_smem, q_bar, k_ready, v_ready, empty, qs_ptr, ks_ptr, vs_ptr, o_ptr,
                     H, LQ, LK, nkb, sob, sol, soh, 0, STAGES, ACCURATE)),
        (_consumer, (q_smem, k_smem, v_smem, p_smem, q_bar, k_ready, v_ready, empty, qs_ptr, ks_ptr, vs_ptr, o_ptr,
                     H, LQ, LK, nkb, sob, sol, soh, 1, STAGES, ACCURATE)),
        (_consumer, (q_smem, k_smem, v_smem, p_smem, q_bar, k_ready, v_ready, empty, qs_ptr, ks_ptr, vs_ptr, o_ptr,
                     H, LQ, LK, nkb, sob, sol, soh, 2, STAGES, ACCURATE)),
        (_producer, (q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, k_ready, v_ready, empty,
                     q_row, bh * LK_PAD, bh * DP, nkb, STAGES, ACCURATE)),
    ], [4, 4, 1], [CONS_REGS, CONS_REGS, PROD_REGS])


def _desc(t: torch.Tensor, block: list[int], dtype) -> TensorDescriptor:
    """TMA descriptor over a 2-D row-major tensor, default NVMMA (128-byte swizzle) shared layout."""
    layout = gl.NVMMASharedLayout.get_default_for(block, dtype)
    return TensorDescriptor(t, list(t.shape), list(t.stride()), block, layout)


_GL_DTYPES = {torch.bfloat16: gl.bfloat16, torch.float16: gl.float16}


def launch(q8: torch.Tensor, qs: torch.Tensor, ops: Operands, out: torch.Tensor, heads: int, lq: int, lk: int,
           cfg: Launch = LAUNCH) -> None:
    """attn_kernel on quantized operands (q8/qs from quantize_q, ops from quantize with block_n = cfg.block_n
    and, in fp8 mode, key_perm=True; at least two key tiles) into out [B, Lq, H, D] (bf16 / fp16, unit channel
    stride). The mode is the operands': accurate when ops.vs is None."""
    dp = ops.k8.shape[1]
    reason = shape_reason(dp, lk, cfg)
    if reason:
        raise ValueError(f"hopper attention: {reason}")
    if cfg.stages < 2:
        raise ValueError(f"hopper attention: {cfg.stages} stage (QK^T(j) and PV(j - 1) read two stages at once)")
    accurate = ops.vs is None  # then vs_ptr gets ks, unread
    if accurate:
        v_desc = _desc(ops.v, [cfg.block_n, dp], _GL_DTYPES[ops.v.dtype])
    else:
        v_desc = _desc(ops.v, [dp, cfg.block_n], gl.float8e4nv)
    grid = (triton.cdiv(lq, cfg.rows * CONSUMERS), ops.ks.shape[0])
    attn_kernel[grid](_desc(q8, [cfg.rows, dp], gl.int8), _desc(ops.k8, [cfg.block_n, dp], gl.int8), v_desc, qs,
                      ops.ks, ops.ks if accurate else ops.vs, out, heads, lq, lk, ops.lk_pad, out.stride(0),
                      out.stride(1), out.stride(2), STAGES=cfg.stages,
                      CONS_REGS=cfg.consumer_regs, PROD_REGS=cfg.producer_regs, ACCURATE=accurate, num_warps=4,
                      maxnreg=cfg.maxnreg)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, accurate: bool = False,
              cfg: Optional[Launch] = None) -> torch.Tensor:
    """q [B, H, Lq, 128], k/v [B, H, Lk, 128] (any strides, Lk > cfg.block_n) -> [B, H, Lq, 128] in q.dtype,
    storage [B, Lq, H, D]: the pre-pass (quantize, quantize_q), then attn_kernel (cfg: LAUNCH or
    LAUNCH_ACCURATE by mode)."""
    cfg = cfg or (LAUNCH_ACCURATE if accurate else LAUNCH)
    bsz, heads, lq, d = q.shape
    ops = quantize(k, v, cfg.block_n, accurate, key_perm=not accurate)
    q8, qs = quantize_q(q, scale * LOG2E)
    out = torch.empty(bsz, lq, heads, d, device=q.device, dtype=q.dtype)
    launch(q8, qs, ops, out, heads, lq, k.shape[2], cfg)
    return out.transpose(1, 2)
