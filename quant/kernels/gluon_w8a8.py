"""Per-token W8A8 linear whose activation quantizer runs beside the GEMM (Hopper, Gluon, warp-specialized).

x [M, K] bf16/fp16 @ w [N, K] int8/e4m3 (per-channel scales [N, 1]) -> [M, N] in x.dtype, with the
quantizer's pass hidden behind the GEMM instead of before it. A persistent program owns whole 128-row
blocks (r = pid, pid + grid, ...). Its partitions:
- quantizer (default, 4 warps): for each of its row blocks in turn, absmax per row over K, then the codes
  (triton_quant's math: scale = max(absmax, TINY) / QMAX, q = x * (1 / scale), rint for int8) into a
  workspace [M, K] and the scales into [M]; it is one row block ahead of the math, so from the second
  row block on its HBM traffic overlaps the wgmma of the previous one;
- two math warpgroups: rows [0, 64) / [64, 128) of each 128x256 tile, async wgmma over K, then
  scale_a x scale_w, bias and the cast in the epilogue, stored straight from registers; the first also
  issues the TMA loads of the code and W tiles (a STAGES-deep ring), once their row block is quantized.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch

from ..formats.base import E4M3_MAX, INT8_MAX, TINY, ceil_div

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
BLOCK_N = 256
BLOCK_K = 128
MAX_BLOCKS_PER_PROGRAM = 16  # row blocks one program may own (one ready barrier each)


def available() -> bool:
    """True when Gluon's Hopper API imports (the kernel itself needs an sm90 GPU)."""
    return gluon is not None


