"""Synthetic checkpoints exactly as LightX2V's converter writes them (tools/convert/converter.py).

Key selection: `quantize_model` quantizes 2-D tensors whose `key.split(".")[key_idx]` is in the
model type's `target_keys` (`model_type_keys_map` in `main`), deletes keys containing an
`ignore_key` substring and casts every other tensor to `--non_linear_dtype`. Quantizers:
tools/convert/quant/quant.py `QuantWeightINT8.load_int8_weight` / `QuantWeightFP8.load_fp8_weight`
(per-row absmax, clamp(min=1e-5), scale kept in the source dtype, stored at `key + "_scale"`).
Layouts: `convert_weights` (single file, `save_by_block` -> `block_N.safetensors` +
`non_block.safetensors`, chunks `<name>_partN.safetensors`, both with
`diffusion_pytorch_model.safetensors.index.json`; `.pth` through torch.save).
"""
from __future__ import annotations

import json
import os
import re
from collections import defaultdict

import torch
from safetensors.torch import save_file

# converter.py main(): model_type_keys_map (the entries for Wan).
KEYS_MAP = {
    "wan_dit": {"key_idx": 2, "target_keys": ["self_attn", "cross_attn", "ffn"], "ignore_key": ["ca", "audio"]},
    "wan_t5": {"key_idx": 2, "target_keys": ["attn", "ffn"], "ignore_key": None},
    "wan_clip": {"key_idx": 3, "target_keys": ["attn", "mlp"], "ignore_key": ["textual"]},
}
QMAX = {"int8": (127.0, torch.int8), "fp8": (448.0, torch.float8_e4m3fn)}


def quantize_weight(w: torch.Tensor, linear_type: str) -> tuple[torch.Tensor, torch.Tensor]:
    """quant.py load_int8_weight / load_fp8_weight (non-comfyui mode): (w_q, scales in w's dtype [N, 1])."""
    qmax, dtype = QMAX[linear_type]
    scales = w.abs().amax(dim=1, keepdim=True).clamp(min=1e-5) / qmax
    if linear_type == "int8":
        return torch.clamp(torch.round(w / scales), -128, 127).to(dtype), scales
    return torch.clip((w / scales).float(), -qmax, qmax).to(dtype), scales


def quantize_model(sd: dict, model_type: str, linear_type: str, non_linear_dtype=torch.float32) -> dict:
    """converter.py quantize_model for one model type (no comfyui mode, no adapter keys)."""
    cfg = KEYS_MAP[model_type]
    out = {}
    for key, t in sd.items():
        if cfg["ignore_key"] and any(ig in key for ig in cfg["ignore_key"]):
            continue
        parts = key.split(".")
        if t.dim() != 2 or len(parts) < cfg["key_idx"] + 1 or parts[cfg["key_idx"]] not in cfg["target_keys"]:
            out[key] = t.to(non_linear_dtype)
            continue
        out[key], out[key + "_scale"] = quantize_weight(t, linear_type)
    return out


