"""Sweep launch configs of the Triton W8A8 GEMM (kernels.triton_gemm._w8a8_kernel) on the GPU.

    python bench/sweep_triton_configs.py [--out PATH.json] [--jobs 14] [--top 5] [--shapes wan14b|small]

GEMM alone on pre-quantized inputs (int8 / e4m3 A [M, K], W [N, K], per-token x per-channel fp32
scales, bf16 bias, bf16 out) at the Wan 2.1-14B shapes (M = 32760) or small-M ones (text encoders,
M = 77..2048), timed with triton.testing.do_bench (median); the activation quantizer and (fp8) cuBLAS'
rowwise GEMM are timed beside them. Space (wan14b): BLOCK_M, BLOCK_N in {128, 256}, BLOCK_K in {64, 128}
(+256 for int8), num_warps {4, 8}, num_stages {3, 4, 5}, GROUP_M {8, 16}; (small): BLOCK_M {32, 64, 128},
BLOCK_N {64, 128, 256}, BLOCK_K {128, 256}, num_warps {4, 8}, num_stages 3-6, GROUP_M 8; skipped: shared-memory
pipelines over 227 KiB ((BM + BN) * BK * stages bytes) and tiles whose accumulator alone needs more
than 128 registers a thread (BM * BN / (32 * warps) > 128: 256x256 at any warps, 128x256 / 256x128
at 4 warps; they spill). The kernel already accumulates int8 with tl.dot(..., out_dtype=tl.int32),
so there is no separate int32 variant. Configs are compiled first in parallel worker processes
(Triton's on-disk cache), then timed one by one in this process. The baseline is the launcher
(w8a8_gemm) with the current autotune list. The top configs per shape are checked against an fp32
reference (rel err < 1e-2).
"""
import argparse
import itertools
import json
import multiprocessing as mp
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

SHAPES = {  # (M, K, N)
    "wan14b": [(32760, 5120, 5120), (32760, 5120, 13824), (32760, 13824, 5120)],
    # text encoders and short batches: T5-XXL (512 tokens), CLIP ViT-H (257), the 512 x 4096^2
    "small": [(77, 4096, 4096), (257, 4096, 4096), (512, 4096, 4096), (1024, 4096, 4096), (2048, 4096, 4096),
              (512, 4096, 10240), (512, 10240, 4096), (257, 1280, 5120), (257, 5120, 1280)],
}
SMEM_LIMIT = 227 * 1024


def space(is_int, small=False):
    """(BLOCK_M, BLOCK_N, BLOCK_K, warps, stages, GROUP_M) within shared memory and registers."""
    out = []
    if small:
        grid = ((32, 64, 128), (64, 128, 256), (128, 256), (4, 8), (3, 4, 5, 6), (8,))
    else:
        grid = ((128, 256), (128, 256), (64, 128, 256) if is_int else (64, 128), (4, 8), (3, 4, 5), (8, 16))
    for bm, bn, bk, w, s, g in itertools.product(*grid):
        if (bm + bn) * bk * s > SMEM_LIMIT:
            continue
        if bm * bn // (32 * w) > 128:
            continue
        out.append((bm, bn, bk, w, s, g))
    return out


def make_inputs(m, k, n, is_int, device="cuda", seed=0):
    g = torch.Generator(device=device).manual_seed(seed)
    if is_int:
        a = torch.randint(-127, 128, (m, k), device=device, dtype=torch.int8, generator=g)
        w = torch.randint(-127, 128, (n, k), device=device, dtype=torch.int8, generator=g)
        sa = torch.rand(m, 1, device=device, generator=g) * 0.02 + 0.001
        sw = torch.rand(n, 1, device=device, generator=g) * 0.002 + 0.0001
    else:
        a = (torch.randn(m, k, device=device, generator=g) * 100).clamp(-448, 448).to(torch.float8_e4m3fn)
        w = (torch.randn(n, k, device=device, generator=g) * 100).clamp(-448, 448).to(torch.float8_e4m3fn)
        sa = torch.rand(m, 1, device=device, generator=g) * 0.01 + 0.001
        sw = torch.rand(n, 1, device=device, generator=g) * 0.001 + 0.0001
    bias = torch.randn(n, device=device, generator=g).to(torch.bfloat16)
    return a, w, sa, sw, bias


def launch_args(a, w, sa, sw, bias, c):
    from quant.kernels import triton_gemm as tg
    m, k = a.shape
    n = w.shape[0]
    args = (a, w, c, sa, sw, bias, m, n, k, tg.m_bucket(m), a.stride(0), w.stride(0), c.stride(0),
            sa.stride(0), 0, sw.stride(0), 0)
    return args


