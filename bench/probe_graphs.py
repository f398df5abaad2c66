"""Small M with CUDA graphs: what the eager path's CPU cost hides (bench/NOTES.md v7).

    python bench/probe_graphs.py

For M in (77, 257, 512, 1024) at K = N = 4096 and T5-XXL's FFN shapes: a quantized linear (QuantLinear,
kernel "triton", int8 / fp8) and bf16 nn.Linear, each eager and under torch.compile(mode="reduce-overhead")
(CUDA graphs; the quantized linear is one custom-op node), timed back to back (no cache flush: what
a stack of layers sees). The compiled quantized output is compared with the eager one.
"""
import sys

import torch

sys.path.insert(0, ".")
from quant.bench import outlier_input  # noqa: E402
from quant.formats import get_format  # noqa: E402
from quant.linear import QuantLinear  # noqa: E402

from probe_launch import back_to_back_us  # noqa: E402  (bench/ is this script's directory)


def compiled(mod):
    return torch.compile(mod, mode="reduce-overhead", fullgraph=True)


def main():
    import triton

    print(f"device {torch.cuda.get_device_name()} torch {torch.__version__} triton {triton.__version__}")
    print("shape | method | eager us/call (x bf16 eager) | CUDA graphs us/call (x bf16 graphs)")
    with torch.no_grad():
        for m, k, n in [(77, 4096, 4096), (257, 4096, 4096), (512, 4096, 4096), (1024, 4096, 4096),
                        (512, 4096, 10240), (512, 10240, 4096)]:
            lin = torch.nn.Linear(k, n, device="cuda", dtype=torch.bfloat16)
            x = outlier_input(m, k, "cuda")
            cl = compiled(lin)
            for _ in range(3):
                cl(x)
            be, bg = back_to_back_us(lambda: lin(x)), back_to_back_us(lambda: cl(x))
            print(f"{m}x{k}x{n} | bf16 | {be:.1f} | {bg:.1f}", flush=True)
            for fmt in ("int8", "fp8"):
                ql = QuantLinear.from_float(lin, get_format(fmt), "triton")
                want = ql(x)
                cq = compiled(ql)
                for _ in range(3):
                    got = cq(x)
                same = torch.equal(got, want)
                qe, qg = back_to_back_us(lambda: ql(x)), back_to_back_us(lambda: cq(x))
                print(f"{m}x{k}x{n} | {fmt}-triton | {qe:.1f} ({be / qe:.2f}x) | {qg:.1f} ({bg / qg:.2f}x) | "
                      f"compiled == eager: {same}", flush=True)
            torch._dynamo.reset()


if __name__ == "__main__":
    main()