def _index(folder: str, weight_map: dict) -> None:
    total = sum(os.path.getsize(os.path.join(folder, f)) for f in set(weight_map.values()))
    with open(os.path.join(folder, "diffusion_pytorch_model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)


def save_single(sd: dict, folder: str, name: str) -> str:
    """--single_file: `<name>.safetensors`."""
    path = os.path.join(folder, f"{name}.safetensors")
    save_file(sd, path)
    return path


def save_by_block(sd: dict, folder: str) -> str:
    """--save_by_block: block_N.safetensors per `blocks.N.` + non_block.safetensors + index json."""
    groups, non_block = defaultdict(dict), {}
    for key, t in sd.items():
        m = re.search(r"blocks\.(\d+)\.", key)
        (groups[m.group(1)] if m else non_block)[key] = t
    weight_map = {}
    for idx, part in groups.items():
        save_file(part, os.path.join(folder, f"block_{idx}.safetensors"))
        weight_map.update({k: f"block_{idx}.safetensors" for k in part})
    save_file(non_block, os.path.join(folder, "non_block.safetensors"))
    weight_map.update({k: "non_block.safetensors" for k in non_block})
    _index(folder, weight_map)
    return folder


def save_chunked(sd: dict, folder: str, name: str, chunk_size: int) -> str:
    """Default saving (-c N): `<name>_part<i>.safetensors` of chunk_size tensors each + index json."""
    items, weight_map = list(sd.items()), {}
    for i in range(0, len(items), chunk_size):
        fname = f"{name}_part{i // chunk_size}.safetensors"
        save_file(dict(items[i:i + chunk_size]), os.path.join(folder, fname))
        weight_map.update({k: fname for k, _ in items[i:i + chunk_size]})
    _index(folder, weight_map)
    return folder


def save_pth(sd: dict, folder: str, name: str) -> str:
    """-o_e .pth: torch.save of the flat dict."""
    path = os.path.join(folder, f"{name}.pth")
    torch.save(sd, path)
    return path


def wan_t5_state_dict(g, dim=64, ffn=96, heads=4, layers=2, vocab=128, buckets=32, dtype=torch.bfloat16):
    """Wan's umT5 encoder names (lightx2v/models/input_encoders/hf/wan/t5/model.py, shared_pos=False)."""
    r = lambda *s: (torch.randn(*s, generator=g) * 0.1).to(dtype)
    sd = {"token_embedding.weight": r(vocab, dim), "norm.weight": 1 + r(dim)}
    for i in range(layers):
        p = f"blocks.{i}."
        sd.update({p + "norm1.weight": 1 + r(dim), p + "norm2.weight": 1 + r(dim),
                   p + "pos_embedding.embedding.weight": r(buckets, heads),
                   p + "ffn.gate.0.weight": r(ffn, dim), p + "ffn.fc1.weight": r(ffn, dim), p + "ffn.fc2.weight": r(dim, ffn)})
        sd.update({f"{p}attn.{n}.weight": r(dim, dim) for n in "qkvo"})
    return sd


def wan_clip_state_dict(g, dim=64, mlp=128, layers=2, patch=14, image=28, out_dim=32, dtype=torch.float16):
    """Wan's open-clip XLM-RoBERTa ViT-H names (xlm_roberta/model.py VisionTransformer, pool 'token',
    pre_norm, no patch bias) plus a few textual.* keys and log_scale, as in the original .pth."""
    r = lambda *s: (torch.randn(*s, generator=g) * 0.1).to(dtype)
    n = (image // patch) ** 2 + 1
    sd = {"visual.patch_embedding.weight": r(dim, 3, patch, patch), "visual.cls_embedding": r(1, 1, dim),
          "visual.pos_embedding": r(1, n, dim), "visual.pre_norm.weight": 1 + r(dim), "visual.pre_norm.bias": r(dim),
          "visual.post_norm.weight": 1 + r(dim), "visual.post_norm.bias": r(dim), "visual.head": r(dim, out_dim),
          "log_scale": r(()), "textual.token_embedding.weight": r(10, dim), "textual.head.0.weight": r(dim, dim)}
    for i in range(layers):
        p = f"visual.transformer.{i}."
        sd.update({p + "norm1.weight": 1 + r(dim), p + "norm1.bias": r(dim), p + "norm2.weight": 1 + r(dim),
                   p + "norm2.bias": r(dim), p + "attn.to_qkv.weight": r(3 * dim, dim), p + "attn.to_qkv.bias": r(3 * dim),
                   p + "attn.proj.weight": r(dim, dim), p + "attn.proj.bias": r(dim),
                   p + "mlp.0.weight": r(mlp, dim), p + "mlp.0.bias": r(mlp), p + "mlp.2.weight": r(dim, mlp),
                   p + "mlp.2.bias": r(dim)})
    return sd
