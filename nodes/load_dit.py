"""Load Quantized DiT: a diffusion transformer (Wan 2.1/2.2, Flux, ...) -> MODEL with quantized linears."""
from __future__ import annotations

import inspect
import logging

import comfy.sd

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

log = logging.getLogger(__name__)

NODE = "Load Quantized DiT"
_TAKES_METADATA = "metadata" in inspect.signature(comfy.sd.load_diffusion_model_state_dict).parameters


class LoadQuantizedDiT:
    """Builds the model with ComfyUI's own loader, every quantizable linear in the chosen mm_type."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {
            "unet_name": (model_files("diffusion_models"), {"tooltip": "bf16/fp16/fp32 or quantized checkpoint"}),
            "mm_type": (names("mm_type"), {"default": "auto", "tooltip": "auto: the file's format, or this GPU's fastest"}),
            "dtype": (list(DTYPES), {"default": "default", "tooltip": "compute dtype of the layers kept unquantized"}),
        }}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "load"
    CATEGORY = CATEGORY
    DESCRIPTION = "Load a DiT with low-precision (int8 / fp8 / mxfp8 / nvfp4) linear layers."

    def load(self, unet_name: str, mm_type: str, dtype: str) -> tuple:
        sd, det, meta = read_checkpoint(model_path("diffusion_models", unet_name))
        family = check_family(sd, ("wan_dit", "flux_dit"), NODE, unet_name)
        resolved = resolve_scheme(mm_type, "mm_type", det)
        options = {"dtype": DTYPES[dtype]} if DTYPES[dtype] is not None else {}
        if resolved.scheme.quantized:
            options["custom_operations"] = make_ops(resolved, family)
        extra = {"metadata": meta or None} if _TAKES_METADATA else {}  # ComfyUI < 0.4 has no metadata argument
        model = comfy.sd.load_diffusion_model_state_dict(sd, model_options=options, **extra)
        if model is None:
            raise ValueError(f"{NODE}: ComfyUI cannot tell which model {unet_name} is")
        log.info("[quantized] %s: %s file (%s), running %s", unet_name, det.layout, det.format or "float",
                     resolved.label)
        return (model,)
