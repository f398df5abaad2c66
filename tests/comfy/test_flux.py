"""Load Quantized DiT on a Flux model (in-process): the same ops quantize Flux's block linears."""
from __future__ import annotations

import os

import pytest
import torch

CPU_SCHEMES = {"int8-torch": 0.03, "fp8-torch": 0.06, "nvfp4-torch": 0.25}


@pytest.fixture(scope="module")
def flux(comfy_in_process, workspace):
    import folder_paths
    folder_paths.add_model_folder_path("diffusion_models", os.path.join(workspace["base"], "models", "diffusion_models"))
    loader, sampler = (comfy_in_process.NODE_CLASS_MAPPINGS[n]() for n in ("LoadQuantizedDiT", "QuantizedSample"))
    g = torch.Generator().manual_seed(0)
    cond = [[torch.randn(1, 8, 64, generator=g), {"pooled_output": torch.randn(1, 32, generator=g), "guidance": 3.5}]]

    def run(mm_type: str):
        (model,) = loader.load(workspace["names"]["flux"], mm_type, "default")
        out = sampler.sample(model, 1, 2, 1.0, "euler", "simple", cond, cond, {"samples": torch.zeros(1, 16, 4, 4)})
        return model, out

    return run


@pytest.mark.parametrize("mm_type", CPU_SCHEMES)
def test_flux_quantized_matches_default(flux, mm_type):
    _, ref = flux("Default")
    model, out = flux(mm_type)
    dm = model.model.diffusion_model
    assert dm.double_blocks[0].img_attn.qkv.quantized and dm.single_blocks[0].linear1.quantized
    assert not dm.img_in.quantized and not dm.final_layer.linear.quantized
    a, b = ref["result"][0]["samples"], out["result"][0]["samples"]
    err = ((a - b).norm() / a.norm()).item()
    assert 0 < err < CPU_SCHEMES[mm_type], err
    assert out["ui"]["kernels"][0].startswith(mm_type.split("-")[0] + "/")
