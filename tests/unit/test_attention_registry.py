"""The attention-kernel registry on a CPU machine: names, availability and errors, auto's speed order, the per-call
fallback rules with their counted reasons, the counter under torch.compile and threads, every library adapter
against a fake of its library (the documented call contract in torch), and LightX2V's attention fields.

No optional attention library (FlashAttention-3, SageAttention, comfy-kitchen's int8_attention) and no GPU are
here: the fakes assert the layouts and dtypes the real kernels require and compute SDPA.
"""
from __future__ import annotations

import dataclasses
import importlib.machinery
import os
import subprocess
import sys
import textwrap
import threading
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from quant import attention
from quant.attention import AttentionKernel, AttentionUnavailable
from quant.attention import triton as own_pkg
from quant.kernels.base import NATIVE, UNAVAILABLE, Availability
from quant.lightx2v.config import ConfigError, parse_config

CPU = torch.device("cpu")
ROOT = str(Path(__file__).resolve().parents[2])
HALF = (torch.float16, torch.bfloat16)


@pytest.fixture(autouse=True)
def clean_counter():
    attention.RAN.clear()
    yield
    attention.RAN.clear()


def _qkv(b=1, h=2, lq=48, lk=40, d=64, dtype=torch.bfloat16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(b, h, n, d, generator=g).to(dtype) for n in (lq, lk, lk))


def _sdpa(q, k, v, scale=None):
    return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), scale=scale)


def _rel(a, b) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def _shape(*shape, dtype=torch.bfloat16):
    """A [B, H, L, D] tensor of that shape without memory (the rules look at shapes and dtypes only)."""
    return torch.zeros((), dtype=dtype).expand(*shape)


# --- names, availability, select ------------------------------------------------------------------------------------

def test_names_and_table():
    assert attention.names() == ["auto", "sdpa", "qattn", "qattn-accurate", "fa3", "fa3-fp8", "sage1", "kitchen-int8"]
    for name, k in attention.KERNELS.items():
        assert k.name == name and k.description and (k.install_hint or name == "sdpa")


