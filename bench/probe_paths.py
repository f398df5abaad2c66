"""Device-machine probe for the paths changed in bench/NOTES.md v5 (timings only; correctness is
bench/check_kernels.py): emulated mxfp8/nvfp4, int8-torch's epilogue, int8-torchao, and where the
time goes at small M (do_bench vs CUDA-graph replay = GPU time alone vs CPU enqueue time per call).

    python bench/probe_paths.py
"""
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn
from triton.testing import do_bench

sys.path.insert(0, ".")
from quant.bench import outlier_input  # noqa: E402
from quant.formats import get_format  # noqa: E402
from quant.kernels import reference, triton_quant  # noqa: E402
from quant.linear import QuantLinear  # noqa: E402


def t(fn):
    return do_bench(fn, warmup=50, rep=200, return_mode="median")


def cpu_us(fn, n=300, rounds=1):
    """CPU time per call while the GPU keeps up (enqueue cost: Python + launches); the median of
    `rounds` rounds of n calls, the GPU drained before each."""
    out = []
    for _ in range(rounds):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        out.append((time.perf_counter() - t0) / n * 1e6)
        torch.cuda.synchronize()
    return sorted(out)[rounds // 2]


def cprofile(fn, label: str, n=300, top=12):
    """Print the `top` entries (by own time) of a cProfile of n calls of fn."""
    import cProfile
    import pstats

    pr = cProfile.Profile()
    torch.cuda.synchronize()
    pr.enable()
    for _ in range(n):
        fn()
    pr.disable()
    torch.cuda.synchronize()
    print(f"   cProfile, {n} calls of {label} (tottime-sorted):")
    pstats.Stats(pr).sort_stats("tottime").print_stats(top)


def graph_ms(fn):
    """GPU time alone: the call captured in a CUDA graph, replays timed."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    return t(g.replay)


METHODS = [("mxfp8", "torch"), ("nvfp4", "torch"), ("int8", "torch"), ("int8", "torchao"), ("fp8", "torch"),
           ("int8", "triton"), ("fp8", "triton"), ("fp8_block128", "torch")]


def main():
    try:
        import torchao  # noqa: F401
        have_ao = True
    except Exception:  # noqa: BLE001
        have_ao = False
    print(f"device {torch.cuda.get_device_name()} torch {torch.__version__} torchao {have_ao}")
    torch.manual_seed(0)
    with torch.no_grad():
        for (m, k, n) in [(32760, 5120, 5120), (32760, 5120, 13824), (512, 4096, 4096)]:
            lin = nn.Linear(k, n, device="cuda", dtype=torch.bfloat16)
            x = outlier_input(m, k, "cuda")
            base = t(lambda: F.linear(x, lin.weight, lin.bias))
            print(f"\n{m},{k},{n} | bf16 F.linear | {base:.3f} ms")
            small = m <= 1024
            if small:
                f0 = lambda: F.linear(x, lin.weight, lin.bias)  # noqa: E731
                print(f"   bf16: graph {graph_ms(f0):.4f} ms, cpu {cpu_us(f0):.1f} us/call")
            for fmt, kern in METHODS:
                if kern == "torchao" and not have_ao:
                    continue
                try:
                    q = QuantLinear.from_float(lin, get_format(fmt), kern)
                    ms = t(lambda: q(x))
                    line = f"{m},{k},{n} | {fmt}-{kern} | {ms:.3f} ms | {base / ms:.2f}x"
                    if small:
                        w, b, f = q.qweight(), q.bias, q.fmt
                        from quant.kernels import KERNELS
                        direct = lambda: KERNELS[kern].linear(x, w, b, f)  # noqa: E731
                        line += (f" | kernel.linear direct {t(direct):.4f} ms | graph (GPU only) {graph_ms(direct):.4f} ms"
                                 f" | cpu {cpu_us(lambda: q(x)):.1f} us/call (QuantLinear), {cpu_us(direct):.1f} (direct)")
                    print(line, flush=True)
                    if fmt in ("mxfp8", "nvfp4") and m == 32760 and n == 5120:
                        w, b, f = q.qweight(), q.bias, q.fmt
                        old = t(lambda: reference.linear(x, w, b, f))
                        xq = f.quantize_activation(x)
                        print(f"   old fp32 path {old:.3f} ms ({base / old:.2f}x); parts: act quantize "
                              f"{t(lambda: f.quantize_activation(x)):.3f}, act dequantize {t(lambda: f.dequantize_activation(xq, x.dtype)):.3f}, "
                              f"weight dequantize {t(lambda: f.dequantize_weight(w, x.dtype)):.3f} ms")
                    if fmt == "int8" and kern == "torch":
                        from quant.kernels.triton_gemm import scale_epilogue
                        xq = triton_quant.quantize(x, "int8")
                        wt = q.weight.t()
                        acc = torch._int_mm(xq.data, wt)
                        print(f"   parts: quantizer {t(lambda: triton_quant.quantize(x, 'int8')):.3f}, _int_mm {t(lambda: torch._int_mm(xq.data, wt)):.3f}, "
                              f"fused epilogue {t(lambda: scale_epilogue(acc, xq.scale, q.weight_scale, q.bias, x.dtype)):.3f}, "
                              f"old torch epilogue {t(lambda: (acc.float() * xq.scale * q.weight_scale.t() + q.bias.float()).to(x.dtype)):.3f} ms")
                    if kern == "torchao":
                        from torchao.quantization.utils import _quantize_activation_per_token_absmax as aoq
                        from torchao.quantization.utils import _quant_int8_per_token_matmul as aomm
                        xq = triton_quant.quantize(x, "int8")
                        wkn = q.weight.t().contiguous()
                        print(f"   torch._int_mm B column-major (our [N,K].t()) {t(lambda: torch._int_mm(xq.data, q.weight.t())):.3f} ms, "
                              f"B row-major [K,N] contiguous (what torchao's safe_int_mm makes) {t(lambda: torch._int_mm(xq.data, wkn)):.3f} ms, "
                              f"torchao matmul alone {t(lambda: aomm(xq.data, xq.scale, q.weight.t(), q.weight_scale.t(), output_dtype=torch.float32)):.3f} ms")
                        print(f"   parts: weight [K,N] copy {t(lambda: q.weight.t().contiguous()):.3f} ms, torchao quantizer "
                              f"(old adapter) {t(lambda: aoq(x.float())):.3f} ms, shared quantizer "
                              f"{t(lambda: triton_quant.quantize(x, 'int8')):.3f} ms")
                    q = None  # free the layer before the next method
                except Exception as e:  # noqa: BLE001
                    print(f"{m},{k},{n} | {fmt}-{kern} | FAILED {e!r:.300}", flush=True)
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
