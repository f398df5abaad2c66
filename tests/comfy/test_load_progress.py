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
