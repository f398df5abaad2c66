"""Core ComfyUI machinery around a quantized DiT: ModelSamplingSD3 + TorchCompileModel in a real prompt,
torch.compile graph capture of the bridge Linear, the legacy low-VRAM partial load (with an unmerged
LoRA), two mm_types of one file side by side and their unloading, and the Sample node's step timing.

Figures measured on the 2-core CPU runner are printed with -s (MEASURED) and quoted in the docstrings.
"""
from __future__ import annotations

import gc
import os
import sys
import time
import weakref

import torch
from conftest import execution_error
from graphs import latent, rel_err, t2v

INT8_BOUND, FP8_BOUND = 0.03, 0.06  # as test_server.BOUND: ||q - ref|| / ||ref|| for one forward or a latent
MEASURED: dict[str, float] = {}


def _ok(server, graph: dict, timeout: float = 180) -> dict:
    entry = server.run(graph, timeout=timeout)
    err = execution_error(entry)
    assert err is None, f"{err['node_type']}: {err['exception_message']}\n{''.join(err.get('traceback', []))[-3000:]}"
    return entry


def _around(graph: dict, shift: float | None, compile_backend: str | None, steps: int) -> dict:
    """The T2V graph with ModelSamplingSD3 and/or TorchCompileModel between the model and Sample."""
    model = graph["sample"]["inputs"]["model"]
    if shift is not None:
        graph["ms3"] = {"class_type": "ModelSamplingSD3", "inputs": {"model": model, "shift": shift}}
        model = ["ms3", 0]
    if compile_backend is not None:
        graph["compile"] = {"class_type": "TorchCompileModel", "inputs": {"model": model, "backend": compile_backend}}
        model = ["compile", 0]
    graph["sample"]["inputs"].update(model=model, steps=steps)
    return graph


def test_model_sampling_sd3_and_torch_compile(server, workspace):
    """ModelSamplingSD3 and TorchCompileModel (inductor, on the CPU) around an int8-torch DiT in a T2V prompt.

    Measured: compiled vs not compiled rel 1.7e-7 (the int8 bound is 0.03); int8 vs Default with the
    same shift 0.002; shift 5 vs no ModelSamplingSD3 0.35 (so the node acts); the compiled prompt takes
    ~55 s cold / ~20 s with inductor's cache warm on 2 cores (2 steps, one compiled graph: 2 steps
    because with 1 step the Euler step from sigma 1 is the same for every shift).
    """
    names, out = workspace["names"], workspace["output"]
    plain = latent(out, _ok(server, _around(t2v(names, "around_plain_int8", mm_type="int8-torch"), None, None, 2)))
    ms3 = latent(out, _ok(server, _around(t2v(names, "around_ms3_int8", mm_type="int8-torch"), 5.0, None, 2)))
    ref = latent(out, _ok(server, _around(t2v(names, "around_ms3_default"), 5.0, None, 2)))
    start = time.perf_counter()
    compiled = latent(out, _ok(server, _around(t2v(names, "around_ms3_compile_int8", mm_type="int8-torch"),
                                               5.0, "inductor", 2), timeout=300))
    MEASURED["TorchCompileModel prompt s"] = time.perf_counter() - start
    MEASURED["shift effect"] = effect = rel_err(ms3, plain)
    MEASURED["int8+MS3 vs Default+MS3"] = q_err = rel_err(ms3, ref)
    MEASURED["compiled vs eager (int8+MS3)"] = c_err = rel_err(compiled, ms3)
    print("MEASURED", MEASURED)
    assert effect > 0.02, "ModelSamplingSD3 did not change the sampling"
    assert 0 < q_err < INT8_BOUND, q_err
    assert c_err < INT8_BOUND, c_err
    assert torch.isfinite(compiled).all()


def test_bridge_linear_graph_capture_on_cpu(comfy_in_process):
    """torch.compile(fullgraph=True) captures the int8 bridge Linear in one graph (no breaks) on the CPU with the
    pack's Triton custom op registered, and the compiled output equals eager; the custom op itself traces on CPU
    through its fake kernel (make_fx, fake mode) as one opaque node."""
    import ops_checks
    from torch._dynamo.testing import CompileCounterWithBackend
    from torch.fx.experimental.proxy_tensor import make_fx

    pack = comfy_in_process
    triton_mod = sys.modules.get(f"{pack.__name__}.quant.kernels.triton")
    if triton_mod is None:
        import importlib
        triton_mod = importlib.import_module(f"{pack.__name__}.quant.kernels.triton")
    assert hasattr(torch.ops.comfyui_quantized, "triton_w8a8_linear")

    model, _, x, _ = ops_checks._setup(pack, "int8-torch", seed=5)
    assert model.blocks[0].self_attn.q.quantized
    with torch.no_grad():
        eager = model(x)
        torch._dynamo.reset()
        counter = CompileCounterWithBackend("aot_eager")
        compiled = torch.compile(model, backend=counter, fullgraph=True)(x)
    assert counter.frame_count == 1, f"{counter.frame_count} graphs (graph breaks)"
    assert torch.equal(compiled, eager), (compiled - eager).abs().max()
    torch._dynamo.reset()

    w = torch.randint(-127, 128, (128, 256), dtype=torch.int8)
    s = torch.rand(128, 1) / 100
    gm = make_fx(lambda a, b, c: triton_mod.w8a8_linear(a, b, c, None, "int8"), tracing_mode="fake")(x, w, s)
    targets = [str(n.target) for n in gm.graph.nodes if n.op == "call_function"]
    assert any("triton_w8a8_linear" in t for t in targets), targets


