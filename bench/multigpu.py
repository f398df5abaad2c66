"""One GPU vs ComfyUI's MultiGPU CFG Split on the pack's model (`python -m bench --multigpu`; issue 18).

    COMFYUI_PATH=/path/to/ComfyUI python -m bench --multigpu [--model wan14b] [--blocks 10] [--res 480p 720p]
        [--mm-type fp8-triton] [--attention sdpa qattn] [--steps 3] [--json PATH]

Builds a Wan 2.1 T2V DiT with ComfyUI's own `WanModel` (real block shapes, `--blocks` of them, random weights;
as `--e2e`), loads it through Load Quantized DiT (`--mm-type`), patches its attention (Quantized Attention), and
samples with the pack's Sample node (euler, cfg 5: cond and uncond) twice in one process: on one GPU, then after
core's `comfy.multigpu.create_multigpu_deepclones(model, 2)` (the MultiGPU CFG Split node's function: a copy of
the model on the second GPU through the loader's cached_patcher_init, cond and uncond in parallel threads).
Prints seconds per step (one warm-up step first: compile, autotune), the speed-up, and the final latent's
relative error vs the one-GPU run. Needs two CUDA GPUs (ComfyUI's device list); refuses to start otherwise.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import time
from dataclasses import asdict, dataclass

import torch

from .comfy_env import WAN, import_comfyui, load_pack, write_wan
from .e2e import RESOLUTIONS, _conditioning
from .tables import cell, markdown


@dataclass
class Row:
    """One resolution and attention kernel: both runs and how they compare."""

    res: str
    attention: str
    devices: str
    one_gpu_s_per_step: float
    split_s_per_step: float
    speedup: float
    latent_rel_err: float
    latent_max_abs: float
    kernels: str


def _sample(model, pack, shape, res: str, steps: int) -> tuple[float, torch.Tensor, str]:
    """(seconds per step, final latent on the CPU, kernels) after one warm-up step."""
    frames, h, w = RESOLUTIONS[res]
    latent = {"samples": torch.zeros(1, 16, 1 + (frames - 1) // 4, h // 8, w // 8)}
    pos, neg = _conditioning(shape, 1), _conditioning(shape, 2)
    sampler = pack.nodes.sample.QuantizedSample()
    run = lambda n: sampler.sample(model, 0, n, 5.0, "euler", "simple", pos, neg, latent, 1.0)
    run(1)
    out = run(steps)
    ui = out["ui"]
    return ui["seconds_per_step"][0], out["result"][0]["samples"].float().cpu(), ui["text"][0].split("kernels: ")[-1]


def run(path: str, res: str, attention: str, args, pack, shape) -> Row:
    """The one-GPU and the split run of one configuration, the model loaded once."""
    import comfy.model_management
    import comfy.multigpu

    model = pack.nodes.load_dit.load_dit_path(path, args.mm_type, "default")
    model = pack.nodes.attention.with_attention(model, attention)
    one, ref, kernels = _sample(model, pack, shape, res, args.steps)
    split = comfy.multigpu.create_multigpu_deepclones(model, max_gpus=2, reuse_loaded=True)
    clones = split.get_additional_models_with_key("multigpu")
    if not clones:
        raise SystemExit("MultiGPU CFG Split made no clone: ComfyUI sees one device")
    two, out, _ = _sample(split, pack, shape, res, args.steps)
    devices = ", ".join(str(d) for d in [model.load_device, *(c.load_device for c in clones)])
    err = ((out - ref).norm() / ref.norm().clamp(min=1e-30)).item()
    row = Row(res, attention, devices, one, two, one / two, err, (out - ref).abs().max().item(), kernels)
    del model, split, clones
    comfy.model_management.unload_all_models()
    gc.collect()
    comfy.model_management.soft_empty_cache()
    return row


def format_table(rows: list[Row]) -> str:
    head = ("resolution", "attention", "devices", "1 GPU s/step", "split s/step", "speed-up", "latent rel err",
            "max abs", "kernels")
    return markdown(head, ((r.res, r.attention, r.devices, cell(r.one_gpu_s_per_step, ".3f"),
                            cell(r.split_s_per_step, ".3f"), cell(r.speedup, ".2f"), cell(r.latent_rel_err, ".2e"),
                            cell(r.latent_max_abs, ".2e"), r.kernels) for r in rows))


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench --multigpu", description=__doc__.split("\n\n")[0])
    p.add_argument("--comfyui", default=os.environ.get("COMFYUI_PATH", os.path.expanduser("~/comfy/ComfyUI")))
    p.add_argument("--model", choices=sorted(WAN), default="wan14b")
    p.add_argument("--blocks", type=int, default=10)
    p.add_argument("--res", nargs="+", choices=sorted(RESOLUTIONS), default=["480p", "720p"])
    p.add_argument("--mm-type", default="fp8-triton")
    p.add_argument("--attention", nargs="+", default=["sdpa", "qattn"])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--workdir", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "comfyui-quantized-e2e"))
    p.add_argument("--json", default=None)
    return p.parse_args(argv)


def main(argv: list[str]) -> list[Row]:
    args = parse_args(argv)
    import_comfyui(args.comfyui)
    import comfy.model_management
    devices = comfy.model_management.get_all_torch_devices()
    if len(devices) < 2:
        raise SystemExit(f"MultiGPU CFG Split needs two devices; ComfyUI sees {[str(d) for d in devices]}")
    pack = load_pack()
    os.makedirs(args.workdir, exist_ok=True)
    shape = WAN[args.model]
    path = os.path.join(args.workdir, f"{args.model}_{args.blocks}blocks_bf16.safetensors")
    if not os.path.exists(path):
        write_wan(path, shape, args.blocks, comfy.model_management.get_torch_device())
    rows = []
    start = time.perf_counter()
    for res in args.res:
        for attention in args.attention:
            rows.append(run(path, res, attention, args, pack, shape))
            print(format_table(rows[-1:]).splitlines()[-1], flush=True)
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(f"\n# python -m bench --multigpu {' '.join(argv)}\n# {len(devices)} x {name}, torch {torch.__version__}, "
          f"{args.model} x {args.blocks} blocks, {args.mm_type}, {time.perf_counter() - start:.0f} s\n")
    print(format_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"command": "python -m bench --multigpu " + " ".join(argv), "rows": [asdict(r) for r in rows]},
                      f, indent=1)
    return rows
