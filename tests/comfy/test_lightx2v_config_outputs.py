"""Load LightX2V Config through the real server: Wan 2.2 experts (4th output), a config from the
lightx2v_configs folder driving I2V with its CLIP_VISION, and an LLMC-smoothed int8 DiT.

lightx2v_synth is tests/unit/lightx2v_synth.py (importing lightx2v_files puts tests/unit on sys.path)."""
from __future__ import annotations

import json
import os

import torch
from conftest import execution_error, ok
from graphs import FRAMES, PROMPT, SIZE, i2v, latent, rel_err, t2v
from lightx2v_files import i2v_config, int8_dit, other_dit
from lightx2v_synth import quantize_model
from safetensors import safe_open
from safetensors.torch import load_file, save_file

BOUND_INT8 = 0.03  # test_server.BOUND["int8"]
STEPS, SPLIT = 4, 2
PASTE = "(none: use the text below)"



def saved(output_dir: str, entry: dict, node: str) -> torch.Tensor:
    item = entry["outputs"][node]["latents"][0]
    return load_file(os.path.join(output_dir, item["subfolder"], item["filename"]))["latent_tensor"].float()


def config_node(config: dict | None = None, name: str = PASTE) -> dict:
    return {"class_type": "LoadLightX2VConfig", "inputs": {
        "config_name": name, "config_text": json.dumps(config) if config else "", "dtype": "default"}}


def _stage(model: list, latent_in: list, start: int, end: int, first: bool) -> dict:
    return {"class_type": "KSamplerAdvanced", "inputs": {
        "model": model, "add_noise": "enable" if first else "disable", "noise_seed": 7, "steps": STEPS, "cfg": 1.0,
        "sampler_name": "euler", "scheduler": "simple", "positive": ["pos", 0], "negative": ["pos", 0],
        "latent_image": latent_in, "start_at_step": start, "end_at_step": end,
        "return_with_leftover_noise": "enable" if first else "disable"}}


def moe_graph(high: list, low: list, clip: list, tag: str, extra: dict) -> dict:
    """Wan 2.2 A14B-style: high-noise expert for steps [0, SPLIT), low-noise expert for the rest; both latents saved."""
    return {**extra,
            "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": PROMPT, "clip": clip}},
            "empty": {"class_type": "EmptyHunyuanLatentVideo",
                      "inputs": {"width": SIZE, "height": SIZE, "length": FRAMES, "batch_size": 1}},
            "high": _stage(high, ["empty", 0], 0, SPLIT, True),
            "low": _stage(low, ["high", 0], SPLIT, 10000, False),
            "save_high": {"class_type": "SaveLatent",
                          "inputs": {"samples": ["high", 0], "filename_prefix": f"latents/{tag}_high"}},
            "save": {"class_type": "SaveLatent", "inputs": {"samples": ["low", 0], "filename_prefix": f"latents/{tag}"}}}


def default_experts(names: dict, high: str, low: str, tag: str) -> dict:
    loaders = {f"dit_{k}": {"class_type": "LoadQuantizedDiT", "inputs": {"unet_name": v, "mm_type": "Default",
                                                                         "dtype": "default"}}
               for k, v in (("high", high), ("low", low))}
    loaders["t5"] = {"class_type": "LoadQuantizedT5",
                     "inputs": {"clip_name": names["t5"], "type": "wan", "quant_scheme": "Default", "dtype": "default"}}
    return moe_graph(["dit_high", 0], ["dit_low", 0], ["t5", 0], tag, loaders)


def test_wan22_experts(server, workspace):
    """high_noise_quantized_ckpt -> output 0, low_noise_quantized_ckpt -> output 3; each stage within int8 of bf16."""
    names, out = workspace["names"], workspace["output"]
    low_bf16 = other_dit(workspace, names["dit_t2v"], "tiny_wan22_low_noise.safetensors", seed=11)
    low_int8 = int8_dit(workspace, low_bf16, "tiny_wan22_low_noise_int8.safetensors")
    config = {"model_cls": "wan2.2_moe", "dit_quantized": True, "dit_quant_scheme": "int8-vllm",
              "high_noise_quantized_ckpt": names["dit_int8"], "low_noise_quantized_ckpt": low_int8,
              "t5_original_ckpt": names["t5"], "boundary": 0.875}
    got = ok(server, moe_graph(["cfg", 0], ["cfg", 3], ["cfg", 1], "lx22", {"cfg": config_node(config)}))
    ref = ok(server, default_experts(names, names["dit_t2v"], low_bf16, "lx22_ref"))
    swapped = ok(server, default_experts(names, low_bf16, names["dit_t2v"], "lx22_swapped"))
    for node in ("save_high", "save"):
        err = rel_err(saved(out, got, node), saved(out, ref, node))
        wrong = rel_err(saved(out, got, node), saved(out, swapped, node))
        assert 0.0 < err < BOUND_INT8 and wrong > 3 * err, (node, err, wrong)


