"""Load time and peak host RAM of a whole DiT (`python -m bench --load`): what quantizing adds to loading.

    COMFYUI_PATH=/path/to/ComfyUI python -m bench --load [--model wan14b] [--blocks 40]
        [--methods core-bf16 pack-fp8-triton ...] [--json PATH]

Writes a Wan 2.1 T2V DiT (ComfyUI's `WanModel`, `--blocks` blocks, random weights) as one bf16 file, reads it
once so the page cache is warm for every method alike (that read's time is printed), then runs each method in
its own fresh process:
    core-bf16            core's Load Diffusion Model, then the model on the GPU (load_models_gpu)
    pack-<mm_type>       Load Quantized DiT (quantizing while loading), then the model on the GPU
Per method: seconds until the model is on the GPU, and the process's peak resident host memory (VmRSS,
sampled every 10 ms; its anonymous part too: file pages of a memory map are the page cache's, not a copy).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time

import torch

from .comfy_env import WAN, import_comfyui, load_pack, write_wan
from .tables import cell, markdown

GIB = 1024 ** 3


def resident_bytes() -> tuple[int, int]:
    """This process's resident memory now (VmRSS) and its anonymous part (RssAnon), from /proc/self/status."""
    with open("/proc/self/status") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    return tuple(int(fields[k].split()[0]) * 1024 if k in fields else 0 for k in ("VmRSS", "RssAnon"))


class PeakRss:
    """Background sampler of resident_bytes() while the block runs: peak rss and peak anon in bytes."""

    def __init__(self, period_s: float = 0.01):
        self.period_s, self.rss, self.anon = period_s, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        rss, anon = resident_bytes()
        self.rss, self.anon = max(self.rss, rss), max(self.anon, anon)

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self._sample()

    def __enter__(self) -> "PeakRss":
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def child(method: str, path: str, comfyui: str) -> dict:
    """One method in this (fresh) process: seconds to a model on the GPU, peak host memory, GPU bytes held."""
    import_comfyui(comfyui)
    pack = load_pack()
    import comfy.model_management as mm
    import comfy.sd

    cuda = torch.cuda.is_available()
    start_rss, start_anon = resident_bytes()
    with PeakRss() as peak:
        start = time.perf_counter()
        if method == "core-bf16":
            model = comfy.sd.load_diffusion_model(path)
        elif method.startswith("pack-"):
            model = pack.nodes.load_dit.load_dit_path(path, method[len("pack-"):], "default")
        else:
            raise ValueError(f"unknown method {method}")
        mm.load_models_gpu([model], force_full_load=True)
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    gpu = torch.cuda.memory_allocated() if cuda else 0
    aimdo = bool(getattr(sys.modules.get("comfy.memory_management"), "aimdo_enabled", False))
    return {"method": method, "aimdo": aimdo, "seconds": seconds, "peak_rss_gib": (peak.rss - start_rss) / GIB,
            "peak_anon_gib": (peak.anon - start_anon) / GIB, "gpu_weights_gib": gpu / GIB,
            "start_rss_gib": start_rss / GIB}


def format_table(rows: list[dict], file_gib: float) -> str:
    head = ("method", "s to GPU", "peak host RSS GiB (above start)", "of which anonymous GiB",
            "RSS - file size GiB", "GPU memory GiB")
    return markdown(head, ((r["method"], cell(r["seconds"], ".1f"), cell(r["peak_rss_gib"], ".1f"),
                            cell(r["peak_anon_gib"], ".1f"), cell(r["peak_rss_gib"] - file_gib, "+.1f"),
                            cell(r["gpu_weights_gib"], ".1f")) for r in rows))


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench --load", description=__doc__.split("\n\n")[0])
    p.add_argument("--comfyui", default=os.environ.get("COMFYUI_PATH", os.path.expanduser("~/comfy/ComfyUI")))
    p.add_argument("--model", choices=sorted(WAN), default="wan14b")
    p.add_argument("--blocks", type=int, default=40)
    p.add_argument("--methods", nargs="+", default=["core-bf16", "pack-fp8-triton", "pack-int8-triton"])
    p.add_argument("--workdir", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "comfyui-quantized-e2e"))
    p.add_argument("--json", default=None)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str]) -> list[dict]:
    args = parse_args(argv)
    path = os.path.join(args.workdir, f"{args.model}_{args.blocks}blocks_bf16.safetensors")
    if args.child:
        print("RESULT " + json.dumps(child(args.child, path, args.comfyui)), flush=True)
        return []
    if not torch.cuda.is_available():
        raise SystemExit("python -m bench --load needs a CUDA GPU (it times loading onto it)")
    os.makedirs(args.workdir, exist_ok=True)
    if not os.path.exists(path):
        import_comfyui(args.comfyui)
        start = time.perf_counter()
        write_wan(path, WAN[args.model], args.blocks, torch.device("cuda"))
        print(f"# wrote {path} in {time.perf_counter() - start:.1f} s", flush=True)
    with open(path, "rb") as f:  # warm the page cache once, the same for every method
        start = time.perf_counter()
        while f.read(1 << 26):
            pass
    file_gib = os.path.getsize(path) / GIB
    print(f"# {path}: {file_gib:.1f} GiB, read once in {time.perf_counter() - start:.1f} s", flush=True)
    rows = []
    for method in args.methods:
        cmd = [sys.executable, "-m", "bench", "--load", *argv, "--child", method]
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
        results = [line[len("RESULT "):] for line in out.stdout.splitlines() if line.startswith("RESULT ")]
        if out.returncode != 0 or not results:
            print(f"# {method} failed (exit {out.returncode}):\n{out.stderr[-3000:]}", flush=True)
            continue
        rows.append(json.loads(results[-1]))
        print(format_table(rows[-1:], file_gib).splitlines()[-1], flush=True)
    print(f"\n# python -m bench --load {' '.join(argv)}\n# {torch.cuda.get_device_name()}, torch {torch.__version__},"
          f" file {file_gib:.1f} GiB, page cache warm\n")
    print(format_table(rows, file_gib))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"command": "python -m bench --load " + " ".join(argv), "file_gib": file_gib, "rows": rows}, f,
                      indent=1)
    return rows
