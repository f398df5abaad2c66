"""fp8 block-128 linear with the activation quantized inside the GEMM (Hopper, Gluon, warp-specialized).

x [M, K] bf16/fp16 (row-major) @ w [N, K] e4m3 (scales [ceil(N/128), K/128], 128x128 blocks) -> [M, N]
in x.dtype. The activation never leaves the kernel in 8 bits: each program reads its bf16 A tile
[BLOCK_M, 128] through TMA, and each of its two math warpgroups quantizes its 64 rows per 1x128 group
in registers (the Triton quantizer's math: scale = max(absmax, TINY) / 448, q = e4m3(x * (1 / scale))),
then feeds the fp8 codes to wgmma straight from registers. Per 128-wide K step the fp32 partial product
of each 64-column chunk is promoted into the accumulator with (activation scale x weight scale).

Partitions: two math warpgroups (rows 0-63 / 64-127 of the tile, each its own partition so they drift
apart and one's promotion overlaps the other's wgmma) and one loader warp (TMA ring of STAGES A + W
tiles, released by both math partitions).

Gluon is Triton's low-level dialect (triton.experimental.gluon); its warp_specialize changed signature
between Triton releases, so the kernel picks the form at trace time.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch

from ..formats.base import E4M3_MAX, TINY, ceil_div

try:  # optional: Gluon ships with Triton; this kernel needs warp_specialize's list form (Triton >= 3.6)
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.language.nvidia.hopper import (
        fence_async_shared, mbarrier, tma, warpgroup_mma, warpgroup_mma_wait)
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    if next(iter(inspect.signature(gl.warp_specialize).parameters)) != "functions_and_args":
        raise ImportError("Gluon's warp_specialize predates the list form")
except Exception:  # pragma: no cover - depends on the install
    gluon = None

BLOCK_M = 128
BLOCK_N = 256  # four 64-column wgmma chunks
BLOCK_K = 128  # the format's block: one activation / weight scale per K step
STAGES = 3
GROUP_M = 8


def available() -> bool:
    """True when Gluon's Hopper API imports (the kernel itself needs an sm90 GPU)."""
    return gluon is not None