def test_sdpa_always_runs_and_auto_on_cpu_is_sdpa():
    assert attention.availability("sdpa", CPU).status == NATIVE
    assert attention.select("auto", CPU) == attention.fastest(CPU) == "sdpa"
    assert attention.runnable(CPU) == ["auto", "sdpa"]
    for dtype, d in ((torch.float32, 80), (torch.bfloat16, 128), (torch.float16, 40)):
        q, k, v = _qkv(d=d, dtype=dtype)
        out = attention.attention("sdpa", q, k, v, scale=0.2)
        assert out.dtype == dtype and _rel(out, _sdpa(q, k, v, 0.2)) < 1e-2
    q, k, v = _qkv(dtype=torch.float32)
    mask = torch.rand(48, 40) > 0.3
    torch.testing.assert_close(attention.attention("sdpa", q, k, v, mask=mask),
                               F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
    assert dict(attention.RAN) == {"sdpa": 4}


@pytest.mark.parametrize("name,hint", [("fa3", "pip install fa3-fwd"), ("fa3-fp8", "pip install fa3-fwd"),
                                       ("sage1", "pip install sageattention"),
                                       ("kitchen-int8", "pip install -U comfy-kitchen")])
def test_named_missing_library_raises_with_install_hint(name, hint):
    with pytest.raises(AttentionUnavailable) as e:
        attention.select(name, CPU)
    msg = str(e.value)
    assert f"attention {name!r} cannot run here" in msg and "is not installed" in msg and hint in msg
    assert msg.endswith("Names that run here: auto, sdpa")


def test_installed_library_without_gpu_names_the_gpu_not_the_install(monkeypatch):
    _fake_module(monkeypatch, "sageattention", sageattn=lambda *a, **k: None)
    with pytest.raises(AttentionUnavailable) as e:
        attention.select("sage1", CPU)
    assert "needs a CUDA GPU" in str(e.value) and "To use it" not in str(e.value)


def test_own_kernel_unavailable_on_cpu_says_why():
    avail = attention.availability("qattn", CPU)
    assert avail.status == UNAVAILABLE and "CUDA" in avail.reason
    with pytest.raises(AttentionUnavailable, match="Names that run here: auto, sdpa"):
        attention.select("qattn", CPU)


def test_unknown_name():
    with pytest.raises(AttentionUnavailable, match="unknown attention kernel 'flash'; names: auto, sdpa, qattn"):
        attention.select("flash", CPU)


def _with_probes(monkeypatch, runs: set[str], cc: tuple[int, int]) -> None:
    monkeypatch.setattr(attention, "capability", lambda device: cc)
    for name, k in list(attention.KERNELS.items()):
        status = Availability(NATIVE) if name in runs or name == "sdpa" else Availability(UNAVAILABLE, "no")
        monkeypatch.setitem(attention.KERNELS, name, dataclasses.replace(k, probe=lambda device, s=status: s))


@pytest.mark.parametrize("cc,runs,want", [
    ((9, 0), {"qattn", "fa3", "sage1"}, "qattn"),
    ((9, 0), {"fa3", "sage1", "kitchen-int8"}, "fa3"),
    ((9, 0), {"sage1", "fa3-fp8"}, "sdpa"),  # neither is in the speed order: slower or above the error target
    ((8, 9), {"qattn", "fa3", "sage1"}, "sdpa"),  # Ada: nothing measured, SDPA
    ((8, 0), {"qattn", "sage1"}, "sdpa"),
    ((10, 0), {"qattn"}, "sdpa"),
])
def test_auto_speed_order_per_generation(monkeypatch, cc, runs, want):
    _with_probes(monkeypatch, runs, cc)
    dev = torch.device("cuda", 0)
    assert attention.select("auto", dev) == want
    for name in runs:  # every kernel that runs can still be named
        assert attention.select(name, dev) == name


# --- per-call rules and the counter ----------------------------------------------------------------------------------

def _kernel(**kw) -> AttentionKernel:
    return AttentionKernel("t", "test", "pip install t", lambda d: Availability(NATIVE), lambda q, k, v, s: q, **kw)


def test_rules_in_order():
    k = _kernel(head_dims=(64, 128), cuda_only=False, quantized=True, min_keys=32, min_rows=100,
                fast_head_dims=(64,), check=lambda q, k, v: "library says no" if q.shape[0] == 3 else None)
    ok = _shape(1, 2, 64, 64)
    cases = [
        ((ok, ok, ok), {"mask": torch.zeros(64, 64)}, "mask"),
        ((ok, ok, ok), {"full_precision": True}, "full precision asked"),
        ((_shape(1, 2, 64, 64, dtype=torch.float32),) * 3, {}, "float32"),
        ((ok, _shape(1, 2, 64, 64, dtype=torch.float16), ok), {}, "float16"),
        ((_shape(1, 2, 64, 80),) * 3, {}, "head dim 80"),
        ((ok, _shape(1, 1, 64, 64), _shape(1, 1, 64, 64)), {}, "k/v heads differ (GQA)"),
        ((_shape(3, 2, 64, 64),) * 3, {}, "library says no"),
        ((ok, _shape(1, 2, 16, 64), _shape(1, 2, 16, 64)), {}, "keys 16 < 32"),
        ((_shape(1, 2, 8, 64), ok, ok), {}, "16 query rows < 100"),
        ((_shape(1, 2, 64, 128),) * 3, {}, "head dim 128 slower than SDPA"),
        ((ok, ok, ok), {}, None),
    ]
    for args, kw, want in cases:
        assert k.unsupported(*args, **kw) == want, (args[0].shape, kw)
    assert _kernel().unsupported(*(_shape(1, 2, 64, 64),) * 3) == "cpu tensors"
    assert _kernel(cuda_only=False).unsupported(*(_shape(1, 2, 64, 64),) * 3, full_precision=True) is None


def test_measured_speed_rules_of_the_own_kernel(monkeypatch):
    """H200 (bench/results/h200-attention.md): fp8 from 4096 keys, accurate from 8192 (the Hopper kernel is 1.14x
    SDPA at 4096, the Triton kernel that runs it at D 64 was not measured there), both from 500k query rows;
    accurate not at D 96. Wan 14B 480p self-attention runs it; its cross-attention (512 text
    keys) and Flux (1 x 24 x 4608) take SDPA."""
    monkeypatch.setattr(own_pkg, "unsupported_reason", lambda q, k, v: None)
    wan_self = (_shape(2, 40, 32760, 128),) * 3
    wan_cross = (_shape(2, 40, 32760, 128), _shape(2, 40, 512, 128), _shape(2, 40, 512, 128))
    flux = (_shape(1, 24, 4608, 128),) * 3
    assert attention.why_not("qattn", *wan_self) is None
    assert attention.why_not("qattn", *wan_cross) == "keys 512 < 4096"
    assert attention.why_not("qattn", *flux) == "110592 query rows < 500000"
    assert attention.why_not("qattn-accurate", *wan_self) is None
    assert attention.why_not("qattn-accurate", *(_shape(2, 24, 16384, 64),) * 3) is None
    assert attention.why_not("qattn-accurate", *(_shape(2, 24, 16384, 96),) * 3) == "head dim 96 slower than SDPA"
    assert attention.why_not("qattn", *(_shape(2, 24, 16384, 96),) * 3) is None
    assert attention.why_not("qattn-accurate", *wan_cross) == "keys 512 < 8192"
    short = (_shape(2, 40, 32760, 128), _shape(2, 40, 4096, 128), _shape(2, 40, 4096, 128))
    assert attention.why_not("qattn", *short) is None
    assert attention.why_not("qattn-accurate", *short) == "keys 4096 < 8192"
    assert attention.why_not("qattn", *wan_self, full_precision=True) == "full precision asked"
    assert attention.why_not("fa3-fp8", *wan_cross) == "cpu tensors"


def test_fallbacks_run_sdpa_and_count_the_reason():
    q, k, v = _qkv(dtype=torch.float32)
    out = attention.attention("qattn", q, k, v, mask=torch.zeros(48, 40))
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v))
    attention.attention("sage1", *_qkv())
    attention.attention("sage1", *_qkv())
    attention.attention("fa3", *_qkv(d=80))
    assert dict(attention.RAN) == {"sdpa (fallback: mask)": 1, "sdpa (fallback: cpu tensors)": 3}


