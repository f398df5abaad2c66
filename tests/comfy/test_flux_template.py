"""The Flux.1-dev template end to end on the real server, on tiny Flux files (tiny_flux.py).

The template (fp8 DiT + int8 T5-XXL with CLIP-L through Load Quantized T5's `flux` type) is converted
to an API prompt with test_workflows' helpers and compared with the same graph at Default (float)
settings; plus an in-process look at the Flux text encoder the node builds.
"""
from __future__ import annotations

import copy
import os

import pytest
import torch
from conftest import REPO, execution_error, make_tiny
from safetensors.torch import load_file
from test_workflows import load, tiny, to_api

TEMPLATE = os.path.join(REPO, "example_workflows", "flux1_dev_fp8_t5_int8.json")
FP8_DIT_BOUND = 0.06  # as for the fp8 DiT elsewhere (test_flux.py); int8 T5 error rides along


@pytest.fixture(scope="module")
def flux_names(comfy_root, workspace) -> dict:
    """The tiny Flux files, generated into the server's models/ (a subprocess: comfy on the CPU there)."""
    return make_tiny(comfy_root, "tiny_flux", os.path.join(workspace["base"], "models"))


@pytest.fixture(scope="module")
def flux_prompt(server, flux_names) -> dict:
    """The template as a CPU-sized API prompt on the tiny files, its latent also saved (SaveLatent)."""
    prompt = to_api(load(TEMPLATE), server.get("/object_info"))
    names = {"dit_t2v": flux_names["flux_dit"], "t5": flux_names["t5xxl"], "vae": flux_names["ae"]}
    prompt = tiny(prompt, names)
    for node in prompt.values():
        if node["class_type"] == "LoadQuantizedT5":
            assert node["inputs"]["type"] == "flux" and node["inputs"]["clip_l_name"] == "clip_l.safetensors"
            node["inputs"]["clip_l_name"] = flux_names["clip_l"]
    sample = next(k for k, n in prompt.items() if n["class_type"] == "QuantizedSample")
    prompt["900"] = {"class_type": "SaveLatent", "inputs": {"samples": [sample, 0], "filename_prefix": "x"}}
    return prompt


def _run(server, workspace, prompt: dict, tag: str) -> tuple[torch.Tensor, dict]:
    prompt = copy.deepcopy(prompt)
    for node in prompt.values():
        if "filename_prefix" in node["inputs"]:
            node["inputs"]["filename_prefix"] = f"flux_template/{tag}"
    entry = server.run(prompt, timeout=240)
    err = execution_error(entry)
    assert err is None, f"{err['node_type']}: {err['exception_message']}"
    saved = entry["outputs"]["900"]["latents"][0]
    latent = load_file(os.path.join(workspace["output"], saved["subfolder"], saved["filename"]))["latent_tensor"]
    return latent.float(), entry


def _set(prompt: dict, class_type: str, **inputs) -> dict:
    prompt = copy.deepcopy(prompt)
    for node in prompt.values():
        if node["class_type"] == class_type:
            node["inputs"].update(inputs)
    return prompt


def test_flux_template_quantized_matches_default(server, workspace, flux_prompt):
    """fp8 DiT + int8 T5 (the template as shipped) within the fp8 bound of the all-float graph; an image comes out."""
    quant, entry = _run(server, workspace, flux_prompt, "quantized")
    ref_prompt = _set(_set(flux_prompt, "LoadQuantizedDiT", mm_type="Default"), "LoadQuantizedT5",
                      quant_scheme="Default")
    ref, _ = _run(server, workspace, ref_prompt, "default")
    assert quant.shape == ref.shape == (1, 16, 4, 4)
    err = ((quant - ref).norm() / ref.norm()).item()
    assert 0 < err < FP8_DIT_BOUND, err
    outputs = entry["outputs"]
    assert any(o.get("images") for o in outputs.values()), outputs.keys()
    kernels = next(o["kernels"] for o in outputs.values() if "kernels" in o)
    assert any(k.startswith("fp8/") for k in kernels), kernels


def test_flux_type_without_clip_l_fails_clearly(server, flux_prompt):
    prompt = _set(flux_prompt, "LoadQuantizedT5", clip_l_name="none")
    err = execution_error(server.run(prompt, timeout=120))
    assert err is not None and "Flux needs CLIP-L: choose clip_l.safetensors" in err["exception_message"]


def test_flux_text_encoder_build(comfy_in_process, workspace, flux_names):
    """In process: core's FluxClipModel, T5 linears quantized (int8), CLIP-L not, a real pooled vector."""
    import folder_paths
    folder_paths.add_model_folder_path("text_encoders", os.path.join(workspace["base"], "models", "text_encoders"))
    node = comfy_in_process.NODE_CLASS_MAPPINGS["LoadQuantizedT5"]()
    (clip,) = node.load(flux_names["t5xxl"], "flux", "int8", "default", flux_names["clip_l"])
    import comfy.text_encoders.flux
    te = clip.cond_stage_model
    assert isinstance(te, comfy.text_encoders.flux.FluxClipModel)
    assert te.t5xxl.transformer.encoder.block[0].layer[0].SelfAttention.q.quantized
    assert te.t5xxl.transformer.encoder.block[1].layer[1].DenseReluDense.wo.quantized
    assert not te.clip_l.transformer.text_model.encoder.layers[0].mlp.fc1.quantized
    out = clip.encode_from_tokens(clip.tokenize("a lighthouse on a cliff"), return_pooled=True, return_dict=True)
    assert out["cond"].shape[-1] == 64 and out["pooled_output"].shape == (1, 96)
    assert out["pooled_output"].abs().mean() > 0.1
    with pytest.raises(ValueError, match="Flux needs CLIP-L: choose clip_l.safetensors"):
        node.load(flux_names["t5xxl"], "flux", "int8", "default")
    with pytest.raises(ValueError, match="only with type flux"):
        node.load(flux_names["t5xxl"], "sd3", "int8", "default", flux_names["clip_l"])
