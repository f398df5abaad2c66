"""Quantizing while loading (issue 17.2), in this process against the real ComfyUI: ComfyUI's progress bar
advances once per quantized layer, and the quantize device the loader picks is where the work runs (the CPU
stands in for the GPU here: the same codes as the plain CPU path)."""
from __future__ import annotations

import os
import sys

import pytest
import torch

PER_BLOCK = 10  # tiny Wan T2V block: self_attn q k v o, cross_attn q k v o, ffn.0, ffn.2


@pytest.fixture(scope="module")
def dit(comfy_in_process, workspace):
    import folder_paths
    folder_paths.add_model_folder_path("diffusion_models", os.path.join(workspace["base"], "models", "diffusion_models"))
    loader = comfy_in_process.NODE_CLASS_MAPPINGS["LoadQuantizedDiT"]()
    return lambda mm_type: loader.load(workspace["names"]["dit_t2v"], mm_type, "default")[0]


def quantized_weights(model) -> dict:
    return {k: v for k, v in model.model.diffusion_model.state_dict().items() if k.endswith(("weight", "weight_scale"))}


@pytest.fixture
def progress():
    import comfy.utils
    calls, old = [], comfy.utils.PROGRESS_BAR_HOOK
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: calls.append((value, total)))
    yield calls
    comfy.utils.set_progress_bar_global_hook(old)


def test_progress_bar_counts_the_quantized_layers(dit, progress):
    dit("int8-torch")
    assert progress and progress[-1] == (2 * PER_BLOCK, 2 * PER_BLOCK), progress
    assert [v for v, _ in progress] == sorted(v for v, _ in progress)


@pytest.mark.parametrize("node, folder, name, args, layers", [
    ("LoadQuantizedT5", "text_encoders", "t5", ("wan", "int8", "default"), 2 * 7),  # q k v o, wi_0 wi_1 wo a layer
    ("LoadQuantizedCLIP", "clip_vision", "clip", ("int8",), 2 * 6),                # q k v out_proj, fc1 fc2 a layer
])
def test_encoder_loaders_advance_the_bar(comfy_in_process, workspace, progress, node, folder, name, args, layers):
    import folder_paths
    folder_paths.add_model_folder_path(folder, os.path.join(workspace["base"], "models", folder))
    comfy_in_process.NODE_CLASS_MAPPINGS[node]().load(workspace["names"][name], *args)
    assert progress and progress[-1] == (layers, layers), progress


def test_no_bar_when_nothing_is_quantized(dit, progress):
    dit("Default")
    assert progress == []


@pytest.mark.parametrize("mm_type", ["int8-torch", "nvfp4-torch"])
def test_quantize_device_gives_the_cpu_path_codes(comfy_in_process, dit, monkeypatch, mm_type):
    quantizing = sys.modules[comfy_in_process.__name__ + ".nodes.quantizing"]
    assert quantizing.quantize_device() is None  # ComfyUI runs on the CPU here: quantize where the weights lie
    ref = quantized_weights(dit(mm_type))
    asked = []
    monkeypatch.setattr(quantizing, "quantize_device", lambda: asked.append(1) or torch.device("cpu"))
    got = quantized_weights(dit(mm_type))
    assert asked and ref.keys() == got.keys()
    assert all(torch.equal(ref[k].view(torch.uint8), got[k].view(torch.uint8)) for k in ref)
    assert all(v.device.type == "cpu" for v in got.values())


def test_codes_stay_on_the_gpu_only_when_the_model_fits_twice(comfy_in_process, monkeypatch):
    """keep_on_device: the quantized model within half the device's free memory, classic VRAM management."""
    import comfy.model_management as mm
    quantizing = sys.modules[comfy_in_process.__name__ + ".nodes.quantizing"]
    gpu = torch.device("cuda", 0)
    monkeypatch.setattr(mm, "get_free_memory", lambda dev=None, torch_free_too=False: 40 << 30)
    monkeypatch.setattr(mm, "vram_state", mm.VRAMState.NORMAL_VRAM)
    assert quantizing.keep_on_device(gpu, 14 << 30)
    assert not quantizing.keep_on_device(gpu, 21 << 30)
    assert not quantizing.keep_on_device(None, 1)
    monkeypatch.setattr(mm, "vram_state", mm.VRAMState.LOW_VRAM)
    assert not quantizing.keep_on_device(gpu, 14 << 30)
    monkeypatch.setattr(mm, "vram_state", mm.VRAMState.NORMAL_VRAM)
    if quantizing._memory is not None:
        monkeypatch.setattr(quantizing._memory, "aimdo_enabled", True, raising=False)
        assert not quantizing.keep_on_device(gpu, 14 << 30)


def test_quantized_bytes_counts_codes_and_float_rest(comfy_in_process):
    from quant.formats import FORMATS
    quantizing = sys.modules[comfy_in_process.__name__ + ".nodes.quantizing"]
    family = sys.modules[comfy_in_process.__name__ + ".quant.families"].get_family("wan_dit")
    sd = {"blocks.0.self_attn.q.weight": torch.zeros(64, 128, dtype=torch.bfloat16),
          "blocks.0.norm3.weight": torch.zeros(128, dtype=torch.bfloat16)}
    assert quantizing.quantized_bytes(sd, family, FORMATS["int8"]) == 64 * 128 + 2 * 128
    assert quantizing.quantized_bytes(sd, family, FORMATS["nvfp4"]) == 64 * 64 + 2 * 128