def test_single_dit_config_has_no_low_noise_model(server, workspace):
    """A Wan 2.1 config: the 4th output is None, so a node fed by it reports a missing input."""
    names = workspace["names"]
    config = {"dit_quantized": True, "dit_quant_scheme": "int8", "dit_quantized_ckpt": names["dit_int8"],
              "t5_original_ckpt": names["t5"]}
    err = execution_error(server.run(moe_graph(["cfg", 0], ["cfg", 3], ["cfg", 1], "lx21_moe",
                                               {"cfg": config_node(config)})))
    assert err is not None and err["node_type"] == "KSamplerAdvanced", err


def test_wan22_config_needs_both_experts(server, workspace):
    config = {"dit_quantized": True, "dit_quant_scheme": "int8", "high_noise_quantized_ckpt": workspace["names"]["dit_int8"]}
    err = execution_error(server.run(moe_graph(["cfg", 0], ["cfg", 3], ["cfg", 1], "lx22_bad",
                                               {"cfg": config_node(config)})))
    assert err is not None and err["node_type"] == "LoadLightX2VConfig"
    assert "low_noise_quantized_ckpt" in err["exception_message"], err["exception_message"]


def test_i2v_from_config_file(server, workspace):
    """A config file in models/lightx2v_configs/ (listed by the node) drives I2V through its CLIP_VISION output."""
    names, out = workspace["names"], workspace["output"]
    name = i2v_config(workspace)
    assert name in server.get("/object_info/LoadLightX2VConfig")["LoadLightX2VConfig"]["input"]["required"][
        "config_name"][0]
    g = i2v(names, "lx_i2v_file")
    for k in ("dit", "t5", "clipv"):
        del g[k]
    g["cfg"] = config_node(name=name)
    g["pos"]["inputs"]["clip"] = ["cfg", 1]
    g["cvenc"]["inputs"]["clip_vision"] = ["cfg", 2]
    g["sample"]["inputs"]["model"] = ["cfg", 0]
    entry = ok(server, g)
    assert entry["outputs"]["png"]["images"]
    assert entry["outputs"]["sample"]["kernels"][0].startswith("int8/")
    ref = latent(out, ok(server, i2v(names, "lx_i2v_ref")))
    assert 0.0 < rel_err(latent(out, entry), ref) < 2 * BOUND_INT8


def _smoothed(workspace: dict, keep_affine: bool) -> str:
    """The tiny Wan DiT as an LLMC advanced_ptq int8 checkpoint: q/k/v and ffn.0 columns times s (powers of 2),
    affine_norm1/3 = 1/s; without keep_affine the same file lacking the factors."""
    folder = os.path.join(workspace["base"], "models", "diffusion_models")
    name = f"tiny_wan_llmc_int8{'' if keep_affine else '_no_affine'}.safetensors"
    path = os.path.join(folder, name)
    if os.path.isfile(path):
        return name
    src = os.path.join(folder, workspace["names"]["dit_t2v"])
    with safe_open(src, "pt") as f:
        meta = f.metadata()
    sd, g = {k: v.float() for k, v in load_file(src).items()}, torch.Generator().manual_seed(21)
    blocks = sorted({int(k.split(".")[1]) for k in sd if k.startswith("blocks.")})
    for b in blocks:
        for norm, layers in (("1", ("self_attn.q", "self_attn.k", "self_attn.v")), ("3", ("ffn.0",))):
            k_in = sd[f"blocks.{b}.{layers[0]}.weight"].shape[1]
            s = 2.0 ** torch.randint(-2, 3, (k_in,), generator=g).float()
            for layer in layers:
                sd[f"blocks.{b}.{layer}.weight"] = sd[f"blocks.{b}.{layer}.weight"] * s
            if keep_affine:
                sd[f"blocks.{b}.affine_norm{norm}.weight"] = sd[f"blocks.{b}.affine_norm{norm}.bias"] = 1 / s
    save_file(quantize_model(sd, "wan_dit", "int8", torch.bfloat16), path, metadata=meta)
    return name


def test_llmc_smoothed_dit_through_config(server, workspace):
    """advanced_ptq int8 DiT with affine_norm1/3 matches the float model; without the factors it does not."""
    names, out = workspace["names"], workspace["output"]
    ref = latent(out, ok(server, t2v(names, "lx_llmc_ref")))

    def run(ckpt: str, tag: str) -> torch.Tensor:
        config = {"quant_method": "advanced_ptq", "dit_quantized": True, "dit_quant_scheme": "int8",
                  "dit_quantized_ckpt": ckpt, "t5_original_ckpt": names["t5"]}
        g = t2v(names, tag)
        del g["dit"], g["t5"]
        g["cfg"] = config_node(config)
        g["pos"]["inputs"]["clip"], g["sample"]["inputs"]["model"] = ["cfg", 1], ["cfg", 0]
        return latent(out, ok(server, g))

    err = rel_err(run(_smoothed(workspace, True), "lx_llmc"), ref)
    raw = rel_err(run(_smoothed(workspace, False), "lx_llmc_raw"), ref)
    assert 0.0 < err < BOUND_INT8 and raw > 5 * BOUND_INT8, (err, raw)

