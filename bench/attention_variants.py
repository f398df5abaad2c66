"""Experiment variants of the quantized attention's main kernel, timed against SDPA and the shipped kernel.

    python -m bench.attention_variants [--json PATH]

Variants (constexpr switches of a copy of quant/attention/triton/kernel.py's main loop; the product keeps
only what wins):
- EXP: how 2**x of the scores is computed. 0: MUFU (`tl.math.exp2`, as shipped). 1: half of each tile's
  columns (every second one, via reshape + split) by a degree-3 polynomial on the FMA units (FA4's trick:
  x = n + f, n = round(x) by the 1.5 * 2**23 add, 2**f by the polynomial, n added into the exponent bits).
  2 / 4: inline PTX, one element of every 2 / 4 by the polynomial, the rest by ex2.approx (GPU only).
- QPRE: Q quantized by its own pre-pass (quantize.quantize_q; q8 [BH * Lq, DP] int8 read through TMA) instead
  of inside the main kernel. Won for the accurate mode at D 128 (shipped since as Config.q_prepass); the
  polynomial exp2 lost everywhere (bench/results/h200-attention.md, "exp2 on the FMA units").
Shapes: Wan 1.3B and 14B self-attention at 480p (B2 H12 / H40, L 32760, D 128); error as bench.attention_ops.
"""
from __future__ import annotations

import argparse
import json

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from quant.attention.triton import kernel as K
from quant.attention.triton import quantized_attention
from quant.attention.triton.configs import Config
from quant.attention.triton.quantize import (
    INT8_MAX,
    TINY,
    quantize,
    quantize_q,
    to_int8,
)

from .attention_ops import _sdpa, make_inputs, rel_err, time_ms

# degree-3 fit of 2**f on [-0.5, 0.5] (relative error 7.7e-5)
C0 = tl.constexpr(0.9999289512634277)
C1 = tl.constexpr(0.6932762265205383)
C2 = tl.constexpr(0.24260404706001282)
C3 = tl.constexpr(0.05508868396282196)


@triton.jit
def exp2_poly(x):
    """2**x on the FMA units (x >= -125 after clamping; below that ~0)."""
    x = tl.maximum(x, -125.0)
    t = x + K.MAGIC_F
    f = x - (t - K.MAGIC_F)
    p = C0 + f * (C1 + f * (C2 + f * C3))
    return (p.to(tl.int32, bitcast=True) + (t.to(tl.int32, bitcast=True) << 23)).to(tl.float32, bitcast=True)


_POLY = """
max.ftz.f32 x, {i}, 0fC2FA0000;
add.rn.ftz.f32 t, x, 0f4B400000;
sub.rn.ftz.f32 fl, t, 0f4B400000;
sub.rn.ftz.f32 f, x, fl;
fma.rn.ftz.f32 p, f, 0f3D61A4AC, 0f3E786D32;
fma.rn.ftz.f32 p, p, f, 0f3F317A8D;
fma.rn.ftz.f32 p, p, f, 0f3F7FFB58;
shl.b32 t, t, 23;
add.s32 {o}, p, t;
"""


def _asm(pack: int) -> str:
    n = pack
    body = "".join(f"ex2.approx.ftz.f32 ${i}, ${i + n};\n" for i in range(n - 1))
    return ("{\n.reg .b32 x, t, fl, f, p;\n" + body + _POLY.format(i=f"${2 * n - 1}", o=f"${n - 1}") + "}")


ASM2 = tl.constexpr(_asm(2))
ASM4 = tl.constexpr(_asm(4))


