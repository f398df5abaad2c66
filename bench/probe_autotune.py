"""Is the TMA GEMM's autotune pick stable? Every config of triton_gemm_tma.CONFIGS timed, then the pick.

    python bench/probe_autotune.py   (run it twice: each process autotunes afresh)

GEMM alone on pre-quantized int8 / e4m3 inputs at the Wan 2.1-14B shapes (M = 32760): do_bench median
of each config (3 repeats, the spread shown), then the config the autotuner picks in this process and
its time through triton_gemm.w8a8_gemm.
"""
import os
import sys

import torch
from triton.testing import do_bench

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from bench.sweep_triton_configs import make_inputs  # noqa: E402
from quant.kernels import triton_gemm  # noqa: E402
from quant.kernels import triton_gemm_tma as tma  # noqa: E402


def main():
    nsm = torch.cuda.get_device_properties(0).multi_processor_count
    for is_int in (True, False):
        for m, k, n in [(32760, 5120, 5120), (32760, 5120, 13824), (32760, 13824, 5120)]:
            a, w, sa, sw, bias = make_inputs(m, k, n, is_int)
            c = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
            rows = []
            for cfg in tma.CONFIGS:
                meta = dict(cfg.kwargs)

                def run(meta=meta, cfg=cfg):
                    tma._w8a8_tma_kernel.fn[tma.grid(meta, m, n, nsm)](
                        *tma.descriptors(a, w, c, meta), sa, sw, bias, m, n, k, 16384, HAS_BIAS=True, IS_INT=is_int,
                        NUM_SMS=nsm, **meta, num_warps=cfg.num_warps, num_stages=cfg.num_stages)

                ts = sorted(do_bench(run, warmup=25, rep=100, return_mode="median") for _ in range(3))
                rows.append((ts[1], ts[0], ts[2], str(meta), cfg.num_stages))
            tma._BEST.clear()
            triton_gemm.w8a8_gemm(a, sa, w, sw, bias, torch.bfloat16, grouped=False)
            pick = tma._w8a8_tma_kernel.best_config
            t = do_bench(lambda: triton_gemm.w8a8_gemm(a, sa, w, sw, bias, torch.bfloat16, grouped=False),
                         warmup=25, rep=100, return_mode="median")
            print(f"\n== {'int8' if is_int else 'fp8'} {m}x{k}x{n}: autotune pick {pick.kwargs} s{pick.num_stages} -> "
                  f"{t:.3f} ms through w8a8_gemm", flush=True)
            for med, lo, hi, meta, st in sorted(rows):
                print(f"   {med:.3f} ms ({lo:.3f}-{hi:.3f}) s{st} {meta}", flush=True)


if __name__ == "__main__":
    main()
