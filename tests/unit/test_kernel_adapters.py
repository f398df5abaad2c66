"""The optional kernel-library adapters (vllm, sgl, q8f, deepgemm, torchao) on a CPU machine.

None of the libraries runs here, so each adapter is checked two ways: its probe reports it
unavailable with a useful reason, and its `linear` is run against a fake of the library (plain
torch, the documented math and argument contract, asserting the layouts the real kernel requires)
and compared with the reference kernel.
"""
import importlib.machinery
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from quant import kernels
from quant.formats import get_format
from quant.kernels import base, reference
from quant.schemes import resolve

ADAPTERS = {
    "vllm": ("vllm", {"int8", "fp8"}),
    "sgl": ("sgl_kernel", {"int8", "fp8"}),
    "q8f": ("q8_kernels", {"int8", "fp8"}),
    "deepgemm": ("deep_gemm", {"fp8_block128"}),
    "torchao": ("torchao", {"int8", "fp8"}),
}
CASES = [(name, fmt) for name, (_, fmts) in ADAPTERS.items() for fmt in sorted(fmts)]
M, K, N = 7, 384, 144  # N not a multiple of 128 and K/128 != ceil(N/128): transposed block scales fail
HALF = (torch.float16, torch.bfloat16)
ROOT = Path(__file__).resolve().parents[2]


# --- fakes: the libraries' documented math in plain torch -------------------------------------------

def _per_token(x: torch.Tensor, qmax: float, dtype: torch.dtype):
    s = x.float().abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / qmax
    q = x.float() / s
    q = q.round() if dtype == torch.int8 else q
    return q.clamp(-qmax, qmax).to(dtype), s


def _int8_quant(x):
    return _per_token(x, 127.0, torch.int8)


def _fp8_quant(x):
    return _per_token(x, 448.0, torch.float8_e4m3fn)


def _scaled_mm(a, b, scale_a, scale_b, out_dtype, bias):
    """CUTLASS-style scaled mm contract (vLLM, sgl-kernel): a row-major [M, K], b column-major [K, N]."""
    m, k = a.shape
    n = b.shape[1]
    assert b.shape[0] == k and a.stride(1) == 1 and b.stride(0) == 1, "b must be the column-major [K, N] weight"
    assert a.dtype == b.dtype and a.dtype in (torch.int8, torch.float8_e4m3fn)
    assert scale_a.dtype == scale_b.dtype == torch.float32 and scale_a.numel() == m and scale_b.numel() == n
    assert out_dtype in HALF and (bias is None or (bias.numel() == n and bias.dtype == out_dtype))
    out = (a.float() * scale_a.reshape(-1, 1)) @ (b.float() * scale_b.reshape(1, -1))
    return (out if bias is None else out + bias.float()).to(out_dtype)


def _module(name: str, **attrs) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__spec__ = importlib.machinery.ModuleSpec(name, None)
    mod.__dict__.update(attrs)
    return mod


def _fake_vllm():
    def scaled_int8_quant(x, scale=None, azp=None, symmetric=True):
        assert scale is None and azp is None and symmetric and x.is_contiguous()
        return (*_int8_quant(x), None)

    def scaled_fp8_quant(x, scale=None, num_token_padding=None, scale_ub=None, use_per_token_if_dynamic=False):
        assert scale is None and use_per_token_if_dynamic and x.dim() == 2
        return _fp8_quant(x)

    def cutlass_scaled_mm(a, b, scale_a, scale_b, out_dtype, bias=None):
        return _scaled_mm(a, b, scale_a, scale_b, out_dtype, bias)

    return {"vllm": _module("vllm"), "vllm._custom_ops": _module(
        "vllm._custom_ops", scaled_int8_quant=scaled_int8_quant, scaled_fp8_quant=scaled_fp8_quant,
        cutlass_scaled_mm=cutlass_scaled_mm)}


def _fake_sgl():
    def sgl_per_token_quant_fp8(x, output_q, output_s):
        assert x.is_contiguous() and output_q.dtype == torch.float8_e4m3fn and output_q.shape == x.shape
        assert output_s.dtype == torch.float32 and output_s.numel() == x.shape[0]
        q, s = _fp8_quant(x)
        output_q.copy_(q)
        output_s.copy_(s.reshape(output_s.shape))

    def scaled_mm(mat_a, mat_b, scales_a, scales_b, out_dtype, bias=None):
        return _scaled_mm(mat_a, mat_b, scales_a, scales_b, out_dtype, bias)

    return {"sgl_kernel": _module("sgl_kernel", sgl_per_token_quant_fp8=sgl_per_token_quant_fp8,
                                  int8_scaled_mm=scaled_mm, fp8_scaled_mm=scaled_mm)}


