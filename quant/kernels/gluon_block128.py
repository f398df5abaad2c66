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

import torch

from ..formats.base import E4M3_MAX, TINY, ceil_div

try:  # optional: Gluon ships with Triton >= 3.5
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.language.nvidia.hopper import (
        fence_async_shared, mbarrier, tma, warpgroup_mma, warpgroup_mma_wait)
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
except Exception:  # pragma: no cover - depends on the install
    gluon = None

BLOCK_M = 128
BLOCK_N = 256
BLOCK_K = 128  # the format's block: one activation / weight scale per K step
CHUNK_N = 64  # columns per wgmma (and per fp32 partial product held in registers)
STAGES = 3
GROUP_M = 8


def available() -> bool:
    """True when Gluon's Hopper API imports (the kernel itself needs an sm90 GPU)."""
    return gluon is not None


if gluon is not None:
    _tma_load = getattr(tma, "async_load", None) or tma.async_copy_global_to_shared
    _WS_LIST = next(iter(inspect.signature(gl.warp_specialize).parameters)) == "functions_and_args"

    @gluon.jit
    def _chunk(acc, a8, w_s, q: gl.constexpr, f, sw_ptr, sw_row0, kt, stride_swn, n_blocks,
               mma: gl.constexpr):
        """acc [64, CHUNK_N] += (a8 @ w_s[q-th CHUNK_N rows].T) * f[:, None] * weight scale."""
        b = w_s.slice(q * 64, 64, dim=0).permute((1, 0))
        part = warpgroup_mma(a8, b, gl.zeros([64, 64], gl.float32, mma), use_acc=False, is_async=True)
        part = warpgroup_mma_wait(0, deps=(part,))  # a8 stays live: the next chunks read it
        nb = gl.minimum(sw_row0 + q // 2, n_blocks - 1)
        sw = gl.load(sw_ptr + nb * stride_swn + kt)
        return acc + part * (f * sw)[:, None]

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
    def _math(a_desc, w_desc, sw_ptr, bias_ptr, c_ptr, M, N, K, stride_swn, stride_cm, a_bufs, w_bufs,
              ready, empty, WG: gl.constexpr, HAS_BIAS: gl.constexpr, QMAX: gl.constexpr,
              TINY_: gl.constexpr, GROUP: gl.constexpr):
        """One math warpgroup: rows [WG * 64, WG * 64 + 64) of the tile, all BLOCK_N columns."""
        mma: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                      instr_shape=[16, 64, 32])
        a_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma, k_width=4)
        off_m, off_n = _tile(M, N, GROUP)
        n_blocks = gl.cdiv(N, 128)
        sw_row0 = off_n // 128
        acc0 = gl.zeros([64, 64], gl.float32, mma)
        acc1 = gl.zeros([64, 64], gl.float32, mma)
        acc2 = gl.zeros([64, 64], gl.float32, mma)
        acc3 = gl.zeros([64, 64], gl.float32, mma)
        stages: gl.constexpr = a_bufs.type.shape[0]
        for kt in range(K // 128):
            s = kt % stages
            mbarrier.wait(ready.index(s), (kt // stages) & 1)
            x = a_bufs.index(s).slice(WG * 64, 64, dim=0).load(a_layout)  # absmax in 16 bits: exact
            scale = gl.maximum(gl.max(gl.abs(x), axis=1).to(gl.float32), TINY_) / QMAX
            inv = gl.div_rn(gl.full(scale.shape, 1.0, gl.float32, scale.type.layout), scale)
            y = x.to(gl.float32) * inv[:, None]
            a8 = gl.minimum(gl.maximum(y, -QMAX), QMAX).to(gl.float8e4nv)
            f = gl.convert_layout(scale, gl.SliceLayout(1, mma))
            w_s = w_bufs.index(s)
            acc0 = _chunk(acc0, a8, w_s, 0, f, sw_ptr, sw_row0, kt, stride_swn, n_blocks, mma)
            acc1 = _chunk(acc1, a8, w_s, 1, f, sw_ptr, sw_row0, kt, stride_swn, n_blocks, mma)
            acc2 = _chunk(acc2, a8, w_s, 2, f, sw_ptr, sw_row0, kt, stride_swn, n_blocks, mma)
            acc3 = _chunk(acc3, a8, w_s, 3, f, sw_ptr, sw_row0, kt, stride_swn, n_blocks, mma)
            mbarrier.arrive(empty.index(s), count=1)
        offs_m = off_m + WG * 64 + gl.arange(0, 64, layout=gl.SliceLayout(1, mma))
        _store_chunk(acc0, 0, c_ptr, bias_ptr, offs_m, off_n, M, N, stride_cm, HAS_BIAS, mma)
        _store_chunk(acc1, 1, c_ptr, bias_ptr, offs_m, off_n, M, N, stride_cm, HAS_BIAS, mma)
        _store_chunk(acc2, 2, c_ptr, bias_ptr, offs_m, off_n, M, N, stride_cm, HAS_BIAS, mma)
        _store_chunk(acc3, 3, c_ptr, bias_ptr, offs_m, off_n, M, N, stride_cm, HAS_BIAS, mma)

    @gluon.jit
    def _loader(a_desc, w_desc, sw_ptr, bias_ptr, c_ptr, M, N, K, stride_swn, stride_cm, a_bufs, w_bufs,
                ready, empty, WG: gl.constexpr, HAS_BIAS: gl.constexpr, QMAX: gl.constexpr,
                TINY_: gl.constexpr, GROUP: gl.constexpr):
        """One warp: TMA loads of the A (bf16) and W (e4m3) tiles into the ring."""
        off_m, off_n = _tile(M, N, GROUP)
        stages: gl.constexpr = a_bufs.type.shape[0]
        for kt in range(K // 128):
            s = kt % stages
            mbarrier.wait(empty.index(s), ((kt // stages) & 1) ^ 1)
            mbarrier.expect(ready.index(s), a_desc.block_type.nbytes + w_desc.block_type.nbytes)
            _tma_load(a_desc, [off_m, kt * 128], ready.index(s), a_bufs.index(s))
            _tma_load(w_desc, [off_n, kt * 128], ready.index(s), w_bufs.index(s))

    @gluon.jit
    def _kernel(a_desc, w_desc, sw_ptr, bias_ptr, c_ptr, M, N, K, stride_swn, stride_cm,
                HAS_BIAS: gl.constexpr, QMAX: gl.constexpr, TINY_: gl.constexpr, GROUP: gl.constexpr,
                STAGES_: gl.constexpr, WS_LIST: gl.constexpr, MATH_REGS: gl.constexpr,
                LOAD_REGS: gl.constexpr):
        a_bufs = gl.allocate_shared_memory(a_desc.dtype, [STAGES_] + a_desc.block_type.shape, a_desc.layout)
        w_bufs = gl.allocate_shared_memory(w_desc.dtype, [STAGES_] + w_desc.block_type.shape, w_desc.layout)
        ready = gl.allocate_shared_memory(gl.int64, [STAGES_, 1], mbarrier.MBarrierLayout())
        empty = gl.allocate_shared_memory(gl.int64, [STAGES_, 1], mbarrier.MBarrierLayout())
        for i in gl.static_range(STAGES_):
            mbarrier.init(ready.index(i), count=1)
            mbarrier.init(empty.index(i), count=2)  # both math warpgroups release a stage
        fence_async_shared()
        if WS_LIST:
            gl.warp_specialize([
                (_math, (a_desc, w_desc, sw_ptr, bias_ptr, c_ptr, M, N, K, stride_swn, stride_cm, a_bufs, w_bufs,
                         ready, empty, 0, HAS_BIAS, QMAX, TINY_, GROUP)),
                (_math, (a_desc, w_desc, sw_ptr, bias_ptr, c_ptr, M, N, K, stride_swn, stride_cm, a_bufs, w_bufs,
                         ready, empty, 1, HAS_BIAS, QMAX, TINY_, GROUP)),
                (_loader, (a_desc, w_desc, sw_ptr, bias_ptr, c_ptr, M, N, K, stride_swn, stride_cm, a_bufs, w_bufs,
                           ready, empty, 1, HAS_BIAS, QMAX, TINY_, GROUP)),
            ], [4, 1], [MATH_REGS, LOAD_REGS])
        else:
            gl.warp_specialize((a_desc, w_desc, sw_ptr, bias_ptr, c_ptr, M, N, K, stride_swn, stride_cm, a_bufs,
                                w_bufs, ready, empty, 0, HAS_BIAS, QMAX, TINY_, GROUP), _math,
                               (a_desc, w_desc, sw_ptr, bias_ptr, c_ptr, M, N, K, stride_swn, stride_cm, a_bufs,
                                w_bufs, ready, empty, 1, HAS_BIAS, QMAX, TINY_, GROUP), [_math, _loader],
                               [4, 1], [MATH_REGS, LOAD_REGS])

def _descriptor(t: torch.Tensor, block: list[int]):
    layout = gl.NVMMASharedLayout.get_default_for(block, {torch.bfloat16: gl.bfloat16, torch.float16: gl.float16,
                                                          torch.float8_e4m3fn: gl.float8e4nv}[t.dtype])
    return TensorDescriptor(t, list(t.shape), list(t.stride()), block, layout)


def supports(x: torch.Tensor, w: torch.Tensor) -> bool:
    """Shapes / layouts this kernel takes: x [M, K] 16-bit, rows contiguous and 16-byte aligned, K % 128 == 0."""
    return (gluon is not None and x.is_cuda and x.dim() == 2 and x.dtype in (torch.bfloat16, torch.float16)
            and x.stride(1) == 1 and x.stride(0) % 8 == 0 and x.data_ptr() % 16 == 0
            and x.shape[1] % BLOCK_K == 0 and w.is_contiguous() and torch.cuda.get_device_capability(x.device)[0] == 9)


def linear(x: torch.Tensor, w: torch.Tensor, sw: torch.Tensor, bias: torch.Tensor | None,
           math_regs: int = 232, load_regs: int = 40) -> torch.Tensor:
    """x [M, K] bf16/fp16 -> [M, N] in x.dtype; w [N, K] e4m3 with fp32 scales sw [ceil(N/128), K/128]."""
    m, k = x.shape
    n = w.shape[0]
    out = x.new_empty((m, n))
    grid = (ceil_div(m, BLOCK_M) * ceil_div(n, BLOCK_N),)
    _kernel[grid](_descriptor(x, [BLOCK_M, BLOCK_K]), _descriptor(w, [BLOCK_N, BLOCK_K]), sw,
                  bias if bias is not None else sw, out, m, n, k, sw.stride(0), out.stride(0),
                  bias is not None, E4M3_MAX, TINY, GROUP_M, STAGES, _WS_LIST, math_regs, load_regs,
                  num_warps=4, maxnreg=168)
    return out
