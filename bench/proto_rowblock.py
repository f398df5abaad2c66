"""Prototype: per-token W8A8 with the activation quantization inside the GEMM kernel, one row block per program.

    python bench/proto_rowblock.py [--shapes wan1.3b wan14b] [--jobs 15]

Each program owns BLOCK_M tokens: it reads their bf16 rows (absmax pass, then quantize pass: the
quantizer's own math, kernels.triton_quant.to_q), writes the 8-bit codes to a scratch [M, K] buffer,
and then computes every N tile of its row block from those codes (still in L1/L2) with the per-token
scales held in registers. One launch instead of two; the activation is read from HBM once. Programs
in their quantize phase (memory-bound) overlap programs in their GEMM phase (compute-bound) when two
fit on an SM. Timed against the current path (Triton quantizer + kernels.triton_gemm.w8a8_gemm) and bf16.
"""
import argparse
import itertools
import multiprocessing as mp
import os
import sys
import time

import torch
import triton
import triton.language as tl

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from quant.formats.base import E4M3_MAX, INT8_MAX, TINY  # noqa: E402
from quant.kernels.triton_quant import _to_q as to_q  # noqa: E402

SHAPES = {"wan1.3b": [(32760, 1536, 1536), (32760, 1536, 8960), (32760, 8960, 1536)],
          "wan14b": [(32760, 5120, 5120), (32760, 5120, 13824), (32760, 13824, 5120)]}


@triton.jit
def _rowblock_kernel(x_ptr, q_ptr, b_ptr, c_ptr, sb_ptr, bias_ptr, M, N, K,
                     stride_xm, stride_qm, stride_bn, stride_cm,
                     IS_INT: tl.constexpr, QMAX: tl.constexpr, TINY_: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, QBLOCK_K: tl.constexpr,
                     STAGGER: tl.constexpr, FLAT: tl.constexpr):
    pid = tl.program_id(0)
    offs_m = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    mmask = offs_m < M
    rows = offs_m.to(tl.int64)
    offs_qk = tl.arange(0, QBLOCK_K)
    xrow = x_ptr + rows[:, None] * stride_xm + offs_qk[None, :]
    qrow = q_ptr + rows[:, None] * stride_qm + offs_qk[None, :]
    amax = tl.zeros((BLOCK_M,), dtype=tl.float32)
    for k0 in range(0, K, QBLOCK_K):
        xv = tl.load(xrow + k0, mask=mmask[:, None], other=0.0).to(tl.float32)
        amax = tl.maximum(amax, tl.max(tl.abs(xv), axis=1))
    sa = tl.maximum(amax, TINY_) / QMAX
    for k0 in range(0, K, QBLOCK_K):
        xv = tl.load(xrow + k0, mask=mmask[:, None], other=0.0).to(tl.float32)
        tl.store(qrow + k0, to_q(xv, sa[:, None], QMAX, IS_INT).to(q_ptr.dtype.element_ty), mask=mmask[:, None])
    tl.debug_barrier()

    offs_k = tl.arange(0, BLOCK_K)
    a_base = q_ptr + rows[:, None] * stride_qm + offs_k[None, :]
    num_n = tl.cdiv(N, BLOCK_N)
    for t in tl.range(0, num_n, flatten=FLAT):  # FLAT: flattened with the k loop, one software pipeline
        tn = (t + pid * STAGGER) % num_n  # STAGGER: neighbours start on different W tiles
        offs_n = tn * BLOCK_N + tl.arange(0, BLOCK_N)
        rn = tl.max_contiguous(tl.multiple_of(offs_n % N, BLOCK_N), BLOCK_N)
        b_ptrs = b_ptr + rn[None, :].to(tl.int64) * stride_bn + offs_k[:, None]
        a_ptrs = a_base
        if IS_INT:
            acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
        else:
            acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for kt in range(0, tl.cdiv(K, BLOCK_K)):
            a = tl.load(a_ptrs, mask=mmask[:, None], other=0.0)
            b = tl.load(b_ptrs)
            acc = tl.dot(a, b, acc, out_dtype=acc.dtype)
            a_ptrs += BLOCK_K
            b_ptrs += BLOCK_K
        sb = tl.load(sb_ptr + rn)
        out = acc.to(tl.float32) * sa[:, None] * sb[None, :] + tl.load(bias_ptr + rn).to(tl.float32)[None, :]
        c_ptrs = c_ptr + rows[:, None] * stride_cm + offs_n[None, :]
        tl.store(c_ptrs, out.to(c_ptr.dtype.element_ty), mask=mmask[:, None] & (offs_n[None, :] < N))


def launch(x, w, sw, bias, q, c, cfg, warmup=False):
    bm, bn, bk, qbk, warps, stages, stagger, flat = cfg
    m, k = x.shape
    n = w.shape[0]
    is_int = w.dtype == torch.int8
    kw = dict(IS_INT=is_int, QMAX=INT8_MAX if is_int else E4M3_MAX, TINY_=TINY, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk,
              QBLOCK_K=qbk, STAGGER=stagger, FLAT=flat, num_warps=warps, num_stages=stages)
    args = (x, q, w, c, sw, bias, m, n, k, x.stride(0), q.stride(0), w.stride(0), c.stride(0))
    grid = (triton.cdiv(m, bm),)
    if warmup:
        return _rowblock_kernel.warmup(*args, grid=grid, **kw)
    return _rowblock_kernel[grid](*args, **kw)