@triton.jit
def _exp2(x, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, EXP: tl.constexpr):
    if EXP == 0:
        p = tl.math.exp2(x)
    elif EXP == 1:
        a, b = tl.split(tl.reshape(x, (BLOCK_M, BLOCK_N // 2, 2)))
        p = tl.reshape(tl.join(tl.math.exp2(a), exp2_poly(b)), (BLOCK_M, BLOCK_N))
    elif EXP == 2:
        p = tl.inline_asm_elementwise(ASM2, "=r,=r,r,r", [x], dtype=tl.float32, is_pure=True, pack=2)
    else:
        p = tl.inline_asm_elementwise(ASM4, "=r,=r,=r,=r,r,r,r,r", [x], dtype=tl.float32, is_pure=True, pack=4)
    return p


@triton.jit
def _update(acc, l_i, m_i, sf, cs, v_desc, kv_row, vt_row, j, LK, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
            P_LOG2: tl.constexpr, MASK: tl.constexpr, ACCURATE: tl.constexpr, EXP: tl.constexpr):
    if MASK:
        valid = (j * BLOCK_N + tl.arange(0, BLOCK_N)) < LK
        smax = tl.max(tl.where(valid[None, :], sf, 0.0), 1)
    else:
        smax = tl.max(sf, 1)
    m_new = tl.maximum(m_i, (smax - K.MAGIC_F) * cs)
    alpha = tl.math.exp2(m_i - m_new)
    l_i = l_i * alpha
    acc = acc * alpha[:, None]
    m_i = m_new
    x = sf * cs[:, None] - (m_i + K.MAGIC_F * cs - P_LOG2)[:, None]
    if MASK:
        x = tl.where(valid[None, :], x, float("-inf"))
        p = tl.math.exp2(x)
    else:
        p = _exp2(x, BLOCK_M, BLOCK_N, EXP)
    l_i += tl.sum(p, 1)
    if ACCURATE:
        v = v_desc.load([kv_row, 0])
        acc = tl.dot(p.to(v.dtype), v, acc)
    else:
        vt = v_desc.load([vt_row, j * BLOCK_N])
        acc = tl.dot(p.to(tl.float8e4nv), vt.T, acc)
    return acc, l_i, m_i


@triton.jit
def attn_kernel(q_ptr, sqb, sqh, sql, sqd, qk_scale, q_desc, qs_ptr, k_desc, v_desc, ks_ptr, vs_ptr, o_ptr, H, LQ,
                LK, LK_PAD, sob, sol, soh,
                D: tl.constexpr, DP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                ACCURATE: tl.constexpr, PIPE: tl.constexpr, EXP: tl.constexpr, QPRE: tl.constexpr):
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    P_LOG2: tl.constexpr = 0.0 if ACCURATE else 8.0
    nkb = LK_PAD // BLOCK_N
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, DP)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    if QPRE:
        q = q_desc.load([bh * LQ + pid_m * BLOCK_M, 0])
        qs = tl.load(qs_ptr + bh.to(tl.int64) * LQ + rows, mask=rows < LQ, other=0.0)
    else:
        q_ptrs = q_ptr + b * sqb + h * sqh + rows.to(tl.int64)[:, None] * sql + cols[None, :] * sqd
        q = tl.load(q_ptrs, mask=(rows[:, None] < LQ) & (cols[None, :] < D), other=0.0).to(tl.float32)
        amax = tl.maximum(tl.max(tl.abs(q), 1), TINY)
        q = to_int8(q, (1.0 / amax * INT8_MAX)[:, None])
        qs = amax * (qk_scale / INT8_MAX)
    kv0 = bh * LK_PAD
    vt0 = bh * DP
    ks_base = ks_ptr + bh * nkb
    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, DP), tl.float32)
    if PIPE:
        sf = K._scores(q, k_desc, kv0)
        for j in range(nkb - 1):
            sf_next = K._scores(q, k_desc, kv0 + (j + 1) * BLOCK_N)
            cs = qs * tl.load(ks_base + j)
            acc, l_i, m_i = _update(acc, l_i, m_i, sf, cs, v_desc, kv0 + j * BLOCK_N, vt0, j, LK,
                                    BLOCK_M, BLOCK_N, P_LOG2, False, ACCURATE, EXP)
            sf = sf_next
    else:
        for j in range(nkb - 1):
            sf = K._scores(q, k_desc, kv0 + j * BLOCK_N)
            cs = qs * tl.load(ks_base + j)
            acc, l_i, m_i = _update(acc, l_i, m_i, sf, cs, v_desc, kv0 + j * BLOCK_N, vt0, j, LK,
                                    BLOCK_M, BLOCK_N, P_LOG2, False, ACCURATE, EXP)
        sf = K._scores(q, k_desc, kv0 + (nkb - 1) * BLOCK_N)
    cs = qs * tl.load(ks_base + nkb - 1)
    acc, l_i, m_i = _update(acc, l_i, m_i, sf, cs, v_desc, kv0 + (nkb - 1) * BLOCK_N, vt0, nkb - 1, LK,
                            BLOCK_M, BLOCK_N, P_LOG2, True, ACCURATE, EXP)
    out = acc / l_i[:, None]
    if not ACCURATE:
        out = out * tl.load(vs_ptr + bh * DP + cols)[None, :]
    ptrs = o_ptr + b * sob + h * soh + rows.to(tl.int64)[:, None] * sol + cols[None, :]
    tl.store(ptrs, out.to(o_ptr.dtype.element_ty), mask=(rows[:, None] < LQ) & (cols[None, :] < D))


