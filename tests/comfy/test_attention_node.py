"""Quantized Attention in the real ComfyUI: the optimized_attention_override's layouts, its copies, the node on
models from core's loader, Load Quantized DiT and Load LightX2V Config, and the Sample report's attention part.

The pack's own kernel cannot run on a CPU: a fake stands in (torch SDPA, returning the kernel's [B, Lq, H, D]
storage), and its registry row is relaxed (fp32 inputs, short sequences) so the tiny models reach it.
"""
from __future__ import annotations

import copy
import dataclasses
import importlib
import json
import os
import pickle
import re

import pytest
import torch
import torch.nn.functional as F
from conftest import execution_error, ok
from graphs import STEPS, latent, rel_err, t2v

BLOCKS = 2  # tiny_models.wan_dit: 2 blocks, each one self- and one cross-attention call per forward
SDPA_VS_COMFY = 1e-5  # the CPU fallback is ComfyUI's sub-quadratic attention (fp32): measured 2e-7 vs SDPA


def _registry(pack):
    return importlib.import_module(f"{pack.__name__}.quant.attention")


class FakeOwnKernel:
    """quant.attention.triton's API in torch: SDPA, output in the kernel's [B, Lq, H, D] storage; records inputs."""

    def __init__(self) -> None:
        self.calls = []

    def unsupported_reason(self, q, k, v):
        return None if q.dim() == 4 and q.shape[1] == k.shape[1] else "inputs must be [B, H, L, D]"

    def quantized_attention(self, q, k, v, *, scale=None, accurate=False):
        self.calls.append({"shape": tuple(q.shape), "k_len": k.shape[2], "accurate": accurate, "scale": scale,
                           "q_stride": q.stride()})
        out = F.scaled_dot_product_attention(q, k, v, scale=scale)
        return out.transpose(1, 2).contiguous().transpose(1, 2)


@pytest.fixture
def fake_own(comfy_in_process, monkeypatch):
    """The fake in place of the own kernel; qattn takes fp32 and sequences of >= 20 keys (tiny Wan: self-attention
    32 keys, cross-attention 12 text keys)."""
    pack, fake = comfy_in_process, FakeOwnKernel()
    reg = _registry(pack)
    triton_pkg = importlib.import_module(f"{pack.__name__}.quant.attention.triton")
    monkeypatch.setattr(triton_pkg, "unsupported_reason", fake.unsupported_reason)
    monkeypatch.setattr(triton_pkg, "quantized_attention", fake.quantized_attention)
    for name in ("qattn", "qattn-accurate"):
        monkeypatch.setitem(reg.KERNELS, name, dataclasses.replace(
            reg.KERNELS[name], dtypes=frozenset({torch.float32, torch.bfloat16, torch.float16}), min_keys=20,
            min_rows=0, fast_head_dims=()))
    return fake


# --- the override alone: layouts and fallbacks ------------------------------------------------------------------

class RecordingFunc:
    """Stands in for ComfyUI's default attention function (`func`): records its arguments."""

    __name__ = "attention_pytorch"

    def __init__(self) -> None:
        self.calls = []

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        return "comfy result"


def _qkv(b=2, lq=40, lk=36, heads=3, d=64):
    """ComfyUI-style [B, L, heads * D] q / k / v: strided column slices of fused projections (last stride 1)."""
    g = torch.Generator().manual_seed(3)
    q = torch.randn(b, lq, 3 * heads * d, generator=g)[..., heads * d: 2 * heads * d]
    kv = torch.randn(b, lk, 2 * heads * d, generator=g)
    return q, kv[..., : heads * d], kv[..., heads * d:]


def _ref(q, k, v, heads, scale=None):
    """SDPA on the [B, heads, L, D] split, as [B, Lq, heads * D]."""
    split = [t.reshape(t.shape[0], t.shape[1], heads, -1).transpose(1, 2) for t in (q, k, v)]
    return F.scaled_dot_product_attention(*split, scale=scale).transpose(1, 2).reshape(q.shape)


