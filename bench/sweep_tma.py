"""Persistent TMA GEMM (kernels.triton_gemm_tma) vs the current Triton W8A8 GEMM, GEMM alone, on the GPU.

    python bench/sweep_tma.py [--out PATH.json] [--jobs 14] [--dtypes int8 fp8] [--shapes all|wan14b|wan1.3b]
                              [--bk 64 128]

Pre-quantized int8 / e4m3 A [M, K] and W [N, K], per-token x per-channel fp32 scales, bf16 bias and
out, at the Wan 2.1-14B and 1.3B shapes (M = 32760). The baseline is triton_gemm.w8a8_gemm with the TMA
path switched off (the non-persistent kernel, autotuned); bf16 F.linear is timed beside it. Every TMA
config is compiled first in worker processes (Triton's disk cache), then timed here with do_bench
(median) and checked against the baseline's output (rel diff < 5e-3; both accumulate exactly in int32,
fp8 in fp32 in a different order).
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
from bench.sweep_triton_configs import make_inputs  # noqa: E402

SHAPES = [(32760, 5120, 5120), (32760, 5120, 13824), (32760, 13824, 5120),
          (32760, 1536, 1536), (32760, 1536, 8960), (32760, 8960, 1536)]  # (M, K, N)
SMEM_LIMIT = 227 * 1024


def space(bks=(128,)):
    """(BLOCK_M, BLOCK_N, BLOCK_K, stages, EPI_SPLIT, warps, WARP_SPEC, GROUP_M) within shared memory."""
    out = []
    for (bm, bn), bk, st, split, wp, ws, g in itertools.product(((128, 256), (256, 128), (128, 128)), bks,
                                                               (3, 4, 5, 6), (False, True), (4, 8), (False, True),
                                                               (8, 16)):
        epi = bm * (bn // 2 if split else bn) * 2
        if (bm + bn) * bk * st + epi > SMEM_LIMIT or bm * bn // (32 * wp) > 128:
            continue
        if bm == bn and split:  # square tiles: the epilogue fits whole
            continue
        if g == 16 and (ws or st != 3):  # GROUP_M 16: one probe per tile
            continue
        if st == 6 and bk == 128:  # never fits with 128-wide k tiles
            continue
        out.append((bm, bn, bk, st, split, wp, ws, g))
    return out


def launch(a, sa, w, sw, bias, c, cfg):
    from quant.kernels import triton_gemm_tma as tma
    from quant.kernels.triton_tiles import m_bucket
    bm, bn, bk, st, split, wp, ws, g = cfg
    m, k = a.shape
    n = w.shape[0]
    meta = {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": g, "EPI_SPLIT": split, "WARP_SPEC": ws}
    nsm = torch.cuda.get_device_properties(0).multi_processor_count
    tma._w8a8_tma_kernel.fn[tma.grid(meta, m, n, nsm)](*tma.descriptors(a, w, c, meta), sa, sw, bias, m, n, k,
                                                        m_bucket(m), HAS_BIAS=True, IS_INT=w.dtype == torch.int8,
                                                        NUM_SMS=nsm, **meta, num_warps=wp, num_stages=st)


def _compile_worker(job):
    is_int, cfg = job
    try:
        a, w, sa, sw, bias = make_inputs(24, 1536, 1536, is_int)
        c = torch.empty(24, 1536, device="cuda", dtype=torch.bfloat16)
        launch(a, sa, w, sw, bias, c, cfg)
        torch.cuda.synchronize()
        return job, None
    except Exception as e:  # noqa: BLE001
        return job, f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"


def rel(y, ref):
    return ((y.float() - ref.float()).norm() / ref.float().norm()).item()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=None)
    p.add_argument("--jobs", type=int, default=14)
    p.add_argument("--dtypes", nargs="+", default=["int8", "fp8"])
    p.add_argument("--top", type=int, default=4)
    p.add_argument("--shapes", default="all", choices=["all", "wan1.3b", "wan14b"])
    p.add_argument("--bk", type=int, nargs="+", default=[128], help="BLOCK_K values to sweep")
    args = p.parse_args()
    import torch.nn.functional as F
    from triton.testing import do_bench

    from quant.kernels import triton_gemm as tg
    from quant.kernels import triton_gemm_tma as tma

    t0 = time.time()
    shapes = {"all": SHAPES, "wan14b": SHAPES[:3], "wan1.3b": SHAPES[3:]}[args.shapes]
    configs = space(tuple(args.bk))
    jobs = [(d == "int8", cfg) for d in args.dtypes for cfg in configs]
    print(f"{len(jobs)} TMA configs to compile", flush=True)
    failed = {}
    with mp.get_context("spawn").Pool(args.jobs) as pool:
        for job, err in pool.imap_unordered(_compile_worker, jobs):
            if err:
                failed[job] = err
    print(f"compiled in {time.time() - t0:.0f}s; {len(failed)} failed", flush=True)
    for (is_int, cfg), err in sorted(failed.items())[:12]:
        print(f"  FAIL {'int8' if is_int else 'fp8'} {cfg}: {err}")

    bench = lambda fn: do_bench(fn, warmup=25, rep=120, return_mode="median")  # noqa: E731
    results = []
    summary = []
    for d in args.dtypes:
        is_int = d == "int8"
        for m, k, n in shapes:
            a, w, sa, sw, bias = make_inputs(m, k, n, is_int)
            x16 = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            w16 = torch.randn(n, k, device="cuda", dtype=torch.bfloat16)
            t16 = bench(lambda: F.linear(x16, w16, bias))
            tma.ENABLED = False
            ref = tg.w8a8_gemm(a, sa, w, sw, bias, torch.bfloat16, grouped=False)
            t_old = bench(lambda: tg.w8a8_gemm(a, sa, w, sw, bias, torch.bfloat16, grouped=False))
            tma.ENABLED = True
            t_auto = bench(lambda: tg.w8a8_gemm(a, sa, w, sw, bias, torch.bfloat16, grouped=False))
            auto_err = rel(tg.w8a8_gemm(a, sa, w, sw, bias, torch.bfloat16, grouped=False), ref)
            rows = []
            for cfg in configs:
                if (is_int, cfg) in failed:
                    continue
                c = torch.full((m, n), float("nan"), device="cuda", dtype=torch.bfloat16)
                try:
                    launch(a, sa, w, sw, bias, c, cfg)
                    err = rel(c, ref)
                    t = bench(lambda: launch(a, sa, w, sw, bias, c, cfg))
                except Exception as e:  # noqa: BLE001
                    print(f"  run FAIL {d} {cfg}: {type(e).__name__}: {str(e)[:150]}")
                    continue
                rows.append((t, cfg, err))
            rows.sort(key=lambda r: r[0])
            flop = 2 * m * n * k
            line = (f"{d} {m}x{k}x{n}: bf16 {t16:.3f} ms; old {t_old:.3f} ms ({t16 / t_old:.2f}x bf16, "
                    f"{flop / t_old / 1e9:.0f} TF/s); tma-autotuned {t_auto:.3f} ms ({t16 / t_auto:.2f}x, "
                    f"err {auto_err:.1e})")
            print(line, flush=True)
            summary.append(line)
            for t, cfg, err in rows[: args.top]:
                s = (f"   {cfg}: {t:.3f} ms {flop / t / 1e9:.0f} TF/s {t_old / t:.3f}x old "
                     f"{t16 / t:.2f}x bf16 err {err:.1e}" + ("  BAD" if not err < 5e-3 else ""))
                print(s, flush=True)
                summary.append(s)
            results.append({"dtype": d, "shape": [m, k, n], "bf16_ms": t16, "old_ms": t_old, "auto_ms": t_auto,
                            "configs": [{"cfg": list(cfg), "ms": t, "err": err} for t, cfg, err in rows]})
            torch.cuda.empty_cache()
    print("\n".join(["", "SUMMARY"] + summary))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"results": results, "failed": {str(k): v for k, v in failed.items()}}, f, indent=1)


if __name__ == "__main__":
    main()
