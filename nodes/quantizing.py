"""While a loader builds a model: where its float weights are quantized, and ComfyUI's progress bar over them.

Quantizing a bf16 DiT on the host CPU takes minutes (about 37 M parameters/s on two cores); on ComfyUI's GPU
it takes about as long as copying the weights there. Each float weight goes to the GPU alone and is quantized
there, so at most one float layer is on the GPU at a time and the host never holds two copies. Its codes and
scales come back to where ComfyUI keeps the model's weights (the offload device, usually the CPU) unless the
whole quantized model takes at most half of the GPU's free memory (and ComfyUI manages VRAM the classic way:
not --lowvram / --novram, no DynamicVRAM): then they stay on the GPU, where ComfyUI would copy them for the
first sampling anyway (on an H200 a Wan-14B load saves the round trip of 14 GB through host memory).
"""
from __future__ import annotations

import contextlib
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Iterator

import comfy.model_management
import comfy.utils
import torch

try:
    import comfy.memory_management as _memory  # DynamicVRAM (comfy-aimdo), ComfyUI >= 0.4
except ImportError:
    _memory = None

from ..quant.families import ModelFamily, should_quantize
from ..quant.formats import QuantFormat
from ..quant.schemes import Resolved


KEEP_FRACTION = 0.5  # codes stay on the GPU when the quantized model needs at most this share of its free memory


@dataclass(frozen=True)
class Loading:
    """device: where float weights are quantized (None: where they lie); keep: codes stay there;
    bar: one step per quantized layer."""

    device: torch.device | None
    bar: comfy.utils.ProgressBar
    keep: bool = False


_CURRENT: ContextVar[Loading | None] = ContextVar("comfyui_quantized_loading", default=None)


def quantize_device() -> torch.device | None:
    """ComfyUI's compute device when it is a CUDA GPU, else None (quantize on the CPU, where the weights lie)."""
    device = comfy.model_management.get_torch_device()
    return device if device.type == "cuda" else None


def layer_count(sd: dict, family: ModelFamily) -> int:
    """How many weights of `sd` the family quantizes (the progress bar's length)."""
    return sum(1 for k in sd if should_quantize(family, k))


def quantized_bytes(sd: dict, family: ModelFamily, fmt: QuantFormat) -> int:
    """Bytes of the model once quantized: the family's weights as the format's codes, the rest as stored."""
    code_size = fmt.weight_dtype.itemsize
    total = 0
    for k, t in sd.items():
        if should_quantize(family, k) and t.dim() == 2 and t.is_floating_point():
            total += t.shape[0] * fmt.packed_k(t.shape[1]) * code_size
        else:
            total += t.numel() * t.element_size()
    return total


def keep_on_device(device: torch.device | None, model_bytes: int) -> bool:
    """Whether codes quantized on `device` stay there (see the module docstring)."""
    mm = comfy.model_management
    if device is None or getattr(_memory, "aimdo_enabled", False):
        return False
    if mm.vram_state in (mm.VRAMState.LOW_VRAM, mm.VRAMState.NO_VRAM):
        return False
    return model_bytes <= KEEP_FRACTION * mm.get_free_memory(device)


@contextlib.contextmanager
def quantizing(sd: dict, family: ModelFamily, resolved: Resolved) -> Iterator[Loading | None]:
    """Around a ComfyUI loader call: the bridge's linears quantize on quantize_device() and advance the bar
    (nothing when `resolved` is unquantized)."""
    if not resolved.scheme.quantized:
        yield None
        return
    device = quantize_device()
    keep = keep_on_device(device, quantized_bytes(sd, family, resolved.scheme.format))
    token = _CURRENT.set(Loading(device, comfy.utils.ProgressBar(layer_count(sd, family)), keep))
    try:
        yield _CURRENT.get()
    finally:
        _CURRENT.reset(token)


def current() -> Loading | None:
    """The loading in progress (None outside a loader: weights quantize where they lie, no bar)."""
    return _CURRENT.get()
