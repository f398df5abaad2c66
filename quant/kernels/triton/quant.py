"""Triton activation quantizers: one pass per token (read x once, write q and its scales).

Same layouts and math as quant/formats (the constants come from there):
- int8 per token: scale [M, 1] = max(absmax, TINY) / 127, q = rint(x / scale) clamped to +-127.
- fp8 per token: scale [M, 1] = max(absmax, TINY) / 448, q = e4m3(x / scale) (RNE, saturating).
- fp8 per token per 128-group (block-128 activations): scale [M, K/128], written column-major
  (strides (1, M rounded up to 4)): the layout cuBLAS' blockwise scaled_mm wants, read coalesced by the GEMM.

Importing this module never launches anything; without Triton, `available()` is False and the
callers use the format's reference quantizer.
"""
from __future__ import annotations

import torch

from ...formats.base import E4M3_MAX, INT8_MAX, TINY, QTensor, ceil_div, round_up

try:  # Triton is optional: CPU-only installs fall back to plain torch.
    import triton
    import triton.language as tl
    from triton.language.extra import libdevice

    from .launch import DirectLauncher
    from .tiles import next_pow2
except Exception:  # pragma: no cover - depends on the install
    triton = None

FORMATS = ("int8", "fp8", "fp8_block128")
MICROSCALE = ("mxfp8", "nvfp4")  # formats whose emulation microscale.py runs in one Triton pass
GROUP = 128
_MAX_SINGLE = 16384  # rows up to this K are held in registers: x is read exactly once


_AVAILABLE: list = []  # memo of available() (asked on every activation quantization)


def available() -> bool:
    """True when the Triton quantizers can run (Triton importable and a CUDA device present)."""
    if not _AVAILABLE:
        ok = triton is not None and torch.cuda.is_available()
        if not ok:  # not memoised: tests (and late CUDA init) may change the answer
            return False
        _AVAILABLE.append(ok)
    return True


if triton is not None:

    @triton.jit
    def _to_q(x, scale, QMAX: tl.constexpr, IS_INT: tl.constexpr):
        """fp32 values -> quantized values (still fp32): x * (1 / scale), rint (int8), clamp.

        The reference divides by the scale; multiplying by the correctly rounded reciprocal differs
        only when x / scale lies within an ulp of a rounding boundary (checked: > 99.99% identical codes).
        """
        y = x * tl.math.div_rn(tl.full(scale.shape, 1.0, tl.float32), scale)
        if IS_INT:
            y = libdevice.rint(y)
        return tl.minimum(tl.maximum(y, -QMAX), QMAX)

    @triton.jit
    def _quant_token_kernel(x_ptr, q_ptr, s_ptr, M, K, stride_xm, stride_qm,
                            QMAX: tl.constexpr, IS_INT: tl.constexpr, TINY_: tl.constexpr,
                            BLOCK_K: tl.constexpr, ROWS: tl.constexpr, SINGLE: tl.constexpr):
        """ROWS tokens per program; each row held whole in registers when SINGLE (x read once)."""
        rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
        rmask = rows < M
        rows64 = rows.to(tl.int64)
        offs = tl.arange(0, BLOCK_K)
        xrow = x_ptr + rows64[:, None] * stride_xm
        qrow = q_ptr + rows64[:, None] * stride_qm
        if SINGLE:
            mask = rmask[:, None] & (offs < K)[None, :]
            x = tl.load(xrow + offs[None, :], mask=mask, other=0.0).to(tl.float32)
            scale = tl.maximum(tl.max(tl.abs(x), axis=1), TINY_) / QMAX
            q = _to_q(x, scale[:, None], QMAX, IS_INT)
            tl.store(qrow + offs[None, :], q.to(q_ptr.dtype.element_ty), mask=mask)
        else:  # very long rows: absmax pass, then quantize pass (second read mostly from L2)
            acc = tl.zeros((ROWS, BLOCK_K), dtype=tl.float32)
            for k0 in range(0, K, BLOCK_K):
                mask = rmask[:, None] & ((k0 + offs) < K)[None, :]
                xv = tl.load(xrow + k0 + offs[None, :], mask=mask, other=0.0).to(tl.float32)
                acc = tl.maximum(acc, tl.abs(xv))
            scale = tl.maximum(tl.max(acc, axis=1), TINY_) / QMAX
            for k0 in range(0, K, BLOCK_K):
                mask = rmask[:, None] & ((k0 + offs) < K)[None, :]
                x = tl.load(xrow + k0 + offs[None, :], mask=mask, other=0.0).to(tl.float32)
                q = _to_q(x, scale[:, None], QMAX, IS_INT)
                tl.store(qrow + k0 + offs[None, :], q.to(q_ptr.dtype.element_ty), mask=mask)
        tl.store(s_ptr + rows64, scale, mask=rmask)

    @triton.jit
    def _quant_group_kernel(x_ptr, q_ptr, s_ptr, K, stride_xm, stride_qm, stride_sm, stride_sg,
                            QMAX: tl.constexpr, TINY_: tl.constexpr, GROUP_: tl.constexpr,
                            GROUPS_P2: tl.constexpr, GROUPS_PER_STEP: tl.constexpr):
        """One program per token; GROUPS_PER_STEP groups of GROUP_ along K per step."""
        row = tl.program_id(0).to(tl.int64)
        g = tl.arange(0, GROUPS_PER_STEP)
        j = tl.arange(0, GROUP_)
        ngroups = K // GROUP_
        for g0 in range(0, GROUPS_P2, GROUPS_PER_STEP):
            gg = g0 + g
            gmask = gg < ngroups
            offs = gg[:, None] * GROUP_ + j[None, :]
            mask = gmask[:, None]
            x = tl.load(x_ptr + row * stride_xm + offs, mask=mask, other=0.0).to(tl.float32)
            scale = tl.maximum(tl.max(tl.abs(x), axis=1), TINY_) / QMAX
            q = _to_q(x, scale[:, None], QMAX, False)
            tl.store(q_ptr + row * stride_qm + offs, q.to(q_ptr.dtype.element_ty), mask=mask)
            tl.store(s_ptr + row * stride_sm + gg * stride_sg, scale, mask=gmask)

    _LAUNCH = {"token": DirectLauncher(_quant_token_kernel), "group": DirectLauncher(_quant_group_kernel)}