def _tiny(workspace, key: str) -> str:
    folder = {"lora": "loras"}.get(key, "diffusion_models")
    return os.path.join(workspace["base"], "models", folder, workspace["names"][key])


def _inputs():
    g = torch.Generator().manual_seed(11)
    return torch.randn(1, 16, 2, 4, 4, generator=g), torch.tensor([500.0]), torch.randn(1, 8, 64, generator=g)


def _forward(patcher) -> torch.Tensor:
    x, t, ctx = _inputs()
    with torch.no_grad():
        return patcher.model.diffusion_model(x, t, ctx)


def _load(pack, workspace, mm_type: str, lora: float = 0.0):
    import comfy.sd
    import comfy.utils
    m = pack.nodes.load_dit.load_dit_path(_tiny(workspace, "dit_t2v"), mm_type, "default")
    if lora:
        m, _ = comfy.sd.load_lora_for_models(m, None, comfy.utils.load_torch_file(_tiny(workspace, "lora")), lora, 0)
    return m


def _offloaded(patcher) -> tuple[list, list]:
    """(quantized modules left offloaded by a lowvram load, quantized modules loaded regularly)."""
    dm = patcher.model.diffusion_model
    q = [(n, m) for n, m in dm.named_modules() if getattr(m, "quantized", False)]
    return [p for p in q if hasattr(p[1], "prev_comfy_cast_weights")], \
        [p for p in q if not hasattr(p[1], "prev_comfy_cast_weights")]


