"""LightX2V-style files for the config-node tests: Wan-native int8 CLIP .pth, int8 DiTs, configs in lightx2v_configs/.

Written into the server fixture's models folder (ComfyUI's --base-directory), so the running
server lists them; every helper is idempotent (a second call reuses the files).
"""
from __future__ import annotations

import json
import os
import sys

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tiny_models import int8_lightx2v

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "unit"))
from lightx2v_synth import quantize_model, save_pth

CONFIG_FOLDER = "lightx2v_configs"
CLIP_PTH = "models_clip_open-clip-xlm-roberta-large-vit-huge-14-int8"
I2V_CONFIG = "tiny_wan_i2v_int8.json"


def models(workspace: dict, folder: str) -> str:
    path = os.path.join(workspace["base"], "models", folder)
    os.makedirs(path, exist_ok=True)
    return path


def clip_to_wan(sd: dict) -> dict:
    """ComfyUI clip_vision_h names -> Wan-native open-clip ones (q/k/v fused, embeddings reshaped, head transposed)."""
    e, out = "vision_model.embeddings.", {}
    out["visual.patch_embedding.weight"] = sd[e + "patch_embedding.weight"]
    out["visual.cls_embedding"] = sd[e + "class_embedding"].reshape(1, 1, -1)
    out["visual.pos_embedding"] = sd[e + "position_embedding.weight"][None]
    out["visual.head"] = sd["visual_projection.weight"].t().contiguous()
    for a, b in (("pre_layrnorm", "pre_norm"), ("post_layernorm", "post_norm")):
        for s in ("weight", "bias"):
            out[f"visual.{b}.{s}"] = sd[f"vision_model.{a}.{s}"]
    n = 1 + max(int(k.split(".")[3]) for k in sd if k.startswith("vision_model.encoder.layers."))
    for i in range(n):
        p, q = f"vision_model.encoder.layers.{i}.", f"visual.transformer.{i}."
        for s in ("weight", "bias"):
            out[q + f"attn.to_qkv.{s}"] = torch.cat([sd[p + f"self_attn.{x}_proj.{s}"] for x in "qkv"])
            for a, b in (("layer_norm1", "norm1"), ("layer_norm2", "norm2"), ("self_attn.out_proj", "attn.proj"),
                         ("mlp.fc1", "mlp.0"), ("mlp.fc2", "mlp.2")):
                out[q + f"{b}.{s}"] = sd[p + f"{a}.{s}"]
    return out


def wan_clip_pth(workspace: dict) -> str:
    """The tiny CLIP vision as LightX2V ships it (Wan-native names, int8 .pth) in models/clip_vision; its name."""
    folder = models(workspace, "clip_vision")
    if not os.path.isfile(os.path.join(folder, CLIP_PTH + ".pth")):
        sd = load_file(os.path.join(folder, workspace["names"]["clip"]))
        save_pth(quantize_model(clip_to_wan(sd), "wan_clip", "int8", torch.float16), folder, CLIP_PTH)
    return CLIP_PTH + ".pth"


def int8_dit(workspace: dict, src_name: str, name: str) -> str:
    """LightX2V int8 copy (in models/diffusion_models) of a DiT file there; its name."""
    folder = models(workspace, "diffusion_models")
    if not os.path.isfile(os.path.join(folder, name)):
        int8_lightx2v(os.path.join(folder, src_name), os.path.join(folder, name))
    return name


def other_dit(workspace: dict, src_name: str, name: str, seed: int) -> str:
    """A bf16 DiT with src's shapes and metadata and fresh block weights (same per-tensor std); its name."""
    folder = models(workspace, "diffusion_models")
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        src = os.path.join(folder, src_name)
        with safe_open(src, "pt") as f:
            meta = f.metadata()
        g, out = torch.Generator().manual_seed(seed), {}
        for k, v in load_file(src).items():
            if k.startswith("blocks.") and v.dim() == 2:
                v = (torch.randn(v.shape, generator=g) * v.float().std()).to(v.dtype)
            out[k] = v
        save_file(out, path, metadata=meta)
    return name


def write_config(workspace: dict, name: str, config: dict) -> str:
    """A config file in models/lightx2v_configs/; its name (the node's config_name)."""
    with open(os.path.join(models(workspace, CONFIG_FOLDER), name), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
    return name


def i2v_config(workspace: dict) -> str:
    """A Wan 2.1 I2V LightX2V config (int8 DiT, int8 Wan-native CLIP .pth, float T5) in lightx2v_configs/."""
    names = workspace["names"]
    config = {"model_cls": "wan2.1", "task": "i2v", "infer_steps": 4, "sample_guide_scale": 1.0,
              "dit_quantized": True, "dit_quant_scheme": "int8-vllm",
              "dit_quantized_ckpt": int8_dit(workspace, names["dit_i2v"], "tiny_wan_i2v_int8.safetensors"),
              "t5_quantized": False, "t5_original_ckpt": names["t5"],
              "clip_quantized": True, "clip_quant_scheme": "int8", "clip_quantized_ckpt": wan_clip_pth(workspace)}
    return write_config(workspace, I2V_CONFIG, config)
