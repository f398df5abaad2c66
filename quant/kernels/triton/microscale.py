"""Triton passes for the emulated microscaling formats (mxfp8, nvfp4) on GPUs without their tensor cores.

- `fake_quantize(x, fmt)`: activation [M, K] -> dequantize(quantize(x)) [M, K] in x's dtype, one pass
  (the format's codes, never stored); nvfp4 first takes the tensor's absmax (its global scale).
- `dequantize_weight(w, fmt, dtype)`: stored weight [N, K] (+ scales) -> [N, K] in dtype, one pass.

Same math as quant/formats/mxfp8.py and nvfp4.py as torch runs it on CUDA, operation for operation:
IEEE division between tensors (div_rn); multiplication by the fp32 reciprocal where the format divides
by a Python number (torch's CUDA kernel does that; true division differed in 2e-4 of nvfp4 fp16
elements on an H100); power-of-two scales built from exponent bits; round-to-nearest-even e4m3 casts
with saturation; e2m1 rounding to the nearest value with ties to the even code. Used by
reference.emulated_linear on CUDA; nothing here runs on import.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ...formats import QTensor
from ...formats.base import E2M1_MAX, E4M3_MAX, TINY, ceil_div
from ...formats.mxfp8 import E4M3_EMAX
from .launch import DirectLauncher
from .tiles import next_pow2

GROUPS = {"mxfp8": 32, "nvfp4": 16}
_E4M3 = tl.constexpr(E4M3_MAX)
_EMAX = tl.constexpr(E4M3_EMAX)
_TINY = tl.constexpr(TINY)
_E2M1 = tl.constexpr(E2M1_MAX)


def _f32_reciprocal(v: float) -> float:
    """1 / v rounded to fp32: torch's CUDA division by a Python scalar multiplies by this."""
    return (torch.tensor(1.0) / torch.tensor(v)).item()


_INV_E2M1 = tl.constexpr(_f32_reciprocal(E2M1_MAX))
_INV_NV_GLOBAL = tl.constexpr(_f32_reciprocal(E4M3_MAX * E2M1_MAX))  # nvfp4 global scale = absmax / (448 * 6)
_BLOCK_K = 1024  # columns per program (a multiple of both groups: groups never straddle programs)
_ELEMS = 4096  # elements per program: ROWS = _ELEMS / BLOCK_K rows


@triton.jit
def _e4m3(v):
    """fp32 -> nearest e4m3 value (saturating at +-448), back in fp32."""
    return tl.minimum(tl.maximum(v, -_E4M3), _E4M3).to(tl.float8e4nv).to(tl.float32)


@triton.jit
def _e2m1_value(code):
    """e2m1 magnitude code 0..7 -> 0, .5, 1, 1.5, 2, 3, 4, 6."""
    return tl.where(code <= 4, code.to(tl.float32) * 0.5, tl.where(code == 5, 3.0, tl.where(code == 6, 4.0, 6.0)))


@triton.jit
def _e2m1(v):
    """fp32 -> nearest e2m1 value (saturating at 6; a midpoint goes to the even code), sign kept."""
    m = tl.minimum(tl.abs(v), _E2M1)
    lo = ((m > 0.25).to(tl.int32) + (m > 0.75).to(tl.int32) + (m > 1.25).to(tl.int32) + (m > 1.75).to(tl.int32)
          + (m > 2.5).to(tl.int32) + (m > 3.5).to(tl.int32) + (m > 5.0).to(tl.int32))
    hi = ((m >= 0.25).to(tl.int32) + (m >= 0.75).to(tl.int32) + (m >= 1.25).to(tl.int32)
          + (m >= 1.75).to(tl.int32) + (m >= 2.5).to(tl.int32) + (m >= 3.5).to(tl.int32) + (m >= 5.0).to(tl.int32))
    mag = _e2m1_value(tl.where(lo == hi, lo, lo + lo % 2))
    return tl.where(v < 0, -mag, mag)


@triton.jit
def _pow2(biased):
    """int32 biased exponent b in [1, 254] -> 2.0 ** (b - 127), exactly (built from the bits)."""
    return (biased << 23).to(tl.float32, bitcast=True)


@triton.jit
def _mx_exponent_scale(amax):
    """Group absmax -> 2 ** (floor(log2(max(amax, TINY))) - 8), from the float's exponent bits: exact, and
    equal to the reference's floor(log2()) for every 16-bit input (their absmax sits >= 2**-11 below a
    power of two, far outside log2f's rounding)."""
    bits = tl.maximum(amax, _TINY).to(tl.int32, bitcast=True)
    return _pow2(((bits >> 23) & 0xFF) - _EMAX)


