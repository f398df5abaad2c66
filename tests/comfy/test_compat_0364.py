"""The pack against ComfyUI v0.3.64 (COMFYUI_0364_PATH, default /tmp/comfy0364): registers, ops checks pass.

Runs in a subprocess (one ComfyUI per process); skipped when that checkout is absent.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.environ.get("COMFYUI_0364_PATH", "/tmp/comfy0364")


@pytest.mark.skipif(not os.path.isfile(os.path.join(ROOT, "comfy", "ops.py")),
                    reason=f"no ComfyUI v0.3.64 checkout at {ROOT} (set COMFYUI_0364_PATH)")
def test_pack_registers_and_ops_work_in_v0364():
    here = os.path.dirname(os.path.abspath(__file__))
    out = subprocess.run([sys.executable, os.path.join(here, "ops_checks.py"), ROOT], capture_output=True,
                         text=True, timeout=300, cwd=ROOT, check=False)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    assert "registered ['LoadLightX2VConfig', 'LoadQuantizedCLIP', 'LoadQuantizedDiT', 'LoadQuantizedT5', 'QuantizedSample']" in out.stdout
    assert out.stdout.count("\nok ") + out.stdout.startswith("ok ") == 5, out.stdout
