"""Every file the converter writes, loaded by ComfyUI core's own loader (comfy.sd.load_diffusion_model, as
Load Diffusion Model does): core computes the right output (within the format's bound of bf16) or stops with
an error that names the format and what to do; never a model that loads "fine" and computes garbage.
The pack's own loader reads every one of them too.

| layout   | int8            | fp8             | fp8_block128    | mxfp8           | nvfp4           |
| lightx2v | core + pack     | pack (core: no) | pack (core: no) | pack (core: no) | pack (core: no) |
| comfyui  | core + pack     | core + pack     | (not written)   | core + pack     | core + pack     |
"""
import importlib
import os

import pytest
import torch

BOUND = {"int8": 0.02, "fp8": 0.06, "fp8_block128": 0.06, "mxfp8": 0.06, "nvfp4": 0.2}
MM_TYPE = {"int8": "int8", "fp8": "fp8", "fp8_block128": "fp8-b128-torch", "mxfp8": "mxfp8", "nvfp4": "nvfp4"}
CORE_READS = {("lightx2v", "int8"), ("comfyui", "int8"), ("comfyui", "fp8"), ("comfyui", "mxfp8"), ("comfyui", "nvfp4")}
CASES = [(layout, fmt) for layout in ("lightx2v", "comfyui") for fmt in BOUND
         if (layout, fmt) != ("comfyui", "fp8_block128")]  # core has no block-128 format: the converter refuses


@pytest.fixture(scope="module")
def bf16_file(comfy_in_process, tmp_path_factory):
    import tiny_models

    path = str(tmp_path_factory.mktemp("core_reads") / "wan_bf16.safetensors")
    tiny_models.wan_dit(path)
    return path


def _forward(model) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x, ctx = torch.randn(1, 16, 1, 8, 8, generator=g), torch.randn(1, 16, 64, generator=g)
    with torch.no_grad():
        return model.model.diffusion_model(x, torch.tensor([500.0]), ctx).float()


@pytest.fixture(scope="module")
def reference(bf16_file):
    import comfy.sd

    return _forward(comfy.sd.load_diffusion_model(bf16_file))


def _convert(pack, src: str, layout: str, fmt: str) -> str:
    convert = importlib.import_module(pack.__name__ + ".quant.checkpoints.convert").convert
    dst = os.path.join(os.path.dirname(src), f"{layout}_{fmt}.safetensors")
    if not os.path.exists(dst):
        convert(src, dst, MM_TYPE[fmt], layout=layout, progress=False)
    return dst


def _rel(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out - ref).norm() / ref.norm()).item()


@pytest.mark.parametrize("layout,fmt", CASES)
def test_core_loader_computes_right_or_refuses(comfy_in_process, bf16_file, reference, layout, fmt):
    import comfy.sd

    path = _convert(comfy_in_process, bf16_file, layout, fmt)
    if (layout, fmt) in CORE_READS:
        err = _rel(_forward(comfy.sd.load_diffusion_model(path)), reference)
        assert err < BOUND[fmt], (layout, fmt, err)
    else:
        with pytest.raises(KeyError) as e:  # core: QUANT_ALGOS[<unknown format>]
            comfy.sd.load_diffusion_model(path)
        msg = str(e.value)
        assert f"{fmt} in the LightX2V layout" in msg and "ComfyUI core cannot load it" in msg, msg
        assert "comfyui-quantized loaders" in msg, msg


@pytest.mark.parametrize("layout,fmt", CASES)
def test_pack_loader_reads_what_it_writes(comfy_in_process, bf16_file, reference, layout, fmt):
    path = _convert(comfy_in_process, bf16_file, layout, fmt)
    model = comfy_in_process.nodes.load_dit.load_dit_path(path, "auto", "default")
    err = _rel(_forward(model), reference)
    assert err < BOUND[fmt], (layout, fmt, err)
