"""Correctness and speed check of the Hopper (Gluon) attention kernel (quant/attention/triton/hopper.py) on an
H200, at its shipped launch shape and at variants of it.

    python -m bench.gluon_attention_check                               # the shipped Launch
    python -m bench.gluon_attention_check --variants stages=3 stages=5

A variant is comma-separated overrides of hopper.Launch fields. The parent process times torch SDPA (bf16)
and the pack's Triton kernel once per large shape, then runs each variant in a child process (`--variant`,
with a timeout) so that a compile error, a device fault or a barrier deadlock of one variant is reported and
the next one still runs. (The FA3-schedule and register-P variants measured in
bench/results/h200-attention.md are in git history, bench/gluon_attention*.py at commit 0399774.) A child
first checks the relative L2 error against fp32 SDPA at small ragged shapes (limit 0.05), then times the
large shapes (whole call: quantization pre-pass + kernel) and prints ms, TFLOP/s (4 B H Lq Lk D / t), the
ratio to SDPA and to the Triton kernel, and the error against the SDPA bf16 output.
Inputs, timing and the Triton kernel's call are bench/attention_ops.py's (make_inputs, time_ms, triton_fp8).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import traceback

import torch
import torch.nn.functional as F

from .attention_ops import make_inputs, time_ms, triton_fp8

SMALL = [  # (B, H, Lq, Lk): ragged lengths, tiles partly masked
    (1, 2, 300, 300),
    (1, 2, 1000, 1000),
    (1, 2, 4096, 4096),
    (1, 2, 1000, 333),
    (2, 3, 257, 4097),
    (1, 2, 77, 200),  # two key tiles: the fewest the kernel takes
]
LARGE = [(2, 40, 32760, 32760), (1, 40, 75600, 75600), (2, 12, 32760, 32760)]
D = 128
TOL = 0.05
CHILD_TIMEOUT_S = 150


def inputs(b: int, h: int, lq: int, lk: int, seed: int = 0, strided: bool = True):
    """q, k, v bf16 [B, H, L, D] with the attention bench's distribution: ComfyUI-style strided views of
    [B, L, H*D] storage, or contiguous copies with strided=False."""
    qkv = make_inputs((b, h, lq, lk, D), torch.bfloat16, torch.device("cuda"), seed)
    return qkv if strided else tuple(t.contiguous() for t in qkv)


def rel_l2(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.float(), ref.float()
    return ((out - ref).norm() / ref.norm()).item()


def tflops(b, h, lq, lk, ms):
    return 4 * b * h * lq * lk * D / (ms * 1e-3) / 1e12


def launch_of(variant: str):
    """hopper.Launch with the overrides in variant ("" or "shipped": the shipped one)."""
    from quant.attention.triton import hopper
    kw = dict(kv.split("=") for kv in variant.split(",") if kv and variant != "shipped")
    return hopper.LAUNCH._replace(**{k: int(v) for k, v in kw.items()})


def run(q, k, v, cfg):
    """The Hopper kernel with launch cfg, pre-pass included (scale D ** -0.5)."""
    from quant.attention.triton import hopper
    return hopper.attention(q, k, v, D ** -0.5, cfg=cfg)


def baselines() -> dict:
    """SDPA bf16 and the pack's Triton kernel at the large shapes -> {shape: {"sdpa": ms, "triton": ms}}."""
    res = {}
    for shape in LARGE:
        b, h, lq, lk = shape
        q, k, v = inputs(b, h, lq, lk)
        t_sdpa = time_ms(F.scaled_dot_product_attention, q, k, v)
        ref = F.scaled_dot_product_attention(q, k, v)
        try:
            t_tri = time_ms(triton_fp8, q, k, v)
            err = rel_l2(triton_fp8(q, k, v), ref)
        except Exception:
            traceback.print_exc()
            t_tri, err = float("nan"), float("nan")
        key = "x".join(map(str, shape))
        res[key] = {"sdpa": t_sdpa, "triton": t_tri}
        print(f"B{b} H{h} L{lq}: sdpa {t_sdpa:8.3f} ms {tflops(b, h, lq, lk, t_sdpa):6.1f} TFLOP/s | "
              f"triton {t_tri:8.3f} ms {tflops(b, h, lq, lk, t_tri):6.1f} TFLOP/s "
              f"x{t_sdpa / t_tri:.3f} vs sdpa, err {err:.4f}", flush=True)
        q = k = v = ref = None  # free before the next shape
        torch.cuda.empty_cache()
    return res


