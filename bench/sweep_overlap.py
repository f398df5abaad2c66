"""The quantizer-in-the-GEMM persistent kernel (kernels.triton_gemm_overlap) vs quantizer + GEMM, on the GPU.

    python bench/sweep_overlap.py [--shapes wan1.3b wan14b] [--jobs 15] [--top 4]

bf16 activations with 1% outlier channels, int8 / e4m3 per-channel weights, bf16 bias and out, M = 32760.
Every config is compiled first in worker processes (Triton's disk cache), then timed here with do_bench
(median) against the current path (Triton quantizer + kernels.triton_gemm.w8a8_gemm) and bf16 F.linear,
and its output compared with the current path's (int8: the same codes and exact int32 sums, so equal).
"""
import argparse
import itertools
import multiprocessing as mp
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from quant.kernels import triton_gemm_overlap as ov  # noqa: E402

SHAPES = {"wan1.3b": [(32760, 1536, 1536), (32760, 1536, 8960), (32760, 8960, 1536)],
          "wan14b": [(32760, 5120, 5120), (32760, 5120, 13824), (32760, 13824, 5120)]}


def space():
    """(meta, programs per SM): 128x256 tiles, 8 warps, one program per SM; 128x128 tiles, 4 warps, two per SM
    (one program's memory-bound Q items can then overlap the other's wgmma on the same SM)."""
    out = []
    for g, la in itertools.product((8, 16), (2, 4)):
        out += [(dict(BLOCK_M=128, BLOCK_N=256, BLOCK_K=128, QBLOCK_K=128, GROUP_M=g, LOOKAHEAD=la, num_warps=8,
                      num_stages=4), 1)]
        out += [(dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=128, QBLOCK_K=qk, GROUP_M=g, LOOKAHEAD=la, num_warps=4,
                      num_stages=st), 2) for st, qk in ((3, 64), (2, 64), (2, 128))]
    return out


def _compile(job):
    i, is_int, shapes = job
    try:
        torch.cuda.init()
        dt = torch.int8 if is_int else torch.float8_e4m3fn
        for m, k, n in shapes[:1] + shapes[3:4]:  # the integer specialisations are the same for all shapes
            x = torch.zeros(256, k, device="cuda", dtype=torch.bfloat16)
            w = torch.zeros(n, k, device="cuda", dtype=torch.int8).view(dt)
            sw = torch.ones(n, 1, device="cuda")
            b = torch.zeros(n, device="cuda", dtype=torch.bfloat16)
            ov.launch(x, w, sw, b, space()[i][0], 4)
        torch.cuda.synchronize()
        try:  # shared memory and registers of what was compiled: do two programs fit on one SM?
            cache = next(iter(ov._w8a8_overlap_kernel.device_caches.values()))[0]
            return job, None, [(kk.metadata.shared, kk.n_regs) for kk in cache.values()]
        except Exception:  # noqa: BLE001
            return job, None, []
    except Exception as e:  # noqa: BLE001
        return job, f"{type(e).__name__}: {str(e)[:200]}", []


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--shapes", nargs="+", default=["wan1.3b", "wan14b"])
    p.add_argument("--jobs", type=int, default=15)
    p.add_argument("--top", type=int, default=4)
    a = p.parse_args()
    from triton.testing import do_bench

    from quant.formats import get_format
    from quant.kernels import triton_gemm, triton_quant

    shapes = [s for name in a.shapes for s in SHAPES[name]]
    nsm = torch.cuda.get_device_properties(0).multi_processor_count
    t0 = time.time()
    cfgs = space()
    jobs = [(i, is_int, tuple(shapes)) for is_int in (True, False) for i in range(len(cfgs))]
    failed = set()
    with mp.get_context("spawn").Pool(a.jobs) as pool:
        for job, err, res in pool.imap_unordered(_compile, jobs):
            if not job[1]:
                print("compiled", cfgs[job[0]], "(shared bytes, registers/thread):", res, flush=True)
            if err:
                failed.add(job[:2])
                print("compile/run fail", cfgs[job[0]], job[1], err, flush=True)
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

            ref = current().float()
            base = t(lambda: torch.nn.functional.linear(x, wf, bias))
            cur = t(current)
            rows = []
            for i, (meta, per_sm) in enumerate(cfgs):
                if (i, fmt == "int8") in failed:
                    continue
                try:
                    y = ov.launch(x, wq.data, sw, bias, meta, per_sm * nsm).float()
                    d = ((y - ref).norm() / ref.norm()).item()
                    same = torch.equal(y, ref)
                    ms = t(lambda: ov.launch(x, wq.data, sw, bias, meta, per_sm * nsm))
                except Exception as e:  # noqa: BLE001
                    print("run fail", meta, type(e).__name__, str(e)[:160], flush=True)
                    continue
                rows.append((ms, i, d, same))
            rows.sort()
            print(f"\n== {fmt} {m}x{k}x{n}: bf16 {base:.3f} ms; current (quantizer + GEMM) {cur:.3f} ms = "
                  f"{base / cur:.2f}x bf16; {len(rows)} configs", flush=True)
            for ms, i, d, same in rows[: a.top]:
                c, per_sm = cfgs[i]
                print(f"   BN {c['BLOCK_N']} QBK {c['QBLOCK_K']} warps {c['num_warps']} GROUP_M {c['GROUP_M']} "
                      f"LOOKAHEAD {c['LOOKAHEAD']} stages {c['num_stages']} x{per_sm}/SM: "
                      f"{ms:.3f} ms = {base / ms:.2f}x bf16, {cur / ms:.3f}x current; vs current: rel diff {d:.1e}, "
                      f"identical {same}", flush=True)
            del x, wq, wf
            torch.cuda.empty_cache()
    print(f"total {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
