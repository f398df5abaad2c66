"""Tiny random Flux.1 pieces built with ComfyUI's real classes: DiT, T5-XXL-typed encoder, CLIP-L and the ae VAE.

Each file is shaped so ComfyUI's own detection reads it as the real thing (model_detection's Flux branch,
VAE's 16-channel ae branch, the Flux text encoder's T5/CLIP-L routing), only narrow and shallow:
- DiT: img_in/txt_in/vector_in give hidden 128 (one 128-wide head), context 64 (= the T5 width), vec 96
  (= the CLIP-L width); 1 double + 1 single block.
- T5: ComfyUI's T5 class, gated-gelu like T5-XXL, 2 layers of width 64, its embedding covering the real
  T5 tokenizer's 32128 ids (the tokenizer ComfyUI ships in comfy/text_encoders/t5_tokenizer).
- CLIP-L: 2 layers (FluxClipModel routes a file with layer 1 to CLIP-L), width 96 (12 heads of 8), the
  full 49408-entry vocabulary and 77 positions.
- ae: the 16-channel KL autoencoder; encoder at ComfyUI's fixed width 128 (its config is not read from
  the file), decoder at width 32 (read from decoder.conv_in).
Needs `comfy` importable (ComfyUI root on sys.path, comfy.cli_args.args.cpu set first).
"""
from __future__ import annotations

import json
import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tiny_models import make_missing, randomize

T5_DIM, T5_VOCAB, CLIP_L_DIM, CLIP_L_VOCAB, HIDDEN = 64, 32128, 96, 49408, 128
NAMES = {"flux_dit": "tiny_flux1_dev.safetensors", "t5xxl": "tiny_t5xxl.safetensors",
         "clip_l": "tiny_clip_l.safetensors", "ae": "tiny_flux_ae.safetensors"}
FOLDERS = {"flux_dit": "diffusion_models", "t5xxl": "text_encoders", "clip_l": "text_encoders", "ae": "vae"}


def flux_dit(path: str) -> None:
    import comfy.ops
    from comfy.ldm.flux.model import Flux
    m = Flux(operations=comfy.ops.manual_cast, in_channels=16, out_channels=16, vec_in_dim=CLIP_L_DIM,
             context_in_dim=T5_DIM, hidden_size=HIDDEN, mlp_ratio=4.0, num_heads=1, depth=1, depth_single_blocks=1,
             axes_dim=[16, 56, 56], theta=10000, patch_size=2, qkv_bias=True, guidance_embed=True, txt_ids_dims=[])
    sd = randomize(m.state_dict(), 21)
    sd = {k: (v * 0.3 if "modulation" in k else v).to(torch.bfloat16) for k, v in sd.items()}
    save_file(sd, path)


def t5xxl(path: str) -> None:
    import comfy.ops
    from comfy.text_encoders.t5 import T5
    cfg = {"d_ff": 128, "d_kv": 32, "d_model": T5_DIM, "num_heads": 2, "num_layers": 2, "vocab_size": T5_VOCAB,
           "model_type": "t5", "is_gated_act": True, "dense_act_fn": "gelu_pytorch_tanh"}
    m = T5(cfg, torch.float32, "cpu", comfy.ops.manual_cast)
    save_file({k: v.to(torch.bfloat16) for k, v in randomize(m.state_dict(), 22).items()}, path)


def clip_l(path: str) -> None:
    import comfy.clip_model
    import comfy.ops
    import comfy.sd1_clip
    with open(os.path.join(os.path.dirname(comfy.sd1_clip.__file__), "sd1_clip_config.json")) as f:
        cfg = json.load(f)
    cfg.update(hidden_size=CLIP_L_DIM, intermediate_size=192, num_hidden_layers=2, projection_dim=CLIP_L_DIM)
    m = comfy.clip_model.CLIPTextModel(cfg, torch.float32, "cpu", comfy.ops.manual_cast)
    sd = randomize(m.state_dict(), 23)
    sd = {k: (torch.ones_like(v) if k.endswith(("layer_norm1.weight", "layer_norm2.weight", "final_layer_norm.weight"))
              else v) for k, v in sd.items()}
    save_file({k: v.to(torch.float16) for k, v in sd.items()}, path)


def ae(path: str) -> None:
    from comfy.ldm.modules.diffusionmodules.model import Decoder, Encoder
    cfg = {"double_z": True, "z_channels": 16, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
           "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}
    sd = {f"encoder.{k}": v for k, v in Encoder(**cfg).state_dict().items()}
    sd.update({f"decoder.{k}": v for k, v in Decoder(**{**cfg, "ch": 32}).state_dict().items()})
    sd = randomize(sd, 24)
    sd = {k: (torch.ones_like(v) if ".norm" in k and k.endswith(".weight") else v) for k, v in sd.items()}
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in sd.items()}, path)


def make_all(models: str) -> dict:
    """Every tiny Flux file under models/<folder>/; returns their names (keys of NAMES)."""
    return make_missing(models, NAMES, FOLDERS, globals())