def space():
    out = []
    for bm, bn, bk, qbk, warps, stages, stagger, flat in itertools.product(
            (64, 128), (128, 256), (128,), (256,), (4, 8), (3, 4), (0, 1), (False, True)):
        if (bm + bn) * bk * stages > 220 * 1024 or bm * bn // (32 * warps) > 128:
            continue
        out.append((bm, bn, bk, qbk, warps, stages, stagger, flat))
    return out


def _compile(job):
    cfg, shapes, is_int = job
    try:
        torch.cuda.init()
        dt = torch.int8 if is_int else torch.float8_e4m3fn
        for m, k, n in shapes:
            x = torch.zeros(16, k, device="cuda", dtype=torch.bfloat16)
            w = torch.zeros(16, k, device="cuda", dtype=torch.int8).view(dt)
            q = torch.zeros(16, k, device="cuda", dtype=torch.int8).view(dt)
            c = torch.zeros(16, n, device="cuda", dtype=torch.bfloat16)
            s = torch.zeros(16, 1, device="cuda")
            b = torch.zeros(16, device="cuda", dtype=torch.bfloat16)
            bm, bn, bk, qbk, warps, stages, stagger, flat = cfg
            kw = dict(IS_INT=is_int, QMAX=INT8_MAX if is_int else E4M3_MAX, TINY_=TINY, BLOCK_M=bm, BLOCK_N=bn,
                      BLOCK_K=bk, QBLOCK_K=qbk, STAGGER=stagger, FLAT=flat, num_warps=warps, num_stages=stages)
            _rowblock_kernel.warmup(x, q, w, c, s, b, m, n, k, k, k, k, n, grid=(1,), **kw)
        return job, None
    except Exception as e:  # noqa: BLE001
        return job, f"{type(e).__name__}: {str(e)[:160]}"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--shapes", nargs="+", default=["wan1.3b", "wan14b"])
    p.add_argument("--jobs", type=int, default=15)
    p.add_argument("--top", type=int, default=4)
    a = p.parse_args()
    from triton.testing import do_bench

    from quant.formats import get_format
    from quant.kernels import triton_gemm, triton_quant

    shapes = tuple(s for name in a.shapes for s in SHAPES[name])
    t0 = time.time()
    jobs = [(cfg, shapes, is_int) for is_int in (True, False) for cfg in space()]
    failed = set()
    with mp.get_context("spawn").Pool(a.jobs) as pool:
        for job, err in pool.imap_unordered(_compile, jobs):
            if err:
                failed.add(job[0:1] + job[2:])
                print("compile fail", job[0], job[2], err)
    print(f"{len(jobs)} compiled in {time.time() - t0:.0f} s, {len(failed)} failed", flush=True)

    def t(fn):
        return do_bench(fn, warmup=10, rep=50, return_mode="median")

    for fmt in ("fp8", "int8"):
        f = get_format(fmt)
        for m, k, n in shapes:
            g = torch.Generator(device="cuda").manual_seed(0)
            x = torch.randn(m, k, device="cuda", generator=g)
            x[:, torch.randperm(k, device="cuda", generator=g)[: k // 100]] *= 20
            x = x.to(torch.bfloat16)
            wf = torch.randn(n, k, device="cuda", dtype=torch.bfloat16, generator=g) * k ** -0.5
            bias = torch.randn(n, device="cuda", dtype=torch.bfloat16, generator=g)
            wq = f.quantize_weight(wf)
            sw = wq.scale.float().contiguous()

            def current():
                xq = triton_quant.quantize(x, fmt)
                return triton_gemm.w8a8_gemm(xq.data, xq.scale, wq.data, sw, bias, x.dtype, grouped=False)

            ref = current()
            base = t(lambda: torch.nn.functional.linear(x, wf, bias))
            cur = t(current)
            q = torch.empty(m, k, device="cuda", dtype=wq.data.dtype)
            c = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
            rows = []
            for cfg in space():
                if (cfg, fmt == "int8") in failed:
                    continue
                try:
                    c.fill_(float("nan"))
                    launch(x, wq.data, sw, bias, q, c, cfg)
                    d = ((c.float() - ref.float()).norm() / ref.float().norm()).item()
                    ms = t(lambda: launch(x, wq.data, sw, bias, q, c, cfg))
                except Exception as e:  # noqa: BLE001
                    print("run fail", cfg, type(e).__name__, str(e)[:120])
                    continue
                rows.append((ms, cfg, d))
            rows.sort()
            print(f"\n== {fmt} {m}x{k}x{n}: bf16 {base:.3f} ms; current (quantizer + GEMM) {cur:.3f} ms = "
                  f"{base / cur:.2f}x bf16; {len(rows)} configs")
            for ms, cfg, d in rows[: a.top]:
                print(f"   {cfg} {ms:.3f} ms = {base / ms:.2f}x bf16, {cur / ms:.3f}x current; rel diff vs current {d:.1e}",
                      flush=True)
            del x, q, c, wq, wf
            torch.cuda.empty_cache()
    print(f"total {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
