"""Load LightX2V Config: a LightX2V config JSON -> MODEL, CLIP, CLIP_VISION, MODEL, built by the pack's own loaders.

The config (a file from the `lightx2v_configs` model folder, or pasted JSON) is parsed by
quant.lightx2v.config; each component it names is loaded by the same path-level function the
Load Quantized DiT / T5 / CLIP nodes call. Relative `*_ckpt` paths resolve in ComfyUI's
diffusion_models, text_encoders and clip_vision folders (and the config file's own folder).
A component the config does not name comes out as None: ComfyUI's downstream node says so when
it needs it.

Outputs: `model` is the DiT of a Wan 2.1 (single-DiT) config, and the HIGH-noise expert of a
Wan 2.2 MoE config (`high_noise_{quantized,original}_ckpt`); `low_noise_model` is the Wan 2.2
LOW-noise expert (`low_noise_{quantized,original}_ckpt`), None for a single-DiT config. As in
ComfyUI's Wan 2.2 templates, the high-noise expert samples the first steps and the low-noise
expert the rest (two KSamplerAdvanced with start/end_at_step). Both run the attention kernel the config's
`self_attn_1_type` maps to (quant.lightx2v.config.ATTENTION_NAMES; `auto` where none applies).
"""
from __future__ import annotations

import logging
import os

import comfy.model_management
import folder_paths

from ..quant.lightx2v.config import Component, ConfigError, parse_config
from .attention import with_attention
from .common import CATEGORY, DTYPES
from .load_clip_vision import load_clip_vision_path
from .load_dit import load_dit_path
from .load_t5 import load_t5_path

log = logging.getLogger(__name__)

NODE = "Load LightX2V Config"
FOLDER = "lightx2v_configs"
NONE = "(none: use the text below)"
MODEL_FOLDERS = ("diffusion_models", "text_encoders", "clip_vision")


def _register_folder() -> None:
    """ComfyUI model folder `lightx2v_configs` (models/lightx2v_configs/, .json files)."""
    if FOLDER in folder_paths.folder_names_and_paths:
        paths, exts = folder_paths.folder_names_and_paths[FOLDER]
        folder_paths.folder_names_and_paths[FOLDER] = (paths, set(exts) | {".json"})
    else:
        folder_paths.folder_names_and_paths[FOLDER] = ([os.path.join(folder_paths.models_dir, FOLDER)], {".json"})


_register_folder()
_LOGGED: set = set()


def _once(level: int, msg: str) -> None:
    if msg not in _LOGGED:
        _LOGGED.add(msg)
        log.log(level, "[quantized] %s", msg)


def model_dirs() -> list[str]:
    """Folders relative `*_ckpt` paths may be relative to: ComfyUI's DiT, text encoder and CLIP vision folders."""
    dirs = []
    for folder in MODEL_FOLDERS:
        dirs += [d for d in folder_paths.get_folder_paths(folder) if d not in dirs]
    return dirs


def _dit(path: str, scheme: str, dtype: str):
    return load_dit_path(path=path, mm_type=scheme, dtype=dtype)


def _load(component: str, comp: Component, loader, *args):
    """Run a loader; its errors name the config fields they come from."""
    try:
        return loader(comp.ckpt, comp.scheme, *args)
    except Exception as e:
        fields = " / ".join(f"'{f}'" for f in (comp.scheme_field, comp.ckpt_field) if f)
        raise ValueError(f"{NODE}: {component} (config field {fields}): {e}") from e


class LoadLightX2VConfig:
    """MODEL / CLIP / CLIP_VISION from a LightX2V config, each in the scheme the config names."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {
            "config_name": ([NONE, *folder_paths.get_filename_list(FOLDER)],
                            {"tooltip": "a LightX2V config from models/lightx2v_configs/"}),
            "config_text": ("STRING", {"multiline": True, "default": "",
                                       "tooltip": "or paste the config JSON here (used when not empty)"}),
            "dtype": (list(DTYPES), {"default": "default", "tooltip": "compute dtype of the layers kept unquantized"}),
        }}

    RETURN_TYPES = ("MODEL", "CLIP", "CLIP_VISION", "MODEL")
    RETURN_NAMES = ("model", "clip", "clip_vision", "low_noise_model")
    OUTPUT_TOOLTIPS = ("the DiT; for a Wan 2.2 config the HIGH-noise expert (first steps)",
                       "the T5 text encoder (None when the config names none)",
                       "the CLIP vision encoder for I2V (None when the config names none)",
                       "Wan 2.2 configs: the LOW-noise expert (last steps); None for single-DiT configs")
    FUNCTION = "load"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Load the DiT, T5 and CLIP a LightX2V config names (its pre-quantized files, its schemes). "
                   "model: the DiT, or for a Wan 2.2 config the high-noise expert (first steps); "
                   "low_noise_model: the Wan 2.2 low-noise expert (last steps), None for single-DiT configs. "
                   "CLIP / CLIP_VISION are None when the config names no such model.")

    def load(self, config_name: str, config_text: str, dtype: str) -> tuple:
        if config_text.strip():
            source, label = config_text, "pasted config"
        elif config_name and config_name != NONE:
            source = label = folder_paths.get_full_path_or_raise(FOLDER, config_name)
        else:
            raise ConfigError(f"{NODE}: pick a config file or paste the config JSON")
        cfg = parse_config(source, model_dirs(), comfy.model_management.get_torch_device())
        if cfg.unused:
            _once(logging.INFO, f"{label}: fields not used by ComfyUI: {', '.join(cfg.unused)}")
        for msg in cfg.messages:
            _once(logging.WARNING, f"{label}: {msg}")
        low = None
        if cfg.high_noise or cfg.low_noise:  # Wan 2.2 MoE: model = high-noise expert, low_noise_model = low-noise
            for comp, name in ((cfg.high_noise, "high_noise"), (cfg.low_noise, "low_noise")):
                if comp is None:
                    raise ConfigError(f"{NODE}: a Wan 2.2 config needs both experts; config field "
                                      f"'{name}_{'quantized' if cfg.dit.quantized else 'original'}_ckpt' is missing")
            if cfg.dit.ckpt is not None:
                _once(logging.WARNING, f"{label}: Wan 2.2 config: '{cfg.dit.ckpt_field}' is not used "
                                       "(the high/low-noise expert files are)")
            model = _load("high-noise DiT", cfg.high_noise, _dit, dtype)
            low = with_attention(_load("low-noise DiT", cfg.low_noise, _dit, dtype), cfg.attention, NODE)
        elif cfg.dit.ckpt is None:
            raise ConfigError(f"{NODE}: the config names no DiT file (config field "
                              f"'{'dit_quantized_ckpt' if cfg.dit.quantized else 'dit_original_ckpt'}')")
        else:
            model = _load("DiT", cfg.dit, _dit, dtype)
        model = with_attention(model, cfg.attention, NODE)
        clip = _load("T5", cfg.t5, lambda p, s: load_t5_path(path=p, type="wan", quant_scheme=s, dtype=dtype)) if cfg.t5.ckpt else None
        vision = _load("CLIP", cfg.clip, lambda p, s: load_clip_vision_path(path=p, quant_scheme=s)) if cfg.clip.ckpt else None
        for what, value in (("T5 (CLIP output)", clip), ("CLIP vision (CLIP_VISION output)", vision)):
            if value is None:
                _once(logging.INFO, f"{label}: no {what} file named; that output is None")
        return (model, clip, vision, low)
