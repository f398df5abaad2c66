"""A strong LoRA (update ~4x the weight) on quantized layers, through ComfyUI's ModelPatcher (no server).

Merged patches are quantized with fresh scales, unpatching brings back the stored codes AND scales bit for bit
(every way ModelPatcher restores: unpatch_model, partially_unload, an in-place patcher), and the merged and the
offloaded (LowVramPatch as weight_function) paths give the same layer. The end-to-end figure through the real
server is test_server.test_lora_on_quantized_model (the tiny LoRA there is this strong).
"""
from __future__ import annotations

import ops_checks
import pytest
import torch

CPU = torch.device("cpu")
KEY = "blocks.0.self_attn.q.weight"
# Relative error of one forward vs float weight + float update (the update is 4x the weight, so the
# patched weight's range is ~5x the stored one: a saturating merge is off by ~0.5-0.8).
BOUND = {"int8-torch": 0.02, "fp8-torch": 0.06, "fp8-b128-torch": 0.06, "mxfp8-torch": 0.06, "nvfp4-torch": 0.2}


def _strong_delta(sd: dict) -> torch.Tensor:
    """A rank-4 update with 4x the weight's RMS (like the tiny Wan LoRA)."""
    g = torch.Generator().manual_seed(12)
    w = sd[KEY]
    d = torch.randn(w.shape[0], 4, generator=g) @ torch.randn(4, w.shape[1], generator=g)
    return d * (4 * w.pow(2).mean().sqrt() / d.pow(2).mean().sqrt())


def _state(layer) -> list[torch.Tensor]:
    """The layer's stored tensors as raw bytes (codes, scales, global scale)."""
    return [t.reshape(-1).view(torch.uint8).clone() for t in (layer.weight, layer.weight_scale, layer.weight_global_scale)
            if t is not None]


def _same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def _patched(pack, name: str, inplace: bool = False):
    import comfy.model_patcher
    model, sd, x, ref = ops_checks._setup(pack, name, seed=1)
    delta = _strong_delta(sd)
    mp = comfy.model_patcher.ModelPatcher(model, load_device=CPU, offload_device=CPU, weight_inplace_update=inplace)
    mp.add_patches({KEY: (delta,)}, 1.0)
    return model, mp, x, ref + x @ delta.t()


@pytest.mark.parametrize("name", list(BOUND))
def test_merge_recomputes_scales_and_unpatch_restores_bits(comfy_in_process, name):
    model, mp, x, want = _patched(comfy_in_process, name)
    layer = model.blocks[0].self_attn.q
    before, base = _state(layer), model(x)
    mp.patch_model(device_to=CPU)
    err = ops_checks._rel(model(x), want)
    assert err < BOUND[name], f"{name}: merged strong LoRA off by {err:.3f} (saturated against the old scales?)"
    assert not torch.equal(_state(layer)[1], before[1]), "the merge kept the old scales"
    mp.unpatch_model(device_to=CPU)
    assert _same(_state(layer), before), f"{name}: unpatch did not restore the stored codes and scales"
    assert torch.equal(model(x), base)
    mp.patch_model(device_to=CPU)  # a second cycle behaves as the first
    assert ops_checks._rel(model(x), want) == err
    mp.unpatch_model(device_to=CPU)
    assert _same(_state(layer), before)


@pytest.mark.parametrize("name", list(BOUND))
def test_merged_and_offloaded_agree(comfy_in_process, name):
    """LowVramPatch as weight_function (the offloaded / low-VRAM path) gives what the merge gives."""
    import comfy.model_patcher
    model, mp, x, want = _patched(comfy_in_process, name)
    layer = model.blocks[0].self_attn.q
    before = _state(layer)
    layer.weight_function = [comfy.model_patcher.LowVramPatch(KEY, mp.patches, layer.convert_weight,
                                                               layer.set_weight)]
    offloaded = model(x)
    layer.weight_function = []
    assert _same(_state(layer), before), "the offloaded path wrote to the storage"
    mp.patch_model(device_to=CPU)
    merged = model(x)
    mp.unpatch_model(device_to=CPU)
    assert ops_checks._rel(offloaded, want) < BOUND[name]
    assert ops_checks._rel(merged, offloaded) < 1e-6, ops_checks._rel(merged, offloaded)


