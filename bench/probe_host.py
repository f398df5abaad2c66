"""Where a planned Triton linear's host time goes at small M, and a profile of the T5-XXL forward.

    python bench/probe_host.py [--pieces] [--t5 LAYERS]

--pieces: CPU microseconds per call of each step of a planned call (M = 512, K = N = 4096, fp8 and int8):
the module forward, the kernel entry, the plan key, the plan call, its two allocations, the stream / device
queries, the hook check and one compiled launch; bf16 F.linear beside them.
--compare: planned fp8 and int8 calls (M = 257 / 512, K = N = 4096) timed in alternation, each launch's
compiled-kernel metadata, and a cProfile of 300 calls of each.
--t5: one forward of the quant.bench T5-XXL encoder per Triton mm_type under torch.profiler: the
kernels by GPU time and count, the GPU span of the forward and the host time to issue it.
"""
import argparse
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, ".")
from quant.formats import get_format  # noqa: E402
from quant.kernels import triton as triton_kernel  # noqa: E402
from quant.kernels import triton_launch, triton_plan  # noqa: E402
from quant.linear import QuantLinear  # noqa: E402

from probe_launch import back_to_back_us  # noqa: E402  (bench/ is this script's directory)
from probe_paths import cprofile, cpu_us  # noqa: E402

ROUNDS = 5  # rounds of 300 calls per CPU figure (median): this host's CPU speed drifts


def pieces():
    from triton.runtime import driver

    m = k = n = 4096
    m = 512
    lin = torch.nn.Linear(k, n, device="cuda", dtype=torch.bfloat16)
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    dev = torch.cuda.current_device()
    rows = {"bf16 F.linear": lambda: F.linear(x, lin.weight, lin.bias)}
    for fmt in ("fp8", "int8"):
        ql = QuantLinear.from_float(lin, get_format(fmt), "triton")
        for _ in range(4):
            ql(x)
        w, sw, bias = ql.weight, ql.weight_scale, ql.bias
        key = triton_plan.plan_key(x, w, sw, bias, fmt)
        plan = triton_plan.lookup(key)
        print(f"{fmt}: plan {type(plan).__name__}", flush=True)
        rows[f"{fmt} QuantLinear(x)"] = lambda ql=ql: ql(x)
        rows[f"{fmt} kernel linear()"] = lambda ql=ql, f=fmt: triton_kernel.linear(x, ql.qweight(), ql.bias, get_format(f))
        rows[f"{fmt} _w8a8_linear"] = lambda w=w, sw=sw, b=bias, f=fmt: triton_kernel._w8a8_linear(x, w, sw, b, f)
        rows[f"{fmt} plan call"] = lambda p=plan, w=w, sw=sw, b=bias, d=key[-1]: p(x, w, sw, b, d)
        if fmt == "fp8":
            rows["plan_key"] = lambda w=w, sw=sw, b=bias: triton_plan.plan_key(x, w, sw, b, "fp8")
            rows["lookup"] = lambda key=key: triton_plan.lookup(key)
            rows["torch.empty work"] = lambda p=plan: torch.empty(p.work_bytes, dtype=torch.uint8, device=x.device)
            rows["torch.empty out"] = lambda p=plan: torch.empty(p.out_shape, dtype=x.dtype, device=x.device)
            rows["x.new_empty out"] = lambda p=plan: x.new_empty(p.out_shape)
            rows["driver get_current_stream"] = lambda: driver.active.get_current_stream(dev)
            rows["torch._C._cuda_getCurrentRawStream"] = lambda: torch._C._cuda_getCurrentRawStream(dev)
            rows["driver get_current_device"] = lambda: driver.active.get_current_device()
            rows["torch._C._cuda_getDevice"] = lambda: torch._C._cuda_getDevice()
            rows["x.get_device()"] = lambda: x.get_device()
            rows["hooked()"] = triton_launch.hooked
            rows["4 data_ptr + 4 is_contiguous"] = lambda w=w, sw=sw, b=bias: (
                x.data_ptr(), w.data_ptr(), sw.data_ptr(), b.data_ptr(), x.is_contiguous(), w.is_contiguous(),
                sw.is_contiguous(), b.is_contiguous())
            rows["torch.compiler.is_compiling"] = torch.compiler.is_compiling
            rows["ql.qweight()"] = ql.qweight
            rows["weight.device != x.device"] = lambda ql=ql: ql.weight.device != x.device
            launch, pick = plan.launches[0]
            stream = driver.active.get_current_stream(dev)
            work = triton_plan.workspace(plan.work_bytes, x.device, stream)
            out = torch.empty(plan.out_shape, dtype=x.dtype, device=x.device)
            pq = work.data_ptr()
            vals = pick((x.data_ptr(), pq, pq + plan.s_offset, w.data_ptr(), sw.data_ptr(), bias.data_ptr(),
                         out.data_ptr(), *plan.consts))
            rows["workspace() (kept buffer)"] = lambda p=plan: triton_plan.workspace(p.work_bytes, x.device, stream)
            rows["quantizer bound launch"] = lambda: launch(stream, vals)
            print("bound launch:", launch.__code__.co_names, flush=True)
    for name, fn in rows.items():
        fn()
        print(f"  {name:40s} {cpu_us(fn, rounds=ROUNDS):7.2f} us/call", flush=True)
    print("T5 shapes, no bias (M = 512): CPU us per QuantLinear call")
    for kk, nn_ in ((4096, 4096), (4096, 10240), (10240, 4096)):
        lin = torch.nn.Linear(kk, nn_, bias=False, device="cuda", dtype=torch.bfloat16)
        xx = torch.randn(m, kk, device="cuda", dtype=torch.bfloat16)
        line = [f"  {kk}x{nn_}: bf16 {cpu_us(lambda: F.linear(xx, lin.weight), rounds=ROUNDS):.1f}"]
        for fmt in ("fp8", "int8"):
            ql = QuantLinear.from_float(lin, get_format(fmt), "triton")
            for _ in range(4):
                ql(xx)
            line.append(f"{fmt} {cpu_us(lambda: ql(xx), rounds=ROUNDS):.1f}")
        print(", ".join(line), flush=True)