if gluon is not None:
    _tma_load = getattr(tma, "async_load", None) or tma.async_copy_global_to_shared

    @gluon.jit
    def _fence_global(x):
        """Order this thread's generic-proxy global stores before later async-proxy (TMA) reads."""
        return gl.inline_asm_elementwise("fence.proxy.async.global;\nmov.u32 $0, $1;", "=r,r", [x],
                                         dtype=gl.int32, is_pure=False, pack=1)

    @gluon.jit
    def _round_even(y):
        return gl.inline_asm_elementwise("cvt.rni.f32.f32 $0, $1;", "=r,r", [y], dtype=gl.float32,
                                         is_pure=True, pack=1)

    @gluon.jit
    def _quantizer(x_ptr, q_ptr, s_ptr, M, K, stride_xm, stride_qm, ready, QMAX: gl.constexpr,
                   TINY_: gl.constexpr, IS_INT: gl.constexpr, QROWS: gl.constexpr, QCOLS: gl.constexpr,
                   ABLATE: gl.constexpr):
        """Default partition (4 warps): this program's row blocks -> codes q [M, K] + scales s [M], QROWS rows
        at a time, [QROWS, QCOLS] values per load (several 16-byte loads in flight per thread)."""
        layout: gl.constexpr = gl.BlockedLayout([1, 8], [2, 16], [gl.num_warps(), 1], [1, 0])
        rows_l: gl.constexpr = gl.SliceLayout(1, layout)
        cols = gl.arange(0, QCOLS, layout=gl.SliceLayout(0, layout))
        i = 0
        for rb in range(gl.program_id(0), gl.cdiv(M, 128), gl.num_programs(0)):
            if ABLATE == 0:
                for g in gl.static_range(128 // QROWS):
                    rows = rb * 128 + g * QROWS + gl.arange(0, QROWS, layout=rows_l)
                    rmask = rows < M
                    xrow = x_ptr + rows.to(gl.int64)[:, None] * stride_xm
                    amax = gl.zeros([QROWS], gl.float32, rows_l)
                    for k0 in range(0, K, QCOLS):
                        mask = rmask[:, None] & ((k0 + cols) < K)[None, :]
                        x = gl.load(xrow + k0 + cols[None, :], mask=mask, other=0.0)
                        amax = gl.maximum(amax, gl.max(gl.abs(x), axis=1).to(gl.float32))
                    scale = gl.maximum(amax, TINY_) / QMAX
                    inv = gl.div_rn(gl.full(scale.shape, 1.0, gl.float32, rows_l), scale)
                    qrow = q_ptr + rows.to(gl.int64)[:, None] * stride_qm
                    for k0 in range(0, K, QCOLS):
                        mask = rmask[:, None] & ((k0 + cols) < K)[None, :]
                        y = gl.load(xrow + k0 + cols[None, :], mask=mask, other=0.0).to(gl.float32) * inv[:, None]
                        if IS_INT:
                            y = gl.minimum(gl.maximum(_round_even(y), -QMAX), QMAX)
                        gl.store(qrow + k0 + cols[None, :], y.to(q_ptr.dtype.element_ty), mask=mask)
                    gl.store(s_ptr + rows, scale, mask=rmask)
                    _fence_global(rows)
            mbarrier.arrive(ready.index(i), count=1)
            i += 1

    @gluon.jit
    def _issue(j, q_desc, w_desc, M, N, K, q_bufs, w_bufs, qready, ready, empty):
        """Issue the TMA loads of ring item j (this program's row blocks x N tiles x K steps, in order)
        into slot j % STAGES, once both math warpgroups released it and its row block is quantized."""
        stages: gl.constexpr = q_bufs.type.shape[0]
        n_k = gl.cdiv(K, 128)
        per_rb = gl.cdiv(N, 256) * n_k
        i = j // per_rb
        rb = gl.program_id(0) + i * gl.num_programs(0)
        if rb < gl.cdiv(M, 128):
            s = j % stages
            mbarrier.wait(empty.index(s), ((j // stages) & 1) ^ 1)
            mbarrier.wait(qready.index(i), 0)
            rem = j % per_rb
            mbarrier.expect(ready.index(s), q_desc.block_type.nbytes + w_desc.block_type.nbytes)
            _tma_load(q_desc, [rb * 128, (rem % n_k) * 128], ready.index(s), q_bufs.index(s))
            _tma_load(w_desc, [(rem // n_k) * 256, (rem % n_k) * 128], ready.index(s), w_bufs.index(s))

    @gluon.jit
    def _math(q_desc, w_desc, s_ptr, ws_ptr, bias_ptr, c_ptr, M, N, K, stride_cm, q_bufs, w_bufs, qready,
              ready, empty, WG: gl.constexpr, HAS_BIAS: gl.constexpr):
        """One math warpgroup: rows [WG * 64, WG * 64 + 64) of each 128x256 tile; warpgroup 0 also issues
        the ring's TMA loads, STAGES - 1 items ahead."""
        is_int: gl.constexpr = q_bufs.dtype == gl.int8
        instr_n: gl.constexpr = 128 if is_int else 256  # int8 wgmma: N <= 224
        mma: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                      instr_shape=[16, instr_n, 32])
        acc_dtype: gl.constexpr = gl.int32 if is_int else gl.float32
        stages: gl.constexpr = q_bufs.type.shape[0]
        if WG == 0:
            for j in gl.static_range(stages - 1):
                _issue(j, q_desc, w_desc, M, N, K, q_bufs, w_bufs, qready, ready, empty)
        it = 0
        i = 0
        for rb in range(gl.program_id(0), gl.cdiv(M, 128), gl.num_programs(0)):
            mbarrier.wait(qready.index(i), 0)  # the row scales below
            rows = rb * 128 + WG * 64 + gl.arange(0, 64, layout=gl.SliceLayout(1, mma))
            sa = gl.load(s_ptr + rows, mask=rows < M, other=0.0)
            for nt in range(gl.cdiv(N, 256)):
                acc = gl.zeros([64, 256], acc_dtype, mma)
                for k0 in range(0, K, 128):
                    s = it % stages
                    mbarrier.wait(ready.index(s), (it // stages) & 1)
                    acc = warpgroup_mma(q_bufs.index(s).slice(WG * 64, 64, dim=0), w_bufs.index(s).permute((1, 0)),
                                        acc, is_async=True)
                    acc = warpgroup_mma_wait(1, deps=(acc,))
                    mbarrier.arrive(empty.index((it + stages - 1) % stages), count=1, pred=k0 > 0)
                    if WG == 0:
                        _issue(it + stages - 1, q_desc, w_desc, M, N, K, q_bufs, w_bufs, qready, ready, empty)
                    it += 1
                acc = warpgroup_mma_wait(0, deps=(acc,))
                mbarrier.arrive(empty.index((it + stages - 1) % stages), count=1)
                cols = nt * 256 + gl.arange(0, 256, layout=gl.SliceLayout(0, mma))
                cmask = cols < N
                out = acc.to(gl.float32) * sa[:, None] * gl.load(ws_ptr + cols, mask=cmask, other=0.0)[None, :]
                if HAS_BIAS:
                    out = out + gl.load(bias_ptr + cols, mask=cmask, other=0.0).to(gl.float32)[None, :]
                gl.store(c_ptr + rows.to(gl.int64)[:, None] * stride_cm + cols[None, :],
                         out.to(c_ptr.dtype.element_ty), mask=(rows < M)[:, None] & cmask[None, :])
            i += 1

    @gluon.jit
    def _kernel(x_ptr, q_ptr, q_desc, w_desc, s_ptr, ws_ptr, bias_ptr, c_ptr, M, N, K, stride_xm, stride_qm,
                stride_cm, HAS_BIAS: gl.constexpr, QMAX: gl.constexpr, TINY_: gl.constexpr,
                STAGES_: gl.constexpr, MAX_RB: gl.constexpr, MATH_REGS: gl.constexpr,
                QROWS: gl.constexpr, QCOLS: gl.constexpr, ABLATE: gl.constexpr):
        q_bufs = gl.allocate_shared_memory(q_desc.dtype, [STAGES_] + q_desc.block_type.shape, q_desc.layout)
        w_bufs = gl.allocate_shared_memory(w_desc.dtype, [STAGES_] + w_desc.block_type.shape, w_desc.layout)
        qready = gl.allocate_shared_memory(gl.int64, [MAX_RB, 1], mbarrier.MBarrierLayout())
        ready = gl.allocate_shared_memory(gl.int64, [STAGES_, 1], mbarrier.MBarrierLayout())
        empty = gl.allocate_shared_memory(gl.int64, [STAGES_, 1], mbarrier.MBarrierLayout())
        for b in gl.static_range(MAX_RB):
            mbarrier.init(qready.index(b), count=1)
        for b in gl.static_range(STAGES_):
            mbarrier.init(ready.index(b), count=1)
            mbarrier.init(empty.index(b), count=2)  # both math warpgroups release a stage
        fence_async_shared()
        gl.warp_specialize([
            (_quantizer, (x_ptr, q_ptr, s_ptr, M, K, stride_xm, stride_qm, qready, QMAX, TINY_,
                          q_desc.dtype == gl.int8, QROWS, QCOLS, ABLATE)),
            (_math, (q_desc, w_desc, s_ptr, ws_ptr, bias_ptr, c_ptr, M, N, K, stride_cm, q_bufs, w_bufs, qready,
                     ready, empty, 0, HAS_BIAS)),
            (_math, (q_desc, w_desc, s_ptr, ws_ptr, bias_ptr, c_ptr, M, N, K, stride_cm, q_bufs, w_bufs, qready,
                     ready, empty, 1, HAS_BIAS)),
        ], [4, 4], [MATH_REGS, MATH_REGS])


_GL_DTYPE = {}


def _descriptor(t: torch.Tensor, block: list[int]):
    if not _GL_DTYPE:
        _GL_DTYPE.update({torch.int8: gl.int8, torch.float8_e4m3fn: gl.float8e4nv})
    layout = gl.NVMMASharedLayout.get_default_for(block, _GL_DTYPE[t.dtype])
    return TensorDescriptor(t, list(t.shape), list(t.stride()), block, layout)


@dataclass(frozen=True)
class Config:
    """Ring depth (code + W tiles of one 128-wide K step each) and registers per math thread."""
    stages: int = 4
    math_regs: int = 200
    qrows: int = 16
    qcols: int = 512
    ablate: int = 0


_SMS: dict = {}


def linear(x: torch.Tensor, w: torch.Tensor, sw: torch.Tensor, bias: torch.Tensor | None,
           workspace: torch.Tensor | None = None, cfg: Config = Config()) -> torch.Tensor:
    """x [M, K] bf16/fp16 (rows contiguous) -> [M, N] in x.dtype; w [N, K] int8/e4m3, sw [N, 1] fp32.

    workspace: [M, K] of w.dtype for the codes (allocated when None)."""
    m, k = x.shape
    n = w.shape[0]
    dev = x.device
    if dev not in _SMS:
        _SMS[dev] = torch.cuda.get_device_properties(dev).multi_processor_count
    grid = min(_SMS[dev], ceil_div(m, BLOCK_M))
    if ceil_div(ceil_div(m, BLOCK_M), grid) > MAX_BLOCKS_PER_PROGRAM:
        raise ValueError(f"M = {m} needs more than {MAX_BLOCKS_PER_PROGRAM} row blocks per program")
    q = workspace if workspace is not None else torch.empty((m, k), dtype=w.dtype, device=dev)
    scales = torch.empty(m, dtype=torch.float32, device=dev)
    out = x.new_empty((m, n))
    qmax = INT8_MAX if w.dtype == torch.int8 else E4M3_MAX
    _kernel[(grid,)](x, q, _descriptor(q, [BLOCK_M, BLOCK_K]), _descriptor(w, [BLOCK_N, BLOCK_K]), scales,
                     sw, bias if bias is not None else sw, out, m, n, k, x.stride(0), q.stride(0), out.stride(0),
                     bias is not None, qmax, TINY, cfg.stages, MAX_BLOCKS_PER_PROGRAM, cfg.math_regs, cfg.qrows, cfg.qcols,
                     cfg.ablate,
                     num_warps=4, maxnreg=168)
    return out
