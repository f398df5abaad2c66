"""GPU check of every native kernel path against quant.kernels.reference (CUDA only; skipped elsewhere).

    python3 -m pytest -q tests/gpu   (on a CUDA machine; -s prints every check's line)

1. Triton quantizers vs the formats' reference quantizers (fraction of identical codes, scale error).
2. Direct launches re-specialize; the emulated mxfp8 / nvfp4 Triton passes match the formats' code;
   launch plans replay the generic path bit for bit (also unaligned, under CUDA graphs, on two streams).
3. Each (kernel, format) linear vs reference.linear on fresh random inputs with outlier channels,
   output poisoned first (NaN in the allocator's free memory), several ragged shapes: rel err < 1e-2;
   a second call on the same shape (Triton: the cached-config direct launch) must give the same output.
4. The Triton linear under torch.compile(fullgraph=True) (custom op: no graph break).
"""
import contextlib

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

from quant.formats import get_format  # noqa: E402
from quant.kernels import KERNELS, availability, reference  # noqa: E402
from quant.kernels import triton as tk  # noqa: E402
from quant.kernels.triton import launch  # noqa: E402
from quant.kernels.triton import quant as triton_quant  # noqa: E402

FAILS = []


def check(ok, msg):
    print(("ok   " if ok else "FAIL ") + msg, flush=True)
    if not ok:
        FAILS.append(msg)


