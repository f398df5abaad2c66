"""GPU check that the Triton GEMMs' autotune picks outlive the process (quant/kernels/triton/tuned.py).

Runs two fresh processes, each timing the first call of the Triton W8A8 linear at Wan 2.1 14B shapes (the
persistent TMA GEMM at 32760 tokens on sm90+, the plain GEMM at 512): the first autotunes and keeps its picks
in a fresh cache folder, the second must launch them without autotuning. Prints one row per (process, shape)
and exits 1 when the second process autotuned anything.

    python3 scripts/check_autotune_cache.py [--mm-type int8|fp8] [--cache-dir DIR]
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPES = [(32760, 5120, 5120), (32760, 5120, 13824), (32760, 13824, 5120), (512, 5120, 5120), (512, 4096, 4096)]

CHILD = """
import sys, time, torch
sys.path.insert(0, {root!r})
from quant.formats import get_format
from quant.kernels import run_linear
fmt = get_format({fmt!r})
for m, k, n in {shapes!r}:
    w = fmt.quantize_weight(torch.randn(n, k, device="cuda") / k ** 0.5)
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    torch.cuda.synchronize()
    t = time.perf_counter()
    run_linear("triton", x, w, None, fmt)
    torch.cuda.synchronize()
    print(f"SHAPE {{m}}x{{k}}x{{n}} {{time.perf_counter() - t:.2f}}", flush=True)
"""


def run(fmt: str, cache_dir: str) -> list[tuple[str, str, int]]:
    """One fresh process: (shape, first-call seconds, autotuner runs before it) per shape."""
    env = {**os.environ, "COMFYUI_QUANTIZED_CACHE_DIR": cache_dir, "TRITON_PRINT_AUTOTUNING": "1"}
    out = subprocess.run([sys.executable, "-c", CHILD.format(root=ROOT, fmt=fmt, shapes=SHAPES)], env=env,
                         capture_output=True, text=True, check=True).stdout
    rows, tuned = [], 0
    for line in out.splitlines():
        if line.startswith("Triton autotuning for function"):
            tuned += 1
        elif line.startswith("SHAPE "):
            _, shape, seconds = line.split()
            rows.append((shape, seconds, tuned))
            tuned = 0
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mm-type", default="int8", choices=["int8", "fp8"])
    p.add_argument("--cache-dir", default=None, help="kept picks folder (default: a fresh temporary one)")
    a = p.parse_args()
    cache_dir = a.cache_dir or tempfile.mkdtemp(prefix="cq-autotune-")
    shutil.rmtree(cache_dir, ignore_errors=True)
    print(f"| process | shape MxKxN | first call s | autotuner runs |\n|---|---|---|---|")
    second_tuned = 0
    for process in (1, 2):
        for shape, seconds, tuned in run(a.mm_type, cache_dir):
            print(f"| {process} | {shape} | {seconds} | {tuned} |")
            second_tuned += tuned if process == 2 else 0
    print(f"kept picks: {os.path.join(cache_dir, 'triton-autotune.json')}")
    return 1 if second_tuned else 0


if __name__ == "__main__":
    sys.exit(main())