def consts(is_int, bk, k):
    from quant.formats.base import E4M3_MAX, TINY
    return {"HAS_BIAS": True, "IS_INT": is_int, "GROUPED": False, "A_FUSED": False,
            "EVEN_K": k % bk == 0, "QMAX": E4M3_MAX, "TINY_": TINY}


def run_cfg(a, w, sa, sw, bias, c, cfg, is_int, warmup_only=False):
    import triton
    from quant.kernels import triton_gemm as tg
    bm, bn, bk, wp, st, gm = cfg
    m, k = a.shape
    n = w.shape[0]
    grid = (triton.cdiv(m, bm) * triton.cdiv(n, bn),)
    kw = dict(consts(is_int, bk, k), BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=gm, num_warps=wp, num_stages=st)
    args = launch_args(a, w, sa, sw, bias, c)
    if warmup_only:
        return tg._w8a8_kernel.fn.warmup(*args, grid=grid, **kw)
    return tg._w8a8_kernel.fn[grid](*args, **kw)


def _compile_worker(job):
    """Compile (is_int, cfg) for every shape's integer specialisation; small tensors (nothing runs)."""
    is_int, cfg, shapes = job
    try:
        torch.cuda.init()
        for m, k, n in shapes:
            dt = torch.int8 if is_int else torch.float8_e4m3fn
            # tiny buffers with the real integer arguments (strides passed explicitly below)
            a = torch.zeros(16, k, device="cuda", dtype=torch.int8).view(dt)
            w = torch.zeros(16, k, device="cuda", dtype=torch.int8).view(dt)
            sa = torch.zeros(16, 1, device="cuda")
            sw = torch.zeros(16, 1, device="cuda")
            bias = torch.zeros(16, device="cuda", dtype=torch.bfloat16)
            c = torch.zeros(16, n, device="cuda", dtype=torch.bfloat16)
            from quant.kernels import triton_gemm as tg
            bm, bn, bk, wp, st, gm = cfg
            args = (a, w, c, sa, sw, bias, m, n, k, tg.m_bucket(m), k, k, n, 1, 0, 1, 0)
            kw = dict(consts(is_int, bk, k), BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=gm,
                      num_warps=wp, num_stages=st)
            tg._w8a8_kernel.fn.warmup(*args, grid=(1,), **kw)
        return job, None
    except Exception as e:  # noqa: BLE001
        return job, f"{type(e).__name__}: {str(e)[:200]}"


def reference(a, w, sa, sw, bias):
    out = torch.empty(a.shape[0], w.shape[0], device=a.device, dtype=torch.float32)
    wf = w.float()
    for i in range(0, a.shape[0], 8192):
        out[i:i + 8192] = (a[i:i + 8192].float() @ wf.t()) * sa[i:i + 8192] * sw.t() + bias.float()
    return out


