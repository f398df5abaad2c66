"""Load Quantized T5: umT5-XXL (Wan) or T5-XXL (+ CLIP-L for Flux) text encoders -> CLIP with real low-precision matmuls."""
from __future__ import annotations

import glob
import logging
import os

import comfy.sd
import comfy.text_encoders.flux
import comfy.text_encoders.genmo
import comfy.text_encoders.pixart_t5
import comfy.text_encoders.sd3_clip
import comfy.text_encoders.wan
import comfy.utils
import folder_paths
import torch

from ..quant.lightx2v.keys import to_comfy
from ..quant.schemes import names
from .common import (
    CATEGORY,
    DTYPES,
    check_family,
    model_files,
    model_path,
    read_checkpoint,
    resolve_scheme,
)
from .ops import make_ops
from .quantizing import quantizing

log = logging.getLogger(__name__)

NODE = "Load Quantized T5"
# encoder type -> (text encoder class factory, tokenizer, model name used by model_options overrides)
TYPES = {
    "wan": (comfy.text_encoders.wan.te, comfy.text_encoders.wan.WanT5Tokenizer, "umt5xxl"),
    "sd3": (lambda: comfy.text_encoders.sd3_clip.sd3_clip(clip_l=False, clip_g=False, t5=True),
            comfy.text_encoders.sd3_clip.SD3Tokenizer, "t5xxl"),
    "mochi": (comfy.text_encoders.genmo.mochi_te, comfy.text_encoders.genmo.MochiT5Tokenizer, "t5xxl"),
    "pixart": (comfy.text_encoders.pixart_t5.pixart_te, comfy.text_encoders.pixart_t5.PixArtTokenizer, "t5xxl"),
    # T5-XXL + CLIP-L: built by comfy.sd.load_text_encoder_state_dicts(clip_type=FLUX) (FluxClipModel, FluxTokenizer).
    "flux": (comfy.text_encoders.flux.flux_clip, comfy.text_encoders.flux.FluxTokenizer, "t5xxl"),
}
NONE = "none"
_BLOCK = "encoder.block.{}.layer.{}."


