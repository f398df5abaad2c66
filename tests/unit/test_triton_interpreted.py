"""Triton kernels under Triton's CPU interpreter: their indexing checked without a GPU.

- the emulated-mxfp8/nvfp4 weight dequantizer (kernels.triton.microscale): nibble order, group -> scale
  column, ragged row/column masks, bit-exact against the formats' torch code;
- the persistent TMA W8A8 GEMM (kernels.triton.gemm_tma): fewer programs than tiles (the persistent
  loop), ragged M and N edges, split and whole epilogues, int8 and e4m3;
- the plain W8A8 GEMM (kernels.triton.gemm): int8 per channel (BLOCK_K 128 and 256, the small-M
  configs' width, over a K that needs the masked loop) and fp8 block-128 (pre-quantized A), ragged
  edges, grouped tile order;
GEMM outputs are poisoned with NaN first and compared with a tolerance (the interpreter rounds fp32 ->
bf16 by truncation).
The interpreter also rounds some fp32 -> e4m3 casts wrongly (mantissa carry into the exponent), so the
kernels that cast to e4m3 (activation quantizers, fake-quantizer) are checked on the GPU only
(bench/check_kernels.py). Runs in a subprocess: TRITON_INTERPRET must be set before Triton is imported.
"""
import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

triton = pytest.importorskip("triton")

PRELUDE = """
import torch
from quant.formats import QTensor, get_format
from quant.kernels.triton.tiles import m_bucket
torch.manual_seed(0)
"""

DEQUANT = textwrap.dedent("""
    from quant.kernels.triton import microscale as tm

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

TMA = textwrap.dedent("""
    from quant.kernels.triton import gemm_tma as tma

    m, k, n = 300, 256, 640
    for dt in (torch.int8, torch.float8_e4m3fn):
        if dt == torch.int8:
            a = torch.randint(-127, 128, (m, k), dtype=dt)
            w = torch.randint(-127, 128, (n, k), dtype=dt)
        else:
            a = (torch.randn(m, k) * 50).to(dt)
            w = (torch.randn(n, k) * 50).to(dt)
        sa, sw = torch.rand(m, 1) * 0.01, torch.rand(n, 1) * 0.01
        bias = torch.randn(n).to(torch.bfloat16)
        ref = (a.float() @ w.float().t()) * sa * sw.t() + bias.float()
        for bm, bn, split, g in ((128, 256, True, 8), (128, 128, False, 2), (256, 128, False, 16)):
            c = torch.full((m, n), float("nan"), dtype=torch.bfloat16)
            meta = {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": 128, "GROUP_M": g, "EPI_SPLIT": split,
                    "WARP_SPEC": False}
            tma._w8a8_tma_kernel.fn[tma.grid(meta, m, n, 3)](*tma.descriptors(a, w, c, meta), sa, sw, bias, m, n, k,
                                                              m_bucket(m), HAS_BIAS=True, IS_INT=dt == torch.int8,
                                                              NUM_SMS=3, **meta)
            assert not torch.isnan(c.float()).any(), (dt, bm, bn)
            err = ((c.float() - ref).norm() / ref.norm()).item()
            assert err < 5e-3, (dt, bm, bn, split, g, err)
    print("interpreted tma ok")
""")

PLAIN = textwrap.dedent("""
    from quant.kernels import reference
    from quant.kernels.triton import gemm as tg

    m, k, n = 70, 384, 200
    for fmt in ("int8", "fp8_block128"):
        f = get_format(fmt)
        x = torch.randn(m, k).to(torch.bfloat16)
        wq = f.quantize_weight(torch.randn(n, k) * k ** -0.5)
        xq = f.quantize_activation(x)
        bias = torch.randn(n).to(torch.bfloat16)
        ref = reference.linear(x, wq, bias, f).float()
        c = torch.full((m, n), float("nan"), dtype=torch.bfloat16)
        sa, sw = xq.scale, wq.scale
        args = (xq.data, wq.data, c, sa, sw, bias, m, n, k, m_bucket(m), k, k, n, sa.stride(0),
                sa.stride(1) if sa.dim() > 1 else 0, sw.stride(0), sw.stride(1) if sw.dim() > 1 else 0)
        grid = (((m + 63) // 64) * ((n + 127) // 128),)
        for bk in (128, 256) if fmt == "int8" else (128,):  # 256: K = 384 runs the masked (ragged) loop
            c.fill_(float("nan"))
            tg._w8a8_kernel.fn[grid](*args, HAS_BIAS=True, IS_INT=fmt == "int8", GROUPED=fmt != "int8",
                                     EVEN_K=k % bk == 0, BLOCK_M=64,
                                     BLOCK_N=128, BLOCK_K=bk, GROUP_M=2)
            assert not torch.isnan(c.float()).any(), (fmt, bk)
            err = ((c.float() - ref).norm() / ref.norm()).item()
            assert err < 5e-3, (fmt, bk, err)
    print("interpreted plain gemm ok")
""")


def _run(script: str, part: str) -> None:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", PRELUDE + script], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"interpreted {part} ok" in out.stdout, out.stdout


def _loop_bounds_interpret() -> bool:
    """Whether this Triton's interpreter runs loops bounded by a runtime scalar: Triton < 3.8 calls int() on a
    1-element array there, which NumPy >= 2.4 refuses (the kernels compile and run on GPUs all the same)."""
    import numpy

    try:
        int(numpy.array([1]))
        return True
    except TypeError:
        return tuple(int(p) for p in triton.__version__.split(".")[:2]) >= (3, 8)


RUNTIME_LOOPS = pytest.mark.skipif(
    not _loop_bounds_interpret(),
    reason=f"Triton {triton.__version__}'s interpreter cannot run a loop with a runtime bound under this NumPy")


def test_microscale_dequantizer_under_the_interpreter():
    _run(DEQUANT, "dequant")


@pytest.mark.skipif(importlib.util.find_spec("triton.tools.tensor_descriptor") is None,
                    reason="the TMA GEMM needs host TMA descriptors (Triton 3.4+); older Triton never runs it")
@RUNTIME_LOOPS
def test_tma_gemm_under_the_interpreter():
    _run(TMA, "tma")


@RUNTIME_LOOPS
def test_plain_gemm_under_the_interpreter():
    _run(PLAIN, "plain gemm")
