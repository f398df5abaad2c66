"""ComfyUI's MultiGPU CFG Split on a pack-loaded model, on the CPU (issue 18, the part a CPU can check).

`comfy.multigpu.create_multigpu_deepclones` (the node's function) builds one fresh copy of the model per extra
device through the loader's `cached_patcher_init`, then the sampler runs cond and uncond in parallel threads,
one per device. Here the "second GPU" is the device `cpu:1` (tensors moved there land on the CPU): every
quantized layer, scale, format and kernel choice, the LoRA and the attention override must survive the clone,
and the two threads must give the single-model latent. Real GPUs: bench/multigpu.py.
"""
from __future__ import annotations

import os
import threading

import pytest
import torch

CFG, STEPS = 5.0, 2


def _inputs():
    g = torch.Generator().manual_seed(3)
    return ([[torch.randn(1, 8, 64, generator=g), {}]], [[torch.randn(1, 8, 64, generator=g), {}]],
            {"samples": torch.zeros(1, 16, 2, 4, 4)})


def _sample(model) -> torch.Tensor:
    import nodes
    cond, neg, latent = _inputs()
    return nodes.common_ksampler(model, 7, STEPS, CFG, "euler", "simple", cond, neg, latent)[0]["samples"]


def _quantized(patcher) -> dict:
    return {n: m for n, m in patcher.model.diffusion_model.named_modules() if getattr(m, "quantized", False)}


@pytest.fixture
def two_devices(monkeypatch):
    """ComfyUI sees two devices: the CPU and `cpu:1`."""
    import comfy.model_management as mm
    devices = [torch.device("cpu"), torch.device("cpu", 1)]
    monkeypatch.setattr(mm, "get_all_torch_devices", lambda exclude_current=False: list(devices))
    return devices


@pytest.mark.parametrize("mm_type", ["int8-torch", "fp8-torch"])
def test_multigpu_deepclone_keeps_quantized_layers_and_matches_one_device(comfy_in_process, workspace, two_devices,
                                                                         mm_type):
    import comfy.multigpu
    import comfy.sd
    import comfy.utils
    pack = comfy_in_process
    models = os.path.join(workspace["base"], "models")
    model = pack.nodes.load_dit.load_dit_path(os.path.join(models, "diffusion_models", workspace["names"]["dit_t2v"]),
                                              mm_type, "default")
    assert model.cached_patcher_init is not None, "the loader gives core no way to load the model again"
    lora = comfy.utils.load_torch_file(os.path.join(models, "loras", workspace["names"]["lora"]))
    model, _ = comfy.sd.load_lora_for_models(model, None, lora, 0.5, 0)
    attention = getattr(pack.nodes, "attention", None)
    if attention is not None:  # the pack's attention override (nodes/attention.py), when present
        model = attention.with_attention(model, "sdpa")
    single = _sample(model)

    split = comfy.multigpu.create_multigpu_deepclones(model, max_gpus=2)
    (clone,) = split.get_additional_models_with_key("multigpu")
    assert clone.load_device == two_devices[1] and clone.model is not model.model
    ours, theirs = _quantized(model), _quantized(clone)
    assert len(ours) == 20 and sorted(ours) == sorted(theirs)
    for name, a in ours.items():
        b = theirs[name]
        assert type(b) is type(a) and (b.fmt, b.kernel, b.family) == (a.fmt, a.kernel, a.family), name
        assert b._full_precision_mm and b.weight.data_ptr() != a.weight.data_ptr(), name
        for t in ("weight", "weight_scale", "weight_global_scale"):
            x, y = getattr(a, t), getattr(b, t)
            assert (x is None) == (y is None) and (x is None or (x.dtype == y.dtype and torch.equal(x, y))), (name, t)
    assert clone.patches.keys() == model.patches.keys(), "the LoRA did not follow the clone"
    if attention is not None:
        override = clone.model_options["transformer_options"]["optimized_attention_override"]
        assert override == model.model_options["transformer_options"]["optimized_attention_override"]

    seen, lock = {}, threading.Lock()

    def note(module, args):
        with lock:
            seen.setdefault(threading.current_thread().name, set()).add(id(module))

    for p in (split, clone):
        p.model.diffusion_model.blocks[0].ffn[2].register_forward_pre_hook(note)
    pack.nodes.ops.RAN.clear()
    multi = _sample(split)
    calls = sum(pack.nodes.ops.RAN.values())
    assert len(seen) == 2, f"cond and uncond did not run in two threads: {sorted(seen)}"
    # One device runs cond + uncond as a batch of 2, the split one batch of 1 per thread: float sums differ in order.
    err = ((multi - single).norm() / single.norm()).item()
    assert err < 1e-5, err
    # Every linear call of both threads counted: 20 layers x 2 steps x (cond + uncond), no update lost.
    assert calls == 20 * STEPS * 2, calls


def test_call_counter_is_thread_safe(comfy_in_process):
    """The Sample report's counter loses no count when threads add at once (a plain Counter does)."""
    counter = comfy_in_process.quant.calls.CallCounter()
    threads = [threading.Thread(target=lambda: [counter.add("k") for _ in range(20000)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counter["k"] == 80000


def test_bench_multigpu_runs_with_tiny_shapes(comfy_in_process, two_devices, tmp_path, capsys):
    """bench/multigpu.py end to end at tiny shapes on the two CPU "devices" (its GPU run is the lead's)."""
    from bench import multigpu
    rows = multigpu.main(["--model", "tiny", "--blocks", "1", "--res", "tiny", "--mm-type", "int8-torch",
                          "--attention", "sdpa", "--steps", "1", "--workdir", str(tmp_path)])
    (row,) = rows
    assert row.devices == "cpu, cpu:1" and row.latent_rel_err < 1e-5 and row.split_s_per_step > 0
    assert "| tiny | sdpa | cpu, cpu:1 |" in capsys.readouterr().out


def test_bench_multigpu_refuses_one_device(comfy_in_process, monkeypatch):
    import comfy.model_management as mm

    from bench import multigpu
    monkeypatch.setattr(mm, "get_all_torch_devices", lambda exclude_current=False: [torch.device("cpu")])
    with pytest.raises(SystemExit, match="needs two devices"):
        multigpu.main(["--model", "tiny"])