def test_lowvram_partial_load(comfy_in_process, workspace):
    """ComfyUI's legacy low-VRAM load (ModelPatcher.patch_model with lowvram_model_memory = 80 % of the model)
    leaves half of the int8 linears offloaded (comfy_cast_weights, weights streamed through cast_bias_weight);
    the output equals the fully loaded one. With a LoRA, offloaded linears get ComfyUI's LowVramPatch as
    weight_function (unmerged path, storage untouched) and the rest are merged.

    On CPU the load and offload devices are both the CPU, so "offloaded" means what ModelPatcher decides and
    does (prev_comfy_cast_weights, weight_function, no patch_weight_to_device), not a device move.
    Measured: lowvram vs full 0.0 (max abs); the tiny LoRA (update ~4x the weight), lowvram (10 unmerged + 10 merged)
    vs Default+LoRA 0.0096, everything unmerged 0.0096: merged and unmerged layers both quantize the patched weight
    with fresh scales (before issue 15.1 the merge kept the old scales and saturated)."""
    import comfy.model_patcher
    pack, cpu = comfy_in_process, torch.device("cpu")

    full = _load(pack, workspace, "int8-torch")
    full.patch_model(cpu)
    ref = _forward(full)
    full.unpatch_model(cpu)

    low = _load(pack, workspace, "int8-torch")
    low.patch_model(cpu, lowvram_model_memory=int(low.model_size() * 0.8))
    off, loaded = _offloaded(low)
    assert off and loaded, (len(off), len(loaded))
    assert all(m.comfy_cast_weights and m.weight.dtype == torch.int8 for _, m in off)
    out = _forward(low)
    low.unpatch_model(cpu)
    MEASURED["lowvram vs full max abs"] = diff = (out - ref).abs().max().item()
    assert diff <= 1e-5, diff

    ref_lora = _load(pack, workspace, "Default", lora=1.0)
    ref_lora.patch_model(cpu)
    bf16_lora = _forward(ref_lora)
    ref_lora.unpatch_model(cpu)
    effect = rel_err(bf16_lora, _forward(_load(pack, workspace, "Default")))

    for frac, tag in ((0.8, "partial"), (1e-9, "all offloaded")):
        m = _load(pack, workspace, "int8-torch", lora=1.0)
        m.patch_model(cpu, lowvram_model_memory=max(1, int(m.model_size() * frac)))
        off, loaded = _offloaded(m)
        stored = {n: mod.weight.clone() for n, mod in off}
        assert off and all(isinstance(mod.weight_function[0], comfy.model_patcher.LowVramPatch) for _, mod in off)
        out = _forward(m)
        assert all(torch.equal(mod.weight, stored[n]) for n, mod in off), "unmerged LoRA must not touch the storage"
        m.unpatch_model(cpu)
        MEASURED[f"LoRA lowvram {tag} ({len(off)} unmerged, {len(loaded)} merged) vs Default+LoRA"] = err = \
            rel_err(out, bf16_lora)
        assert err < INT8_BOUND, (tag, err)
        assert rel_err(out, ref) > 0.5 * effect, "the LoRA did not reach the quantized linears"
    print("MEASURED", MEASURED)


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_two_mm_types_coexist_and_unload(comfy_in_process, workspace):
    """int8-torch and fp8-torch models from one bf16 file live side by side: distinct storage (int8 vs e4m3),
    different outputs, each within its bound of the Default model. Unloading (drop the MODEL, unload_all_models,
    cleanup_models, gc) frees the quantized weight (its weakref dies); 3 load/run/unload cycles leave RSS flat.

    Measured: int8 vs Default 0.006, fp8 vs Default 0.030; RSS 923 MiB after each of the 3 cycles (growth 0.0 MiB;
    the tiny model is only ~1.2 MB, so RSS alone is a weak check: the weakref is the sharp one)."""
    import comfy.model_management as mm
    pack = comfy_in_process
    ref = _forward(_load(pack, workspace, "Default"))
    a, b = _load(pack, workspace, "int8-torch"), _load(pack, workspace, "fp8-torch")
    mm.load_models_gpu([a, b])
    qa, qb = a.model.diffusion_model.blocks[0].self_attn.q, b.model.diffusion_model.blocks[0].self_attn.q
    assert qa.weight.dtype == torch.int8 and qb.weight.dtype == torch.float8_e4m3fn
    assert qa.weight.data_ptr() != qb.weight.data_ptr() and qa.weight_scale.data_ptr() != qb.weight_scale.data_ptr()
    out_a, out_b = _forward(a), _forward(b)
    MEASURED["int8 vs Default"], MEASURED["fp8 vs Default"] = ea, eb = rel_err(out_a, ref), rel_err(out_b, ref)
    assert not torch.equal(out_a, out_b)
    assert 0 < ea < INT8_BOUND and 0 < eb < FP8_BOUND, (ea, eb)
    assert torch.equal(_forward(a), out_a), "loading the fp8 model changed the int8 one"

    refs = [weakref.ref(qa.weight), weakref.ref(qb.weight), weakref.ref(a.model)]
    del a, b, qa, qb
    mm.unload_all_models()
    mm.cleanup_models()
    gc.collect()
    assert all(r() is None for r in refs), "a quantized weight / model survived unloading"

    rss = []
    for _ in range(3):
        m = _load(pack, workspace, "int8-torch")
        mm.load_models_gpu([m])
        _forward(m)
        del m
        mm.unload_all_models()
        mm.cleanup_models()
        gc.collect()
        rss.append(_rss_mb())
    MEASURED["RSS MiB after cycles 1..3"] = rss
    MEASURED["RSS growth cycle 1 -> 3 MiB"] = grow = rss[-1] - rss[0]
    print("MEASURED", MEASURED)
    assert grow < 8.0, rss  # measured 0.0 MiB; the margin allows allocator noise (the weakref check above is the sharp one)


def test_sample_times_only_the_steps(server, workspace):
    """The Sample node's seconds_per_step covers the sampling loop only (not model loading or LoRA patching):
    positive, steps x it <= the node's own total, and <= the prompt's wall time (execution_start -> success)."""
    names = workspace["names"]
    graph = t2v(names, "timed_int8_lora", mm_type="int8-torch", lora=0.7)
    graph["dit"]["inputs"]["dtype"] = "fp32"  # a fresh loader input: the DiT is loaded again in this prompt
    entry = _ok(server, graph)
    ui = entry["outputs"]["sample"]
    per_step, total, steps = ui["seconds_per_step"][0], ui["seconds_total"][0], graph["sample"]["inputs"]["steps"]
    stamps = {e: d["timestamp"] for e, d in entry["status"]["messages"] if e in ("execution_start", "execution_success")}
    wall = (stamps["execution_success"] - stamps["execution_start"]) / 1000
    MEASURED["Sample s/step, node total s, prompt s"] = [per_step, total, wall]
    print("MEASURED", MEASURED)
    assert 0 < per_step and per_step * steps < total <= wall + 0.05, (per_step, total, wall)
    assert f"{per_step:.3f} s/step" in ui["text"][0]


def test_sample_timer_reads_the_clock_on_an_idle_device(comfy_in_process, monkeypatch):
    """Kernels run asynchronously: the step timer waits for the device before both clock reads (without the
    second wait it stopped while the GPU still ran the last step: a Wan step reported as 0.3 s of 0.6 on an H200)."""
    import comfy.model_management as mm

    events = []
    monkeypatch.setattr(mm, "synchronize", lambda: events.append("sync"))
    timer = comfy_in_process.nodes.sample._StepTimer()
    assert timer(lambda: events.append("steps") or "latent") == "latent"
    assert events == ["sync", "steps", "sync"] and timer.calls == 1