@pytest.mark.parametrize("skip_reshape", [False, True])
@pytest.mark.parametrize("skip_output_reshape", [False, True])
def test_override_layouts_match_sdpa(comfy_in_process, fake_own, skip_reshape, skip_output_reshape):
    """Both input layouts x both output layouts, 3 heads, strided inputs: the kernel sees [B, H, L, D] views of
    ComfyUI's tensors (no copies) and the result equals SDPA in the layout ComfyUI asked for."""
    heads, func = 3, RecordingFunc()
    q, k, v = _qkv(heads=heads)
    ref = _ref(q, k, v, heads, scale=0.1)
    args = [t.unflatten(-1, (heads, -1)).transpose(1, 2) if skip_reshape else t for t in (q, k, v)]
    override = comfy_in_process.nodes.attention.AttentionOverride("qattn")
    out = override(func, *args, heads, skip_reshape=skip_reshape, skip_output_reshape=skip_output_reshape,
                   scale=0.1, transformer_options={})
    assert func.calls == [] and len(fake_own.calls) == 1
    call = fake_own.calls[0]
    assert call["shape"] == (2, heads, 40, 64) and call["scale"] == 0.1 and not call["accurate"]
    assert call["q_stride"] == (q.stride(0), 64, q.stride(1), 1), "q was copied instead of viewed"
    want = ref.unflatten(-1, (heads, -1)).transpose(1, 2) if skip_output_reshape else ref
    assert out.shape == want.shape
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-6)


def test_override_falls_back_to_comfy_unchanged(comfy_in_process, fake_own):
    """Mask, GQA, a model asking for full precision, short key sequences: ComfyUI's function gets the very same
    arguments; each call is counted under its reason. Kernel None (auto where SDPA is the fastest) always calls it."""
    pack, reg = comfy_in_process, _registry(comfy_in_process)
    override = pack.nodes.attention.AttentionOverride("qattn")
    q, k, v = _qkv(heads=2)
    mask = torch.zeros(40, 36)
    cases = {"mask": ((q, k, v, 2), {"mask": mask}),
             "k/v heads differ (GQA)": ((q, k[..., :64], v[..., :64], 2), {"enable_gqa": True}),
             "full precision asked": ((q, k, v, 2), {"low_precision_attention": False}),
             "keys 12 < 20": ((q, k[:, :12], v[:, :12], 2), {})}
    reg.RAN.clear()
    for args, kwargs in cases.values():
        func = RecordingFunc()
        assert override(func, *args, transformer_options={"x": 1}, **kwargs) == "comfy result"
        (got_args, got_kwargs), = func.calls
        assert got_args[:4] == args[:4] and got_kwargs["transformer_options"] == {"x": 1}
        assert got_kwargs["mask"] is kwargs.get("mask") and got_kwargs["skip_reshape"] is False
        assert all(got_kwargs[key] is value for key, value in kwargs.items())
    func = RecordingFunc()
    pack.nodes.attention.AttentionOverride(None)(func, q, k, v, 2)
    assert len(func.calls) == 1 and fake_own.calls == []
    assert dict(reg.RAN) == {**{f"comfy-pytorch (fallback: {r})": 1 for r in cases}, "comfy-pytorch": 1}


def test_patched_model_copies_and_pickles(comfy_in_process, workspace):
    """The node clones the MODEL (the input keeps no override); the override survives ModelPatcher.clone,
    deepcopy (comfy.multigpu deep-clones models) and pickle, and still names its kernel."""
    import comfy.sd
    pack = comfy_in_process
    base = comfy.sd.load_diffusion_model(_dit_path(workspace))
    (patched,) = pack.nodes.attention.QuantizedAttention().patch(base, "sdpa")
    assert "optimized_attention_override" not in base.model_options.get("transformer_options", {})
    override = patched.model_options["transformer_options"]["optimized_attention_override"]
    assert override.kernel == "sdpa"
    for copied in (patched.clone().model_options["transformer_options"]["optimized_attention_override"],
                   copy.deepcopy(override), pickle.loads(pickle.dumps(override)),
                   copy.deepcopy(patched.model_options)["transformer_options"]["optimized_attention_override"]):
        assert isinstance(copied, type(override)) and copied == override and copied.kernel == "sdpa"


def test_named_kernel_that_cannot_run_fails_at_the_node(comfy_in_process, workspace):
    import comfy.sd
    pack, reg = comfy_in_process, _registry(comfy_in_process)
    base = comfy.sd.load_diffusion_model(_dit_path(workspace))
    with pytest.raises(reg.AttentionUnavailable, match=r"Quantized Attention: attention 'fa3' cannot run here: .*"
                       r"To use it: pip install fa3-fwd.*Names that run here: auto, sdpa"):
        pack.nodes.attention.QuantizedAttention().patch(base, "fa3")


# --- a tiny Wan / Flux sampled in-process with the Sample node ---------------------------------------------------

def _dit_path(workspace, key: str = "dit_t2v") -> str:
    return os.path.join(workspace["base"], "models", "diffusion_models", workspace["names"][key])


