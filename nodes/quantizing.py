"""While a loader builds a model: where its float weights are quantized, and ComfyUI's progress bar over them.

Quantizing a bf16 DiT on the host CPU takes minutes (about 37 M parameters/s on two cores); on ComfyUI's GPU
it takes about as long as copying the weights there. Each float weight goes to the GPU alone, is quantized
there, and its codes and scales come back to where ComfyUI keeps the model's weights (the offload device,
usually the CPU), so at most one float layer is on the GPU at a time and the host never holds two copies.
"""
from __future__ import annotations

import contextlib
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Iterator

import comfy.model_management
import comfy.utils
import torch

from ..quant.families import ModelFamily, should_quantize
from ..quant.schemes import Resolved


@dataclass(frozen=True)
class Loading:
    """device: where float weights are quantized (None: where they lie); bar: one step per quantized layer."""

    device: torch.device | None
    bar: comfy.utils.ProgressBar


_CURRENT: ContextVar[Loading | None] = ContextVar("comfyui_quantized_loading", default=None)


def quantize_device() -> torch.device | None:
    """ComfyUI's compute device when it is a CUDA GPU, else None (quantize on the CPU, where the weights lie)."""
    device = comfy.model_management.get_torch_device()
    return device if device.type == "cuda" else None


def layer_count(sd: dict, family: ModelFamily) -> int:
    """How many weights of `sd` the family quantizes (the progress bar's length)."""
    return sum(1 for k in sd if should_quantize(family, k))


@contextlib.contextmanager
def quantizing(sd: dict, family: ModelFamily, resolved: Resolved) -> Iterator[Loading | None]:
    """Around a ComfyUI loader call: the bridge's linears quantize on quantize_device() and advance the bar
    (nothing when `resolved` is unquantized)."""
    if not resolved.scheme.quantized:
        yield None
        return
    token = _CURRENT.set(Loading(quantize_device(), comfy.utils.ProgressBar(layer_count(sd, family))))
    try:
        yield _CURRENT.get()
    finally:
        _CURRENT.reset(token)


def current() -> Loading | None:
    """The loading in progress (None outside a loader: weights quantize where they lie, no bar)."""
    return _CURRENT.get()