def test_partial_unload_restores_scales(comfy_in_process):
    """ModelPatcher.partially_unload puts the backup back module by module: the scales follow."""
    model, mp, x, _ = _patched(comfy_in_process, "int8-torch")
    layer = model.blocks[0].self_attn.q
    before, base = _state(layer), model(x)
    mp.patch_model(device_to=CPU)
    assert not _same(_state(layer), before)
    mp.partially_unload(CPU, memory_to_free=10**12)
    assert _same(_state(layer), before)
    assert KEY not in mp.backup
    layer.weight_function = []  # partially_unload attached the LoRA as a LowVramPatch: check the storage alone
    assert torch.equal(model(x), base)


def test_inplace_patcher_keeps_scales_and_restores_bits(comfy_in_process, caplog):
    """A patcher with weight_inplace_update (and hook keyframes) restores by copying codes alone: the merge keeps
    the old scales there (values past the old range clip, and a warning says how many)."""
    model, mp, x, _ = _patched(comfy_in_process, "int8-torch", inplace=True)
    layer = model.blocks[0].self_attn.q
    before, base = _state(layer), model(x)
    with caplog.at_level("WARNING"):
        mp.patch_model(device_to=CPU)
    assert torch.equal(_state(layer)[1], before[1])
    assert "clips" in caplog.text
    mp.unpatch_model(device_to=CPU)
    assert _same(_state(layer), before)
    assert torch.equal(model(x), base)


def test_dynamic_vram_restore_order(comfy_in_process):
    """ModelPatcherDynamic (CUDA + comfy-aimdo) merges small layers too, backs up every buffer AFTER patching, and
    restores weights first, then those buffers: the patched scales it puts back must not outlive the merge."""
    import comfy.utils
    model, mp, x, _ = _patched(comfy_in_process, "int8-torch")
    layer = model.blocks[0].self_attn.q
    before, base = _state(layer), model(x)
    mp.patch_model(device_to=CPU)
    backup_buffers = dict(model.named_buffers())  # as ModelPatcherDynamic.load takes them
    for key, bk in mp.backup.items():  # as ModelPatcherDynamic.restore_loaded_backups puts them back
        comfy.utils.set_attr_param(model, key, bk.weight)
    mp.backup.clear()
    for key, buf in backup_buffers.items():
        comfy.utils.set_attr_buffer(model, key, buf)
    assert _same(_state(layer), before), "the patched scales came back with the buffers"
    assert torch.equal(model(x), base)


def test_old_comfyui_lowvram_patch_agrees(comfy_in_process, monkeypatch):
    """ComfyUI <= 0.3.x (its LowVramPatch calls convert/set on the codes, and set keeps the old scales): the layer
    applies the patch itself on the float weight, so the offloaded path still matches the merge."""
    import comfy.model_patcher
    monkeypatch.setattr(comfy_in_process.nodes.ops, "_PATCH_SEES_STORAGE", True)
    model, mp, x, want = _patched(comfy_in_process, "int8-torch")
    layer = model.blocks[0].self_attn.q
    layer.weight_function = [comfy.model_patcher.LowVramPatch(KEY, mp.patches, layer.convert_weight,
                                                               layer.set_weight)]
    offloaded = model(x)
    layer.weight_function = []
    mp.patch_model(device_to=CPU)
    merged = model(x)
    mp.unpatch_model(device_to=CPU)
    assert ops_checks._rel(merged, offloaded) < 1e-6 and ops_checks._rel(offloaded, want) < BOUND["int8-torch"]