def _attention_calls(model) -> list:
    """Counts of the DiT's attention modules' forwards (each calls optimized_attention once); remove() after use."""
    count, handles = [0], []
    for module in model.model.diffusion_model.modules():
        if type(module).__name__ in ("WanSelfAttention", "WanT2VCrossAttention"):
            handles.append(module.register_forward_hook(lambda *_: count.__setitem__(0, count[0] + 1)))
    return count, handles


def _sample(pack, model, cfg: float = 1.0) -> dict:
    g = torch.Generator().manual_seed(0)
    cond = [[torch.randn(1, 12, 64, generator=g), {}]]
    latent_image = {"samples": torch.zeros(1, 16, 2, 8, 8)}  # 2 x 4 x 4 = 32 tokens
    return pack.nodes.sample.QuantizedSample().sample(model, 1, STEPS, cfg, "euler", "simple", cond, cond,
                                                      latent_image)


def _counts(text: str) -> dict:
    """The Sample report's attention part, "attention: a x8, b (fallback: ...) x4", as {label: calls}."""
    part = text.split(", attention: ", 1)[1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"(.+?) x(\d+)(?:, |$)", part)}


@pytest.mark.parametrize("loader", ["core", "pack"])
def test_own_kernel_on_core_and_pack_models(comfy_in_process, workspace, fake_own, loader):
    """A tiny Wan from core's Load Diffusion Model or from Load Quantized DiT, patched to qattn: the override runs
    for every attention call (blocks x 2 x steps, the hooks' count), self-attention (32 keys) on the kernel,
    cross-attention (12 text keys) on ComfyUI's own function; the report names both; the latent equals the
    unpatched one within SDPA-vs-ComfyUI rounding (the fake is SDPA)."""
    import comfy.sd
    pack = comfy_in_process
    if loader == "core":
        base = comfy.sd.load_diffusion_model(_dit_path(workspace))
    else:
        base = pack.nodes.load_dit.load_dit_path(_dit_path(workspace), "Default", "default")
    ref = _sample(pack, base)
    (patched,) = pack.nodes.attention.QuantizedAttention().patch(base, "qattn")
    count, handles = _attention_calls(patched)
    try:
        out = _sample(pack, patched)
    finally:
        for h in handles:
            h.remove()
    text = out["ui"]["text"][0]
    calls = _counts(text)
    assert count[0] == BLOCKS * 2 * STEPS == sum(calls.values()), (count, text)
    assert calls == {"qattn": BLOCKS * STEPS, "comfy-sub_quad (fallback: keys 12 < 20)": BLOCKS * STEPS}, text
    assert len(fake_own.calls) == BLOCKS * STEPS and all(c["k_len"] == 32 for c in fake_own.calls)
    assert out["ui"]["attention"] == sorted(calls)
    assert re.match(r"\d+\.\d{3} s/step, CPU, kernels: none \(unquantized\), attention: ", text), text
    err = rel_err(out["result"][0]["samples"], ref["result"][0]["samples"])
    assert err < SDPA_VS_COMFY, err


def test_auto_keeps_comfy_attention_on_cpu(comfy_in_process, workspace):
    """auto where plain SDPA is the fastest: ComfyUI's own function runs every call (counted), bit for bit;
    the report of an unpatched core model has no attention part."""
    import comfy.sd
    pack = comfy_in_process
    base = comfy.sd.load_diffusion_model(_dit_path(workspace))
    ref = _sample(pack, base)
    assert "attention" not in ref["ui"]["text"][0] and ref["ui"]["attention"] == []
    (auto,) = pack.nodes.attention.QuantizedAttention().patch(base, "auto")
    out = _sample(pack, auto, cfg=5.0)  # cond and uncond batched: still one call per module and step
    assert _counts(out["ui"]["text"][0]) == {"comfy-sub_quad": BLOCKS * 2 * STEPS}
    assert torch.equal(_sample(pack, auto)["result"][0]["samples"], ref["result"][0]["samples"])


def test_flux_joint_attention_skip_reshape(comfy_in_process, workspace, fake_own):
    """Flux calls with q/k/v [B, H, L, D] (skip_reshape) and wants [B, L, H * D]: patched with qattn, every call
    runs the kernel and the latent matches the unpatched one."""
    import comfy.sd
    pack = comfy_in_process
    base = comfy.sd.load_diffusion_model(_dit_path(workspace, "flux"))
    g = torch.Generator().manual_seed(0)
    cond = [[torch.randn(1, 24, 64, generator=g), {"pooled_output": torch.randn(1, 32, generator=g), "guidance": 3.5}]]
    run = lambda m: pack.nodes.sample.QuantizedSample().sample(  # noqa: E731
        m, 1, STEPS, 1.0, "euler", "simple", cond, cond, {"samples": torch.zeros(1, 16, 8, 8)})
    ref = run(base)
    out = run(pack.nodes.attention.QuantizedAttention().patch(base, "qattn")[0])
    assert set(_counts(out["ui"]["text"][0])) == {"qattn"} and fake_own.calls
    assert all(c["shape"][2] == 24 + 16 for c in fake_own.calls)  # text + image tokens (8x8 latent, 2x2 patches)
    assert rel_err(out["result"][0]["samples"], ref["result"][0]["samples"]) < SDPA_VS_COMFY


