"""API-format prompts built from the pack's four nodes plus ComfyUI core nodes (tiny sizes, 2 steps)."""
from __future__ import annotations

import os

import torch
from safetensors.torch import load_file

PROMPT = "a cat walks on the beach at sunset"
SIZE, FRAMES, STEPS = 32, 5, 2


def _sample(model: list, pos: list, neg: list, latent: list) -> dict:
    return {"class_type": "QuantizedSample", "inputs": {
        "model": model, "seed": 7, "steps": STEPS, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple",
        "positive": pos, "negative": neg, "latent_image": latent, "denoise": 1.0}}


def t2v(names: dict, tag: str, dit: str | None = None, mm_type: str = "Default", t5_scheme: str = "Default",
        lora: float = 0.0) -> dict:
    """Text to video: DiT (+ LoRA) and umT5 -> Sample -> SaveLatent."""
    g = {
        "dit": {"class_type": "LoadQuantizedDiT",
                "inputs": {"unet_name": dit or names["dit_t2v"], "mm_type": mm_type, "dtype": "default"}},
        "t5": {"class_type": "LoadQuantizedT5",
               "inputs": {"clip_name": names["t5"], "type": "wan", "quant_scheme": t5_scheme, "dtype": "default"}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": PROMPT, "clip": ["t5", 0]}},
        "empty": {"class_type": "EmptyHunyuanLatentVideo",
                  "inputs": {"width": SIZE, "height": SIZE, "length": FRAMES, "batch_size": 1}},
        "save": {"class_type": "SaveLatent", "inputs": {"samples": ["sample", 0], "filename_prefix": f"latents/{tag}"}},
    }
    model = ["dit", 0]
    if lora:
        g["lora"] = {"class_type": "LoraLoaderModelOnly",
                     "inputs": {"model": model, "lora_name": names["lora"], "strength_model": lora}}
        model = ["lora", 0]
    g["sample"] = _sample(model, ["pos", 0], ["pos", 0], ["empty", 0])
    return g


def i2v(names: dict, tag: str, mm_type: str = "Default", clip_scheme: str = "Default") -> dict:
    """Image to video: CLIP vision + start image through WanImageToVideo -> Sample -> SaveLatent and SaveImage."""
    g = t2v(names, tag, dit=names["dit_i2v"], mm_type=mm_type)
    del g["empty"]
    g.update({
        "clipv": {"class_type": "LoadQuantizedCLIP", "inputs": {"clip_name": names["clip"], "quant_scheme": clip_scheme}},
        "image": {"class_type": "LoadImage", "inputs": {"image": names["image"]}},
        "cvenc": {"class_type": "CLIPVisionEncode", "inputs": {"clip_vision": ["clipv", 0], "image": ["image", 0],
                                                               "crop": "center"}},
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": names["vae"]}},
        "wan": {"class_type": "WanImageToVideo", "inputs": {
            "positive": ["pos", 0], "negative": ["pos", 0], "vae": ["vae", 0], "width": SIZE, "height": SIZE,
            "length": FRAMES, "batch_size": 1, "clip_vision_output": ["cvenc", 0], "start_image": ["image", 0]}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["vae", 0]}},
        "png": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": f"images/{tag}"}},
    })
    g["sample"] = _sample(["dit", 0], ["wan", 0], ["wan", 1], ["wan", 2])
    return g


def latent(output_dir: str, entry: dict) -> torch.Tensor:
    """The latent SaveLatent wrote for a finished prompt."""
    item = entry["outputs"]["save"]["latents"][0]
    return load_file(os.path.join(output_dir, item["subfolder"], item["filename"]))["latent_tensor"].float()


def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    """||a - ref|| / ||ref||."""
    return ((a - ref).norm() / ref.norm()).item()
