"""Speed and error of every available mm_type vs bf16 F.linear on given shapes (`python -m bench`).

    python -m bench [--shapes wan14b|wan1.3b|small|t5xxl|clip-h|M,K,N ...] [--mm-type all|NAME ...]
                          [--peers/--no-peers] [--block] [--encoders [t5xxl clip-h]] [--json PATH]

Every figure is measured in this process: the bf16 baseline (F.linear with bias) is timed beside each
method on the same inputs, alternately with it (PAIRED_ROUNDS rounds; the ratio is median baseline /
median method of those rounds, so clock drift over the run cancels). Inputs carry outlier channels;
errors are ||y - ref|| / ||ref|| against an fp32 reference of the unquantized layer. On CUDA, times
are triton.testing.do_bench medians over rotating input buffers (several copies of x and of the layer
when they would fit in L2); on the CPU (tests) a plain median of wall-clock runs.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

import torch
from torch import nn

from .block import bench_block
from .encoders import ENCODERS, bench_encoder
from .models import BASELINE
from .peers import peer_methods
from .tables import markdown

PRESETS: dict[str, list[tuple[int, int, int]]] = {
    "wan14b": [(32760, 5120, 5120), (32760, 5120, 13824), (32760, 13824, 5120)],
    "wan1.3b": [(32760, 1536, 1536), (32760, 1536, 8960), (32760, 8960, 1536)],
    "small": [(512, 4096, 4096)],
    "t5xxl": [(512, 4096, 4096), (512, 4096, 10240), (512, 10240, 4096)],
    "clip-h": [(257, 1280, 1280), (257, 1280, 5120), (257, 5120, 1280)],
}
DEFAULT_SHAPES = ["wan14b", "wan1.3b", "small"]
PAIRED_ROUNDS = 3  # method / baseline alternations per row


@dataclass
class Row:
    """One line of the table: a method on a shape."""

    shape: str
    method: str
    kernel: str
    ms: Optional[float] = None
    ratio: Optional[float] = None  # bf16 time / this time (>1 = faster than bf16)
    tflops: Optional[float] = None
    rel_err: Optional[float] = None
    w_bytes: Optional[float] = None  # weight bytes (with scales) / bf16 weight bytes
    note: str = ""
    base_ms: Optional[float] = None  # the bf16 baseline timed beside this row (ratio = base_ms / ms)


@dataclass
class Report:
    device: str
    torch: str
    triton: str
    command: str
    date: str
    rows: list = field(default_factory=list)
    block: list = field(default_factory=list)
    encoders: list = field(default_factory=list)


# ----------------------------------------------------------------------------- arguments, shapes, table

def parse_shapes(items: list[str]) -> list[tuple[int, int, int]]:
    """Preset names and 'M,K,N' triples -> list of (M, K, N), duplicates dropped, order kept."""
    out: list[tuple[int, int, int]] = []
    for item in items:
        if item in PRESETS:
            shapes = PRESETS[item]
        else:
            parts = item.replace("x", ",").split(",")
            if len(parts) != 3 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
                raise argparse.ArgumentTypeError(
                    f"bad shape {item!r}: use M,K,N (positive integers) or one of {', '.join(PRESETS)}")
            shapes = [tuple(int(p) for p in parts)]
        out += [s for s in shapes if s not in out]
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", nargs="+", default=DEFAULT_SHAPES, metavar="SHAPE",
                   help=f"presets ({', '.join(PRESETS)}) or M,K,N; default: {' '.join(DEFAULT_SHAPES)}")
    p.add_argument("--mm-type", nargs="+", default=["all"], metavar="NAME",
                   help="mm_type names (quant.schemes.MM_TYPES) or 'all' (one name per format/kernel pair)")
    p.add_argument("--peers", action=argparse.BooleanOptionalAction, default=True,
                   help="also time torchao (compiled) and comfy-kitchen when importable")
    p.add_argument("--block", action="store_true", help="also time a whole Wan 2.1-14B transformer block")
    p.add_argument("--block-tokens", type=int, default=32760, help="M of the --block run")
    p.add_argument("--encoders", nargs="*", choices=sorted(ENCODERS), metavar="NAME",
                   help="also time whole encoders (t5xxl: T5-XXL at 512 tokens, clip-h: CLIP ViT-H at 257); "
                        "no names = both")
    p.add_argument("--rep-ms", type=float, default=300.0,
                   help="do_bench repetition time per timing (ms); a row times method and baseline "
                        "PAIRED_ROUNDS times each")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", metavar="PATH", help="write the report as JSON")
    return p


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    try:
        args.shape_list = parse_shapes(args.shapes)
    except argparse.ArgumentTypeError as e:
        build_parser().error(str(e))
    args.mm_types = select_mm_types(args.mm_type)
    return args


def select_mm_types(names: list[str]) -> list[str]:
    """Expand 'all' to one name per (format, kernel) pair of MM_TYPES; check explicit names."""
    from quant.schemes import MM_TYPES

    out: list[str] = []
    seen = set()
    for name in names:
        if name == "all":  # short names first: the long LightX2V seed names alias them
            for n, s in sorted(MM_TYPES.items(), key=lambda kv: kv[0].startswith("W-")):
                key = (s.format_name, s.kernel)
                if s.quantized and key not in seen and (s.kernel is not None or s.format_name in ("mxfp8", "nvfp4")):
                    seen.add(key)
                    out.append(n)
        elif name not in MM_TYPES or not MM_TYPES[name].quantized:
            raise SystemExit(f"unknown or unquantized mm_type {name!r}; valid: "
                             + ", ".join(n for n, s in MM_TYPES.items() if s.quantized))
        elif name not in out:
            out.append(name)
    # the emulated/short duplicates ("mxfp8" == "mxfp8-torch") run once
    return [n for i, n in enumerate(out) if _key(n) not in {_key(m) for m in out[:i]}]


def _key(name: str):
    from quant.schemes import MM_TYPES

    s = MM_TYPES[name]
    return (s.format_name, s.kernel or "torch")


def _fmt(v: Optional[float], spec: str) -> str:
    return "—" if v is None else format(v, spec)


HEADER = ("shape (M,K,N)", "method", "kernel", "ms", "bf16 ms", "x bf16", "TFLOP/s", "rel err", "w bytes", "note")


def format_table(rows: list[Row]) -> str:
    """Markdown table of the rows (one header)."""
    return markdown(HEADER, ((r.shape, r.method, r.kernel, _fmt(r.ms, ".3f"), _fmt(r.base_ms, ".3f"),
                              _fmt(r.ratio, ".2f") + ("x" if r.ratio else ""), _fmt(r.tflops, ".0f"),
                              _fmt(r.rel_err, ".2e"), _fmt(r.w_bytes, ".3f"), r.note) for r in rows))


def format_block(rows: list[dict]) -> str:
    head = ("method", "block ms", "x bf16", "linears ms", "attention ms", "other ms", "linear share")
    return markdown(head, ((r["method"], _fmt(r["block_ms"], ".2f"), _fmt(r["ratio"], ".3f") + ("x" if r["ratio"] else ""),
                            _fmt(r["linear_ms"], ".2f"), _fmt(r["attn_ms"], ".2f"), _fmt(r["other_ms"], ".2f"),
                            _fmt(r["linear_share"], ".0%")) for r in rows))


def format_encoders(rows: list[dict]) -> str:
    head = ("encoder (tokens)", "method", "ms", "x bf16", "x bf16 by round", "host ms / forward")
    return markdown(head, ((f"{r['encoder']} ({r['tokens']})", r["method"], _fmt(r["ms"], ".2f"),
                            _fmt(r["ratio"], ".3f") + ("x" if r["ratio"] else ""),
                            " / ".join(f"{v:.2f}" for v in r.get("round_ratios", ())), _fmt(r["host_ms"], ".2f"))
                           for r in rows))


def shape_label(m: int, k: int, n: int) -> str:
    return f"{m},{k},{n}"


# ----------------------------------------------------------------------------- timing and inputs

def make_timer(device: torch.device, rep_ms: float) -> Callable[[Callable[[], object]], float]:
    """Median milliseconds of fn(): do_bench on CUDA, wall clock on the CPU."""
    if device.type == "cuda":
        from triton.testing import do_bench

        return lambda fn: do_bench(fn, warmup=max(25, rep_ms / 4), rep=rep_ms, return_mode="median")

    def cpu_time(fn):
        fn()
        ts = []
        for _ in range(5):
            t0 = time.perf_counter()
            fn()
            ts.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(ts)

    return cpu_time


def outlier_input(m: int, k: int, device, dtype=torch.bfloat16, gen=None) -> torch.Tensor:
    """Activations with a few outlier channels (x20), like real DiT / T5 hidden states."""
    x = torch.randn(m, k, device=device, generator=gen)
    idx = torch.randperm(k, device=device, generator=gen)[: max(1, k // 100)]
    x[:, idx] *= 20.0
    return x.to(dtype)


def rotation_count(device: torch.device, bytes_per_set: int) -> int:
    """How many input/weight copies to rotate through so repeated calls don't run from L2."""
    if device.type != "cuda":
        return 1
    l2 = getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 50 << 20)
    return max(1, min(8, math.ceil(3 * l2 / max(bytes_per_set, 1))))


