"""How much of the int8 GEMM's time is the epilogue's int32 -> fp32 conversion (bench/NOTES.md v8)?

    python bench/probe_int8_epilogue.py

The persistent TMA GEMM (kernels.triton_gemm_tma, the M >= 4096 path) is rebuilt from its own source
with the epilogue's `acc.to(tl.float32)` replaced by
- "bitcast": `acc.to(tl.float32, bitcast=True)`: no conversion at all (wrong values): the upper bound
  of what any cheaper conversion could save;
- "magic": `(acc + 0x4B400000).to(tl.float32, bitcast=True) - 12582912.0`: one integer and one float
  add instead of I2F; exact only for |acc| < 2**22 (checked bit for bit against "i2f" on inputs that
  stay inside), so not shippable as is.
GEMM alone, pre-quantized random int8 A / W, per-token x per-channel scales, bf16 bias and out, autotuned
per variant; fp8 (no conversion needed) beside it. do_bench medians, 3 alternating rounds.
"""
import importlib.util
import os
import re
import sys
import tempfile

import torch
import triton.testing as tt

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from bench.sweep_triton_configs import make_inputs  # noqa: E402

SHAPES = [(32760, 1536, 1536), (32760, 1536, 8960), (32760, 8960, 1536), (32760, 5120, 5120)]
VARIANTS = {
    "i2f": "acc.to(tl.float32)",
    "bitcast": "acc.to(tl.float32, bitcast=True)",
    "magic": "((acc + 0x4B400000).to(tl.float32, bitcast=True) - 12582912.0)",
}


def variant_module(name: str, expr: str):
    """triton_gemm_tma rebuilt from its source with the epilogue conversion replaced by expr."""
    import quant.kernels.triton_gemm_tma as base

    src = open(base.__file__).read()
    assert src.count("acc.to(tl.float32)") == 1
    src = src.replace("acc.to(tl.float32)", expr)
    src = re.sub(r"^from \.\.(\w+)", r"from quant.\1", src, flags=re.M)
    src = re.sub(r"^from \.(\w+)", r"from quant.kernels.\1", src, flags=re.M)
    path = os.path.join(tempfile.mkdtemp(), f"tma_{name}.py")
    with open(path, "w") as f:
        f.write(src)
    spec = importlib.util.spec_from_file_location(f"tma_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main():
    mods = {n: variant_module(n, e) for n, e in VARIANTS.items()}
    import quant.kernels.triton_gemm_tma as shipped

    print("| shape (M,K,N) | i2f ms | bitcast ms (x i2f) | magic ms (x i2f) | magic == i2f | fp8 ms (x i2f) | pick |")
    print("|---|---|---|---|---|---|---|")
    for m, k, n in SHAPES:
        a, w, sa, sw, bias = make_inputs(m, k, n, True)
        a8, w8, sa8, sw8, _ = make_inputs(m, k, n, False)
        assert k * 127 * 127 < 2 ** 31
        outs, fns = {}, {}
        for name, mod in mods.items():
            c = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
            fns[name] = (lambda mod=mod, c=c: mod.w8a8_gemm_tma(a, sa, w, sw, bias, c))
            fns[name]()
            outs[name] = c
        c8 = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
        fns["fp8"] = lambda: shipped.w8a8_gemm_tma(a8, sa8, w8, sw8, bias, c8)
        fns["fp8"]()
        torch.cuda.synchronize()
        # the random int8 inputs keep |acc| ~ sqrt(K) * 127^2 / 3 << 2^22, where magic is exact
        same = torch.equal(outs["magic"], outs["i2f"])
        times = {nm: [] for nm in fns}
        for _ in range(3):
            for nm, fn in fns.items():
                times[nm].append(tt.do_bench(fn, warmup=50, rep=300, return_mode="median"))
        t = {nm: sorted(v)[1] for nm, v in times.items()}
        pick = {nm: mods[nm]._w8a8_tma_kernel.best_config.kwargs for nm in mods}
        print(f"| {m},{k},{n} | {t['i2f']:.3f} | {t['bitcast']:.3f} ({t['i2f'] / t['bitcast']:.3f}) | "
              f"{t['magic']:.3f} ({t['i2f'] / t['magic']:.3f}) | {same} | {t['fp8']:.3f} ({t['i2f'] / t['fp8']:.3f}) | "
              f"{ {nm: (p['BLOCK_M'], p['BLOCK_N'], p['EPI_SPLIT'], p['WARP_SPEC']) for nm, p in pick.items()} } |",
              flush=True)


if __name__ == "__main__":
    main()