def compare():
    for m in (257, 512):
        lin = torch.nn.Linear(4096, 4096, device="cuda", dtype=torch.bfloat16)
        x = torch.randn(m, 4096, device="cuda", dtype=torch.bfloat16)
        qls = {f: QuantLinear.from_float(lin, get_format(f), "triton") for f in ("fp8", "int8")}
        for f, ql in qls.items():
            for _ in range(4):
                ql(x)
            plan = triton_plan.lookup(triton_plan.plan_key(x, ql.weight, ql.weight_scale, ql.bias, f))
            for launch, _ in plan.launches:
                cells = dict(zip(launch.__code__.co_freevars, (c.cell_contents for c in launch.__closure__)))
                md = cells.get("metadata")
                print(f"M={m} {f}: grid {cells.get('gx'), cells.get('gy'), cells.get('gz')} c_launch "
                      f"{'c_launch' in cells} packed metadata {md}", flush=True)
        rounds = {f: [] for f in qls}
        for _ in range(ROUNDS):
            for f, ql in qls.items():
                rounds[f].append(cpu_us(lambda: ql(x)))
        rounds["bf16"] = [cpu_us(lambda: F.linear(x, lin.weight, lin.bias)) for _ in range(ROUNDS)]
        print(f"M={m} cpu us/call by round: " + "; ".join(f"{f} " + " ".join(f"{v:.1f}" for v in r)
                                                          for f, r in rounds.items()), flush=True)
        if m == 512:
            for f, ql in qls.items():
                cprofile(lambda: ql(x), f, top=8)


def t5(layers: int):
    from torch.profiler import ProfilerActivity, profile

    from quant.bench_encoders import T5Encoder, host_ms
    from quant.bench_models import per_method

    dev = torch.device("cuda")
    model = T5Encoder(layers=layers, device=dev)
    args = model.inputs(512, dev)
    forward = lambda: model(*args)  # noqa: E731

    def measure():
        for _ in range(3):  # a shape's third call records its launch plan
            forward()
        span_ms = back_to_back_us(forward, n=1) / 1e3
        h = host_ms(forward, dev)
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            forward()
            torch.cuda.synchronize()
        q = model.layers[0].q
        label = f"{q.fmt.name}-{q.kernel}" if hasattr(q, "fmt") else "bf16"
        print(f"\n## T5 ({layers} layers) {label}: GPU span {span_ms:.2f} ms / forward, host {h:.2f} ms", flush=True)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=50))
        cprofile(forward, f"{label}, one forward", n=1)
        return {}

    per_method(model, ["int8-triton", "fp8-triton"], dev, measure)  # bf16 first


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pieces", action="store_true")
    ap.add_argument("--compare", action="store_true")
    ap.add_argument("--t5", type=int, default=0)
    a = ap.parse_args()
    print(f"device {torch.cuda.get_device_name()} torch {torch.__version__}", flush=True)
    if a.pieces:
        pieces()
    if a.compare:
        compare()
    if a.t5:
        t5(a.t5)


if __name__ == "__main__":
    main()
