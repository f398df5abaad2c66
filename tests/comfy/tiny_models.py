"""Tiny random models built with ComfyUI's real classes, saved where ComfyUI's loaders find them.

Needs `comfy` importable (ComfyUI root on sys.path, comfy.cli_args.args.cpu set before use).
"""
from __future__ import annotations

import io
import json
import os

import torch
from safetensors.torch import save_file

DIM, FFN, TEXT_DIM, CLIP_DIM = 128, 256, 64, 1280
SENTENCES = ["a cat walks on the beach at sunset", "a red car drives through the city at night",
             "a dog runs in the green park", "waves crash on the rocks under a blue sky",
             "an old man reads a book by the window", "two birds fly over the snowy mountains"]


def randomize(sd: dict, seed: int) -> dict:
    """Replace every tensor by a well-scaled random one (norm gains 1, weights ~ 1/sqrt(fan_in))."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in sd.items():
        shape = tuple(v.shape)
        if k.endswith(("gamma", "norm.weight", "norm1.weight", "norm2.weight", "norm3.weight", "norm_q.weight",
                       "norm_k.weight", "norm_k_img.weight", "layer_norm.weight", "final_layer_norm.weight",
                       "layer_norm1.weight", "layer_norm2.weight", "pre_layrnorm.weight", "post_layernorm.weight")) \
                or (k.startswith("img_emb.proj.") and k.endswith(("0.weight", "4.weight"))):
            t = torch.ones(shape)
        elif v.dim() <= 1:
            t = torch.randn(shape, generator=g) * 0.02
        else:
            fan_in = max(1, v[0].numel())
            t = torch.randn(shape, generator=g) / fan_in ** 0.5
        out[k] = t
    return out


def wan_dit(path: str, i2v: bool = False) -> None:
    """A 2-block Wan 2.1 DiT (T2V, or I2V with img_emb / k_img / v_img), bf16."""
    import comfy.ops
    from comfy.ldm.wan.model import WanModel
    m = WanModel(model_type="i2v" if i2v else "t2v", in_dim=36 if i2v else 16, dim=DIM, ffn_dim=FFN, text_dim=TEXT_DIM,
                 num_heads=DIM // 128, num_layers=2, operations=comfy.ops.manual_cast)
    sd = randomize(m.state_dict(), 1 + i2v)
    sd = {k: (v * 0.3 if "modulation" in k else v).to(torch.bfloat16) for k, v in sd.items()}
    save_file(sd, path, metadata={"config": json.dumps({"transformer": {"text_dim": TEXT_DIM}})})


def flux_dit(path: str) -> None:
    """A Flux-dev-shaped DiT (1 double + 1 single block, hidden 128 = one head), bf16."""
    import comfy.ops
    from comfy.ldm.flux.model import Flux
    m = Flux(operations=comfy.ops.manual_cast, in_channels=16, out_channels=16, vec_in_dim=32, context_in_dim=64,
             hidden_size=128, mlp_ratio=4.0, num_heads=1, depth=1, depth_single_blocks=1, axes_dim=[16, 56, 56],
             theta=10000, patch_size=2, qkv_bias=True, guidance_embed=True, txt_ids_dims=[])
    save_file({k: v.to(torch.bfloat16) for k, v in randomize(m.state_dict(), 9).items()}, path)


def spiece_model() -> torch.Tensor:
    """A tiny sentencepiece model with umT5's special ids (pad 0, eos 1, unk 2), as uint8 bytes."""
    import sentencepiece as spm
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(SENTENCES * 20), model_writer=buf, vocab_size=60,
                                   model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                   hard_vocab_limit=False, minloglevel=2)
    return torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)


def umt5(path: str, d_model: int = TEXT_DIM, num_layers: int = 2) -> None:
    """A umT5 (default: 2 layers, d_model 64) in ComfyUI's key names with its tokenizer inside (`spiece_model`)."""
    import comfy.ops
    from comfy.text_encoders.t5 import T5
    cfg = {"d_ff": 128, "d_kv": 32, "d_model": d_model, "num_heads": 2, "num_layers": num_layers, "vocab_size": 64,
           "model_type": "umt5", "is_gated_act": True, "dense_act_fn": "gelu_pytorch_tanh"}
    m = T5(cfg, torch.float32, "cpu", comfy.ops.manual_cast)
    sd = {k: v.to(torch.bfloat16) for k, v in randomize(m.state_dict(), 3).items()}
    sd["spiece_model"] = spiece_model()
    save_file(sd, path)


def clip_vision(path: str) -> None:
    """A 2-layer CLIP vision tower with ViT-H's width (1280, as Wan I2V needs), 28 px images, fp16."""
    import comfy.clip_model
    import comfy.ops
    with open(os.path.join(os.path.dirname(comfy.clip_model.__file__), "clip_vision_config_h.json")) as f:
        cfg = json.load(f)
    cfg.update(num_hidden_layers=2, intermediate_size=128, image_size=28)
    m = comfy.clip_model.CLIPVisionModelProjection(cfg, torch.float32, "cpu", comfy.ops.manual_cast)
    save_file({k: v.to(torch.float16) for k, v in randomize(m.state_dict(), 4).items()}, path)