@triton.jit
def _fake_quant_kernel(x_ptr, y_ptr, amax_ptr, M, K, stride_xm, stride_ym,
                       IS_NVFP4: tl.constexpr, GROUP: tl.constexpr, ROWS: tl.constexpr, BLOCK_K: tl.constexpr):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cols = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    mask = (rows < M)[:, None] & (cols < K)[None, :]
    rows64 = rows.to(tl.int64)[:, None]
    x = tl.load(x_ptr + rows64 * stride_xm + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    g = tl.reshape(x, (ROWS, BLOCK_K // GROUP, GROUP))
    gmax = tl.max(tl.abs(g), axis=2)
    if IS_NVFP4:
        gs = tl.maximum(tl.load(amax_ptr), _TINY) * _INV_NV_GLOBAL
        block = _e4m3(tl.math.div_rn(gmax * _INV_E2M1, gs))
        scale = block * gs
        v = tl.math.div_rn(g, tl.maximum(scale, _TINY)[:, :, None])
        y = _e2m1(v) * scale[:, :, None]
    else:
        scale = _mx_exponent_scale(gmax)[:, :, None]
        y = _e4m3(tl.math.div_rn(g, scale)) * scale
    tl.store(y_ptr + rows64 * stride_ym + cols[None, :], tl.reshape(y, (ROWS, BLOCK_K)).to(y_ptr.dtype.element_ty),
             mask=mask)


@triton.jit
def _dequant_weight_kernel(q_ptr, s_ptr, gs_ptr, y_ptr, N, K, stride_qn, stride_sn, stride_yn,
                           IS_NVFP4: tl.constexpr, GROUP: tl.constexpr, ROWS: tl.constexpr, BLOCK_K: tl.constexpr):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    k0 = tl.program_id(1) * BLOCK_K
    rmask = (rows < N)[:, None]
    rows64 = rows.to(tl.int64)[:, None]
    gcols = k0 // GROUP + tl.arange(0, BLOCK_K // GROUP)
    gmask = rmask & (gcols < K // GROUP)[None, :]
    if IS_NVFP4:
        half = k0 // 2 + tl.arange(0, BLOCK_K // 2)
        packed = tl.load(q_ptr + rows64 * stride_qn + half[None, :], mask=rmask & (half < K // 2)[None, :], other=0)
        codes = tl.reshape(tl.join(packed & 0xF, packed >> 4), (ROWS, BLOCK_K))  # element 2i: low nibble
        mag = _e2m1_value((codes & 7).to(tl.int32))
        vals = tl.where((codes & 8) != 0, -mag, mag)
        block = tl.load(s_ptr + rows64 * stride_sn + gcols[None, :], mask=gmask, other=0.0).to(tl.float32)
        scale = block * tl.load(gs_ptr)
    else:
        cols = k0 + tl.arange(0, BLOCK_K)
        vals = tl.load(q_ptr + rows64 * stride_qn + cols[None, :], mask=rmask & (cols < K)[None, :],
                       other=0.0).to(tl.float32)
        expo = tl.load(s_ptr + rows64 * stride_sn + gcols[None, :], mask=gmask, other=127).to(tl.int32)
        scale = tl.where(expo == 0, 2.0 ** -127, _pow2(expo))  # e8m0 0 is 2**-127, a subnormal
    y = tl.reshape(vals, (ROWS, BLOCK_K // GROUP, GROUP)) * scale[:, :, None]
    cols = k0 + tl.arange(0, BLOCK_K)
    tl.store(y_ptr + rows64 * stride_yn + cols[None, :], tl.reshape(y, (ROWS, BLOCK_K)).to(y_ptr.dtype.element_ty),
             mask=rmask & (cols < K)[None, :])


_LAUNCH = {"fake": DirectLauncher(_fake_quant_kernel), "dequant": DirectLauncher(_dequant_weight_kernel)}


def _tiles(rows: int, k: int) -> tuple[int, int, tuple[int, int]]:
    block_k = min(_BLOCK_K, max(32, next_pow2(k)))
    nrows = max(1, min(_ELEMS // block_k, next_pow2(rows)))
    return nrows, block_k, (ceil_div(rows, nrows), ceil_div(k, block_k))


def fake_quantize(x: torch.Tensor, fmt_name: str) -> torch.Tensor:
    """x [M, K] (16-bit, CUDA, K a multiple of the group) -> dequantize(quantize(x)) in x.dtype."""
    if x.stride(1) != 1:
        x = x.contiguous()
    m, k = x.shape
    y = torch.empty_like(x)
    if m == 0:
        return y
    is_nv = fmt_name == "nvfp4"
    # nvfp4's global scale needs the whole tensor's absmax first (one reduction, no temporary)
    amax = torch.linalg.vector_norm(x, float("inf"), dtype=torch.float32).reshape(1) if is_nv else x
    rows, block_k, grid = _tiles(m, k)
    _LAUNCH["fake"](grid, (x, y, amax, m, k, x.stride(0), y.stride(0)),
                    {"IS_NVFP4": is_nv, "GROUP": GROUPS[fmt_name], "ROWS": rows, "BLOCK_K": block_k},
                    {"num_warps": 4})
    return y


def dequantize_weight(w: QTensor, fmt_name: str, dtype: torch.dtype) -> torch.Tensor:
    """Stored weight (mxfp8: e4m3 [N, K] + uint8 exponents [N, K/32]; nvfp4: uint8 [N, K/2] + e4m3
    [N, K/16] + fp32 global scale) -> [N, K] in dtype."""
    is_nv = fmt_name == "nvfp4"
    q, s = w.data, w.scale
    n = q.shape[0]
    k = q.shape[1] * (2 if is_nv else 1)
    y = torch.empty((n, k), device=q.device, dtype=dtype)
    if n == 0:
        return y
    if q.stride(1) != 1 or s.stride(1) != 1:
        q, s = q.contiguous(), s.contiguous()
    gs = w.global_scale.float().reshape(1) if is_nv else s
    rows, block_k, grid = _tiles(n, k)
    _LAUNCH["dequant"](grid, (q, s, gs, y, n, k, q.stride(0), s.stride(0), y.stride(0)),
                       {"IS_NVFP4": is_nv, "GROUP": GROUPS[fmt_name], "ROWS": rows, "BLOCK_K": block_k},
                       {"num_warps": 4})
    return y