def rel(y, ref):
    y = y.float()
    if not torch.isfinite(y).all():
        return float("nan")
    return ((y - ref).norm() / ref.norm()).item()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=None)
    p.add_argument("--jobs", type=int, default=14)
    p.add_argument("--top", type=int, default=5)
    p.add_argument("--dtypes", nargs="+", default=["int8", "fp8"])
    p.add_argument("--shapes", default="wan14b", choices=sorted(SHAPES))
    args = p.parse_args()
    shapes, small = tuple(SHAPES[args.shapes]), args.shapes == "small"
    import triton
    import triton.testing as tt
    from quant.kernels import triton_gemm as tg
    from quant.kernels import triton_quant

    t0 = time.time()
    jobs = [(d == "int8", cfg, shapes) for d in args.dtypes for cfg in space(d == "int8", small)]
    counts = ", ".join("%s: %d" % (d, len(space(d == "int8", small))) for d in args.dtypes)
    print(f"{len(jobs)} configs to compile ({counts})", flush=True)
    failed = {}
    ctx = mp.get_context("spawn")
    with ctx.Pool(args.jobs) as pool:
        for job, err in pool.imap_unordered(_compile_worker, jobs):
            if err:
                failed[job] = err
    print(f"compiled in {time.time() - t0:.0f} s; {len(failed)} failed", flush=True)
    for job, err in failed.items():
        print(f"  compile fail {job}: {err}")

    results = {}
    for d in args.dtypes:
        is_int = d == "int8"
        for (m, k, n) in shapes:
            a, w, sa, sw, bias = make_inputs(m, k, n, is_int)
            c = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
            flops = 2.0 * m * n * k
            # baseline: the launcher with the current autotune list (fresh autotune for this key)
            tg._BEST.clear()
            tg.w8a8_gemm(a, sa, w, sw, bias, torch.bfloat16, grouped=False)
            base_cfg = tg._w8a8_kernel.best_config
            base_ms = tt.do_bench(lambda: tg.w8a8_gemm(a, sa, w, sw, bias, torch.bfloat16, grouped=False),
                                  warmup=10, rep=60, quantiles=[0.5])
            base_ms = base_ms[0] if isinstance(base_ms, (list, tuple)) else base_ms
            xb = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            wb = torch.randn(n, k, device="cuda", dtype=torch.bfloat16)
            bf16_ms = tt.do_bench(lambda: torch.nn.functional.linear(xb, wb, bias), warmup=10, rep=60, quantiles=[0.5])
            bf16_ms = bf16_ms[0] if isinstance(bf16_ms, (list, tuple)) else bf16_ms
            quant_ms = tt.do_bench(lambda: triton_quant.quantize(xb, d), warmup=10, rep=60, return_mode="median")
            cublas = ""
            if not is_int:
                cublas_ms = tt.do_bench(lambda: torch._scaled_mm(a, w.t(), scale_a=sa, scale_b=sw.t(), bias=bias,
                                                                 out_dtype=torch.bfloat16, use_fast_accum=True),
                                        warmup=10, rep=60, return_mode="median")
                cublas = f"; cuBLAS fp8 rowwise GEMM alone {cublas_ms:.4f} ms"
            rows = []
            for cfg in space(is_int, small):
                if (is_int, cfg, shapes) in failed:
                    continue
                try:
                    ms = tt.do_bench(lambda: run_cfg(a, w, sa, sw, bias, c, cfg, is_int), warmup=10, rep=40,
                                     quantiles=[0.5])
                    ms = ms[0] if isinstance(ms, (list, tuple)) else ms
                except Exception as e:  # noqa: BLE001
                    print(f"  run fail {d} {cfg}: {type(e).__name__}: {str(e)[:120]}")
                    continue
                rows.append((ms, cfg))
            rows.sort()
            ref = reference(a, w, sa, sw, bias)
            ybase = tg.w8a8_gemm(a, sa, w, sw, bias, torch.bfloat16, grouped=False)
            base_err = rel(ybase, ref)
            top = []
            for ms, cfg in rows[: args.top]:
                c.fill_(float("nan"))
                run_cfg(a, w, sa, sw, bias, c, cfg, is_int)
                err = rel(c, ref)
                top.append({"cfg": dict(zip(("BLOCK_M", "BLOCK_N", "BLOCK_K", "num_warps", "num_stages", "GROUP_M"), cfg)),
                            "ms": ms, "tflops": flops / ms / 1e9, "x_bf16": bf16_ms / ms, "x_base": base_ms / ms,
                            "rel_err": err, "ok": err < 1e-2})
            del ref
            key = f"{d} {m}x{k}x{n}"
            results[key] = {"bf16_ms": bf16_ms, "bf16_tflops": flops / bf16_ms / 1e9,
                            "base_cfg": str(base_cfg), "base_ms": base_ms, "base_tflops": flops / base_ms / 1e9,
                            "base_x_bf16": bf16_ms / base_ms, "base_rel_err": base_err,
                            "n_timed": len(rows), "top": top,
                            "all": [(ms, list(cfg)) for ms, cfg in rows]}
            print(f"\n== {key} (M x K x N): bf16 {bf16_ms:.3f} ms ({flops / bf16_ms / 1e9:.0f} TFLOP/s); "
                  f"current autotune {base_cfg} {base_ms:.3f} ms ({flops / base_ms / 1e9:.0f} TFLOP/s, "
                  f"{bf16_ms / base_ms:.2f}x bf16, rel err {base_err:.2e}); {len(rows)} configs timed; "
                  f"activation quantizer {quant_ms:.4f} ms{cublas}", flush=True)
            print("| BM | BN | BK | warps | stages | GROUP_M | ms | TFLOP/s | x bf16 | x current | rel err |")
            print("|---|---|---|---|---|---|---|---|---|---|---|")
            for t in top:
                cf = t["cfg"]
                print(f"| {cf['BLOCK_M']} | {cf['BLOCK_N']} | {cf['BLOCK_K']} | {cf['num_warps']} | {cf['num_stages']} | "
                      f"{cf['GROUP_M']} | {t['ms']:.3f} | {t['tflops']:.0f} | {t['x_bf16']:.2f}x | {t['x_base']:.3f} | "
                      f"{t['rel_err']:.2e}{'' if t['ok'] else ' FAIL'} |", flush=True)
            torch.cuda.empty_cache()
    print(f"\ntotal {time.time() - t0:.0f} s; {torch.cuda.get_device_name()}, triton {triton.__version__}, torch {torch.__version__}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