def wan_vae(path: str) -> None:
    """A Wan 2.1 VAE with base width 8 (ComfyUI reads the width from the weights)."""
    from comfy.ldm.wan.vae import WanVAE
    m = WanVAE(dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
               temperal_downsample=[False, True, True])
    save_file({k: v.contiguous() for k, v in randomize(m.state_dict(), 5).items()}, path)


def wan_lora(path: str, rank: int = 4) -> None:
    """A rank-4 LoRA on every quantizable linear of the tiny Wan DiT (generic diffusion_model.* keys), strong:
    at strength 1 its update has ~4x the RMS of the weight (up 2.0 * N(0,1), down N(0,1)/sqrt(K), alpha = rank),
    so a merge that keeps the weight's old scales saturates visibly (issue 15.1)."""
    g = torch.Generator().manual_seed(6)
    sd = {}
    for b in range(2):
        layers = [(f"self_attn.{n}", DIM, DIM) for n in "qkvo"] + [(f"cross_attn.{n}", DIM, DIM) for n in "qkvo"]
        for name, n_out, n_in in layers + [("ffn.0", FFN, DIM), ("ffn.2", DIM, FFN)]:
            key = f"diffusion_model.blocks.{b}.{name}"
            sd[key + ".lora_up.weight"] = torch.randn(n_out, rank, generator=g) * 2.0
            sd[key + ".lora_down.weight"] = torch.randn(rank, n_in, generator=g) / n_in ** 0.5
            sd[key + ".alpha"] = torch.tensor(float(rank))
    save_file(sd, path)


def int8_lightx2v(src: str, path: str) -> None:
    """The DiT at src with its quantizable linears in LightX2V int8 (weight int8 + weight_scale [N, 1])."""
    from safetensors import safe_open
    qmax = 127.0
    out, meta = {}, None
    with safe_open(src, "pt") as f:
        meta = f.metadata()
        for k in f.keys():  # noqa: SIM118 (safe_open is not a dict)
            t = f.get_tensor(k)
            if k.startswith("blocks.") and (".self_attn." in k or ".cross_attn." in k or ".ffn." in k) \
                    and k.endswith(".weight") and t.dim() == 2:
                s = t.float().abs().amax(1, keepdim=True).clamp(min=1e-12) / qmax
                out[k], out[k + "_scale"] = (t.float() / s).round().clamp(-qmax, qmax).to(torch.int8), s
            else:
                out[k] = t
    save_file(out, path, metadata=meta)


def make_missing(models: str, names: dict, folders: dict, makers: dict) -> dict:
    """Each file names[key] under models/folders[key]/, made by makers[key](path) when absent; returns names."""
    for key, name in names.items():
        os.makedirs(os.path.join(models, folders[key]), exist_ok=True)
        path = os.path.join(models, folders[key], name)
        if not os.path.exists(path):
            makers[key](path)
    return dict(names)


def make_all(models: str, input_dir: str) -> dict:
    """Every tiny model under models/<folder>/ and a start image in input_dir; returns their names."""
    names = {"dit_t2v": "tiny_wan_t2v.safetensors", "dit_i2v": "tiny_wan_i2v.safetensors",
             "dit_int8": "tiny_wan_t2v_int8.safetensors", "flux": "tiny_flux.safetensors",
             "t5": "tiny_umt5.safetensors",
             "clip": "tiny_clip_vision.safetensors", "vae": "tiny_wan_vae.safetensors", "lora": "tiny_wan_lora.safetensors",
             "truncated": "truncated_wan.safetensors", "image": "start.png"}
    folders = {**{k: "diffusion_models" for k in ("dit_t2v", "dit_i2v", "dit_int8", "flux", "truncated")},
               "t5": "text_encoders", "clip": "clip_vision", "vae": "vae", "lora": "loras"}
    for f in set(folders.values()):
        os.makedirs(os.path.join(models, f), exist_ok=True)
    p = {k: os.path.join(models, folders[k], v) for k, v in names.items() if k in folders}
    wan_dit(p["dit_t2v"])
    wan_dit(p["dit_i2v"], i2v=True)
    int8_lightx2v(p["dit_t2v"], p["dit_int8"])
    flux_dit(p["flux"])
    umt5(p["t5"])
    clip_vision(p["clip"])
    wan_vae(p["vae"])
    wan_lora(p["lora"])
    with open(p["dit_t2v"], "rb") as f:
        data = f.read()
    with open(p["truncated"], "wb") as f:
        f.write(data[: len(data) // 2])
    os.makedirs(input_dir, exist_ok=True)
    from PIL import Image
    g = torch.Generator().manual_seed(7)
    img = (torch.rand(32, 32, 3, generator=g) * 255).to(torch.uint8).numpy()
    Image.fromarray(img).save(os.path.join(input_dir, names["image"]))
    return names