def rotating(fns: list[Callable[[], object]]) -> Callable[[], object]:
    state = [0]

    def call():
        state[0] = (state[0] + 1) % len(fns)
        return fns[state[0]]()

    return call


def rel_err(y: torch.Tensor, ref: torch.Tensor) -> float:
    y = y.float()
    if not torch.isfinite(y).all():
        return float("nan")
    return ((y - ref).norm() / ref.norm().clamp(min=1e-30)).item()


def weight_bytes_ratio(q: nn.Module) -> float:
    """Bytes of the stored weight + scales over bf16 weight bytes."""
    total = q.weight.numel() * q.weight.element_size() + q.weight_scale.numel() * q.weight_scale.element_size()
    if getattr(q, "weight_global_scale", None) is not None:
        total += q.weight_global_scale.numel() * q.weight_global_scale.element_size()
    return total / (q.in_features * q.out_features * 2)


# ----------------------------------------------------------------------------- methods

def _copies(lin: nn.Linear, r: int) -> list[nn.Linear]:
    out = [lin]
    for _ in range(r - 1):
        c = nn.Linear(lin.in_features, lin.out_features, device=lin.weight.device, dtype=lin.weight.dtype)
        c.weight.data.copy_(lin.weight.data)
        c.bias.data.copy_(lin.bias.data)
        out.append(c)
    return out


