"""Attention kernels at the Wan / Flux shapes: `python -m bench.attention_ops [--shapes ...] [--json PATH]`.

Times (median of triton.testing.do_bench, which flushes L2 between runs) torch SDPA in bf16, the pack's
quantized attention (fp8 and accurate modes, pre-pass included) and, when importable, SageAttention,
FlashAttention-3 and comfy-kitchen's int8 attention; prints ms, x SDPA, TFLOP/s (4 B H Lq Lk D / t) and
the relative L2 error against SDPA on fp32 inputs (q ~ 2 N(0,1), k ~ N(0,1) + a per-channel offset
~ 3 N(0,1) shared by all tokens, v ~ N(0,1); error on the first batch's first 4 heads).
Inputs come as ComfyUI hands them: [B, L, H*D] viewed as [B, H, L, D] (strided).
`--configs` times the kernel's candidate launch configs at the first shape instead (the sweep behind
quant/attention/triton/configs.py).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os

import torch
import torch.nn.functional as F

SHAPES = {  # name -> (B, H, Lq, Lk, D)
    "wan14b-480p": (2, 40, 32760, 32760, 128),
    "wan14b-720p": (1, 40, 75600, 75600, 128),
    "wan1.3b-480p": (2, 12, 32760, 32760, 128),
    "wan14b-cross": (2, 40, 32760, 512, 128),
    "wan1.3b-cross": (2, 12, 32760, 512, 128),
    "flux": (1, 24, 4608, 4608, 128),
    "d64": (2, 24, 16384, 16384, 64),
    "d96": (1, 24, 16384, 16384, 96),
    "short-lk-1k": (2, 40, 32760, 1024, 128),
    "short-lk-2k": (2, 40, 32760, 2048, 128),
    "short-lk-4k": (2, 40, 32760, 4096, 128),
}
ERR_HEADS = 4


def comfy_view(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, L, H*D] -> [B, H, L, D] view (no copy), as the ComfyUI adapter passes it."""
    b, l, hd = x.shape
    return x.view(b, l, heads, hd // heads).transpose(1, 2)


def make_inputs(shape, dtype, device, seed=0):
    """q, k, v [B, H, L, D] strided views of [B, L, H*D] buffers with the benchmark's distribution."""
    b, h, lq, lk, d = shape
    g = torch.Generator(device=device).manual_seed(seed)
    q = torch.randn(b, lq, h * d, device=device, generator=g).mul_(2)
    k = torch.randn(b, lk, h * d, device=device, generator=g)
    k += 3 * torch.randn(1, 1, h * d, device=device, generator=g)
    v = torch.randn(b, lk, h * d, device=device, generator=g)
    return tuple(comfy_view(t.to(dtype), h) for t in (q, k, v))


def _sdpa(q, k, v):
    return F.scaled_dot_product_attention(q, k, v)


def triton_fp8(q, k, v):
    """The pack's Triton kernel (kernel.py) in the fp8 mode, also where the Hopper (Gluon) kernel would run."""
    from quant.attention.triton import triton_kernel

    return triton_kernel(q, k, v, q.shape[-1] ** -0.5, False)


def methods() -> dict:
    """name -> fn(q, k, v) on [B, H, L, D]; optional peers only when importable."""
    from quant.attention.triton import quantized_attention

    out = {"sdpa": _sdpa,
           "own-fp8": lambda q, k, v: quantized_attention(q, k, v),
           "own-fp8-triton": triton_fp8,
           "own-accurate": lambda q, k, v: quantized_attention(q, k, v, accurate=True)}
    try:
        from sageattention import sageattn
        out["sageattn"] = lambda q, k, v: sageattn(q, k, v, tensor_layout="HND", is_causal=False)
    except Exception:
        pass
    for mod in ("fa3_fwd_interface", "flash_attn_interface"):
        try:
            fa3 = __import__(mod).flash_attn_func
            out["fa3"] = lambda q, k, v, f=fa3: _first(f(q.transpose(1, 2), k.transpose(1, 2),
                                                         v.transpose(1, 2))).transpose(1, 2)
            break
        except Exception:
            pass
    try:
        from comfy_kitchen.sage_attention import int8_attention
        out["kitchen-int8"] = lambda q, k, v: int8_attention(q, k, v)
    except Exception:
        pass
    return out


def _first(x):
    return x[0] if isinstance(x, tuple) else x


def rel_err(fn, shape, device) -> float:
    """Relative L2 error of fn (bf16 inputs) against SDPA on the fp32 inputs, first batch x ERR_HEADS heads."""
    _, h, lq, lk, d = shape
    sub = (1, min(h, ERR_HEADS), lq, lk, d)
    q, k, v = make_inputs(sub, torch.float32, device, seed=1)
    ref = F.scaled_dot_product_attention(q, k, v)
    out = fn(q.bfloat16(), k.bfloat16(), v.bfloat16()).float()
    return ((out - ref).norm() / ref.norm()).item()


def time_ms(fn, q, k, v) -> float:
    import triton.testing

    fn(q, k, v)
    torch.cuda.synchronize()
    return triton.testing.do_bench(lambda: fn(q, k, v), warmup=100, rep=1000, return_mode="median")


def bench_shape(name, shape, fns, device) -> list[dict]:
    b, h, lq, lk, d = shape
    flops = 4 * b * h * lq * lk * d
    q, k, v = make_inputs(shape, torch.bfloat16, device)
    rows = []
    base = None
    for mname, fn in fns.items():
        try:
            ms = time_ms(fn, q, k, v)
            err = rel_err(fn, shape, device)
        except Exception as e:  # a peer that rejects the shape: reported, not fatal
            rows.append({"shape": name, "method": mname, "error": f"{type(e).__name__}: {e}"[:120]})
            continue
        base = ms if mname == "sdpa" else base
        rows.append({"shape": name, "dims": shape, "method": mname, "ms": ms, "x_sdpa": base / ms if base else None,
                     "tflops": flops / ms / 1e9, "rel_err": err})
        print(_row(rows[-1]), flush=True)
    return rows


def _row(r) -> str:
    if "ms" not in r:
        return f"| {r['shape']} | {r['method']} | - | - | - | {r['error']} |"
    x = f"{r['x_sdpa']:.2f}" if r["x_sdpa"] else "-"
    return f"| {r['shape']} | {r['method']} | {r['ms']:.2f} | {x} | {r['tflops']:.0f} | {r['rel_err']:.4f} |"


def _regs(jit_fn, dump=None) -> tuple:
    """(registers, spills) of the last kernel jit_fn compiled on this device (Triton 3.6's cache layout);
    with dump a path prefix, its TTGIR and PTX are written there too."""
    cache = jit_fn.device_caches[torch.cuda.current_device()][0]
    c = list(cache.values())[-1]
    if dump:
        for kind in ("ttgir", "ptx"):
            with open(f"{dump}.{kind}", "w") as f:
                f.write(c.asm[kind])
    return c.n_regs, c.n_spills


def sweep_configs(shape, device) -> list[dict]:
    """Time every candidate config of the kernel (both modes) at one shape, with registers and spills."""
    from quant.attention.triton import kernel
    from quant.attention.triton.configs import Config

    C = Config  # candidates around the shipped configs (earlier sweeps: bench/results/h200-attention.md)
    cands = {False: [C(64, 128, 4, 3, True), C(64, 128, 4, 2, True), C(64, 128, 4, 3, False),
                     C(64, 128, 4, 4, False), C(64, 64, 4, 4, False), C(128, 128, 8, 3, True),
                     C(64, 128, 4, 3, False, 168)],
             True: [C(128, 64, 8, 3, False, 0, True), C(128, 64, 8, 2, False, 0, True),
                    C(64, 64, 4, 2, False, 0, True), C(64, 64, 4, 3, False), C(128, 64, 8, 3, False),
                    C(64, 128, 4, 3, False, 168)]}
    b, h, lq, lk, d = shape
    flops = 4 * b * h * lq * lk * d
    q, k, v = make_inputs(shape, torch.bfloat16, device)
    sdpa = time_ms(_sdpa, q, k, v)
    from quant.attention.triton.quantize import quantize
    for acc in (False, True):
        pre = time_ms(lambda q, k, v, a=acc: quantize(k, v, 128, a), q, k, v)
        print(f"pre-pass (accurate={acc}) {pre:.3f} ms", flush=True)
    print(f"sdpa {sdpa:.2f} ms", flush=True)
    rows = []
    for accurate in (False, True):
        for cfg in cands[accurate]:
            dump = os.environ.get("ATTN_DUMP") and f"{os.environ['ATTN_DUMP']}-{int(accurate)}"
            fn = lambda q, k, v, c=cfg, a=accurate: kernel.attention(q, k, v, q.shape[-1] ** -0.5, a, c)
            try:
                ms = time_ms(fn, q, k, v)
                err = rel_err(fn, shape, device)
                regs = _regs(kernel.attn_kernel, dump if cfg == cands[accurate][0] else None)
            except Exception as e:
                print(f"| {cfg} | acc={accurate} | failed {type(e).__name__}: {str(e)[:300]}", flush=True)
                continue
            rows.append({"cfg": list(cfg), "accurate": accurate, "ms": ms, "x_sdpa": sdpa / ms,
                         "tflops": flops / ms / 1e9, "rel_err": err, "regs_spills": regs})
            print(f"| {tuple(cfg)} | acc={accurate} | {ms:.2f} ms | {sdpa / ms:.3f}x | {flops / ms / 1e9:.0f} TF/s "
                  f"| err {err:.4f} | regs/spills {regs} |", flush=True)
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", nargs="*", default=list(SHAPES)[:8], choices=list(SHAPES))
    ap.add_argument("--json", help="write the rows here")
    ap.add_argument("--configs", action="store_true", help="sweep the kernel's launch configs at the first shape")
    args = ap.parse_args(argv)
    device = torch.device("cuda")
    import triton

    print(f"# {torch.cuda.get_device_name()}; torch {torch.__version__}; triton {triton.__version__}; "
          f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC", flush=True)
    if args.configs:
        rows = sweep_configs(SHAPES[args.shapes[0]], device)
    else:
        print("| shape | method | ms | x SDPA | TFLOP/s | rel err |\n| --- | --- | --- | --- | --- | --- |", flush=True)
        fns = methods()
        rows = []
        for name in args.shapes:
            rows += bench_shape(name, SHAPES[name], fns, device)
            torch.cuda.empty_cache()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