def t5_config(sd: dict) -> dict:
    """The T5 config read off the tensor shapes (so any size loads, not only the XXL ones ComfyUI detects)."""
    layers = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("encoder.block."))
    att, ff = _BLOCK.format(0, 0) + "SelfAttention.", _BLOCK.format(0, 1) + "DenseReluDense."
    heads = sd[att + "relative_attention_bias.weight"].shape[1]
    wi = sd.get(ff + "wi_0.weight", sd.get(ff + "wi.weight"))
    return {"num_layers": layers, "d_model": sd["shared.weight"].shape[1], "vocab_size": sd["shared.weight"].shape[0],
            "num_heads": heads, "d_kv": sd[att + "q.weight"].shape[0] // heads, "d_ff": wi.shape[0]}


def _spiece(sd: dict, path: str):
    """umT5's sentencepiece model: inside the file (`spiece_model`) or a *.model file beside it."""
    if "spiece_model" in sd:
        return sd.pop("spiece_model")
    here = os.path.dirname(path)
    found = sorted(glob.glob(os.path.join(here, "*.model")) + glob.glob(os.path.join(here, "**", "spiece.model"), recursive=True))
    if not found:
        raise ValueError(f"{NODE}: {os.path.basename(path)} has no umT5 tokenizer: it holds no 'spiece_model' "
                         f"tensor and no spiece.model lies beside it")
    with open(found[0], "rb") as f:
        return torch.frombuffer(bytearray(f.read()), dtype=torch.uint8)


class LoadQuantizedT5:
    """umT5 / T5 encoder built by ComfyUI, its attention and FFN linears in the chosen quant_scheme."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {
            "clip_name": (model_files("text_encoders"),),
            "type": (list(TYPES), {"default": "wan", "tooltip": "wan = umT5-XXL; flux = T5-XXL + CLIP-L (pick clip_l_name); the others = T5-XXL"}),
            "quant_scheme": (names("quant_scheme"), {"default": "auto"}),
            "dtype": (list(DTYPES), {"default": "default", "tooltip": "dtype of the layers kept unquantized"}),
        }, "optional": {
            "clip_l_name": ([NONE, *model_files("text_encoders")], {
                "default": NONE, "tooltip": "type flux only: the CLIP-L file (clip_l.safetensors) giving Flux its pooled "
                                            "vector; it loads as ComfyUI loads it (not quantized)"}),
        }}

    RETURN_TYPES = ("CLIP",)
    FUNCTION = "load"
    CATEGORY = CATEGORY
    DESCRIPTION = "Load a umT5/T5 text encoder whose linears run in int8 or fp8."

    def load(self, clip_name: str, type: str, quant_scheme: str, dtype: str, clip_l_name: str = NONE) -> tuple:
        clip_l_path = None if clip_l_name in (None, "", NONE) else model_path("text_encoders", clip_l_name)
        return (load_t5_path(model_path("text_encoders", clip_name), type, quant_scheme, dtype, clip_name,
                             clip_l_path=clip_l_path),)


def clip_l_config(sd: dict) -> dict:
    """CLIP-L text config overrides read off the tensor shapes (the real clip_l.safetensors gives core's values)."""
    emb = sd["text_model.embeddings.token_embedding.weight"]
    layers = 1 + max(int(k.split(".")[3]) for k in sd if k.startswith("text_model.encoder.layers."))
    return {"hidden_size": emb.shape[1], "vocab_size": emb.shape[0], "num_hidden_layers": layers,
            "intermediate_size": sd["text_model.encoder.layers.0.mlp.fc1.weight"].shape[0],
            "max_position_embeddings": sd["text_model.embeddings.position_embedding.weight"].shape[0]}


def _check_clip_l(type: str, clip_l_path: str | None) -> None:
    if type == "flux" and clip_l_path is None:
        raise ValueError(f"{NODE}: Flux needs CLIP-L: choose clip_l.safetensors (folder models/text_encoders) as "
                         f"clip_l_name")
    if type != "flux" and clip_l_path is not None:
        raise ValueError(f"{NODE}: clip_l_name is used only with type flux (type is {type}); set clip_l_name to "
                         f"{NONE} or type to flux")


def load_t5_path(path: str, type: str, quant_scheme: str, dtype: str, name: str | None = None,
                 clip_l_path: str | None = None) -> comfy.sd.CLIP:
    """CLIP (text encoder) from a T5 file: ComfyUI or Wan-native (LightX2V `.pth`) key names.

    type flux: T5-XXL + the CLIP-L at clip_l_path, assembled by ComfyUI's own Flux path
    (load_text_encoder_state_dicts, CLIPType.FLUX); only the T5 linears match the quantized family.
    """
    _check_clip_l(type, clip_l_path)
    name = name or os.path.basename(path)
    sd, det, _ = read_checkpoint(path)
    sd = to_comfy(sd, "wan_t5")
    family = check_family(sd, ("wan_t5",), NODE, name)
    resolved = resolve_scheme(quant_scheme, "quant_scheme", det)
    factory, tokenizer, model_name = TYPES[type]
    tokenizer_data = {"spiece_model": _spiece(sd, path)} if type == "wan" else {}
    options = {f"{model_name}_model_config": t5_config(sd)}
    if DTYPES[dtype] is not None:
        options["dtype"] = DTYPES[dtype]
    if resolved.scheme.quantized:
        options["custom_operations"] = make_ops(resolved, family)
    with quantizing(sd, family, resolved):
        if type == "flux":
            return _load_flux(sd, clip_l_path, options, name, det, resolved)
        clip = comfy.sd.CLIP(type_target(factory, tokenizer),
                             embedding_directory=folder_paths.get_folder_paths("embeddings"),
                             parameters=comfy.utils.calculate_parameters(sd), tokenizer_data=tokenizer_data,
                             state_dict=[sd], model_options=options)
    log.info("[quantized] %s: %s file (%s), running %s", name, det.layout, det.format or "float", resolved.label)
    return clip


def _load_flux(t5_sd: dict, clip_l_path: str, options: dict, name: str, det, resolved):
    """T5-XXL + CLIP-L through core's CLIPType.FLUX branch, with this pack's model_options."""
    clip_l_sd = comfy.utils.load_torch_file(clip_l_path, safe_load=True)
    if "transformer.resblocks.0.ln_1.weight" in clip_l_sd:  # open-clip names: core converts them as well
        clip_l_sd = comfy.utils.clip_text_transformers_convert(clip_l_sd, "", "")
    if comfy.sd.detect_te_model(clip_l_sd) != comfy.sd.TEModel.CLIP_L:
        raise ValueError(f"{NODE}: {os.path.basename(clip_l_path)} is not a CLIP-L text encoder (no "
                         f"text_model.encoder.layers.*); choose clip_l.safetensors as clip_l_name")
    # Core's model_options_long_clip rebuilds clip_l_model_config from options["model_config"] (plus the file's
    # position count), so the shape-read config goes there; the real clip_l.safetensors reads core's defaults.
    options["model_config"] = clip_l_config(clip_l_sd)
    clip = comfy.sd.load_text_encoder_state_dicts(
        [t5_sd, clip_l_sd], embedding_directory=folder_paths.get_folder_paths("embeddings"),
        clip_type=comfy.sd.CLIPType.FLUX, model_options=options)
    log.info("[quantized] %s + %s: %s file (%s), T5 running %s, CLIP-L as core loads it", name,
             os.path.basename(clip_l_path), det.layout, det.format or "float", resolved.label)
    return clip


def type_target(factory, tokenizer) -> object:
    """The clip_target object comfy.sd.CLIP expects (clip class, tokenizer class, params)."""
    target = type("ClipTarget", (), {})()
    target.clip, target.tokenizer, target.params = factory(), tokenizer, {}
    return target