@pytest.fixture
def fake_own(monkeypatch):
    """quant.attention.triton's API in torch (SDPA, output in the kernel's [B, Lq, H, D] storage); qattn rows
    without their speed rules so small inputs reach it."""
    calls = []

    def run(q, k, v, *, scale=None, accurate=False):
        calls.append(accurate)
        return F.scaled_dot_product_attention(q, k, v, scale=scale).transpose(1, 2).contiguous().transpose(1, 2)

    monkeypatch.setattr(own_pkg, "unsupported_reason", lambda q, k, v: None)
    monkeypatch.setattr(own_pkg, "quantized_attention", run)
    for name in ("qattn", "qattn-accurate"):
        monkeypatch.setitem(attention.KERNELS, name, dataclasses.replace(
            attention.KERNELS[name], min_keys=0, min_rows=0, fast_head_dims=()))
    return calls


def test_own_kernel_through_the_registry(fake_own):
    assert attention.select("qattn", CPU) == "qattn"  # the probe asks the package: the fake accepts the CPU
    q, k, v = _qkv()
    for name in ("qattn", "qattn-accurate"):
        out = attention.attention(name, q, k, v, scale=0.3)
        assert out.dtype == q.dtype and _rel(out, _sdpa(q, k, v, 0.3)) < 1e-2
    assert fake_own == [False, True]
    attention.attention("qattn", *_qkv(dtype=torch.float32))
    assert dict(attention.RAN) == {"qattn": 1, "qattn-accurate": 1, "sdpa (fallback: float32)": 1}