if gluon is not None:
    _tma_load = getattr(tma, "async_load", None) or tma.async_copy_global_to_shared
    _barrier = getattr(gl, "barrier", None) or gl.thread_barrier

    @gluon.jit
    def _tile(M, N, GROUP: gl.constexpr):
        """(off_m, off_n) of this program, programs grouped GROUP row blocks at a time (W reuse in L2)."""
        pid = gl.program_id(0)
        num_m = gl.cdiv(M, 128)
        num_n = gl.cdiv(N, 256)
        in_group = GROUP * num_n
        first_m = (pid // in_group) * GROUP
        size_m = gl.minimum(num_m - first_m, GROUP)
        pid_m = first_m + (pid % in_group) % size_m
        pid_n = (pid % in_group) // size_m
        return pid_m * 128, pid_n * 256

    @gluon.jit
    def _quantize_rows(x_s, a8_s, sc_s, r0: gl.constexpr, ROWS: gl.constexpr, QMAX: gl.constexpr,
                       TINY_: gl.constexpr):
        """Rows [r0, r0 + ROWS) of the bf16 tile x_s -> e4m3 codes in a8_s, scales in sc_s.

        Each thread holds 32 consecutive values of a row (a row spans 4 threads: two shuffles per absmax)."""
        nw: gl.constexpr = gl.num_warps()
        layout: gl.constexpr = gl.BlockedLayout([ROWS // (8 * nw), 32], [8, 4], [nw, 1], [1, 0])
        x = x_s.slice(r0, ROWS, dim=0).load(layout)
        scale = gl.maximum(gl.max(gl.abs(x), axis=1).to(gl.float32), TINY_) / QMAX  # absmax in 16 bits: exact
        inv = gl.div_rn(gl.full(scale.shape, 1.0, gl.float32, scale.type.layout), scale)
        a8_s.slice(r0, ROWS, dim=0).store((x.to(gl.float32) * inv[:, None]).to(gl.float8e4nv))  # saturating
        sc_s.slice(r0, ROWS, dim=0).store(scale)

    @gluon.jit
    def _producer(a_desc, w_desc, M, N, K, x_bufs, x_ready, w_bufs, a8_bufs, sc_bufs, w_ready, a8_ready, empty,
                  QMAX: gl.constexpr, TINY_: gl.constexpr, GROUP: gl.constexpr, QROWS: gl.constexpr,
                  ABLATE: gl.constexpr):
        """Default partition: TMA loads (W STAGES - 1 steps ahead, the bf16 A tile one step ahead into a
        2-deep staging ring) and the activation quantizer, QROWS rows at a time: bf16 A tile -> e4m3 codes
        + 1x128 scales for the math warpgroups."""
        off_m, off_n = _tile(M, N, GROUP)
        stages: gl.constexpr = w_bufs.type.shape[0]
        n_k = K // 128
        for p in gl.static_range(stages - 1):
            if p < n_k:
                mbarrier.expect(w_ready.index(p), w_desc.block_type.nbytes)
                _tma_load(w_desc, [off_n, p * 128], w_ready.index(p), w_bufs.index(p))
        mbarrier.expect(x_ready.index(0), a_desc.block_type.nbytes)
        _tma_load(a_desc, [off_m, 0], x_ready.index(0), x_bufs.index(0))
        for kt in range(n_k):
            s = kt % stages
            j = kt + stages - 1
            if j < n_k:
                sj = j % stages
                mbarrier.wait(empty.index(sj), ((j // stages) & 1) ^ 1)
                mbarrier.expect(w_ready.index(sj), w_desc.block_type.nbytes)
                _tma_load(w_desc, [off_n, j * 128], w_ready.index(sj), w_bufs.index(sj))
            if kt + 1 < n_k:
                _barrier()  # every warp is done reading the staging buffer this load overwrites
                fence_async_shared()
                mbarrier.expect(x_ready.index((kt + 1) % 2), a_desc.block_type.nbytes)
                _tma_load(a_desc, [off_m, (kt + 1) * 128], x_ready.index((kt + 1) % 2), x_bufs.index((kt + 1) % 2))
            mbarrier.wait(x_ready.index(kt % 2), (kt // 2) & 1)
            if ABLATE == 0:
                for r in gl.static_range(128 // QROWS):
                    _quantize_rows(x_bufs.index(kt % 2), a8_bufs.index(s), sc_bufs.index(s), r * QROWS, QROWS,
                                   QMAX, TINY_)
            fence_async_shared()
            mbarrier.arrive(a8_ready.index(s), count=1)

    @gluon.jit
    def _chunk(acc, a, w_s, q: gl.constexpr, f, sw_ptr, nb, kt, stride_swn, mma: gl.constexpr):
        """acc [64, 64] += (a @ w_s[64q : 64q + 64].T) * f[:, None] * (weight scale of block nb at step kt)."""
        b = w_s.slice(q * 64, 64, dim=0).permute((1, 0))
        part = warpgroup_mma(a, b, gl.zeros([64, 64], gl.float32, mma), use_acc=False, is_async=True)
        part = warpgroup_mma_wait(0, deps=(part,))
        return acc + part * (f * gl.load(sw_ptr + nb * stride_swn + kt))[:, None]

    @gluon.jit
    def _store_chunk(acc, q: gl.constexpr, c_ptr, bias_ptr, offs_m, off_n, M, N, stride_cm,
                     HAS_BIAS: gl.constexpr, mma: gl.constexpr):
        offs_n = off_n + q * 64 + gl.arange(0, 64, layout=gl.SliceLayout(0, mma))
        out = acc
        if HAS_BIAS:
            out = out + gl.load(bias_ptr + offs_n, mask=offs_n < N, other=0.0).to(gl.float32)[None, :]
        ptrs = c_ptr + offs_m[:, None].to(gl.int64) * stride_cm + offs_n[None, :]
        gl.store(ptrs, out.to(c_ptr.dtype.element_ty), mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))

    @gluon.jit
    def _math(sw_ptr, bias_ptr, c_ptr, M, N, K, stride_swn, stride_cm, w_bufs, a8_bufs, sc_bufs, w_ready,
              a8_ready, empty, WG: gl.constexpr, HAS_BIAS: gl.constexpr, GROUP: gl.constexpr):
        """One math warpgroup: rows [WG * 64, WG * 64 + 64) of the tile, BLOCK_N columns in four 64-column
        chunks. The fp8 codes go to wgmma from registers; each chunk's fp32 partial product is promoted with
        (activation scale x weight scale) as soon as it is done, while the other warpgroup's wgmma runs."""
        mma: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                      instr_shape=[16, 64, 32])
        off_m, off_n = _tile(M, N, GROUP)
        last_nb = gl.cdiv(N, 128) - 1  # weight block row of each 64-column chunk (clamped past N: masked)
        nb0 = gl.minimum(off_n // 128, last_nb)
        nb1 = gl.minimum(off_n // 128 + 1, last_nb)
        acc0 = gl.zeros([64, 64], gl.float32, mma)
        acc1 = gl.zeros([64, 64], gl.float32, mma)
        acc2 = gl.zeros([64, 64], gl.float32, mma)
        acc3 = gl.zeros([64, 64], gl.float32, mma)
        stages: gl.constexpr = w_bufs.type.shape[0]
        for kt in range(K // 128):
            s = kt % stages
            ph = (kt // stages) & 1
            mbarrier.wait(w_ready.index(s), ph)
            mbarrier.wait(a8_ready.index(s), ph)
            a = a8_bufs.index(s).slice(WG * 64, 64, dim=0).load(
                gl.DotOperandLayout(operand_index=0, parent=mma, k_width=4))
            f = sc_bufs.index(s).slice(WG * 64, 64, dim=0).load(gl.SliceLayout(1, mma))
            w_s = w_bufs.index(s)
            acc0 = _chunk(acc0, a, w_s, 0, f, sw_ptr, nb0, kt, stride_swn, mma)
            acc1 = _chunk(acc1, a, w_s, 1, f, sw_ptr, nb0, kt, stride_swn, mma)
            acc2 = _chunk(acc2, a, w_s, 2, f, sw_ptr, nb1, kt, stride_swn, mma)
            acc3 = _chunk(acc3, a, w_s, 3, f, sw_ptr, nb1, kt, stride_swn, mma)
            mbarrier.arrive(empty.index(s), count=1)
        offs_m = off_m + WG * 64 + gl.arange(0, 64, layout=gl.SliceLayout(1, mma))
        _store_chunk(acc0, 0, c_ptr, bias_ptr, offs_m, off_n, M, N, stride_cm, HAS_BIAS, mma)
        _store_chunk(acc1, 1, c_ptr, bias_ptr, offs_m, off_n, M, N, stride_cm, HAS_BIAS, mma)
        _store_chunk(acc2, 2, c_ptr, bias_ptr, offs_m, off_n, M, N, stride_cm, HAS_BIAS, mma)
        _store_chunk(acc3, 3, c_ptr, bias_ptr, offs_m, off_n, M, N, stride_cm, HAS_BIAS, mma)

    @gluon.jit
    def _kernel(a_desc, w_desc, sw_ptr, bias_ptr, c_ptr, M, N, K, stride_swn, stride_cm,
                HAS_BIAS: gl.constexpr, QMAX: gl.constexpr, TINY_: gl.constexpr, GROUP: gl.constexpr,
                STAGES_: gl.constexpr, MATH_REGS: gl.constexpr, QROWS: gl.constexpr, ABLATE: gl.constexpr):
        x_bufs = gl.allocate_shared_memory(a_desc.dtype, [2] + a_desc.block_type.shape, a_desc.layout)
        w_bufs = gl.allocate_shared_memory(w_desc.dtype, [STAGES_] + w_desc.block_type.shape, w_desc.layout)
        a8_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([128, 128], gl.float8e4nv)
        a8_bufs = gl.allocate_shared_memory(gl.float8e4nv, [STAGES_, 128, 128], a8_layout)
        sc_bufs = gl.allocate_shared_memory(gl.float32, [STAGES_, 128],
                                            gl.SwizzledSharedLayout(vec=1, per_phase=1, max_phase=1, order=[0]))
        x_ready = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
        w_ready = gl.allocate_shared_memory(gl.int64, [STAGES_, 1], mbarrier.MBarrierLayout())
        a8_ready = gl.allocate_shared_memory(gl.int64, [STAGES_, 1], mbarrier.MBarrierLayout())
        empty = gl.allocate_shared_memory(gl.int64, [STAGES_, 1], mbarrier.MBarrierLayout())
        for i in gl.static_range(2):
            mbarrier.init(x_ready.index(i), count=1)
        for i in gl.static_range(STAGES_):
            mbarrier.init(w_ready.index(i), count=1)
            mbarrier.init(a8_ready.index(i), count=1)
            mbarrier.init(empty.index(i), count=2)  # both math warpgroups release a stage
        fence_async_shared()
        gl.warp_specialize([
            (_producer, (a_desc, w_desc, M, N, K, x_bufs, x_ready, w_bufs, a8_bufs, sc_bufs, w_ready, a8_ready,
                         empty, QMAX, TINY_, GROUP, QROWS, ABLATE)),
            (_math, (sw_ptr, bias_ptr, c_ptr, M, N, K, stride_swn, stride_cm, w_bufs, a8_bufs, sc_bufs, w_ready,
                     a8_ready, empty, 0, HAS_BIAS, GROUP)),
            (_math, (sw_ptr, bias_ptr, c_ptr, M, N, K, stride_swn, stride_cm, w_bufs, a8_bufs, sc_bufs, w_ready,
                     a8_ready, empty, 1, HAS_BIAS, GROUP)),
        ], [4, 4], [MATH_REGS, MATH_REGS])

def _descriptor(t: torch.Tensor, block: list[int]):
    layout = gl.NVMMASharedLayout.get_default_for(block, {torch.bfloat16: gl.bfloat16, torch.float16: gl.float16,
                                                          torch.float8_e4m3fn: gl.float8e4nv}[t.dtype])
    return TensorDescriptor(t, list(t.shape), list(t.stride()), block, layout)


def supports(x: torch.Tensor, w: torch.Tensor) -> bool:
    """Shapes / layouts this kernel takes: x [M, K] 16-bit, rows contiguous and 16-byte aligned, K % 128 == 0."""
    return (gluon is not None and x.is_cuda and x.dim() == 2 and x.dtype in (torch.bfloat16, torch.float16)
            and x.stride(1) == 1 and x.stride(0) % 8 == 0 and x.data_ptr() % 16 == 0
            and x.shape[1] % BLOCK_K == 0 and w.is_contiguous() and torch.cuda.get_device_capability(x.device)[0] == 9)


@dataclass(frozen=True)
class Config:
    """Producer warps (the quantizer; the kernel's num_warps), rows it quantizes per pass, and registers per
    math thread (the producer gets what is left of 64K registers)."""
    producer_warps: int = 4
    qrows: int = 64
    math_regs: int = 200
    ablate: int = 0


def linear(x: torch.Tensor, w: torch.Tensor, sw: torch.Tensor, bias: torch.Tensor | None,
           cfg: Config = Config()) -> torch.Tensor:
    """x [M, K] bf16/fp16 -> [M, N] in x.dtype; w [N, K] e4m3 with fp32 scales sw [ceil(N/128), K/128]."""
    m, k = x.shape
    n = w.shape[0]
    out = x.new_empty((m, n))
    grid = (ceil_div(m, BLOCK_M) * ceil_div(n, BLOCK_N),)
    warps = cfg.producer_warps + 8
    _kernel[grid](_descriptor(x, [BLOCK_M, BLOCK_K]), _descriptor(w, [BLOCK_N, BLOCK_K]), sw,
                  bias if bias is not None else sw, out, m, n, k, sw.stride(0), out.stride(0),
                  bias is not None, E4M3_MAX, TINY, GROUP_M, STAGES, cfg.math_regs, cfg.qrows, cfg.ablate,
                  num_warps=cfg.producer_warps, maxnreg=(65536 // (32 * warps)) // 8 * 8)
    return out