def _warps(block: int) -> int:
    """Warps per program for `block` elements in flight: ~32-64 elements (4-8 16-byte loads) a thread."""
    return 4 if block <= 8192 else 8


def _rows(x: torch.Tensor) -> torch.Tensor:
    if x.dim() != 2:
        raise ValueError(f"expected a 2-D [rows, K] tensor, got shape {tuple(x.shape)}")
    return x if x.stride(1) == 1 else x.contiguous()


def quantize_token(x: torch.Tensor, fmt_name: str) -> QTensor:
    """x [M, K] on CUDA -> int8 / e4m3 [M, K] + fp32 scale [M, 1] (one program per token)."""
    x = _rows(x)
    m, k = x.shape
    is_int = fmt_name == "int8"
    q = torch.empty((m, k), device=x.device, dtype=torch.int8 if is_int else torch.float8_e4m3fn)
    s = torch.empty((m, 1), device=x.device, dtype=torch.float32)
    if m == 0:
        return QTensor(q, s)
    block = min(next_pow2(max(k, 16)), _MAX_SINGLE)
    rows = max(1, min(2048 // block, next_pow2(m)))  # short rows: several per program
    _LAUNCH["token"]((ceil_div(m, rows),), (x, q, s, m, k, x.stride(0), q.stride(0)),
                     {"QMAX": INT8_MAX if is_int else E4M3_MAX, "IS_INT": is_int, "TINY_": TINY,
                      "BLOCK_K": block, "ROWS": rows, "SINGLE": k <= block}, {"num_warps": _warps(rows * block)})
    return QTensor(q, s)


def quantize_group128(x: torch.Tensor) -> QTensor:
    """x [M, K] on CUDA, K % 128 == 0 -> e4m3 [M, K] + fp32 scale [M, K/128] (column-major)."""
    x = _rows(x)
    m, k = x.shape
    if k % GROUP:
        raise ValueError(f"fp8_block128: K = {k} is not divisible by the block size {GROUP}")
    ng = k // GROUP
    q = torch.empty((m, k), device=x.device, dtype=torch.float8_e4m3fn)
    m4 = round_up(max(m, 1), 4)  # leading dimension padded to 4 floats: cuBLAS' blockwise scales need it
    s = torch.empty_strided((m, ng), (1, m4), device=x.device, dtype=torch.float32)
    if m == 0:
        return QTensor(q, s)
    gp2 = next_pow2(ng)
    step = min(gp2, _MAX_SINGLE // GROUP)
    _LAUNCH["group"]((m,), (x, q, s, k, x.stride(0), q.stride(0), s.stride(0), s.stride(1)),
                     {"QMAX": E4M3_MAX, "TINY_": TINY, "GROUP_": GROUP, "GROUPS_P2": gp2, "GROUPS_PER_STEP": step},
                     {"num_warps": _warps(step * GROUP)})
    return QTensor(q, s)


def quantize(x: torch.Tensor, fmt_name: str) -> QTensor:
    """Dispatch on the format name (one of FORMATS)."""
    if fmt_name == "fp8_block128":
        return quantize_group128(x)
    if fmt_name in ("int8", "fp8"):
        return quantize_token(x, fmt_name)
    raise ValueError(f"no Triton quantizer for format {fmt_name!r}; have {', '.join(FORMATS)}")
