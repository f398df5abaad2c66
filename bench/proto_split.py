"""Prototype: the next chunk's activation quantizer on a few SMs while the GEMM of this chunk runs on the rest.

    python bench/proto_split.py

M is cut into C chunks (multiples of 256 rows). Launch 0 quantizes chunk 0 with the normal Triton
quantizer; launch i + 1 is one kernel whose programs [0, G) run the persistent TMA GEMM of chunk i and
whose programs [G, G + X) quantize chunk i + 1 (grid-stride over row groups). The two roles never
depend on each other inside a launch (stream order carries the dependency), so there are no flags,
streams or events. G + X = the SM count. Timed against the current path (quantizer + TMA GEMM) and
bf16, for X in a few values and C in (2, 4); outputs compared with the current path's.
"""
import itertools
import sys
import time

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

sys.path.insert(0, ".")
from quant.formats.base import E4M3_MAX, INT8_MAX, TINY  # noqa: E402
from quant.kernels.triton_quant import _to_q  # noqa: E402
from quant.kernels.triton_tiles import next_pow2, tile_coords  # noqa: E402

SHAPES = [(32760, 1536, 1536), (32760, 1536, 8960), (32760, 8960, 1536),
          (32760, 5120, 5120), (32760, 5120, 13824), (32760, 13824, 5120)]