@pytest.mark.parametrize("attn_type,kernel", [("torch_sdpa", "sdpa"), ("flash_attn3", None), ("radial_attn", None)])
def test_lightx2v_config_attention(comfy_in_process, workspace, attn_type, kernel):
    """A config's self_attn_1_type patches the config node's MODEL: torch_sdpa -> sdpa; flash_attn3 (fa3 cannot
    run on a CPU) and unknown types -> auto, which is ComfyUI's own attention here."""
    pack = comfy_in_process
    config = {"dit_original_ckpt": _dit_path(workspace), "self_attn_1_type": attn_type,
              "cross_attn_1_type": attn_type}
    node = pack.nodes.load_lightx2v_config.LoadLightX2VConfig()
    model, *_ = node.load(pack.nodes.load_lightx2v_config.NONE, json.dumps(config), "default")
    assert model.model_options["transformer_options"]["optimized_attention_override"].kernel == kernel


# --- the real server ---------------------------------------------------------------------------------------------

def test_object_info_lists_the_node_and_the_loader_input(server):
    info = server.get("/object_info")
    node = info["QuantizedAttention"]
    assert node["display_name"] == "Quantized Attention" and node["category"] == "quantized"
    options = node["input"]["required"]["attention"][0]
    assert options[:2] == ["auto", "sdpa"] and {"qattn", "qattn-accurate", "fa3", "fa3-fp8", "sage1",
                                                 "kitchen-int8"} <= set(options)
    assert node["output"] == ["MODEL"]
    dit = info["LoadQuantizedDiT"]["input"]["optional"]["attention"]
    assert dit[0] == options and dit[1]["default"] == "auto"


def _core_t2v(names: dict, tag: str, attention: str | None) -> dict:
    """t2v with core's Load Diffusion Model, optionally through Quantized Attention."""
    g = t2v(names, tag)
    g["dit"] = {"class_type": "UNETLoader", "inputs": {"unet_name": names["dit_t2v"], "weight_dtype": "default"}}
    if attention is not None:
        g["attn"] = {"class_type": "QuantizedAttention", "inputs": {"model": ["dit", 0], "attention": attention}}
        g["sample"]["inputs"]["model"] = ["attn", 0]
    return g


def test_server_node_and_loader_input(server, workspace):
    """Through /prompt: core's loader + Quantized Attention (sdpa), and Load Quantized DiT with attention=sdpa:
    the report counts every call (blocks x 2 x steps) on SDPA and the latents match core's unpatched run;
    a loader graph without the attention input (saved before it existed) runs auto."""
    names, out_dir = workspace["names"], workspace["output"]
    ref = latent(out_dir, ok(server, _core_t2v(names, "attn_core_plain", None)))
    node = ok(server, _core_t2v(names, "attn_core_sdpa", "sdpa"))
    loader = t2v(names, "attn_loader_sdpa")
    loader["dit"]["inputs"]["attention"] = "sdpa"
    loader = ok(server, loader)
    old = ok(server, t2v(names, "attn_loader_old"))  # no attention input: auto
    for entry in (node, loader):
        text = entry["outputs"]["sample"]["text"][0]
        assert text.endswith(f", attention: sdpa x{BLOCKS * 2 * STEPS}"), text
        assert rel_err(latent(out_dir, entry), ref) < SDPA_VS_COMFY
    assert re.search(r", attention: comfy-\w+ x8$", old["outputs"]["sample"]["text"][0])
    assert rel_err(latent(out_dir, old), ref) == 0.0


def test_server_unavailable_kernel_error(server, workspace):
    graph = t2v(workspace["names"], "attn_bad")
    graph["dit"]["inputs"]["attention"] = "sage1"
    err = execution_error(server.run(graph))
    assert err is not None and err["node_type"] == "LoadQuantizedDiT"
    msg = err["exception_message"]
    assert "sage1" in msg and "pip install sageattention" in msg and "Names that run here: auto, sdpa" in msg, msg