def attention(q, k, v, accurate: bool, cfg: Config, exp: int, qpre: bool):
    """The variant kernel on q [B, H, Lq, D], k/v [B, H, Lk, D] -> [B, H, Lq, D] (storage [B, Lq, H, D])."""
    bsz, heads, lq, d = q.shape
    lk = k.shape[2]
    scale = d ** -0.5
    ops = quantize(k, v, cfg.block_n, accurate)
    dp = ops.k8.shape[1]
    bm, bn = cfg.block_m, cfg.block_n
    k_desc = TensorDescriptor(ops.k8, list(ops.k8.shape), [dp, 1], [bn, dp])
    v_box = [bn, dp] if accurate else [dp, bn]
    v_desc = TensorDescriptor(ops.v, list(ops.v.shape), [ops.v.stride(0), 1], v_box)
    q_desc, qs = k_desc, ops.ks
    if qpre:
        q8, qs = quantize_q(q, scale * K.LOG2E)
        q_desc = TensorDescriptor(q8, list(q8.shape), [dp, 1], [bm, dp])
    out = torch.empty(bsz, lq, heads, d, device=q.device, dtype=q.dtype)
    vs = ops.vs if ops.vs is not None else ops.ks
    grid = (triton.cdiv(lq, bm), bsz * heads)
    attn_kernel[grid](q, *q.stride(), scale * K.LOG2E, q_desc, qs, k_desc, v_desc, ops.ks, vs, out, heads, lq, lk,
                      ops.lk_pad, out.stride(0), out.stride(1), out.stride(2), D=d, DP=dp, BLOCK_M=bm, BLOCK_N=bn,
                      ACCURATE=accurate, PIPE=cfg.pipe, EXP=exp, QPRE=qpre, num_warps=cfg.num_warps,
                      num_stages=cfg.num_stages, maxnreg=cfg.maxnreg or None)
    return out.transpose(1, 2)


C = Config
FP8, ACC = C(64, 128, 4, 3, True), C(64, 64, 4, 3, False)  # the shipped configs at D 128
VARIANTS = {  # name -> (accurate, config, EXP, QPRE)
    "fp8 poly 1/2 split": (False, FP8, 1, False),
    "fp8 poly 1/2 asm": (False, FP8, 2, False),
    "fp8 poly 1/4 asm": (False, FP8, 4, False),
    "fp8 poly 1/2 split nopipe": (False, C(64, 128, 4, 3, False), 1, False),
    "fp8 qpre poly 1/2 split": (False, FP8, 1, True),
    "acc poly 1/2 split": (True, ACC, 1, False),
    "acc qpre 128x64 w8": (True, C(128, 64, 8, 3, False), 0, True),
    "acc qpre 128x64 w8 poly 1/2": (True, C(128, 64, 8, 3, False), 1, True),
    "acc qpre 64x64": (True, ACC, 0, True),
    "acc qpre 64x64 s2": (True, C(64, 64, 4, 2, False), 0, True),
    "acc qpre 64x128": (True, C(64, 128, 4, 3, False), 0, True),
}
SHAPES = {"B2 H12 L32760": (2, 12, 32760, 32760, 128), "B2 H40 L32760": (2, 40, 32760, 32760, 128)}


def _regs() -> tuple:
    cache = attn_kernel.device_caches[torch.cuda.current_device()][0]
    c = list(cache.values())[-1]
    return c.n_regs, c.n_spills


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args(argv)
    device = torch.device("cuda")
    rows = []
    print("| shape | method | ms | x SDPA | x shipped | TFLOP/s | rel err | regs/spills |\n"
          "| --- | --- | --- | --- | --- | --- | --- | --- |", flush=True)
    for sname, shape in SHAPES.items():
        b, h, lq, lk, d = shape
        flops = 4 * b * h * lq * lk * d
        q, k, v = make_inputs(shape, torch.bfloat16, device)
        fns = {"sdpa": (_sdpa, None),
               "shipped fp8": (lambda q, k, v: quantized_attention(q, k, v), False),
               "shipped accurate": (lambda q, k, v: quantized_attention(q, k, v, accurate=True), True)}
        for name, (acc, cfg, exp, qpre) in VARIANTS.items():
            fns[name] = (lambda q, k, v, a=acc, c=cfg, e=exp, p=qpre: attention(q, k, v, a, c, e, p), acc)
        base = {}
        for name, (fn, acc) in fns.items():
            try:
                ms = time_ms(fn, q, k, v)
                err = rel_err(fn, shape, device)
                regs = _regs() if name in VARIANTS else "-"
            except Exception as e:  # noqa: BLE001 - a variant that fails to compile is reported, not fatal
                print(f"| {sname} | {name} | failed {type(e).__name__}: {str(e)[:300]} |", flush=True)
                continue
            base.setdefault("sdpa" if acc is None else acc, ms)
            ref = base.get(acc, ms) if acc is not None else ms
            row = {"shape": sname, "method": name, "ms": ms, "x_sdpa": base["sdpa"] / ms, "x_shipped": ref / ms,
                   "tflops": flops / ms / 1e9, "rel_err": err, "regs_spills": regs}
            rows.append(row)
            print(f"| {sname} | {name} | {ms:.2f} | {row['x_sdpa']:.3f} | {row['x_shipped']:.3f} | "
                  f"{row['tflops']:.0f} | {err:.4f} | {regs} |", flush=True)
        del q, k, v
        torch.cuda.empty_cache()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
