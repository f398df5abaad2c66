"""Triton W8A8 GEMMs: one kernel, templated on constexprs, for int8 and fp8 (per channel or block-128).

C[M, N] = (A[M, K] @ W[N, K]^T) * scales + bias, cast to the output dtype, with
- per token x per channel (int8, fp8): int32 / fp32 accumulation, scales, bias and cast in the epilogue;
- block-128 (fp8_block128): per (1x128) activation and per (128x128) weight scales applied in the
  main loop (BLOCK_K == 128); the activation comes pre-quantized (codes + column-major scales).

Autotuned per (M bucket, N, K, mode) over short config lists checked on an H100 (bench/results/NOTES.md); after
a key's first call the compiled kernel is launched directly (kernels.triton.launch); the picks are kept on
disk for the next process (kernels.triton.tuned). Per-token x
per-channel calls with M >= 4096 on sm90+ go to the persistent TMA kernel (kernels.triton.gemm_tma).
Nothing here runs on import; the module needs Triton importable (see kernels.triton for the guard).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
import triton.testing

from ...formats.base import ceil_div
from . import gemm_tma as tma
from .launch import DirectLauncher
from .tiles import m_bucket, tile_coords
from .tuned import TunedConfigs

BLOCK = 128


def _cfg(bm, bn, warps, stages, group_m=8, bk=BLOCK):
    return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": group_m},
                         num_warps=warps, num_stages=stages)


# Large M (DiT tokens) and every block-128 call: wide tiles, BLOCK_K = 128 (the block size).
LARGE = [
    _cfg(128, 256, 8, 3),
    _cfg(128, 256, 8, 4),  # fp8 +4-9% at the 14B shapes (config sweep, NOTES)
    _cfg(256, 128, 8, 3),
    _cfg(128, 128, 8, 4),
    _cfg(128, 128, 4, 4),
    _cfg(64, 128, 4, 4),
    _cfg(64, 64, 4, 4),
    _cfg(128, 128, 8, 3),
    _cfg(128, 64, 4, 4),
]
# Per token x per channel with M <= SMALL_MAX_M (text encoders, short batches): the configs that cover
# every shape of a 98-config sweep at M = 77..2048 within 4% of its best.
SMALL_MAX_M = 2048
SMALL = [
    _cfg(128, 128, 4, 5), _cfg(128, 128, 8, 5), _cfg(128, 128, 4, 3), _cfg(128, 128, 4, 6), _cfg(64, 128, 4, 4),
    _cfg(64, 64, 8, 6, bk=256), _cfg(64, 64, 4, 6, bk=256), _cfg(64, 64, 8, 5, bk=256), _cfg(128, 256, 8, 4),
]
_SMALL_IDS = {id(c) for c in SMALL}  # by identity: both lists hold a 128x256 w8 s4 config
CONFIGS = LARGE + SMALL


def _prune(configs, named_args, **kw):
    """The list for this call's M and mode, less tiles that cannot fit, overrun K (BLOCK_K 256 with
    K % 256 != 0 but EVEN_K) or are far too large for M."""
    m = named_args["M_BUCKET"]
    grouped = kw.get("GROUPED", False)
    small = not grouped and m <= SMALL_MAX_M
    out = []
    for c in configs:
        bm, bn, bk = c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.kwargs["BLOCK_K"]
        if (id(c) in _SMALL_IDS) != small or (bm + bn) * bk * c.num_stages > 200 * 1024:
            continue
        if bk != BLOCK and (grouped or kw.get("EVEN_K") and named_args["K"] % bk):
            continue
        if (m <= 1024 or grouped) and bm * bn > 128 * 128:  # grouped: acc + per-tile product in registers
            continue
        if not small and not grouped and (bm, bn, c.num_stages) in ((128, 128, 3), (128, 64, 4)):
            continue
        if m > 4096 and bm < 128:
            continue
        out.append(c)
    return out or [LARGE[-1]]


def _bench(fn, quantiles):
    """The autotuner's timer (Triton's default one; named here so that no Triton, 3.3 included, asks the
    GPU driver for it when this module is imported)."""
    return triton.testing.do_bench(fn, quantiles=quantiles)


@triton.autotune(configs=CONFIGS, key=["M_BUCKET", "N", "K", "IS_INT", "GROUPED"],
                 prune_configs_by={"early_config_prune": _prune}, do_bench=_bench)
@triton.jit
def _w8a8_kernel(a_ptr, b_ptr, c_ptr, sa_ptr, sb_ptr, bias_ptr, M, N, K, M_BUCKET,
                 stride_am, stride_bn, stride_cm, stride_sam, stride_sak, stride_sbn, stride_sbk,
                 HAS_BIAS: tl.constexpr, IS_INT: tl.constexpr, GROUPED: tl.constexpr,
                 EVEN_K: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
    pid_m, pid_n = tile_coords(tl.program_id(0), tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N), GROUP_M)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rm = tl.max_contiguous(tl.multiple_of(offs_m % M, BLOCK_M), BLOCK_M)  # wrapped rows: loads stay in bounds
    rn = tl.max_contiguous(tl.multiple_of(offs_n % N, BLOCK_N), BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + rm[:, None].to(tl.int64) * stride_am + offs_k[None, :]
    b_ptrs = b_ptr + rn[None, :].to(tl.int64) * stride_bn + offs_k[:, None]

    if IS_INT:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for kt in range(0, tl.cdiv(K, BLOCK_K)):
        if EVEN_K:
            a = tl.load(a_ptrs)
            b = tl.load(b_ptrs)
        else:
            kmask = offs_k < K - kt * BLOCK_K
            a = tl.load(a_ptrs, mask=kmask[None, :], other=0.0)
            b = tl.load(b_ptrs, mask=kmask[:, None], other=0.0)
        if GROUPED:
            sa = tl.load(sa_ptr + rm * stride_sam + kt * stride_sak)
            part = tl.dot(a, b)
            if BLOCK_N <= BLOCK_K:  # one weight block column: a scalar scale
                sb = tl.load(sb_ptr + (pid_n * BLOCK_N // BLOCK_K) * stride_sbn + kt * stride_sbk)
                acc += part * (sa * sb)[:, None]
            else:
                sb = tl.load(sb_ptr + (rn // BLOCK_K) * stride_sbn + kt * stride_sbk)
                acc += part * (sa[:, None] * sb[None, :])
        else:
            acc = tl.dot(a, b, acc, out_dtype=acc.dtype)
        a_ptrs += BLOCK_K
        b_ptrs += BLOCK_K

    if GROUPED:
        out = acc
    else:
        sa = tl.load(sa_ptr + rm * stride_sam)
        sb = tl.load(sb_ptr + rn * stride_sbn)
        out = acc.to(tl.float32) * sa[:, None] * sb[None, :]
    if HAS_BIAS:
        out += tl.load(bias_ptr + rn).to(tl.float32)[None, :]
    c_ptrs = c_ptr + offs_m[:, None].to(tl.int64) * stride_cm + offs_n[None, :]
    tl.store(c_ptrs, out.to(c_ptr.dtype.element_ty), mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))


def _grid(meta, m, n):
    return (ceil_div(m, meta["BLOCK_M"]) * ceil_div(n, meta["BLOCK_N"]),)


_DIRECT = DirectLauncher(_w8a8_kernel.fn)
_TUNED = TunedConfigs(_w8a8_kernel)


def w8a8_gemm(a: torch.Tensor, sa: torch.Tensor, w: torch.Tensor, sw: torch.Tensor,
              bias: torch.Tensor | None, out_dtype: torch.dtype, grouped: bool) -> torch.Tensor:
    """The one launcher.

    a: [M, K] int8/e4m3 (quantized; sa its scales: [M, 1] per token or [M, K/128]).
    w: [N, K] int8/e4m3; sw: [N, 1] per channel or [ceil(N/128), K/128].
    """
    m, k = a.shape
    n = w.shape[0]
    c = torch.empty((m, n), device=a.device, dtype=out_dtype)
    if m == 0:
        return c
    if a.stride(1) != 1:
        a = a.contiguous()
    is_int = w.dtype == torch.int8
    has_bias = bias is not None
    if not grouped and tma.use_tma(a, sa, w, sw, c):
        tma.w8a8_gemm_tma(a, sa, w, sw, bias, c)
        return c
    args = (a, w, c, sa, sw, bias if has_bias else sw, m, n, k, m_bucket(m),
            a.stride(0), w.stride(0), c.stride(0), sa.stride(0), sa.stride(1) if sa.dim() > 1 else 0,
            sw.stride(0), sw.stride(1) if sw.dim() > 1 else 0)
    # The autotuner picks a config on the key's first call; later calls launch the compiled kernel for
    # that config directly with the constexprs and options cached here (kernels.triton.launch: small-M
    # calls are launch-bound).
    key = (args[9], n, k, is_int, grouped, has_bias, a.dtype, w.dtype, out_dtype,
           None if bias is None else bias.dtype)
    consts = {"HAS_BIAS": has_bias, "IS_INT": is_int, "GROUPED": grouped, "EVEN_K": k % BLOCK == 0}
    hit = _TUNED.pick(key, a.device.index or 0, consts,
                      lambda: _w8a8_kernel[lambda meta: _grid(meta, m, n)](*args, **consts))
    if hit is not None:
        consts, options = hit
        _DIRECT(_grid(consts, m, n), args, consts, options)
    return c


@triton.jit
def _scale_epilogue_kernel(acc_ptr, sa_ptr, sb_ptr, bias_ptr, c_ptr, M, N, stride_am, stride_cm,
                           HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """c = (acc * sa[:, None] * sb[None, :] + bias).to(c dtype), fp32 math: one read, one write."""
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mm, nm = offs_m < M, offs_n < N
    mask = mm[:, None] & nm[None, :]
    rows = offs_m[:, None].to(tl.int64)
    acc = tl.load(acc_ptr + rows * stride_am + offs_n[None, :], mask=mask, other=0).to(tl.float32)
    sa = tl.load(sa_ptr + offs_m, mask=mm, other=0.0)
    sb = tl.load(sb_ptr + offs_n, mask=nm, other=0.0)
    out = acc * sa[:, None] * sb[None, :]
    if HAS_BIAS:
        out += tl.load(bias_ptr + offs_n, mask=nm, other=0.0).to(tl.float32)[None, :]
    tl.store(c_ptr + rows * stride_cm + offs_n[None, :], out.to(c_ptr.dtype.element_ty), mask=mask)


def scale_epilogue(acc: torch.Tensor, sa: torch.Tensor, sb: torch.Tensor, bias: torch.Tensor | None,
                   out_dtype: torch.dtype) -> torch.Tensor:
    """int32 [M, N] (row stride any, unit column stride) x per-token sa [M, 1] x per-channel sb [N, 1]
    (+ bias [N]) -> out_dtype [M, N] in one pass (the epilogue torch._int_mm lacks)."""
    m, n = acc.shape
    c = torch.empty((m, n), device=acc.device, dtype=out_dtype)
    if m == 0:
        return c
    bm, bn = 32, 256
    _scale_epilogue_kernel[(ceil_div(m, bm), ceil_div(n, bn))](
        acc, sa, sb, bias if bias is not None else sb, c, m, n, acc.stride(0), c.stride(0),
        HAS_BIAS=bias is not None, BLOCK_M=bm, BLOCK_N=bn, num_warps=4)
    return c