def test_real_own_kernel_through_the_registry_interpreted():
    """The real quant.attention.triton under Triton's CPU interpreter (TRITON_INTERPRET before Triton is imported:
    a subprocess), reached through select / attention with the speed rules relaxed: the adapter's call contract
    (scale, accurate) matches the package; fp8 within the interpreter's bound (0.10, see test_attention_triton)."""
    pytest.importorskip("triton")
    script = textwrap.dedent("""
        import dataclasses, torch, torch.nn.functional as F
        from quant import attention
        assert attention.select("qattn", "cpu") == "qattn", attention.availability("qattn", "cpu")
        attention.KERNELS["qattn"] = dataclasses.replace(attention.KERNELS["qattn"], min_keys=0, min_rows=0)
        g = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(1, 70 if i == 0 else 130, 2 * 64, generator=g).view(1, -1, 2, 64).transpose(1, 2)
                   for i in range(3))
        ref = F.scaled_dot_product_attention(q, k, v, scale=0.1)
        out = attention.attention("qattn", *(t.to(torch.float16) for t in (q, k, v)), scale=0.1)
        err = ((out.float() - ref).norm() / ref.norm()).item()
        assert out.dtype == torch.float16 and err < 0.10, err
        assert dict(attention.RAN) == {"qattn": 1}, dict(attention.RAN)
        # Compiled, the whole path (rules, the package's checks, the kernel's custom op) is one graph: a graph
        # break there splits every DiT block into frames whose guards see transformer_options under other
        # names (recompiles when the step count changes, behind TorchCompileModel's guard filter).
        from torch._dynamo.testing import CompileCounter
        counter = CompileCounter()
        fn = torch.compile(lambda a, b, c: attention.attention("qattn", a, b, c, scale=0.1), backend=counter,
                           fullgraph=True)
        torch.testing.assert_close(fn(*(t.to(torch.float16) for t in (q, k, v))), out)
        assert counter.frame_count == 1, counter.frame_count
        print("ok", round(err, 4))
    """)
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": ROOT}
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600,
                         check=False)
    assert run.returncode == 0 and "ok" in run.stdout, run.stderr[-3000:]


def test_counter_stays_out_of_compiled_code():
    """Under torch.compile nothing is counted (dynamo would guard on the counter and recompile every call):
    one graph for three calls, no graph break, RAN untouched; eager calls count."""
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    counter = CompileCounter()
    fn = torch.compile(lambda q, k, v: attention.attention("qattn", q, k, v), backend=counter, fullgraph=True)
    q, k, v = _qkv(dtype=torch.float32)
    for _ in range(3):
        torch.testing.assert_close(fn(q, k, v), F.scaled_dot_product_attention(q, k, v))
    torch._dynamo.reset()
    assert counter.frame_count == 1 and dict(attention.RAN) == {}
    attention.attention("qattn", q, k, v)
    assert dict(attention.RAN) == {"sdpa (fallback: float32)": 1}


def test_counter_is_thread_safe():
    def work():
        for _ in range(20000):
            attention.count("x")
    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert attention.RAN["x"] == 80000


# --- library adapters against fakes ---------------------------------------------------------------------------------

def _fake_module(monkeypatch, name: str, **attrs) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__spec__ = importlib.machinery.ModuleSpec(name, None)
    for k, v in attrs.items():
        setattr(mod, k, v)
    monkeypatch.setitem(sys.modules, name, mod)
    return mod


def _fa3_fake(calls: list):
    """flash_attn_func's contract: q/k/v [B, L, H, D], last dim contiguous, bf16 (the fa3-fwd wheel has no fp16)
    or e4m3 with descales [B, H] fp32; returns (out [B, L, H, D] bf16, lse) as FlashAttention-3 releases do."""
    def flash_attn_func(q, k, v, softmax_scale=None, causal=False, q_descale=None, k_descale=None, v_descale=None):
        assert not causal and all(t.stride(-1) == 1 and t.dim() == 4 for t in (q, k, v))
        b, _, h, _ = q.shape
        calls.append((q.dtype, q.shape))
        if q.dtype == torch.float8_e4m3fn:
            ds = (q_descale, k_descale, v_descale)
            assert all(d.shape == (b, h) and d.dtype == torch.float32 for d in ds)
            q, k, v = (t.float() * d[:, None, :, None] for t, d in zip((q, k, v), ds))
        else:
            assert q.dtype == k.dtype == v.dtype == torch.bfloat16, q.dtype
        out = F.scaled_dot_product_attention(*(t.float().transpose(1, 2) for t in (q, k, v)), scale=softmax_scale)
        return out.transpose(1, 2).to(torch.bfloat16), torch.zeros(b, h, q.shape[1])
    return flash_attn_func


