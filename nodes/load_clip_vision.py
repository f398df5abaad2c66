"""Load Quantized CLIP Vision: a CLIP vision tower (Wan I2V's clip_vision_h) -> CLIP_VISION with quantized linears.

comfy.clip_vision hard-codes comfy.ops.manual_cast, so the model is built by ComfyUI and its
quantizable Linear modules are swapped for the bridge's before the weights are loaded.
"""
from __future__ import annotations

import json
import logging
import os

import comfy.clip_vision
import torch

from ..quant.families import ModelFamily, should_quantize
from ..quant.lightx2v.keys import is_native, to_comfy
from ..quant.schemes import names
from .common import (
    CATEGORY,
    check_family,
    model_files,
    model_path,
    read_checkpoint,
    resolve_scheme,
)
from .ops import make_ops
from .quantizing import quantizing

log = logging.getLogger(__name__)

NODE = "Load Quantized CLIP Vision"
_CONFIGS = os.path.dirname(os.path.realpath(comfy.clip_vision.__file__))
_LAYER = "vision_model.encoder.layers.{}.layer_norm1.weight"
_KNOWN = ((47, "clip_vision_config_g.json"), (30, "clip_vision_config_h.json"))


def vision_config(sd: dict) -> dict:
    """ComfyUI's config for the standard towers (ViT-G / ViT-H), else one read off the tensor shapes."""
    for layer, name in _KNOWN:
        if _LAYER.format(layer) in sd:
            with open(os.path.join(_CONFIGS, name)) as f:
                return json.load(f)
    with open(os.path.join(_CONFIGS, "clip_vision_config_h.json")) as f:
        cfg = json.load(f)
    layers = 1 + max(int(k.split(".")[3]) for k in sd if k.startswith("vision_model.encoder.layers."))
    hidden = sd[_LAYER.format(0)].shape[0]
    patch = sd["vision_model.embeddings.patch_embedding.weight"].shape[-1]
    grid = round((sd["vision_model.embeddings.position_embedding.weight"].shape[0] - 1) ** 0.5)
    cfg.update(num_hidden_layers=layers, hidden_size=hidden, patch_size=patch, image_size=grid * patch,
               intermediate_size=sd["vision_model.encoder.layers.0.mlp.fc1.weight"].shape[0],
               num_attention_heads=hidden // 80 if hidden % 80 == 0 else max(1, hidden // 64))
    if "visual_projection.weight" in sd:
        cfg["projection_dim"] = sd["visual_projection.weight"].shape[0]
    else:
        cfg.pop("projection_dim", None)
    return cfg


def swap_linears(root: torch.nn.Module, ops: type, family: ModelFamily) -> int:
    """Replace every Linear the family quantizes by ops.Linear (weights still unloaded); returns the count."""
    n = 0
    for name, module in list(root.named_modules()):
        for child_name, child in list(module.named_children()):
            key = f"{name}.{child_name}.weight" if name else f"{child_name}.weight"
            if isinstance(child, torch.nn.Linear) and should_quantize(family, key):
                dtype = child.bias.dtype if child.bias is not None else None
                setattr(module, child_name, ops.Linear(child.in_features, child.out_features,
                                                       bias=child.bias is not None, dtype=dtype))
                n += 1
    return n


class LoadQuantizedCLIP:
    """CLIP vision encoder whose attention and MLP linears run in the chosen quant_scheme."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {
            "clip_name": (model_files("clip_vision"),),
            "quant_scheme": (names("quant_scheme"), {"default": "auto"}),
        }}

    RETURN_TYPES = ("CLIP_VISION",)
    FUNCTION = "load"
    CATEGORY = CATEGORY
    DESCRIPTION = "Load a CLIP vision encoder (Wan I2V clip_vision_h) whose linears run in int8 or fp8."

    def load(self, clip_name: str, quant_scheme: str) -> tuple:
        return (load_clip_vision_path(model_path("clip_vision", clip_name), quant_scheme, clip_name),)


def load_clip_vision_path(path: str, quant_scheme: str, name: str | None = None) -> comfy.clip_vision.ClipVisionModel:
    """CLIP_VISION from a file in ComfyUI, open_clip or Wan-native (LightX2V `.pth`) key names."""
    name = name or os.path.basename(path)
    sd, det, _ = read_checkpoint(path)
    if is_native(sd, "wan_clip"):  # Wan's own open-clip names (LightX2V's models_clip_*.pth)
        sd = to_comfy(sd, "wan_clip")
    elif "visual.transformer.resblocks.0.attn.in_proj_weight" in sd:  # open_clip layout (float files)
        sd = comfy.clip_vision.convert_to_transformers(sd, "visual.")
    family = check_family(sd, ("wan_clip",), NODE, name)
    if _LAYER.format(0) not in sd:
        raise ValueError(f"{NODE}: {name} holds no CLIP vision tower ({_LAYER.format(0)} missing)")
    resolved = resolve_scheme(quant_scheme, "quant_scheme", det)
    clip = comfy.clip_vision.ClipVisionModel(vision_config(sd))
    if resolved.scheme.quantized:
        swapped = swap_linears(clip.model, make_ops(resolved, family), family)
        log.info("[quantized] %s: %d linears in %s", name, swapped, resolved.label)
    with quantizing(sd, family, resolved):
        missing, _ = clip.load_sd(sd)
    if missing:
        log.warning("[quantized] %s: missing %s", name, missing)
    clip.patcher.size = 0
    return clip
