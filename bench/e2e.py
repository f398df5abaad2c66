"""Seconds per sampling step inside ComfyUI (`python -m bench --e2e`): what users feel.

    COMFYUI_PATH=/path/to/ComfyUI python -m bench --e2e [--model wan14b|wan1.3b|tiny] [--blocks N]
        [--res 480p 720p] [--steps 3] [--methods core-bf16 pack-fp8-triton+qattn ...] [--json PATH]
        [--profile DIR]

Builds a Wan 2.1 T2V DiT with ComfyUI's own `WanModel` (real block shapes, `--blocks` of them, random
weights), saves it as a bf16 file, and for each method loads it through a real loader, optionally patches
attention (the pack's Quantized Attention node) and torch.compile (core's TorchCompileModel wrapper), then
samples with the pack's Sample node (ComfyUI's KSampler: euler, cfg 5, cond and uncond batched): one warm-up
step (compile, autotune), then `--steps` timed steps. Per method: load seconds, warm-up seconds, seconds per
step (the sampler loop only), peak VRAM, and the final latent's relative error vs the first method (the
baseline: core's bf16 loader), all from this process. With `--profile DIR`, one more step per method runs
under torch.profiler after the timed ones and its ops, by total CUDA time, go to DIR/<method>_<res>.txt
(the timed figures do not include it).

A method is `<loader>-<weights>[+<attention>][@compile]`:
    core-bf16, core-fp8_e4m3fn, core-fp8_e4m3fn_fast   core's Load Diffusion Model (its weight_dtype)
    corefile-fp8, corefile-int8                          core's loader on a comfy_quant file from the converter
    pack-<mm_type>                                       Load Quantized DiT (e.g. pack-fp8-triton)
    +<attention>                                         Quantized Attention (e.g. +qattn, +sdpa)
"""
from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Optional

import torch

from .comfy_env import WAN, import_comfyui, load_pack, write_wan
from .tables import cell, markdown

# frames, height, width of the video; the Wan latent is [1, 16, 1 + (frames - 1) / 4, h / 8, w / 8]
RESOLUTIONS = {"480p": (81, 480, 832), "720p": (81, 720, 1280), "tiny": (5, 32, 32)}
DEFAULT_METHODS = ["core-bf16", "pack-fp8-triton", "pack-fp8-triton+qattn", "pack-int8-triton+qattn",
                   "core-bf16+qattn", "pack-fp8-triton+qattn-accurate"]
CORE_DTYPES = {"bf16": {}, "fp8_e4m3fn": {"dtype": torch.float8_e4m3fn},
               "fp8_e4m3fn_fast": {"dtype": torch.float8_e4m3fn, "fp8_optimizations": True}}


@dataclass(frozen=True)
class Method:
    """One way to get and run a MODEL: loader, weights, attention kernel, compiled or not."""

    loader: str
    weights: str
    attention: Optional[str] = None
    compiled: bool = False

    @classmethod
    def parse(cls, text: str) -> "Method":
        """`<loader>-<weights>[+<attention>][@compile]` (see the module docstring)."""
        body, _, tail = text.partition("@")
        if tail not in ("", "compile"):
            raise ValueError(f"{text}: only '@compile' may follow a method")
        body, _, attention = body.partition("+")
        loader, _, weights = body.partition("-")
        if loader not in ("core", "corefile", "pack") or not weights:
            raise ValueError(f"{text}: expected core-<dtype>, corefile-<fp8|int8> or pack-<mm_type>")
        if loader == "core" and weights not in CORE_DTYPES:
            raise ValueError(f"{text}: core weights are one of {', '.join(CORE_DTYPES)}")
        if loader == "corefile" and weights not in ("fp8", "int8"):
            raise ValueError(f"{text}: corefile weights are fp8 or int8")
        return cls(loader, weights, attention or None, tail == "compile")


@dataclass
class Row:
    """One method at one resolution; ratio and error filled in against the resolution's baseline."""

    method: str
    res: str
    load_s: float
    warmup_s: float
    s_per_step: float
    peak_gib: Optional[float]  # None on the CPU
    kernels: str
    x_baseline: Optional[float] = None
    rel_err: Optional[float] = None


@dataclass
class Report:
    command: str
    device: str
    torch: str
    model: str
    blocks: int
    steps: int
    rows: list = field(default_factory=list)


def _conditioning(shape, device_seed: int) -> list:
    g = torch.Generator().manual_seed(device_seed)
    return [[torch.randn(1, 512, shape.text_dim, generator=g), {}]]


def _load(method: Method, path: str, workdir: str, pack) -> object:
    """The MODEL for a method (see the module docstring); loading and quantizing only."""
    import comfy.sd

    if method.loader == "pack":
        return pack.nodes.load_dit.load_dit_path(path, method.weights, "default")
    if method.loader == "core":
        return comfy.sd.load_diffusion_model(path, model_options=dict(CORE_DTYPES[method.weights]))
    convert = importlib.import_module(pack.__name__ + ".quant.checkpoints.convert").convert
    dst = os.path.join(workdir, f"comfy_{method.weights}_{os.path.basename(path)}")
    if not os.path.exists(dst):
        convert(path, dst, method.weights, layout="comfyui", progress=False)
    return comfy.sd.load_diffusion_model(dst)


