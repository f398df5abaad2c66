"""`python -m bench --e2e` on the CPU at tiny shapes: the same code that produced bench/results/h200-e2e.md on the
GPU builds a Wan file with ComfyUI's WanModel, loads it through core's and the pack's loaders, patches attention
and reports per method (ratio and latent error against the first method)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_method_names_are_checked_before_anything_is_built():
    sys.path.insert(0, REPO)
    from bench.e2e import Method

    assert Method.parse("pack-fp8-triton+qattn@compile") == Method("pack", "fp8-triton", "qattn", True)
    assert Method.parse("core-bf16") == Method("core", "bf16")
    for bad in ("core-int4", "corefile-nvfp4", "mine-fp8", "pack-fp8@jit", "pack-"):
        with pytest.raises(ValueError):
            Method.parse(bad)


def test_e2e_bench_runs_tiny_on_the_cpu(comfy_root, tmp_path):
    out = tmp_path / "e2e.json"
    cmd = [sys.executable, "-m", "bench", "--e2e", "--comfyui", comfy_root, "--model", "tiny", "--blocks", "2",
           "--res", "tiny", "--steps", "2", "--workdir", str(tmp_path), "--json", str(out),
           "--methods", "core-bf16", "pack-int8-torch+auto", "core-bf16+sdpa", "corefile-int8"]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = {row["method"]: row for row in json.loads(out.read_text())["rows"]}
    assert list(rows) == ["core-bf16", "pack-int8-torch+auto", "core-bf16+sdpa", "corefile-int8"]
    assert rows["core-bf16"]["x_baseline"] is None and rows["core-bf16"]["peak_gib"] is None  # CPU
    assert "int8/torch" in rows["pack-int8-torch+auto"]["kernels"]
    assert "attention: sdpa" in rows["core-bf16+sdpa"]["kernels"]
    assert rows["core-bf16+sdpa"]["rel_err"] < 1e-3  # the same model, SDPA through the override
    for m in ("pack-int8-torch+auto", "corefile-int8"):
        assert 0 < rows[m]["rel_err"] < 0.05, (m, rows[m]["rel_err"])  # int8 weights: close, not equal
    assert "| tiny | corefile-int8 |" in r.stdout