def poison():
    """Fill the caching allocator's free blocks with NaN so an unwritten output shows up."""
    t = torch.empty(int(torch.cuda.mem_get_info()[0] * 0.3) // 4, device="cuda")
    t.fill_(float("nan"))
    del t


def xin(m, k, dtype=torch.bfloat16):
    x = torch.randn(m, k, device="cuda")
    x[:, torch.randperm(k, device="cuda")[: max(1, k // 100)]] *= 20
    if m > 2:
        x[1] = 0  # an all-zero token: scale clamps at TINY
    return x.to(dtype)


def rel(a, b):
    a, b = a.float(), b.float()
    if not torch.isfinite(a).all():
        return float("nan")
    return ((a - b).norm() / b.norm().clamp(min=1e-30)).item()


def check_quantizers():
    for fmt in ("int8", "fp8", "fp8_block128"):
        f = get_format(fmt)
        for m, k in [(1, 128), (17, 1536), (257, 1280), (1000, 5120), (33, 13824), (9, 20480), (5, 100)]:
            if fmt == "fp8_block128" and k % 128:
                continue
            for dtype in (torch.bfloat16, torch.float16, torch.float32):
                x = xin(m, k, dtype)
                poison()
                got, want = triton_quant.quantize(x, fmt), f.quantize_activation(x)
                same = (got.data.view(torch.uint8) == want.data.view(torch.uint8)).float().mean().item()
                serr = ((got.scale - want.scale).abs() / want.scale).max().item()
                check(same > 0.9995 and serr < 1e-6 and got.scale.shape == want.scale.shape,
                      f"quant {fmt:13s} {m}x{k} {str(dtype)[6:]}: identical codes {same:.6f}, scale max rel diff {serr:.1e}")


def check_direct_launch():
    """Cached direct launches must respecialize: same shape, then a base pointer off 16-byte alignment."""
    for fmt in ("int8", "fp8"):
        f = get_format(fmt)
        for k in (1280, 4096):
            buf = xin(65, k)
            for x in (buf[:64], buf.view(-1)[1:64 * k + 1].view(64, k), buf[:64]):
                got, want = triton_quant.quantize(x, fmt), f.quantize_activation(x)
                same = (got.data.view(torch.uint8) == want.data.view(torch.uint8)).float().mean().item()
                check(same > 0.9995,
                      f"direct launch {fmt} 64x{k} ptr%16={x.data_ptr() % 16}: identical codes {same:.6f}")


def check_microscale():
    """Triton fake-quantizer / weight dequantizer of the emulated mxfp8 / nvfp4 vs the formats' torch code."""
    from quant.kernels.triton import microscale as tms

    for fmt in ("mxfp8", "nvfp4"):
        f = get_format(fmt)
        for m, k in [(1, 32), (17, 1280), (300, 5120), (33, 13824), (5, 96)]:
            for dtype in (torch.bfloat16, torch.float16):
                x = xin(m, k, dtype)
                poison()
                got = tms.fake_quantize(x, fmt)
                want = f.dequantize_activation(f.quantize_activation(x), dtype)
                same = (got == want).float().mean().item()
                check(same > 0.99999, f"fake-quant {fmt} {m}x{k} {str(dtype)[6:]}: identical {same:.6f}, "
                      f"max diff {(got.float() - want.float()).abs().max().item():.3g}")
            wq = f.quantize_weight(torch.randn(2 * m + 3, k, device="cuda") * k ** -0.5)
            poison()
            got = tms.dequantize_weight(wq, fmt, torch.bfloat16)
            check(torch.equal(got, f.dequantize_weight(wq, torch.bfloat16)),
                  f"weight dequant {fmt} {2 * m + 3}x{k}: identical to the format's dequantize")


def check_linears():
    shapes = [(1, 256, 384), (17, 1280, 1000), (257, 1280, 5120), (512, 4096, 4096), (300, 8960, 1536),
              (4096, 5120, 13824), (2000, 13824, 5120), (5000, 1280, 1000)]  # M >= 4096: TMA GEMM
    combos = [(kn, fm) for kn in ("torch", "triton") for fm in ("int8", "fp8", "fp8_block128")]
    combos += [("torch", "mxfp8"), ("torch", "nvfp4")]
    if availability("torchao", "int8", torch.device("cuda")).runs:
        combos += [("torchao", "int8"), ("torchao", "fp8")]
    for kname, fmt in combos:
        f = get_format(fmt)
        av = availability(kname, fmt, torch.device("cuda"))
        if av.status != "native" and fmt not in ("mxfp8", "nvfp4"):
            check(False, f"{kname}/{fmt}: not native here: {av.reason}")
            continue
        for (m, k, n) in shapes:
            if fmt == "nvfp4" and k % 16 or fmt == "mxfp8" and k % 32:
                continue
            if (kname, fmt) == ("torchao", "fp8") and n % 16:  # torch._scaled_mm needs N % 16 == 0
                continue
            for dtype in ((torch.bfloat16, torch.float16) if m == 257 else (torch.bfloat16,)):
                x = xin(m, k, dtype)
                wq = f.quantize_weight(torch.randn(n, k, device="cuda") * k ** -0.5)
                b = torch.randn(n, device="cuda", dtype=dtype)
                ref = reference.linear(x, wq, b, f)
                poison()
                try:
                    y = KERNELS[kname].linear(x, wq, b, f)
                    torch.cuda.synchronize()
                    e = rel(y, ref)
                    ok = e < 1e-2 and y.dtype == dtype and y.shape == (m, n)
                    poison()
                    y2 = KERNELS[kname].linear(x, wq, b, f)  # second call: cached launch paths
                    same = torch.equal(y, y2) if kname != "torchao" else rel(y2, y) < 1e-3
                    ok = ok and same
                    e = f"{e} (repeat identical: {same})"
                except Exception as ex:  # noqa: BLE001
                    e, ok = repr(ex)[:300], False
                check(ok, f"linear {kname}/{fmt} {m}x{k}x{n} {str(dtype)[6:]}: rel err vs reference {e}")


def check_plans():
    """Launch plans (kernels.triton.launch) must replay the generic path exactly: the third call of a shape,
    a fresh input on it, an input 2 bytes off alignment (the plan declines it), under CUDA-graph capture,
    four calls issued back to back on each of two streams (the kept workspaces), and a 3-D input."""
    from quant.kernels.base import fp32

    triton_plan = launch
    for fmt in ("int8", "fp8", "fp8_block128"):
        f = get_format(fmt)
        for (m, k, n), has_bias in [((1, 256, 384), True), ((17, 1280, 1000), False), ((257, 1280, 5120), True),
                                    ((512, 4096, 4096), True), ((300, 8960, 1536), False)]:
            x, x2 = xin(m, k), xin(m, k)
            wq = f.quantize_weight(torch.randn(n, k, device="cuda") * k ** -0.5)
            b = torch.randn(n, device="cuda", dtype=x.dtype) if has_bias else None
            lin = lambda t: tk.linear(t, wq, b, f)  # noqa: E731
            y1 = lin(x)  # compiles / autotunes
            lin(x)  # the GEMM's first direct launch compiles its specialization
            lin(x)  # both launches direct: recorded into a plan
            planned = isinstance(triton_plan._PLANS.get(triton_plan.plan_key(x, wq.data, fp32(wq.scale), b, fmt)),
                                 triton_plan.LinearPlan)
            poison()
            same = torch.equal(lin(x), y1)
            poison()
            y_plan = lin(x2)
            with generic():
                y_gen = lin(x2)
            buf = torch.empty(m * k + 1, device="cuda", dtype=x.dtype)
            xm = buf[1:].view(m, k)
            xm.copy_(x2)
            poison()
            y_mis = lin(xm)
            static_x = x.clone()
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                static_y = lin(static_x)
            static_x.copy_(x2)
            g.replay()
            xs = [xin(m, k) for _ in range(4)]
            with generic():
                want = [lin(t) for t in xs]
            poison()
            got = [lin(t) for t in xs]  # back to back, one kept workspace, no sync between
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                got += [lin(t) for t in xs]  # another stream: its own workspace
            torch.cuda.current_stream().wait_stream(side)
            torch.cuda.synchronize()
            streams = all(torch.equal(a, b) for a, b in zip(got, want + want))
            x3 = x2.view(1, m, k)  # leading dims: planned on their own key, output [1, M, N]
            y3 = [lin(x3) for _ in range(4)][-1]
            nd = (isinstance(triton_plan._PLANS.get(triton_plan.plan_key(x3, wq.data, fp32(wq.scale), b, fmt)),
                             triton_plan.LinearPlan) and y3.shape == (1, m, n) and torch.equal(y3[0], y_gen))
            err = rel(y_plan, reference.linear(x2, wq, b, f))
            check(planned and same and torch.equal(y_plan, y_gen) and torch.equal(y_mis, y_gen)
                  and torch.equal(static_y, y_gen) and streams and nd and err < 1e-2,
                  f"plan triton/{fmt} {m}x{k}x{n} bias={has_bias}: planned {planned}, replay == first call {same}, "
                  f"fresh input == generic path {torch.equal(y_plan, y_gen)}, unaligned input "
                  f"{torch.equal(y_mis, y_gen)}, CUDA graph {torch.equal(static_y, y_gen)}, back to back on two "
                  f"streams {streams}, 3-D input planned and equal {nd}, rel err {err:.1e}")


def check_compile():
    from quant.linear import QuantLinear

    for fmt in ("int8", "fp8", "fp8_block128"):
        lin = torch.nn.Linear(1280, 1280, device="cuda", dtype=torch.bfloat16)
        q = QuantLinear.from_float(lin, get_format(fmt), "triton")
        x = xin(300, 1280)
        try:
            cq = torch.compile(q, fullgraph=True)
            e = rel(cq(x), q(x))
            check(e < 1e-3, f"torch.compile(fullgraph=True) triton/{fmt}: rel diff eager vs compiled {e:.1e}")
        except Exception as ex:  # noqa: BLE001
            check(False, f"torch.compile triton/{fmt}: {repr(ex)[:300]}")


@contextlib.contextmanager
def generic():
    """Every launch through Triton's normal path (no direct launches, no plans) inside the block."""
    saved = launch.FAST_TRITON
    launch.FAST_TRITON = ()
    try:
        yield
    finally:
        launch.FAST_TRITON = saved


@pytest.mark.parametrize("section", [check_quantizers, check_direct_launch, check_microscale, check_linears,
                                     check_plans, check_compile], ids=lambda f: f.__name__[6:])
def test_kernels(section):
    FAILS.clear()
    torch.manual_seed(0)
    section()
    assert not FAILS, "\n".join(FAILS)
