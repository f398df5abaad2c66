"""ComfyUI's TorchCompileModel (core node, inductor) on a pack-loaded int8 tiny Wan, on the CPU, in-process:
the compiled sampling equals eager, and dynamo compiles nothing new after the first step at a fixed resolution.

Before issue 15.2 the Sample report's per-call counter ran inside the compiled forward: dynamo guarded on its
values and recompiled on every call (30 graphs compiled after the first step here) until it fell back to eager.
Attention is SDPA (as on a GPU): ComfyUI's CPU default (sub-quadratic attention) asks psutil for free memory on
every call, which breaks the graph and guards on the figure.
"""
from __future__ import annotations

import os

import pytest
import torch

STEPS, CFG = 2, 5.0  # cfg > 1: cond and uncond in one batch, as in a real run


def _inputs():
    g = torch.Generator().manual_seed(3)
    cond = [[torch.randn(1, 8, 64, generator=g), {}]]
    neg = [[torch.randn(1, 8, 64, generator=g), {}]]
    return cond, neg, {"samples": torch.zeros(1, 16, 2, 4, 4)}


def _sample(model, steps: int) -> torch.Tensor:
    import nodes
    cond, neg, latent = _inputs()
    (out,) = nodes.common_ksampler(model, 7, steps, CFG, "euler", "simple", cond, neg, latent, denoise=1.0)
    return out["samples"]


def _sdpa(func, *args, **kwargs):
    """optimized_attention_override: PyTorch SDPA, ComfyUI's attention on a GPU."""
    from comfy.ldm.modules.attention import attention_pytorch
    return attention_pytorch(*args, **kwargs)


def _graphs() -> int:
    """Frames dynamo has compiled so far (each recompilation adds one)."""
    from torch._dynamo.utils import counters
    return counters["stats"]["unique_graphs"]


@pytest.mark.parametrize("mm_type", ["int8-torch"])
def test_torch_compile_model_no_recompiles(comfy_in_process, workspace, mm_type):
    import comfy_extras.nodes_torch_compile as tc
    pack = comfy_in_process
    path = os.path.join(workspace["base"], "models", "diffusion_models", workspace["names"]["dit_t2v"])
    model = pack.nodes.load_dit.load_dit_path(path, mm_type, "default")
    model.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = _sdpa

    # Compiled before any eager call: an attribute the first forward sets on a layer (as the bridge's forward
    # once did with weight_lowvram_function) then fails a guard and recompiles the whole model once.
    torch._dynamo.reset()
    out = tc.TorchCompileModel.execute(model, "inductor")
    compiled_model = out.result[0] if hasattr(out, "result") else out[0]
    first = _sample(compiled_model, 1)  # the first step compiles
    after_first = _graphs()
    assert after_first >= 1, "nothing was compiled"
    compiled = _sample(compiled_model, STEPS)  # every later step, and a second sampling call, reuse it
    again = _sample(compiled_model, STEPS)
    cond, neg, latent = _inputs()
    ui = pack.nodes.sample.QuantizedSample().sample(compiled_model, 7, 1, CFG, "euler", "simple", cond, neg,
                                                    latent)["ui"]
    recompiled = _graphs() - after_first
    torch._dynamo.reset()
    assert recompiled == 0, f"{recompiled} graphs compiled after the first step (guard failures)"
    pack.nodes.ops.RAN.clear()
    eager = _sample(model, STEPS)
    assert pack.nodes.ops.RAN, "the quantized linears did not run"
    err = ((compiled - eager).norm() / eager.norm()).item()
    assert err < 1e-4, err
    assert torch.equal(compiled, again)
    assert torch.isfinite(first).all()
    # The Sample report still names the quantized kernels (their calls are not counted inside compiled code).
    assert "int8/" in ui["text"][0] and "compiled, calls not counted" in ui["text"][0], ui["text"][0]
