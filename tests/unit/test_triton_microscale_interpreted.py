"""The emulated-mxfp8/nvfp4 weight dequantizer (kernels.triton_microscale) under Triton's CPU interpreter.

Checks the kernel's indexing (nibble order, group -> scale column, ragged row/column masks) against the
formats' torch code without a GPU. The interpreter rounds some fp32 -> e4m3 casts wrongly (mantissa carry
into the exponent), so the activation fake-quantizer, which casts, is checked on the GPU only
(bench/check_kernels.py); the dequantizer only widens e4m3 -> fp32, which the interpreter does right.
Runs in a subprocess: TRITON_INTERPRET must be set before Triton is imported.
"""
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("triton")

SCRIPT = textwrap.dedent("""
    import torch
    from quant.formats import QTensor, get_format
    from quant.kernels import triton_microscale as tm

    torch.manual_seed(0)
    for fmt in ("mxfp8", "nvfp4"):
        f = get_format(fmt)
        for n, k in ((3, 32), (5, 96), (9, 1024), (2, 2080)):
            wq = f.quantize_weight(torch.randn(n, k))
            if fmt == "nvfp4":  # unit block scales: the codes and their order alone
                wq = QTensor(wq.data, torch.ones_like(wq.scale.float()).to(torch.float8_e4m3fn), torch.tensor(0.5))
            want = f.dequantize_weight(wq, torch.float32)
            y = torch.full((n, k), float("nan"))
            rows, block_k, grid = tm._tiles(n, k)
            gs = wq.global_scale.reshape(1) if fmt == "nvfp4" else wq.scale
            tm._dequant_weight_kernel[grid](wq.data, wq.scale, gs, y, n, k, wq.data.stride(0), wq.scale.stride(0),
                                            y.stride(0), IS_NVFP4=fmt == "nvfp4", GROUP=tm.GROUPS[fmt],
                                            ROWS=rows, BLOCK_K=block_k)
            assert torch.equal(y, want), (fmt, n, k, (y - want).abs().max().item())
    print("interpreted dequant ok")
""")


def test_weight_dequantizer_matches_the_formats_under_the_interpreter():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "interpreted dequant ok" in out.stdout
