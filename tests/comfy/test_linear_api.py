"""Newer ComfyUI's Linear API against the pack's layers (issue 15.4), simulated on whichever ComfyUI is importable.

- After v0.33 `comfy.ops.linear_input_act` got a branch (fp16 activations on CUDA, `--fast` fp16 accumulation)
  that casts a plain weight with cast_bias_weight and multiplies it directly, skipping the layer's forward;
  core leaves layers marked `_full_precision_mm` alone. Simulated below with the branch forced on.
- v0.40 calls Linear with `input_act=`, `act_weight=`, `act_eps=`, `residual=`, `residual_scale=`: each is
  applied (activation before the GEMM, residual after) or refused with an error naming it.
- The `inspect.getsource` probe in nodes/ops.py cannot stop the pack from importing.
"""
from __future__ import annotations

import os

import ops_checks
import pytest
import torch
import torch.nn.functional as F

ACTS = {"gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
        "swiglu": lambda x: F.silu(x.chunk(2, dim=-1)[0]) * x.chunk(2, dim=-1)[1]}


def _newer_linear_input_act(linear, x, input_act, act_weight=None, act_eps=0.0, residual=None, residual_scale=None):
    """comfy.ops.linear_input_act as ComfyUI has it after v0.33, for a layer whose weight is not a core
    QuantizedTensor, with its fp16-accumulation branch always taken (F.linear stands in for comfy_kitchen's
    CUDA-only fp16_linear): unless the layer is marked `_full_precision_mm`, the layer's forward never runs."""
    import comfy.ops
    h = x if input_act is None else ACTS[input_act](x)
    if not getattr(linear, "_full_precision_mm", False):
        weight, bias, stream = comfy.ops.cast_bias_weight(linear, h, offloadable=True)
        out = F.linear(h, weight, bias)
        comfy.ops.uncast_bias_weight(linear, weight, bias, stream)
    else:
        out = linear(h)
    return out if residual is None else torch.addcmul(residual, out, residual_scale)


class _ViaCore(torch.nn.Module):
    """Model code of newer ComfyUI: the linear is called through comfy.ops.linear_input_act."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        import comfy.ops
        return comfy.ops.linear_input_act(self.inner, x, None)


def _tiny_wan(pack, workspace):
    path = os.path.join(workspace["base"], "models", "diffusion_models", workspace["names"]["dit_t2v"])
    return pack.nodes.load_dit.load_dit_path(path, "int8-torch", "default").model.diffusion_model


def _forward(dm) -> torch.Tensor:
    g = torch.Generator().manual_seed(11)
    x, ctx = torch.randn(1, 16, 2, 4, 4, generator=g), torch.randn(1, 8, 64, generator=g)
    with torch.no_grad():
        return dm(x, torch.tensor([500.0]), ctx)


def _route_through_core(dm) -> dict:
    """Every Linear of the model called through linear_input_act; returns {quantized layer name: [calls]}."""
    calls = {}
    for name, mod in list(dm.named_modules()):
        for child_name, child in list(mod.named_children()):
            if isinstance(child, torch.nn.Linear):
                setattr(mod, child_name, _ViaCore(child))
                if getattr(child, "quantized", False):
                    full = f"{name}.{child_name}".lstrip(".")
                    calls[full] = []
                    child.register_forward_pre_hook(lambda m, a, n=full: calls[n].append(1))
    return calls


def test_fp16_fast_path_cannot_bypass_quantized_layers(comfy_in_process, workspace, monkeypatch):
    import comfy.ops
    pack = comfy_in_process
    ref = _forward(_tiny_wan(pack, workspace))
    monkeypatch.setattr(comfy.ops, "linear_input_act", _newer_linear_input_act, raising=False)

    dm = _tiny_wan(pack, workspace)
    calls = _route_through_core(dm)
    out = _forward(dm)
    assert len(calls) == 20, sorted(calls)  # 2 blocks x (4 self-attn + 4 cross-attn + 2 ffn)
    skipped = sorted(n for n, c in calls.items() if len(c) != 1)
    assert not skipped, f"quantized layers bypassed by the fast path: {skipped}"
    assert torch.equal(out, ref)

    # The simulation is real: without core's mark every quantized layer is skipped and the output is garbage.
    dm = _tiny_wan(pack, workspace)
    calls = _route_through_core(dm)
    for m in dm.modules():
        if getattr(m, "quantized", False):
            m._full_precision_mm = False
    bad = _forward(dm)
    assert all(len(c) == 0 for c in calls.values())
    assert ((bad - ref).norm() / ref.norm()).item() > 0.5


def _layers(pack):
    model, _, x, _ = ops_checks._setup(pack, "int8-torch", seed=6)
    return {"quantized": model.blocks[0].self_attn.q, "float": model.time_embedding[0]}, x


@pytest.mark.parametrize("kind", ["quantized", "float"])
def test_linear_keywords_applied(comfy_in_process, monkeypatch, kind):
    import comfy.ops
    monkeypatch.setattr(comfy.ops, "INPUT_ACT_EAGER", ACTS, raising=False)
    layers, x = _layers(comfy_in_process)
    lin = layers[kind]
    g = torch.Generator().manual_seed(8)
    r, s, w = torch.randn(4, 128, generator=g), torch.randn(128, generator=g), torch.rand(256, generator=g) + 0.5
    with torch.no_grad():
        assert torch.equal(lin(x, input_act="gelu_tanh"), lin(ACTS["gelu_tanh"](x)))
        assert torch.equal(lin(x, input_act="rms_norm", act_weight=w, act_eps=1e-5),
                           lin(F.rms_norm(x, (256,), weight=w, eps=1e-5)))
        assert torch.equal(lin(x, residual=r, residual_scale=s), torch.addcmul(r, lin(x), s))
        assert torch.equal(lin(x, residual=r), r + lin(x))
        both = lin(x, input_act="gelu_tanh", residual=r, residual_scale=s)
        assert torch.equal(both, torch.addcmul(r, lin(ACTS["gelu_tanh"](x)), s))


@pytest.mark.parametrize("kwargs,named", [
    ({"input_act": "no_such_act"}, "no_such_act"),
    ({"act_weight": torch.ones(256)}, "act_weight"),
    ({"input_act": "gelu_tanh", "act_eps": 1e-6}, "act_eps"),
    ({"residual_scale": torch.ones(128)}, "residual_scale"),
    ({"fused_gate": True}, "fused_gate"),
])
@pytest.mark.parametrize("kind", ["quantized", "float"])
def test_linear_keywords_refused_by_name(comfy_in_process, monkeypatch, kwargs, named, kind):
    import comfy.ops
    monkeypatch.setattr(comfy.ops, "INPUT_ACT_EAGER", ACTS, raising=False)
    layers, x = _layers(comfy_in_process)
    with pytest.raises((TypeError, ValueError), match=named):
        layers[kind](x, **kwargs)


def test_getsource_probe_cannot_stop_import(comfy_in_process, monkeypatch):
    """Installs without .py sources (frozen, compiled-only): the probe falls back instead of raising."""
    import inspect

    def no_source(obj):
        raise OSError("could not get source code")

    monkeypatch.setattr(inspect, "getsource", no_source)
    assert comfy_in_process.nodes.ops._patch_sees_storage() is False
