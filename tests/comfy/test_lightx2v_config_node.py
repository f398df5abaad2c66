"""Load LightX2V Config through the real server: a LightX2V config with its int8 DiT and Wan-native int8 T5 .pth."""
from __future__ import annotations

import json
import os
import re

import pytest
import torch
from conftest import execution_error, ok
from graphs import FRAMES, PROMPT, SIZE, _sample, latent, rel_err, t2v
from lightx2v_files import clip_to_wan
from lightx2v_synth import quantize_model, save_pth
from safetensors.torch import load_file

BOUND_INT8 = 0.03  # test_server.BOUND["int8"]: DiT and T5 both int8 here, so twice that
T5_DIR = "lightx2v_t5"
T5_NAME = "models_t5_umt5-xxl-enc-int8"
# ComfyUI umT5 names -> Wan-native ones (the inverse of quant.lightx2v.keys.T5_RULES).
_TO_WAN = ((r"shared\.weight", "token_embedding.weight"), (r"encoder\.final_layer_norm\.weight", "norm.weight"),
           (r"encoder\.block\.(\d+)\.layer\.0\.layer_norm\.", r"blocks.\1.norm1."),
           (r"encoder\.block\.(\d+)\.layer\.0\.SelfAttention\.relative_attention_bias\.", r"blocks.\1.pos_embedding.embedding."),
           (r"encoder\.block\.(\d+)\.layer\.0\.SelfAttention\.([qkvo])\.", r"blocks.\1.attn.\2."),
           (r"encoder\.block\.(\d+)\.layer\.1\.layer_norm\.", r"blocks.\1.norm2."),
           (r"encoder\.block\.(\d+)\.layer\.1\.DenseReluDense\.wi_0\.", r"blocks.\1.ffn.gate.0."),
           (r"encoder\.block\.(\d+)\.layer\.1\.DenseReluDense\.wi_1\.", r"blocks.\1.ffn.fc1."),
           (r"encoder\.block\.(\d+)\.layer\.1\.DenseReluDense\.wo\.", r"blocks.\1.ffn.fc2."))


def _to_wan(key: str) -> str:
    for pattern, repl in _TO_WAN:
        new, n = re.subn("^" + pattern, repl, key)
        if n:
            return new
    raise KeyError(key)


@pytest.fixture(scope="module")
def lightx2v_t5(workspace) -> str:
    """The tiny umT5 as LightX2V ships it: Wan-native names, int8 .pth, tokenizer in google/umt5-xxl/ beside it."""
    models = os.path.join(workspace["base"], "models", "text_encoders")
    sd = load_file(os.path.join(models, workspace["names"]["t5"]))
    spiece = sd.pop("spiece_model")
    folder = os.path.join(models, T5_DIR)
    os.makedirs(os.path.join(folder, "google", "umt5-xxl"), exist_ok=True)
    with open(os.path.join(folder, "google", "umt5-xxl", "spiece.model"), "wb") as f:
        f.write(spiece.numpy().tobytes())
    wan = quantize_model({_to_wan(k): v for k, v in sd.items()}, "wan_t5", "int8", torch.bfloat16)
    save_pth(wan, folder, T5_NAME)
    return f"{T5_DIR}/{T5_NAME}.pth"


def config_graph(config: dict, tag: str) -> dict:
    """t2v whose MODEL and CLIP come from the config node (pasted JSON)."""
    return {
        "cfg": {"class_type": "LoadLightX2VConfig",
                "inputs": {"config_name": "(none: use the text below)", "config_text": json.dumps(config),
                           "dtype": "default"}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": PROMPT, "clip": ["cfg", 1]}},
        "empty": {"class_type": "EmptyHunyuanLatentVideo",
                  "inputs": {"width": SIZE, "height": SIZE, "length": FRAMES, "batch_size": 1}},
        "sample": _sample(["cfg", 0], ["pos", 0], ["pos", 0], ["empty", 0]),
        "save": {"class_type": "SaveLatent", "inputs": {"samples": ["sample", 0], "filename_prefix": f"latents/{tag}"}},
    }



def test_config_node_listed(server):
    info = server.get("/object_info")["LoadLightX2VConfig"]
    assert info["display_name"] == "Load LightX2V Config" and info["category"] == "quantized"
    assert info["output"] == ["MODEL", "CLIP", "CLIP_VISION", "MODEL"]
    assert info["output_name"] == ["model", "clip", "clip_vision", "low_noise_model"]
    assert "high-noise" in info["description"] and "low_noise_model" in info["description"]


def test_lightx2v_config_matches_bf16(server, workspace, lightx2v_t5):
    """LightX2V int8 DiT + Wan-native int8 T5 .pth via the config (vllm schemes: portable fallback) vs bf16 files."""
    names, out = workspace["names"], workspace["output"]
    ref = latent(out, ok(server, t2v(names, "lx_ref_default")))
    config = {"dit_quantized": True, "dit_quant_scheme": "int8-vllm", "dit_quantized_ckpt": names["dit_int8"],
              "t5_quantized": True, "t5_quant_scheme": "int8-vllm", "t5_quantized_ckpt": lightx2v_t5,
              "infer_steps": 40, "target_video_length": 81}
    entry = ok(server, config_graph(config, "lx_config"))
    assert entry["outputs"]["sample"]["kernels"][0].startswith("int8/")
    err = rel_err(latent(out, entry), ref)
    assert 0.0 < err < 2 * BOUND_INT8, err
    # The DiT part alone is exactly what Load Quantized DiT makes of the same int8 file.
    same = latent(out, ok(server, t2v(names, "lx_dit_file", dit=names["dit_int8"], mm_type="int8-torch")))
    dit_only = latent(out, ok(server, config_graph({**config, "t5_quantized": False,
                                                    "t5_original_ckpt": names["t5"]}, "lx_config_dit")))
    assert rel_err(dit_only, same) < 1e-3


@pytest.mark.parametrize("field,value,expected", [
    ("dit_quant_scheme", "int9-magic", "dit_quant_scheme"),
    ("dit_quantized_ckpt", "no_such_dit.safetensors", "dit_quantized_ckpt"),
])
def test_bad_config_names_the_field(server, workspace, field, value, expected):
    config = {"dit_quantized": True, "dit_quant_scheme": "int8", "dit_quantized_ckpt": workspace["names"]["dit_int8"],
              field: value}
    err = execution_error(server.run(config_graph(config, "lx_bad")))
    assert err is not None and err["node_type"] == "LoadLightX2VConfig"
    assert expected in err["exception_message"], err["exception_message"]


def test_wan_native_clip_pth_loads(comfy_in_process, workspace, tmp_path):
    """LightX2V's int8 CLIP .pth (Wan-native names) loads through the CLIP path loader and matches the float file."""
    from comfyui_quantized.nodes.load_clip_vision import load_clip_vision_path
    path = os.path.join(workspace["base"], "models", "clip_vision", workspace["names"]["clip"])
    wan = quantize_model(clip_to_wan(load_file(path)), "wan_clip", "int8", torch.float16)
    pth = save_pth(wan, str(tmp_path), "models_clip_open-clip-xlm-roberta-large-vit-huge-14-int8")
    image = torch.rand(1, 28, 28, 3, generator=torch.Generator().manual_seed(0))
    ref = load_clip_vision_path(path, "Default").encode_image(image)["penultimate_hidden_states"].float()
    got = load_clip_vision_path(pth, "int8").encode_image(image)["penultimate_hidden_states"].float()
    assert 0.0 < rel_err(got, ref) < BOUND_INT8