@triton.jit
def _split_kernel(a_desc, b_desc, c_desc, sa_ptr, sb_ptr, bias_ptr, x_ptr, q_ptr,
                  m0, mc, q0, qc, N, K, stride_xm, stride_qm,
                  G: tl.constexpr, HAS_BIAS: tl.constexpr, IS_INT: tl.constexpr, QMAX: tl.constexpr,
                  TINY_: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                  GROUP_M: tl.constexpr, QROWS: tl.constexpr, QBLOCK: tl.constexpr, QSTAGES: tl.constexpr):
    pid = tl.program_id(0)
    if pid < G:
        num_m = tl.cdiv(mc, BLOCK_M)
        num_n = tl.cdiv(N, BLOCK_N)
        acc_dtype = tl.int32 if IS_INT else tl.float32
        for tile in tl.range(pid, num_m * num_n, G, flatten=True):
            pid_m, pid_n = tile_coords(tile, num_m, num_n, GROUP_M)
            om = m0 + pid_m * BLOCK_M
            on = pid_n * BLOCK_N
            acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=acc_dtype)
            for kt in range(tl.cdiv(K, BLOCK_K)):
                a = a_desc.load([om, kt * BLOCK_K])
                b = b_desc.load([on, kt * BLOCK_K])
                acc = tl.dot(a, b.T, acc, out_dtype=acc_dtype)
            rm = om + tl.arange(0, BLOCK_M)
            rn = on + tl.arange(0, BLOCK_N)
            sa = tl.load(sa_ptr + rm, mask=rm < m0 + mc, other=0.0)
            sb = tl.load(sb_ptr + rn, mask=rn < N, other=0.0)
            out = acc.to(tl.float32) * sa[:, None] * sb[None, :]
            if HAS_BIAS:
                out += tl.load(bias_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
            c_desc.store([om, on], out.to(c_desc.dtype))
    else:
        offs = tl.arange(0, QBLOCK)
        kmask = offs < K
        X = tl.num_programs(0) - G
        for r0 in tl.range(q0 + (pid - G) * QROWS, q0 + qc, X * QROWS, num_stages=QSTAGES):
            rows = r0 + tl.arange(0, QROWS)
            rmask = rows < q0 + qc
            rows64 = rows.to(tl.int64)
            mask = rmask[:, None] & kmask[None, :]
            xv = tl.load(x_ptr + rows64[:, None] * stride_xm + offs[None, :], mask=mask, other=0.0).to(tl.float32)
            scale = tl.maximum(tl.max(tl.abs(xv), axis=1), TINY_) / QMAX
            q = _to_q(xv, scale[:, None], QMAX, IS_INT)
            tl.store(q_ptr + rows64[:, None] * stride_qm + offs[None, :], q.to(q_ptr.dtype.element_ty), mask=mask)
            tl.store(sa_ptr + rows64, scale, mask=rmask)


def split_linear(x, w, sw, bias, chunks, x_sms, nsm, qstages=2, bm=128, bn=256, stages=3, warps=8):
    """x [M, K] bf16 -> [M, N]: chunked quantize / GEMM with the next chunk's quantizer on x_sms SMs."""
    m, k = x.shape
    n = w.shape[0]
    is_int = w.dtype == torch.int8
    q = torch.empty((m, k), device=x.device, dtype=w.dtype)
    sa = torch.empty((m,), device=x.device, dtype=torch.float32)
    c = torch.empty((m, n), device=x.device, dtype=x.dtype)
    step = -(-m // chunks // 256) * 256
    bounds = [(i, min(i + step, m)) for i in range(0, m, step)]
    a_desc = TensorDescriptor(q, [m, k], [k, 1], [bm, 128])
    b_desc = TensorDescriptor(w, [n, k], [k, 1], [bn, 128])
    c_desc = TensorDescriptor(c, [m, n], [n, 1], [bm, bn])
    qblock = next_pow2(k)
    kw = dict(HAS_BIAS=True, IS_INT=is_int, QMAX=INT8_MAX if is_int else E4M3_MAX, TINY_=TINY, BLOCK_M=bm, BLOCK_N=bn,
              BLOCK_K=128, GROUP_M=8, QROWS=max(1, 32768 // qblock), QBLOCK=qblock, QSTAGES=qstages, num_warps=warps,
              num_stages=stages)
    # launch 0: every program quantizes chunk 0 (G = 0: no GEMM role)
    _split_kernel[(nsm,)](a_desc, b_desc, c_desc, sa, sw, bias, x, q, 0, 0, 0, bounds[0][1], n, k, x.stride(0),
                          q.stride(0), G=0, **kw)
    for i, (lo, hi) in enumerate(bounds):
        nlo, nhi = bounds[i + 1] if i + 1 < len(bounds) else (m, m)
        xs = x_sms if nhi > nlo else 0
        _split_kernel[(nsm - x_sms + xs,)](a_desc, b_desc, c_desc, sa, sw, bias, x, q, lo, hi - lo, nlo, nhi - nlo, n, k,
                                           x.stride(0), q.stride(0), G=nsm - x_sms, **kw)
    return c


def main():
    from triton.testing import do_bench

    from quant.formats import get_format
    from quant.kernels import triton_gemm, triton_quant

    nsm = torch.cuda.get_device_properties(0).multi_processor_count
    t0 = time.time()

    def t(fn):
        return do_bench(fn, warmup=10, rep=50, return_mode="median")

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
            for chunks, xs, qst in itertools.product((2, 4), (4, 8, 16, 24), (1, 2)):
                try:
                    y = split_linear(x, wq.data, sw, bias, chunks, xs, nsm, qst).float()
                    same = torch.equal(y, ref)
                    d = ((y - ref).norm() / ref.norm()).item()
                    ms = t(lambda: split_linear(x, wq.data, sw, bias, chunks, xs, nsm, qst))
                except Exception as e:  # noqa: BLE001
                    print("fail", chunks, xs, qst, type(e).__name__, str(e)[:200], flush=True)
                    continue
                rows.append((ms, chunks, xs, qst, d, same))
            rows.sort()
            print(f"\n== {fmt} {m}x{k}x{n}: bf16 {base:.3f} ms; current {cur:.3f} ms = {base / cur:.2f}x bf16", flush=True)
            for ms, chunks, xs, qst, d, same in rows[:5]:
                print(f"   chunks {chunks} quant SMs {xs} qstages {qst}: {ms:.3f} ms = {base / ms:.2f}x bf16, "
                      f"{cur / ms:.3f}x current; rel diff {d:.1e} identical {same}", flush=True)
            del x, wq, wf
            torch.cuda.empty_cache()
    print(f"total {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