def _patch(model, method: Method, pack):
    """The model with the method's attention kernel and torch.compile applied, as the nodes do."""
    if method.attention:
        node = pack.nodes.attention.QuantizedAttention()
        (model,) = getattr(node, node.FUNCTION)(model, method.attention)
    if method.compiled:
        from comfy_api.torch_helpers import set_torch_compile_wrapper

        # dynamo keeps graphs per code object, and core's compile node drops the guards on transformer_options
        # (where the attention choice lives): without a reset this method would rerun an earlier method's graph
        torch.compiler.reset()

        model = model.clone(disable_dynamic=True) if "disable_dynamic" in model.clone.__code__.co_varnames \
            else model.clone()
        set_torch_compile_wrapper(model=model, backend="inductor",
                                  options={"guard_filter_fn": lambda entries: [
                                      "transformer_options" not in e.name for e in entries]})
    return model


def run_method(text: str, path: str, res: str, args, pack, shape) -> tuple[Row, torch.Tensor]:
    """Load, patch, warm up one step, then time args.steps steps; the row and the final latent (CPU)."""
    import comfy.model_management

    method = Method.parse(text)
    frames, h, w = RESOLUTIONS[res]
    latent = {"samples": torch.zeros(1, 16, 1 + (frames - 1) // 4, h // 8, w // 8)}
    pos, neg = _conditioning(shape, 1), _conditioning(shape, 2)
    start = time.perf_counter()
    model = _load(method, path, args.workdir, pack)
    load_s = time.perf_counter() - start
    model = _patch(model, method, pack)
    sampler = pack.nodes.sample.QuantizedSample()
    warm = sampler.sample(model, 0, 1, 5.0, "euler", "simple", pos, neg, latent, 1.0)["ui"]["seconds_total"][0]
    out = sampler.sample(model, 0, args.steps, 5.0, "euler", "simple", pos, neg, latent, 1.0)
    ui = out["ui"]
    if args.profile:
        _profile_step(os.path.join(args.profile, f"{text.replace('+', '_').replace('@', '_')}_{res}.txt"),
                      lambda: sampler.sample(model, 0, 1, 5.0, "euler", "simple", pos, neg, latent, 1.0))
    row = Row(text, res, load_s, warm, ui["seconds_per_step"][0], ui["peak_vram_gb"][0], ui["text"][0].split("kernels: ")[-1])
    samples = out["result"][0]["samples"].float().cpu()
    del model, out, sampler
    comfy.model_management.unload_all_models()
    gc.collect()
    comfy.model_management.soft_empty_cache()
    return row, samples


def _profile_step(path: str, step) -> None:
    """Runs step() under torch.profiler and writes its ops' table to path, by total CUDA time (CPU time on the
    CPU)."""
    from torch.profiler import ProfilerActivity, profile

    cuda = torch.cuda.is_available()
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        step()
        if cuda:
            torch.cuda.synchronize()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        f.write(prof.key_averages().table(sort_by="cuda_time_total" if cuda else "cpu_time_total", row_limit=40,
                                          max_name_column_width=90))


def format_table(rows: list[Row]) -> str:
    head = ("resolution", "method", "load s", "warm-up s", "s/step", "x baseline", "peak GiB", "latent rel err", "kernels")
    return markdown(head, ((r.res, r.method, cell(r.load_s, ".1f"), cell(r.warmup_s, ".1f"), cell(r.s_per_step, ".3f"),
                            cell(r.x_baseline, ".2f"), cell(r.peak_gib, ".1f", "CPU"), cell(r.rel_err, ".4f"), r.kernels)
                           for r in rows))


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench --e2e", description=__doc__.split("\n\n")[0])
    p.add_argument("--comfyui", default=os.environ.get("COMFYUI_PATH", os.path.expanduser("~/comfy/ComfyUI")))
    p.add_argument("--model", choices=sorted(WAN), default="wan14b")
    p.add_argument("--blocks", type=int, default=4)
    p.add_argument("--res", nargs="+", choices=sorted(RESOLUTIONS), default=["480p"])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--methods", nargs="+", default=DEFAULT_METHODS)
    p.add_argument("--workdir", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "comfyui-quantized-e2e"))
    p.add_argument("--json", default=None)
    p.add_argument("--profile", default=None, help="directory for one profiled step's CUDA kernel table per method")
    a = p.parse_args(argv)
    for m in a.methods:
        Method.parse(m)  # refuse a bad name before building anything
    return a


def main(argv: list[str]) -> Report:
    args = parse_args(argv)
    import_comfyui(args.comfyui)
    pack = load_pack()
    os.makedirs(args.workdir, exist_ok=True)
    shape = WAN[args.model]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    path = os.path.join(args.workdir, f"{args.model}_{args.blocks}blocks_bf16.safetensors")
    if not os.path.exists(path):
        write_wan(path, shape, args.blocks, device)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    report = Report("python -m bench --e2e " + " ".join(argv), name, torch.__version__, args.model, args.blocks, args.steps)
    for res in args.res:
        base: Optional[tuple[Row, torch.Tensor]] = None
        for text in args.methods:
            row, latent = run_method(text, path, res, args, pack, shape)
            if base is None:
                base = (row, latent)
            else:
                row.x_baseline = base[0].s_per_step / row.s_per_step
                row.rel_err = ((latent - base[1]).norm() / base[1].norm().clamp(min=1e-30)).item()
            report.rows.append(row)
            print(format_table([row]).splitlines()[-1], flush=True)
    print(f"\n# {report.command}\n# {report.device}, torch {report.torch}, {args.model} x {args.blocks} blocks\n")
    print(format_table(report.rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**asdict(report), "rows": [asdict(r) for r in report.rows]}, f, indent=1)
    return report
