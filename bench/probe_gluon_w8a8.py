"""Device probe: the Gluon per-token W8A8 linear (quantizer beside the GEMM, kernels.gluon_w8a8) vs bf16 and
the Triton path (quantizer pass, then GEMM), per shape: error against the reference, paired do_bench timings.

    python bench/probe_gluon_w8a8.py [--shapes wan14b wan1.3b] [--m 32760] [--rounds 3] [--configs 4,216 ...]
"""
import argparse
import os
import sys
import traceback

import torch
import torch.nn.functional as F

sys.path.insert(0, ".")
from quant.bench import PRESETS  # noqa: E402
from quant.formats import get_format  # noqa: E402
from quant.kernels import reference, run_linear  # noqa: E402
from quant.kernels import gluon_w8a8 as gw  # noqa: E402


def outlier_input(m, k, dtype=torch.bfloat16):
    x = torch.randn(m, k, device="cuda")
    x[:, torch.randperm(k, device="cuda")[: max(1, k // 100)]] *= 30.0
    return x.to(dtype)


def rel_err(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30)).item()


def config(text: str) -> "gw.Config":
    stages, math_regs, qrows, qcols, *ablate = map(int, text.split(","))
    return gw.Config(stages=stages, math_regs=math_regs, qrows=qrows, qcols=qcols, ablate=(ablate or [0])[0])


def paired(fns: dict, rounds: int, rep: int) -> dict:
    """Median do_bench ms per name, the names timed in turn for `rounds` rounds."""
    from triton.testing import do_bench
    times = {n: [] for n in fns}
    for _ in range(rounds):
        for n, fn in fns.items():
            times[n].append(do_bench(fn, warmup=25, rep=rep, return_mode="median"))
    return {n: sorted(v)[len(v) // 2] for n, v in times.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", nargs="+", default=["wan14b", "wan1.3b"])
    ap.add_argument("--m", type=int, default=32760)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rep", type=int, default=200)
    ap.add_argument("--configs", nargs="+", default=["4,216"], help="gluon_w8a8.Config as stages,math_regs,qrows,qcols[,ablate]")
    ap.add_argument("--formats", nargs="+", default=["fp8", "int8"])
    args = ap.parse_args()
    print(torch.cuda.get_device_name(), torch.__version__, __import__("triton").__version__, flush=True)
    fails = 0
    # correctness on ragged shapes first (M, K, N)
    for fname in args.formats:
        fmt = get_format(fname)
        for m, k, n in [(77, 256, 320), (1000, 1040, 1000), (4096, 5120, 5120), (300, 384, 1100), (40000, 1536, 1536)]:
            x = outlier_input(m, k)
            w = torch.randn(n, k, device="cuda") * 0.05
            bias = torch.randn(n, device="cuda").to(torch.bfloat16)
            qw = fmt.quantize_weight(w)
            ref = reference.linear(x, qw, bias, fmt)
            sep = run_linear("triton", x, qw, bias, fmt)
            for regs in args.configs:
                try:
                    out = gw.linear(x, qw.data, qw.scale.float().reshape(-1).contiguous(), bias, cfg=config(regs))
                    torch.cuda.synchronize()
                    e_ref, e_sep = rel_err(out, ref), rel_err(out, sep)
                    ok = e_ref < 1e-2 and torch.isfinite(out).all().item() or config(regs).ablate
                    fails += not ok
                    print(f"check {fname} {m}x{k}x{n} cfg {regs}: rel err vs reference {e_ref:.2e}, vs quantizer+"
                          f"triton {e_sep:.2e} (triton vs reference {rel_err(sep, ref):.2e}) {'ok' if ok else 'FAIL'}",
                          flush=True)
                except Exception:
                    fails += 1
                    print(f"check {fname} {m}x{k}x{n} cfg {regs}: FAIL\n{traceback.format_exc()[-3000:]}", flush=True)
    if fails:
        print(f"{fails} failures: no timings")
        return 1
    for fname in args.formats:
        fmt = get_format(fname)
        print(f"\n{fname}: | K x N | bf16 ms | {fname}-triton (quantizer pass + GEMM) | "
              + " | ".join(f"gluon {r}" for r in args.configs) + " |")
        print("|---|---|---|" + "---|" * len(args.configs))
        for shape_set in args.shapes:
            for _, k, n in PRESETS[shape_set]:
                x = outlier_input(args.m, k)
                w = torch.randn(n, k, device="cuda") * 0.05
                bias = torch.randn(n, device="cuda").to(torch.bfloat16)
                wb = w.to(torch.bfloat16)
                qw = fmt.quantize_weight(w)
                sw = qw.scale.float().reshape(-1).contiguous()
                ws = torch.empty((args.m, k), dtype=qw.data.dtype, device="cuda")
                fns = {"bf16": lambda: F.linear(x, wb, bias), "triton": lambda: run_linear("triton", x, qw, bias, fmt)}
                for regs in args.configs:
                    fns[regs] = lambda c=config(regs): gw.linear(x, qw.data, sw, bias, ws, c)
                t = paired(fns, args.rounds, args.rep)
                fl = 2 * args.m * k * n
                cells = [f"{t[nm]:.3f} ms {t['bf16'] / t[nm]:.2f}x {fl / t[nm] / 1e9:.0f} TF/s"
                         for nm in ["triton"] + args.configs]
                print(f"| {k} x {n} | {t['bf16']:.3f} | " + " | ".join(cells) + " |", flush=True)
                del x, w, wb, qw, ws
    return 0


if __name__ == "__main__":
    sys.exit(main())