@pytest.mark.parametrize("module", ["fa3_fwd_interface", "flash_attn_interface"])
@pytest.mark.parametrize("dtype", HALF)
def test_fa3_adapters(monkeypatch, module, dtype):
    calls = []
    _fake_module(monkeypatch, module, flash_attn_func=_fa3_fake(calls))
    assert "needs a CUDA GPU" in attention.availability("fa3", CPU).reason
    q, k, v = _qkv(dtype=dtype, d=128)
    ref = _sdpa(q, k, v, 0.1)
    out = attention.KERNELS["fa3"].run(q, k, v, 0.1)
    assert out.dtype == dtype and out.shape == q.shape and _rel(out, ref) < 1e-2
    out8 = attention.KERNELS["fa3-fp8"].run(q, k, v, 0.1)
    assert out8.dtype == dtype and 0 < _rel(out8, ref) < 0.1
    assert calls == [(torch.bfloat16, (1, 48, 2, 128)), (torch.float8_e4m3fn, (1, 48, 2, 128))]


def test_sage_adapter(monkeypatch):
    def sageattn(q, k, v, tensor_layout="HND", is_causal=False, sm_scale=None, smooth_k=True):
        assert tensor_layout == "HND" and not is_causal and q.dtype in HALF
        return F.scaled_dot_product_attention(q, k, v, scale=sm_scale)
    _fake_module(monkeypatch, "sageattention", sageattn=sageattn)
    q, k, v = _qkv(d=96)
    assert _rel(attention.KERNELS["sage1"].run(q, k, v, 0.2), _sdpa(q, k, v, 0.2)) < 1e-2


def test_kitchen_adapter(monkeypatch):
    def int8_attention(q, k, v, *, scale=None, attn_mask=None):
        assert attn_mask is None and q.dim() == 4
        return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), scale=scale)
    _fake_module(monkeypatch, "comfy_kitchen.sage_attention", int8_attention=int8_attention)
    q, k, v = _qkv(d=128, dtype=torch.float16)
    out = attention.KERNELS["kitchen-int8"].run(q, k, v, None)
    assert out.dtype == torch.float16 and _rel(out, _sdpa(q, k, v)) < 1e-2


# --- LightX2V attention fields ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("value,want,note", [
    ("torch_sdpa", "sdpa", None), ("flash_attn2", "sdpa", None),
    ("flash_attn3", "auto", "'flash_attn3' is attention 'fa3', which cannot run here"),
    ("sage_attn2", "auto", "'sage_attn2' is attention 'qattn', which cannot run here"),
    ("radial_attn", "auto", "'radial_attn' has no kernel in this pack"),
    (None, "auto", None),
])
def test_lightx2v_attention_on_cpu(value, want, note):
    raw = {"cross_attn_1_type": "flash_attn3", "cross_attn_2_type": "flash_attn3"}
    if value is not None:
        raw["self_attn_1_type"] = value
    cfg = parse_config(raw)
    assert cfg.attention == want
    notes = [m for m in cfg.messages if "attn" in m]
    if note is None:
        assert notes == []
    else:
        assert len(notes) == 1 and notes[0].startswith("config field 'self_attn_1_type': " + note), notes
    assert not any("attn" in f for f in cfg.unused), cfg.unused


def test_lightx2v_attention_where_the_kernels_run(monkeypatch):
    monkeypatch.setattr("quant.lightx2v.config.attention_availability", lambda name, device: Availability(NATIVE))
    assert parse_config({"self_attn_1_type": "flash_attn3"}).attention == "fa3"
    assert parse_config({"self_attn_1_type": "sage_attn2"}).attention == "qattn"
    assert parse_config({"attn_type": "sage_attn2"}).attention == "qattn"  # other models' configs
    with pytest.raises(ConfigError, match="'self_attn_1_type' must be an attention type name"):
        parse_config({"self_attn_1_type": 3})


def test_capabilities_lists_attention():
    from quant.capabilities import capabilities

    table = capabilities("cpu")["attention"]
    assert list(table) == attention.names() and table["auto"]["kernel"] == "sdpa"
    assert table["sdpa"]["status"] == NATIVE and "not installed" in table["fa3"]["reason"]
