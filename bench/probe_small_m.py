"""Small M on the device machine: the one-launch fused per-token GEMM vs quantizer + GEMM (NOTES v7).

    python bench/probe_small_m.py

For M in (77, 257, 512, 1024) at K = N = 4096 (and T5-XXL's 512 x 4096 x 10240): per quantized linear
(QuantLinear, kernel "triton", int8 and fp8) with the activation quantized inside the GEMM (fused) and in
its own pass (separate): CPU us per eager call, GPU time alone (CUDA-graph replay), back-to-back time per
call (what a stack of layers sees) and do_bench over rotated copies (what quant.bench reports), each
against bf16 F.linear measured the same way; then where the CPU time of one call goes.
"""
import cProfile
import pstats
import sys

import torch
import torch.nn.functional as F
import triton
from triton.testing import do_bench

sys.path.insert(0, ".")
from quant.bench import _copies, outlier_input, rotating, rotation_count  # noqa: E402
from quant.formats import get_format  # noqa: E402
from quant.kernels import run_linear, triton_gemm  # noqa: E402
from quant.kernels import triton as tk  # noqa: E402
from quant.kernels import triton_launch  # noqa: E402
from quant.linear import QuantLinear  # noqa: E402

from probe_launch import back_to_back_us  # noqa: E402  (bench/ is this script's directory)
from probe_paths import cpu_us, graph_ms  # noqa: E402


def t(fn):
    return do_bench(fn, warmup=50, rep=300, return_mode="median")


def measure(calls: list) -> tuple[float, float, float, float]:
    """(cpu us, graph ms, back-to-back us, do_bench ms) of rotating calls (calls[0] for the first two)."""
    rot = rotating(calls)
    return cpu_us(calls[0]), graph_ms(calls[0]), back_to_back_us(rot), t(rot)


def pieces(x: torch.Tensor, ql: QuantLinear) -> None:
    """CPU us per call of the layers of one fused call, outermost first."""
    w, f = ql.qweight(), ql.fmt
    scale = w.scale.float()
    parts = {
        "QuantLinear.forward": lambda: ql(x),
        "run_linear": lambda: run_linear("triton", x, w, ql.bias, f),
        "kernels.triton._w8a8_linear": lambda: tk._w8a8_linear(x, w.data, scale, ql.bias, f.name),
        "triton_gemm.w8a8_gemm": lambda: triton_gemm.w8a8_gemm(x, None, w.data, scale, ql.bias, x.dtype, False, True),
        "torch.empty [M, N]": lambda: torch.empty((x.shape[0], w.data.shape[0]), device=x.device, dtype=x.dtype),
    }
    for name, fn in parts.items():
        print(f"      {name}: {cpu_us(fn):.1f} us/call")
    from triton.runtime import driver

    launcher, seen = triton_gemm._DIRECT, []
    triton_gemm._DIRECT = lambda *a: (seen.append(a), launcher(*a))
    ql(x)
    triton_gemm._DIRECT = launcher
    grid, args, consts, options = seen[0]
    dev = driver.active.get_current_device()
    kernel, run, tail = launcher.cache[(dev, triton_launch._spec(args), tuple(consts.items()), tuple(options.items()))]
    stream = driver.active.get_current_stream(dev)
    print(f"      DirectLauncher call, arguments ready: {cpu_us(lambda: launcher(grid, args, consts, options)):.1f} us/call")
    print(f"      _spec(args): {cpu_us(lambda: triton_launch._spec(args)):.1f} us/call")
    print(f"      compiled kernel.run, arguments ready: {cpu_us(lambda: run(grid[0], 1, 1, stream, kernel.function, kernel.packed_metadata, None, None, None, *args, *tail)):.1f} us/call")
    pr = cProfile.Profile()
    pr.enable()
    for _ in range(300):
        ql(x)
    pr.disable()
    torch.cuda.synchronize()
    print("   cProfile, 300 calls (tottime-sorted):")
    pstats.Stats(pr).sort_stats("tottime").print_stats(12)


def main():
    print(f"device {torch.cuda.get_device_name()} torch {torch.__version__} triton {triton.__version__}")
    print("rows: method | cpu us/call | GPU alone (graph) ms | back-to-back us/call (x bf16) | do_bench ms (x bf16)")
    with torch.no_grad():
        for m, k, n in [(77, 4096, 4096), (257, 4096, 4096), (512, 4096, 4096), (1024, 4096, 4096),
                        (512, 4096, 10240), (512, 10240, 4096), (2048, 4096, 4096)]:
            lin = torch.nn.Linear(k, n, device="cuda", dtype=torch.bfloat16)
            r = rotation_count(torch.device("cuda"), m * k * 2 + n * k * 2)
            xs = [outlier_input(m, k, "cuda") for _ in range(r)]
            lins = _copies(lin, r)
            cpu, g, b2b, db = measure([lambda x=x, l=l: F.linear(x, l.weight, l.bias) for x, l in zip(xs, lins)])
            print(f"\nM={m} K={k} N={n} (rotating {r})")
            print(f"   bf16 F.linear | {cpu:.1f} | {g:.4f} | {b2b:.1f} | {db:.4f}")
            for fmt in ("fp8", "int8"):
                qls = [QuantLinear.from_float(l, get_format(fmt), "triton") for l in lins]
                outs = {}
                for label, max_m in (("fused", 1 << 30), ("separate", 0)):
                    tk.FUSED_TOKEN_MAX_M = max_m
                    outs[label] = qls[0](xs[0])
                    c2, g2, b2, d2 = measure([lambda x=x, q=q: q(x) for x, q in zip(xs, qls)])
                    print(f"   {fmt}-triton {label} | {c2:.1f} | {g2:.4f} | {b2:.1f} ({b2b / b2:.2f}x) | "
                          f"{d2:.4f} ({db / d2:.2f}x)", flush=True)
                same = torch.equal(outs["fused"], outs["separate"])
                d = ((outs["fused"].float() - outs["separate"].float()).norm() / outs["separate"].float().norm()).item()
                print(f"   {fmt}: fused vs separate identical {same}, rel diff {d:.1e}")
                tk.FUSED_TOKEN_MAX_M = 1 << 30
                if (m, k, n) == (512, 4096, 4096):
                    pieces(xs[0], qls[0])
            tk.FUSED_TOKEN_MAX_M = 1024


if __name__ == "__main__":
    main()
