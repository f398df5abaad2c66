"""Prototype: the next chunk's quantizer on a side stream, co-resident with this chunk's GEMM on the same SMs.

    python bench/proto_streams.py

M is cut into C chunks. Main stream: quantize chunk 0, then GEMM chunk i after waiting for chunk i's
quantizer; side stream (starts with the main stream's chunk-0 GEMM): quantize chunks 1..C-1. With a GEMM
config small enough to leave registers on each SM (128x128 tiles, 4 warps: ~31K of 64K registers), the
quantizer's small programs (4 warps, no shared memory) run on the same SMs as the persistent GEMM: the
quantizer's loads overlap the GEMM's wgmma. Timed (do_bench) against the current path and bf16.
"""
import itertools
import sys
import time

import torch

sys.path.insert(0, ".")
from quant.kernels import triton_gemm_tma as tma  # noqa: E402
from quant.kernels import triton_quant  # noqa: E402

SHAPES = [(32760, 1536, 1536), (32760, 1536, 8960), (32760, 8960, 1536),
          (32760, 5120, 5120), (32760, 5120, 13824), (32760, 13824, 5120)]
_SIDE: dict = {}


def gemm(a, sa, w, sw, bias, c, meta, nsm):
    """The persistent TMA GEMM with an explicit config (a, sa, c: views of one chunk's rows)."""
    m, k = a.shape
    n = w.shape[0]
    consts = {k_: v for k_, v in meta.items() if k_ not in ("num_warps", "num_stages")}
    tma._w8a8_tma_kernel.fn[tma.grid(consts, m, n, nsm)](
        *tma.descriptors(a, w, c, consts), sa, sw, bias, m, n, k, 1, HAS_BIAS=True, IS_INT=w.dtype == torch.int8,
        NUM_SMS=nsm, **consts, num_warps=meta["num_warps"], num_stages=meta["num_stages"])


def stream_linear(x, w, sw, bias, fmt, chunks, meta, nsm):
    m, k = x.shape
    n = w.shape[0]
    main = torch.cuda.current_stream()
    side = _SIDE.setdefault(x.device, torch.cuda.Stream(x.device))
    q = torch.empty((m, k), device=x.device, dtype=w.dtype)
    s = torch.empty((m, 1), device=x.device, dtype=torch.float32)
    c = torch.empty((m, n), device=x.device, dtype=x.dtype)
    step = -(-m // chunks // 256) * 256
    bounds = [(i, min(i + step, m)) for i in range(0, m, step)]
    lo, hi = bounds[0]
    triton_quant.quantize_into(x[lo:hi], q[lo:hi], s[lo:hi], fmt)
    side.wait_stream(main)
    events = []
    with torch.cuda.stream(side):
        for lo, hi in bounds[1:]:
            triton_quant.quantize_into(x[lo:hi], q[lo:hi], s[lo:hi], fmt)
            ev = torch.cuda.Event()
            ev.record(side)
            events.append(ev)
    for i, (lo, hi) in enumerate(bounds):
        if i:
            main.wait_event(events[i - 1])
        gemm(q[lo:hi], s[lo:hi], w, sw, bias, c[lo:hi], meta, nsm)
    return c


def main():
    from triton.testing import do_bench

    from quant.formats import get_format
    from quant.kernels import triton_gemm

    nsm = torch.cuda.get_device_properties(0).multi_processor_count
    t0 = time.time()

    def t(fn):
        return do_bench(fn, warmup=10, rep=50, return_mode="median")

    metas = {
        "128x128 w4 s4": dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=128, GROUP_M=8, EPI_SPLIT=False, WARP_SPEC=False,
                              num_warps=4, num_stages=4),
        "128x128 w4 s3": dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=128, GROUP_M=8, EPI_SPLIT=False, WARP_SPEC=False,
                              num_warps=4, num_stages=3),
        "128x256 w8 s3": dict(BLOCK_M=128, BLOCK_N=256, BLOCK_K=128, GROUP_M=8, EPI_SPLIT=False, WARP_SPEC=False,
                              num_warps=8, num_stages=3),
    }
    for fmt in ("fp8", "int8"):
        f = get_format(fmt)
        for m, k, n in SHAPES:
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
            for (name, meta), chunks in itertools.product(metas.items(), (1, 2, 3, 4)):
                try:
                    y = stream_linear(x, wq.data, sw, bias, fmt, chunks, meta, nsm).float()
                    torch.cuda.synchronize()
                    same = torch.equal(y, ref)
                    d = ((y - ref).norm() / ref.norm()).item()
                    ms = t(lambda: stream_linear(x, wq.data, sw, bias, fmt, chunks, meta, nsm))
                except Exception as e:  # noqa: BLE001
                    print("fail", name, chunks, type(e).__name__, str(e)[:200], flush=True)
                    continue
                rows.append((ms, name, chunks, d, same))
            rows.sort()
            print(f"\n== {fmt} {m}x{k}x{n}: bf16 {base:.3f} ms; current {cur:.3f} ms = {base / cur:.2f}x bf16", flush=True)
            for ms, name, chunks, d, same in rows[:6]:
                print(f"   {name} chunks {chunks}: {ms:.3f} ms = {base / ms:.2f}x bf16, {cur / ms:.3f}x current; "
                      f"rel diff {d:.1e} identical {same}", flush=True)
            del x, wq, wf
            torch.cuda.empty_cache()
    print(f"total {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
