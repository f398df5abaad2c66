"""Load Quantized DiT: a diffusion transformer (Wan 2.1/2.2, Flux, ...) -> MODEL with quantized linears."""
from __future__ import annotations

import inspect
import logging
import os

import comfy.sd

from ..quant.attention import AUTO
from ..quant.attention import names as attention_names
from ..quant.formats import get_format
from ..quant.schemes import names
from ..quant.lightx2v.smoothing import fold_smoothing, has_smoothing
from .common import (
    CATEGORY,
    DIT_FAMILIES,
    DTYPES,
    check_family,
    model_files,
    model_path,
    read_checkpoint,
    resolve_scheme,
)
from .attention import TOOLTIP as ATTENTION_TOOLTIP
from .attention import with_attention
from .ops import make_ops
from .quantizing import quantizing

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
        }, "optional": {
            "attention": (attention_names(), {"default": AUTO, "tooltip": ATTENTION_TOOLTIP}),
        }}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "load"
    CATEGORY = CATEGORY
    DESCRIPTION = "Load a DiT with low-precision (int8 / fp8 / mxfp8 / nvfp4) linear layers."

    def load(self, unet_name: str, mm_type: str, dtype: str, attention: str = AUTO) -> tuple:
        model = load_dit_path(model_path("diffusion_models", unet_name), mm_type, dtype, unet_name)
        return (with_attention(model, attention, NODE),)


def load_dit_path(path: str, mm_type: str, dtype: str, name: str | None = None,
                  disable_dynamic: bool = False) -> comfy.model_patcher.ModelPatcher:
    """MODEL from a DiT file or sharded folder: `mm_type` a name of the mm_type table, `dtype` a DTYPES key.

    LightCompress (LLMC) smoothing factors, when the file holds them, are folded into the linears first.
    The MODEL carries ComfyUI's `cached_patcher_init` (this function and its arguments), so core can load it
    afresh where it needs its own copy: MultiGPU CFG Split and Select Model Device (one per GPU),
    TorchCompileModel's non-dynamic clone (with `disable_dynamic`).
    """
    name = name or os.path.basename(path.rstrip("/"))
    sd, det, meta = read_checkpoint(path)
    if has_smoothing(sd):
        sd = fold_smoothing(sd, get_format(det.format) if det.format else None)
        log.info("[quantized] %s: LLMC smoothing factors folded into the linears", name)
    family = check_family(sd, DIT_FAMILIES, NODE, name)
    resolved = resolve_scheme(mm_type, "mm_type", det)
    options = {"dtype": DTYPES[dtype]} if DTYPES[dtype] is not None else {}
    if resolved.scheme.quantized:
        options["custom_operations"] = make_ops(resolved, family)
    extra = {"metadata": meta or None} if _TAKES_METADATA else {}  # ComfyUI < 0.4 has no metadata argument
    if disable_dynamic:  # only ever asked for by a ComfyUI whose loader takes it
        extra["disable_dynamic"] = True
    with quantizing(sd, family, resolved):
        model = comfy.sd.load_diffusion_model_state_dict(sd, model_options=options, **extra)
    if model is None:
        raise ValueError(f"{NODE}: ComfyUI cannot tell which model {name} is")
    log.info("[quantized] %s: %s file (%s), running %s", name, det.layout, det.format or "float", resolved.label)
    model.cached_patcher_init = (load_dit_path, (path, mm_type, dtype, name))
    return model
