"""Tiny DiTs of the families the generic rule quantizes, built with ComfyUI's real classes (issue 17.6).

- Qwen-Image: one block. ComfyUI reads only in_channels and the block count from the file (the widths are
  its defaults: 24 heads of 128, text 3584), so the block is full width (~0.36 B parameters, bf16).
- HunyuanVideo 1.5: one double + one single block, hidden 128 (one 128-wide head), text width 64 (= the tiny
  umT5's), 1.5's 32-channel latent + image/mask channels (65 in), vision_in 1152 (what makes ComfyUI read it as
  1.5), cond-type embedding; ComfyUI reads every width from the file.
- umT5 of width 3584: Qwen-Image's text width, so the pack's T5 loader and CLIPTextEncode feed it.
Needs `comfy` importable (ComfyUI root on sys.path, comfy.cli_args.args.cpu set first).
"""
from __future__ import annotations

import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tiny_models import make_missing, randomize, umt5

QWEN_TEXT = 3584
NAMES = {"qwen_image": "tiny_qwen_image.safetensors", "hunyuan_video": "tiny_hunyuan_video.safetensors",
         "umt5_3584": "tiny_umt5_3584.safetensors"}
FOLDERS = {"qwen_image": "diffusion_models", "hunyuan_video": "diffusion_models", "umt5_3584": "text_encoders"}


def _bf16(sd: dict, seed: int) -> dict:
    sd = randomize(sd, seed)
    return {k: (v * 0.3 if "mod" in k else v).to(torch.bfloat16).contiguous() for k, v in sd.items()}


def qwen_image(path: str) -> None:
    import comfy.ops
    from comfy.ldm.qwen_image.model import QwenImageTransformer2DModel
    m = QwenImageTransformer2DModel(num_layers=1, operations=comfy.ops.manual_cast, dtype=torch.bfloat16)
    sd = _bf16(m.state_dict(), 31)
    gains = ("norm_q.weight", "norm_k.weight", "norm_added_q.weight", "norm_added_k.weight", "txt_norm.weight")
    sd = {k: (torch.ones_like(v) if k.endswith(gains) else v) for k, v in sd.items()}
    save_file(sd, path)


def hunyuan_video(path: str) -> None:
    import comfy.ops
    from comfy.ldm.hunyuan_video.model import HunyuanVideo
    m = HunyuanVideo(image_model="hunyuan_video", operations=comfy.ops.manual_cast, in_channels=65, out_channels=32,
                     vec_in_dim=None, context_in_dim=64, hidden_size=128, mlp_ratio=4.0, num_heads=1, depth=1,
                     depth_single_blocks=1, axes_dim=[16, 56, 56], theta=256, patch_size=[1, 1, 1], qkv_bias=True,
                     guidance_embed=False, byt5=False, meanflow=False, use_cond_type_embedding=True,
                     vision_in_dim=1152, meanflow_sum=True)
    sd = _bf16(m.state_dict(), 32)
    sd = {k: (torch.ones_like(v) if "norm" in k and k.endswith(".weight") else v) for k, v in sd.items()}
    save_file(sd, path)


def umt5_3584(path: str) -> None:
    umt5(path, d_model=QWEN_TEXT, num_layers=1)


def make_all(models: str) -> dict:
    """Every tiny file under models/<folder>/ (made once); returns their names (keys of NAMES)."""
    return make_missing(models, NAMES, FOLDERS, globals())