def _q8_mm(a, b, bias, scale_a, scale_b, out_dtype, dtype):
    """q8_kernels contract: a [batch, M, K], b [N, K] contiguous, fp32 bias/scales; out [batch, M, N]."""
    assert a.dim() == 3 and a.dtype == b.dtype == dtype and a.is_contiguous() and b.is_contiguous()
    assert a.shape[-1] == b.shape[-1] and out_dtype == torch.bfloat16
    assert bias is None or (bias.dtype == torch.float32 and bias.numel() == b.shape[0])
    assert scale_a.dtype == scale_b.dtype == torch.float32 and scale_a.is_contiguous() and scale_b.is_contiguous()
    assert scale_a.numel() == a.shape[0] * a.shape[1] and scale_b.numel() == b.shape[0]
    out = (a.float() * scale_a.reshape(a.shape[0], -1, 1)) @ (b.float() * scale_b.reshape(-1, 1)).t()
    return (out if bias is None else out + bias).to(out_dtype)


def _fake_q8f():
    def q8_linear(a, b, bias=None, scale_a=None, scale_b=None, fuse_gelu=False, out_dtype=None):
        assert not fuse_gelu
        return _q8_mm(a, b, bias, scale_a, scale_b, out_dtype, torch.int8)

    def fp8_linear(a, b, bias=None, scale_a=None, scale_b=None, use_hadamard=False, out_dtype=None):
        assert not use_hadamard
        return _q8_mm(a, b, bias, scale_a, scale_b, out_dtype, torch.float8_e4m3fn)

    return {"q8_kernels": _module("q8_kernels"),
            "q8_kernels.functional.linear": _module("q8_kernels.functional.linear", q8_linear=q8_linear,
                                                    fp8_linear=fp8_linear)}


