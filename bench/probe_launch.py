"""Where the time goes at small M, before and after the direct Triton launch (bench/NOTES.md v6).

    python bench/probe_launch.py

For M in (257, 512, 1024) at K = N = 4096: CPU microseconds per eager call (the GPU keeps up, so this
is the enqueue cost), do_bench time over rotating copies of input and layer (what quant.bench reports)
and the ratio to bf16 F.linear; plus the Triton quantizer launched through JITFunction (old) and
through kernels.triton_launch.DirectLauncher (new), with their outputs compared bit for bit.
"""
import sys

import torch
import torch.nn.functional as F
import triton
from triton.testing import do_bench

sys.path.insert(0, ".")
from quant.bench import _copies, outlier_input, rotating, rotation_count  # noqa: E402
from quant.formats import get_format  # noqa: E402
from quant.formats.base import E4M3_MAX, TINY  # noqa: E402
from quant.kernels import triton_plan, triton_quant  # noqa: E402
from quant.linear import QuantLinear  # noqa: E402

from probe_paths import cprofile, cpu_us  # noqa: E402  (bench/ is this script's directory)

# (format, kernel, launch plans on): the Triton linear with and without kernels.triton_plan
METHODS = [("fp8", "torch", True), ("fp8", "triton", False), ("fp8", "triton", True), ("int8", "triton", False),
           ("int8", "triton", True), ("int8", "torch", True), ("fp8_block128", "torch", True)]


def back_to_back_us(fn, n=200):
    """GPU-timeline microseconds per call over n calls issued back to back (no cache flush between):
    max(CPU enqueue, GPU work) per call, what a stack of layers (a text encoder) sees."""
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    out = []
    for _ in range(5):
        start.record()
        for _ in range(n):
            fn()
        end.record()
        end.synchronize()
        out.append(start.elapsed_time(end) * 1e3 / n)
    return sorted(out)[2]


def old_quant(x, q, s):
    m, k = x.shape
    block = triton.next_power_of_2(k)
    rows = max(1, min(2048 // block, triton.next_power_of_2(m)))
    triton_quant._quant_token_kernel[(triton.cdiv(m, rows),)](
        x, q, s, m, k, x.stride(0), q.stride(0), QMAX=E4M3_MAX, IS_INT=False, TINY_=TINY, BLOCK_K=block,
        ROWS=rows, SINGLE=True, num_warps=4)


def pieces(x, lin):
    """CPU us per call of each piece of the fp8-torch path at this M, and a cProfile of two whole paths."""
    m, k = x.shape
    q = torch.empty(m, k, device="cuda", dtype=torch.float8_e4m3fn)
    s = torch.empty(m, 1, device="cuda")
    launch = triton_quant._LAUNCH["token"]
    block = triton.next_power_of_2(k)
    consts = {"QMAX": E4M3_MAX, "IS_INT": False, "TINY_": TINY, "BLOCK_K": block, "ROWS": 1, "SINGLE": True}
    args = (x, q, s, m, k, x.stride(0), q.stride(0))
    launch((m,), args, consts, {"num_warps": 4})
    qw = QuantLinear.from_float(lin, get_format("fp8"), "torch")
    sw = qw.weight_scale.t()
    parts = {
        "torch.empty fp8 [M,K]": lambda: torch.empty(m, k, device="cuda", dtype=torch.float8_e4m3fn),
        "DirectLauncher call (buffers given)": lambda: launch((m,), args, consts, {"num_warps": 4}),
        "JITFunction launch (buffers given)": lambda: old_quant(x, q, s),
        "torch._scaled_mm alone": lambda: torch._scaled_mm(q, qw.weight.t(), scale_a=s, scale_b=sw, bias=qw.bias,
                                                           out_dtype=torch.bfloat16, use_fast_accum=True),
        "quantize_token": lambda: triton_quant.quantize_token(x, "fp8"),
        "QuantLinear fp8-torch": lambda: qw(x),
    }
    for name, fn in parts.items():
        print(f"      {name}: {cpu_us(fn):.1f} us/call")
    for kern, fmt in (("torch", "fp8"), ("triton", "int8")):
        ql = QuantLinear.from_float(lin, get_format(fmt), kern)
        ql(x)
        cprofile(lambda: ql(x), f"{fmt}-{kern}", top=14)


def main():
    print(f"device {torch.cuda.get_device_name()} torch {torch.__version__} triton {triton.__version__}")
    t = lambda fn: do_bench(fn, warmup=50, rep=300, return_mode="median")  # noqa: E731
    with torch.no_grad():
        for m in (257, 512, 1024):
            k = n = 4096
            lin = torch.nn.Linear(k, n, device="cuda", dtype=torch.bfloat16)
            r = rotation_count(torch.device("cuda"), m * k * 2 + n * k * 2)
            xs = [outlier_input(m, k, "cuda") for _ in range(r)]
            lins = _copies(lin, r)
            base = t(rotating([lambda x=x, l=l: F.linear(x, l.weight, l.bias) for x, l in zip(xs, lins)]))
            base_call = rotating([lambda x=x, l=l: F.linear(x, l.weight, l.bias) for x, l in zip(xs, lins)])
            b2b = back_to_back_us(base_call)
            print(f"\nM={m} K=N=4096 (rotating {r}) | bf16 F.linear {base:.4f} ms | cpu "
                  f"{cpu_us(lambda: F.linear(xs[0], lin.weight, lin.bias)):.1f} us/call | "
                  f"back-to-back {b2b:.1f} us/call")
            x = xs[0]
            q = torch.empty(m, k, device="cuda", dtype=torch.float8_e4m3fn)
            s = torch.empty(m, 1, device="cuda")
            old_quant(x, q, s)
            new = triton_quant.quantize_token(x, "fp8")
            same = torch.equal(new.data.view(torch.uint8), q.view(torch.uint8)) and torch.equal(new.scale, s)
            print(f"   fp8 quantizer: JITFunction launch {cpu_us(lambda: old_quant(x, q, s)):.1f} us/call, "
                  f"quantize_token (direct) {cpu_us(lambda: triton_quant.quantize_token(x, 'fp8')):.1f} us/call, "
                  f"identical {same}")
            for fmt, kern, plans in METHODS:
                triton_plan.ENABLED = plans
                qs = [QuantLinear.from_float(l, get_format(fmt), kern) for l in lins]
                call = rotating([lambda x=x, q_=q_: q_(x) for x, q_ in zip(xs, qs)])
                ms = t(call)
                b2b = back_to_back_us(base_call)  # bf16 again right before: this host's CPU speed drifts
                q2b = back_to_back_us(call)
                same = torch.equal(qs[0](x), qs[0](x))
                print(f"   {fmt}-{kern}{' (plans)' if kern == 'triton' and plans else ''}: {ms:.4f} ms, {base / ms:.2f}x bf16, "
                      f"cpu {cpu_us(lambda: qs[0](x)):.1f} us/call, "
                      f"back-to-back {q2b:.1f} us/call ({b2b / q2b:.2f}x bf16), repeat identical {same}", flush=True)
            if m == 512:
                pieces(x, lin)
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
