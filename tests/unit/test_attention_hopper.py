"""The Hopper (sm90) Gluon attention kernel without a GPU: when it is chosen, and that it compiles for sm90.

The compile check runs Triton's whole sm90 pipeline (Gluon -> PTX -> ptxas -> SASS, all shipped in the Triton
wheel) and reads the SASS: tensor cores used, no spills, shared memory within a Hopper SM's, and no wgmma
reading its A operand from registers: ptxas does not keep such registers alive while the wgmma runs (the
bug behind the NaN of an earlier variant, bench/results/h200-attention.md), so P must come from shared memory.
It does not run the kernel (tests/gpu/test_attention_kernel.py does, on a GPU).
"""
import os
import re
import subprocess
import sys

import pytest
import torch

pytest.importorskip("triton")
from quant.attention.triton import hopper_reason  # noqa: E402

SMEM_LIMIT = 227 * 1024  # bytes of shared memory one block may use on sm90


def test_chosen_only_where_it_can_run():
    q = torch.empty(1, 2, 300, 128, dtype=torch.bfloat16)
    assert hopper_reason(q, q, accurate=True) == "accurate mode"
    assert hopper_reason(q, q, accurate=False) == "not an sm90 GPU"  # a CPU tensor


def _compile():
    """hopper.attn_kernel compiled for sm90 (Triton's Gluon front end, no GPU needed)."""
    gluon_runtime = pytest.importorskip("triton.experimental.gluon._runtime")
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.runtime.jit import mangle_type

    try:
        from quant.attention.triton import hopper
    except ImportError as e:
        pytest.skip(f"no Gluon in this Triton: {e}")
    if hopper.version_reason():
        pytest.skip(hopper.version_reason())
    from triton.experimental.gluon import language as gl

    cfg = hopper.LAUNCH
    q8 = torch.empty(1024, 128, dtype=torch.int8)
    vt = torch.empty(128, 1024, dtype=torch.float8_e4m3fn)
    f32, out = torch.empty(16), torch.empty(16, dtype=torch.bfloat16)
    args = dict(q_desc=hopper._desc(q8, [cfg.rows, 128], gl.int8),
                k_desc=hopper._desc(q8, [cfg.block_n, 128], gl.int8),
                v_desc=hopper._desc(vt, [128, cfg.block_n], gl.float8e4nv), qs_ptr=f32, ks_ptr=f32, vs_ptr=f32,
                o_ptr=out, H=40, LQ=1000, LK=1000, LK_PAD=1024, sob=100, sol=100, soh=100)
    consts = dict(NCONS=cfg.consumers, STAGES=cfg.stages, CONS_REGS=cfg.consumer_regs,
                  PROD_REGS=cfg.producer_regs)
    fn = hopper.attn_kernel
    sig, attrs = {}, {}
    for i, name in enumerate(fn.arg_names):
        sig[name] = "constexpr" if name in consts else mangle_type(args[name])
        if sig[name].startswith("*"):
            attrs[(i,)] = [["tt.divisibility", 16]]
    src = gluon_runtime.GluonASTSource(fn, sig, consts, attrs)
    try:
        return triton.compile(src, target=GPUTarget("cuda", 90, 32),
                              options=dict(num_warps=4, maxnreg=cfg.maxnreg))
    except FileNotFoundError as e:  # a Triton install without its bundled ptxas
        pytest.skip(f"no ptxas: {e}")


def test_compiles_for_sm90_without_spills_or_register_p():
    kernel = _compile()
    from triton.tools.disasm import get_sass

    sass = get_sass(kernel.asm["cubin"])
    assert re.search(r"\bIGMMA\b", sass) and re.search(r"\bQGMMA\b", sass)  # int8 QK^T and e4m3 PV on wgmma
    assert not re.search(r"\b(STL|LDL)\b", sass), "register spills"
    assert kernel.metadata.shared <= SMEM_LIMIT
    register_a = re.findall(r"[IQH]GMMA\.\S+\s+R\d+,\s*R\d+,", sass)
    assert not register_a, f"wgmma with a register A operand: {register_a[:2]}"
    assert ".maxnreg" in kernel.asm["ptx"] or "setmaxnreg" in kernel.asm["ptx"]


FALLBACK = """
import ast, logging, torch, triton
import quant.attention.triton as qa

class Broken:  # a Gluon kernel that does not compile on this Triton
    calls = 0
    @staticmethod
    def attention(q, k, v, scale):
        Broken.calls += 1
        raise triton.CompilationError("src", ast.parse("x").body[0], "gone in this Triton")

qa.hopper_reason = lambda q, k, accurate: qa._HOPPER["reason"]
qa._HOPPER.update(module=Broken, reason=None, ran=False)
torch.manual_seed(0)
q, k, v = (torch.randn(1, 2, 40, 64, dtype=torch.float16) for _ in range(3))
out = qa.quantized_attention(q, k, v)  # falls back to the Triton kernel, logs why
ref = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float())
assert ((out.float() - ref).norm() / ref.norm()).item() < 0.1
assert "did not compile" in qa._HOPPER["reason"] and Broken.calls == 1
qa.quantized_attention(q, k, v)
assert Broken.calls == 1, "retried a kernel that failed to compile"
qa._HOPPER.update(reason=None, ran=True)  # it ran before: a later failure is a real error, raised
try:
    qa.quantized_attention(q, k, v)
except triton.CompilationError:
    print("fallback ok")
"""


def _run(script: str, **env) -> subprocess.CompletedProcess:
    """script in a fresh Python (module state and TRITON_INTERPRET untouched here), the repository importable."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return subprocess.run([sys.executable, "-c", script], env=dict(os.environ, PYTHONPATH=root, **env),
                          capture_output=True, text=True, timeout=300, check=False)


def test_compile_failure_falls_back_once_and_later_failures_raise():
    """A Gluon kernel that fails to compile (a Triton whose Gluon API moved) is logged and replaced by the
    Triton kernel for the rest of the process; one that compiled before raises its errors."""
    res = _run(FALLBACK, TRITON_INTERPRET="1")
    assert res.returncode == 0 and "fallback ok" in res.stdout, res.stdout + res.stderr
    assert "the Triton attention kernel runs instead" in res.stderr


NO_GLUON = """
import sys, types, torch
sys.modules["triton.experimental.gluon"] = None  # a Triton without Gluon
import quant.attention.triton as qa
torch.cuda.get_device_capability = lambda device=None: (9, 0)
q = types.SimpleNamespace(device=types.SimpleNamespace(type="cuda"), shape=(1, 2, 300, 128))
reason = qa.hopper_reason(q, q, False)
assert reason.startswith("triton.experimental.gluon does not import"), reason
print("no gluon ok")
"""


def test_without_gluon_the_triton_kernel_is_chosen_and_says_why():
    res = _run(NO_GLUON)
    assert res.returncode == 0 and "no gluon ok" in res.stdout, res.stdout + res.stderr