def bench_shape(m: int, k: int, n: int, mm_types: list[str], device: torch.device, timer, peers) -> list[Row]:
    """All rows of one shape: the bf16 baseline first, then each mm_type, then each peer."""
    import torch.nn.functional as F

    from quant.kernels import EMULATED, availability
    from quant.linear import QuantLinear
    from quant.schemes import resolve

    label = shape_label(m, k, n)
    gen = torch.Generator(device=device).manual_seed(m * 31 + k * 7 + n)
    lin = nn.Linear(k, n, device=device, dtype=torch.bfloat16)
    with torch.no_grad():
        lin.weight.normal_(0, k ** -0.5, generator=gen)
        lin.bias.normal_(0, 0.1, generator=gen)
    r = rotation_count(device, m * k * 2 + n * k * 2)
    xs = [outlier_input(m, k, device, gen=gen) for _ in range(r)]
    lins = _copies(lin, r)
    ref = torch.addmm(lin.bias.float(), xs[0].float(), lin.weight.float().t())
    flops = 2.0 * m * n * k
    rows = []

    base_fns = [(lambda x, l=l: F.linear(x, l.weight, l.bias)) for l in lins]
    base_call = rotating([lambda x=x, f=f: f(x) for x, f in zip(xs, base_fns)])

    def measure(method, kernel, fns, w_bytes=None, note=""):
        """Method and bf16 baseline timed alternately (PAIRED_ROUNDS each): the GPU's clock drifts
        over a run (~10% on an H100), so each ratio uses the baseline timed next to it."""
        with torch.no_grad():
            err = rel_err(fns[0](xs[0]), ref)
            call = rotating([lambda x=x, f=f: f(x) for x, f in zip(xs, fns)])
            if not rows:
                ms = base = timer(call)
            else:
                pairs = [(timer(call), timer(base_call)) for _ in range(PAIRED_ROUNDS)]
                ms = statistics.median(p[0] for p in pairs)
                base = statistics.median(p[1] for p in pairs)
        rows.append(Row(label, method, kernel, ms, base / ms, flops / ms / 1e9, err, w_bytes, note, base))

    measure(BASELINE, "cuBLAS" if device.type == "cuda" else "torch", base_fns, 1.0)
    for name in mm_types:
        try:
            res = resolve(name, device=device)
            status = availability(res.kernel, res.scheme.format_name, device).status
            qs = [QuantLinear.from_float(l, res.scheme.format, res.kernel) for l in lins]
            measure(name, res.kernel, qs, weight_bytes_ratio(qs[0]),
                    (("emulated: dequantize + bf16 matmul" if device.type == "cuda" else
                     "emulated: reference fp32 math") if status == EMULATED else ""))
            del qs
        except Exception as e:  # noqa: BLE001 - a kernel that cannot run is reported, not fatal
            rows.append(Row(label, name, "—", note=f"not verified: {type(e).__name__}: {str(e)[:120]}"))
        if device.type == "cuda":
            torch.cuda.empty_cache()
    for pname, plabel, build in peers:
        try:
            fns = [build(l) for l in lins]
            measure(pname, plabel, fns, note="x rotated" if r > 1 else "")
            del fns
        except Exception as e:  # noqa: BLE001
            rows.append(Row(label, pname, plabel, note=f"not verified: {type(e).__name__}: {str(e)[:120]}"))
    return rows