def _deepgemm_nt(a, b, d, c=None, recipe=None):
    """DeepGEMM contract: (x [M, K], sfa [M, K/128]), (w [N, K], sfb [ceil(N/128), K/128]), d bf16 [M, N]."""
    (x, sfa), (w, sfb) = a, b
    m, k = x.shape
    n = w.shape[0]
    assert x.dtype == w.dtype == torch.float8_e4m3fn and x.stride(1) == 1 and w.stride(1) == 1 and w.shape[1] == k
    assert sfa.dtype == sfb.dtype == torch.float32 and sfa.shape == (m, k // 128)
    assert sfb.shape == (-(-n // 128), k // 128) and sfb.is_contiguous()
    assert d.shape == (m, n) and d.dtype == torch.bfloat16 and c is None and recipe in (None, (1, 128, 128))
    xs = x.float() * sfa.repeat_interleave(128, 1)
    ws = w.float() * sfb.repeat_interleave(128, 0)[:n].repeat_interleave(128, 1)
    d.copy_(xs @ ws.t())


def _fake_deepgemm(name):
    return {"deep_gemm": _module("deep_gemm", **{name: _deepgemm_nt})}


def _fake_torchao():
    def quantize_activation_per_token_absmax(t):
        q, s = _int8_quant(t)
        return q, s.to(t.dtype)

    def quant_int8_per_token_matmul(x_vals_int8, x_scales, w_vals_int8_t, w_scales, output_dtype=torch.float32):
        assert x_vals_int8.dtype == w_vals_int8_t.dtype == torch.int8 and x_scales.dtype == torch.float32
        assert w_vals_int8_t.shape[0] == x_vals_int8.shape[1] and w_scales.shape == (1, w_vals_int8_t.shape[1])
        y = (x_vals_int8.float() @ w_vals_int8_t.float()) * x_scales.reshape(-1, 1)
        return (y * w_scales).to(output_dtype)

    def addmm_float8_unwrapped_inference(a_data, a_scale, b_data, b_scale, output_dtype, output_scale=None,
                                         bias=None, use_fast_accum=False):
        # torch._scaled_mm rowwise: a [M, K] row-major, b [K, N] column-major, scale_a [M, 1], scale_b [1, N]
        assert b_data.stride(0) == 1 and a_scale.shape == (a_data.shape[0], 1)
        assert b_scale.shape == (1, b_data.shape[1]) and output_dtype == torch.bfloat16
        assert bias is None or bias.dtype == output_dtype
        out = (a_data.float() * a_scale) @ (b_data.float() * b_scale)
        return (out if bias is None else out + bias.float()).to(output_dtype)

    return {"torchao": _module("torchao"),
            "torchao.quantization.utils": _module(
                "torchao.quantization.utils", _quantize_activation_per_token_absmax=quantize_activation_per_token_absmax,
                _quant_int8_per_token_matmul=quant_int8_per_token_matmul),
            "torchao.float8.inference": _module(
                "torchao.float8.inference", addmm_float8_unwrapped_inference=addmm_float8_unwrapped_inference)}


FAKES = {"vllm": _fake_vllm, "sgl": _fake_sgl, "q8f": _fake_q8f, "torchao": _fake_torchao,
         "deepgemm": lambda: _fake_deepgemm("fp8_gemm_nt")}
FAKE_CC = {"vllm": (9, 0), "sgl": (9, 0), "q8f": (8, 9), "deepgemm": (9, 0), "torchao": (9, 0)}


@pytest.fixture
def fake_library(monkeypatch):
    """Install a kernel's fake library and a fake GPU of a capability it runs on."""
    def install(name: str, modules=None):
        for mod_name, mod in (modules or FAKES[name]()).items():
            monkeypatch.setitem(sys.modules, mod_name, mod)
        monkeypatch.setattr(base, "capability", lambda device: FAKE_CC[name])
    return install


def _problem(fmt_name: str, dtype: torch.dtype, with_bias: bool):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(M, K, generator=g) * 2).to(dtype)
    fmt = get_format(fmt_name)
    w = fmt.quantize_weight(torch.randn(N, K, generator=g) * 0.05)
    bias = torch.randn(N, generator=g).to(dtype) if with_bias else None
    return x, w, bias, fmt


def _check(name: str, fmt_name: str, dtype: torch.dtype, with_bias: bool) -> None:
    x, w, bias, fmt = _problem(fmt_name, dtype, with_bias)
    out = kernels.KERNELS[name].linear(x, w, bias, fmt)
    ref = reference.linear(x, w, bias, fmt)
    assert out.shape == (M, N) and out.dtype == dtype
    scale = ref.float().abs().max().item()
    # The fakes run the same math as the reference; only 16-bit output rounding separates them.
    torch.testing.assert_close(out.float(), ref.float(), rtol=2 ** -7, atol=2 ** -7 * scale)


# --- tests --------------------------------------------------------------------------------------

def test_adapters_registered_after_torch():
    assert next(iter(kernels.KERNELS)) == "torch"
    for name, (_, fmts) in ADAPTERS.items():
        k = kernels.KERNELS[name]
        assert k.name == name and set(k.formats) == fmts and k.install_hint


def test_libraries_are_imported_lazily(tmp_path):
    """Importing and probing never imports a library: each one here raises when imported."""
    for module, _ in ADAPTERS.values():
        (tmp_path / module).mkdir()
        (tmp_path / module / "__init__.py").write_text("raise RuntimeError('imported eagerly')\n")
    code = ("import torch, quant.kernels as k\n"
            "print(sorted({k.availability(n, f, torch.device('cpu')).reason for n in k.KERNELS for f in k.KERNELS[n].formats}))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "needs a CUDA GPU" in done.stdout


@pytest.mark.parametrize("name,fmt", CASES)
def test_probe_unavailable_on_cpu(name, fmt):
    module = ADAPTERS[name][0]
    avail = kernels.availability(name, fmt, torch.device("cpu"))
    assert avail.status == base.UNAVAILABLE
    assert module in avail.reason or "CUDA" in avail.reason


@pytest.mark.parametrize("name,fmt", CASES)
def test_probe_reports_missing_library_and_old_gpu(name, fmt, monkeypatch):
    module = ADAPTERS[name][0]
    monkeypatch.setattr(base, "has_module", lambda m: False)
    assert module in kernels.availability(name, fmt, torch.device("cuda")).reason
    monkeypatch.setattr(base, "has_module", lambda m: True)
    monkeypatch.setattr(base, "capability", lambda device: (7, 0))
    avail = kernels.availability(name, fmt, torch.device("cuda"))
    assert avail.status == base.UNAVAILABLE and "sm70" in avail.reason


@pytest.mark.parametrize("cc,runs", [((8, 6), False), ((8, 9), True), ((9, 0), False)])
def test_q8f_is_ada_only(cc, runs, monkeypatch):
    monkeypatch.setattr(base, "has_module", lambda m: True)
    monkeypatch.setattr(base, "capability", lambda device: cc)
    assert kernels.availability("q8f", "int8", torch.device("cuda")).runs is runs


@pytest.mark.parametrize("cc,runs", [((8, 9), False), ((9, 0), True), ((10, 0), False)])
def test_deepgemm_is_hopper_only(cc, runs, monkeypatch):
    monkeypatch.setattr(base, "has_module", lambda m: True)
    monkeypatch.setattr(base, "capability", lambda device: cc)
    assert kernels.availability("deepgemm", "fp8_block128", torch.device("cuda")).runs is runs


def test_named_kernel_missing_raises_with_hint():
    with pytest.raises(kernels.KernelUnavailable) as err:
        resolve("int8-vllm", device="cpu")
    msg = str(err.value)
    assert "vllm" in msg and "pip install vllm" in msg and "int8-torch" in msg


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_fake_library_makes_probe_native(name, fake_library):
    fake_library(name)
    for fmt in ADAPTERS[name][1]:
        assert kernels.availability(name, fmt, torch.device("cuda")).status == base.NATIVE


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("name,fmt", CASES)
def test_adapter_matches_reference_through_fake_library(name, fmt, dtype, with_bias, fake_library):
    fake_library(name)
    _check(name, fmt, dtype, with_bias)


def test_deepgemm_legacy_name(fake_library):
    fake_library("deepgemm", _fake_deepgemm("gemm_fp8_fp8_bf16_nt"))
    _check("deepgemm", "fp8_block128", torch.bfloat16, True)


def test_torchao_pre_013_public_names(fake_library):
    modules = _fake_torchao()
    utils = modules["torchao.quantization.utils"]
    utils.quantize_activation_per_token_absmax = utils.__dict__.pop("_quantize_activation_per_token_absmax")
    utils.quant_int8_per_token_matmul = utils.__dict__.pop("_quant_int8_per_token_matmul")
    fake_library("torchao", modules)
    _check("torchao", "int8", torch.bfloat16, True)


def test_library_without_the_function_names_it(fake_library):
    fake_library("deepgemm", {"deep_gemm": _module("deep_gemm", __version__="1.0.0")})
    x, w, bias, fmt = _problem("fp8_block128", torch.bfloat16, False)
    with pytest.raises(ImportError, match="fp8_gemm_nt.*gemm_fp8_fp8_bf16_nt"):
        kernels.KERNELS["deepgemm"].linear(x, w, bias, fmt)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("fmt", ["int8", "fp8"])
def test_torchao_real_library_on_cpu(fmt, dtype):
    """Where torchao (0.13-0.18) is installed, its real functions run on the CPU: same result as the reference."""
    utils = pytest.importorskip("torchao.quantization.utils")
    if not hasattr(utils, "_quant_int8_per_token_matmul"):
        pytest.skip("this torchao has no int8 per-token matmul")
    _check("torchao", fmt, dtype, True)


@pytest.mark.parametrize("fmt_name", ["mxfp8", "nvfp4", "int8", "fp8", "fp8_block128"])
def test_emulated_linear_is_the_reference_at_16_bit(fmt_name):
    """The GPU emulation path (16-bit dequantize + F.linear) is the reference up to bf16 rounding;
    given fp32 it is exactly the reference."""
    x, w, bias, fmt = _problem(fmt_name, torch.float32, True)
    assert torch.equal(reference.emulated_linear(x, w, bias, fmt), reference.linear(x, w, bias, fmt))
    xb, bb = x.bfloat16(), bias.bfloat16()
    got, ref = reference.emulated_linear(xb, w, bb, fmt), reference.linear(xb, w, bb, fmt)
    assert got.dtype == torch.bfloat16 and got.shape == ref.shape
    assert ((got.float() - ref.float()).norm() / ref.float().norm()).item() < 1e-2