def run_variant(name: str, base: dict) -> bool:
    """Child: correctness at SMALL (fp32 SDPA reference), then timing at LARGE. True if all errors <= TOL."""
    cfg = launch_of(name)
    ok = True
    t0 = time.time()
    for i, (b, h, lq, lk) in enumerate(SMALL):
        q, k, v = inputs(b, h, lq, lk, seed=i, strided=bool(i % 2))
        out = run(q, k, v, cfg)
        torch.cuda.synchronize()
        ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
        err = rel_l2(out, ref)
        good = err <= TOL and out.shape == q.shape and out.transpose(1, 2).is_contiguous()
        ok &= good
        print(f"  [{name}] B{b} H{h} Lq{lq} Lk{lk}: rel L2 err {err:.4f} {'ok' if good else 'FAIL'}", flush=True)
    print(f"  [{name}] compile + checks {time.time() - t0:.1f}s", flush=True)
    if not ok:
        print(f"  [{name}] skipping timing: accuracy check failed", flush=True)
        return False
    for shape in LARGE:
        b, h, lq, lk = shape
        q, k, v = inputs(b, h, lq, lk)
        ms = time_ms(lambda *x: run(*x, cfg), q, k, v)
        err = rel_l2(run(q, k, v, cfg), F.scaled_dot_product_attention(q, k, v))
        bl = base.get("x".join(map(str, shape)), {})
        t_sdpa, t_tri = bl.get("sdpa", float("nan")), bl.get("triton", float("nan"))
        print(f"  [{name}] B{b} H{h} L{lq}: {ms:8.3f} ms {tflops(b, h, lq, lk, ms):6.1f} TFLOP/s "
              f"x{t_sdpa / ms:.3f} vs sdpa, x{t_tri / ms:.3f} vs triton, err vs sdpa bf16 {err:.4f}", flush=True)
        q = k = v = None  # free before the next shape
        torch.cuda.empty_cache()
    return True


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", help="child mode: run one variant")
    ap.add_argument("--variants", nargs="*", help="hopper.Launch overrides, e.g. stages=4,maxnreg=160")
    ap.add_argument("--base", default="{}", help="child mode: baseline times (JSON)")
    args = ap.parse_args()
    if args.variant:
        try:
            sys.exit(0 if run_variant(args.variant, json.loads(args.base)) else 1)
        except Exception:
            traceback.print_exc()
            sys.exit(2)

    names = args.variants or ["shipped"]
    print(f"torch {torch.__version__}, device {torch.cuda.get_device_name()}", flush=True)
    import triton
    print(f"triton {triton.__version__}", flush=True)
    base = baselines()
    summary = {}
    for name in names:
        print(f"== {name}: {launch_of(name)}", flush=True)
        try:
            proc = subprocess.run([sys.executable, "-m", "bench.gluon_attention_check", "--variant", name,
                                   "--base", json.dumps(base)], timeout=CHILD_TIMEOUT_S)
            summary[name] = {0: "ok", 1: "accuracy FAIL", 2: "error (traceback above)"}.get(
                proc.returncode, f"exit {proc.returncode}")
        except subprocess.TimeoutExpired:
            summary[name] = f"TIMEOUT after {CHILD_TIMEOUT_S}s (hang: barrier deadlock?)"
        print(f"== {name}: {summary[name]}", flush=True)
    print("summary:", json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