def run(args: argparse.Namespace) -> Report:
    """Measure every shape (and the block when asked); print the table(s)."""
    import datetime

    device = torch.device(args.device)
    try:
        import triton

        tver = triton.__version__
    except Exception:  # noqa: BLE001
        tver = "not installed"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    report = Report(name, torch.__version__, tver, "python -m bench " + " ".join(args.argv),
                    datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    timer = make_timer(device, args.rep_ms)
    peers = peer_methods(device) if args.peers else []
    for m, k, n in args.shape_list:
        rows = bench_shape(m, k, n, args.mm_types, device, timer, peers)
        report.rows += rows
        print(format_table(rows), flush=True)
    if args.block:
        report.block = bench_block(args.block_tokens, args.mm_types, device, make_timer(device, 3 * args.rep_ms))
        print(format_block(report.block), flush=True)
    if args.encoders is not None:
        for name in args.encoders or sorted(ENCODERS, reverse=True):
            # a forward is 10-300 ms: ten times the rep budget, so the median is over tens of runs
            report.encoders += bench_encoder(name, args.mm_types, device, make_timer(device, 10 * args.rep_ms))
        print(format_encoders(report.encoders), flush=True)
    return report


def main(argv: Optional[list[str]] = None) -> Report:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    args.argv = argv
    torch.backends.cuda.matmul.allow_tf32 = False
    report = run(args)
    print(f"\n# {report.command}\n# device: {report.device}; torch {report.torch}; triton {report.triton}; "
          f"{report.date}\n")
    print(format_table(report.rows))
    if report.block:
        print()
        print(format_block(report.block))
    if report.encoders:
        print()
        print(format_encoders(report.encoders))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**asdict(report), "rows": [asdict(r) for r in report.rows]}, f, indent=1)
    return report


if __name__ == "__main__":
    main()
