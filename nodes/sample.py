"""Sample: ComfyUI's own KSampler (every sampler and scheduler) plus a report of speed, memory and kernels."""
from __future__ import annotations

import logging
import time

import comfy.model_management
import comfy.samplers
import torch

import nodes as comfy_nodes

from .attention import RAN as ATTENTION_RAN
from .attention import report as attention_report
from .common import CATEGORY
from .ops import RAN, uncounted

log = logging.getLogger(__name__)


def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> float | None:
    """Peak allocated VRAM since the reset; None off CUDA (no VRAM figure to give)."""
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


_WRAPPER_KEY = "comfyui_quantized.sample_timer"
try:  # The wrapper around the sampler's loop alone (after model loading and LoRA patching).
    from comfy.patcher_extension import WrappersMP
    _SAMPLER_SAMPLE = getattr(WrappersMP, "SAMPLER_SAMPLE", None)
except ImportError:  # very old ComfyUI: the node's whole time is reported instead
    _SAMPLER_SAMPLE = None


def _sync() -> None:
    """Waits for the work queued on the device. Kernels run asynchronously: a clock read without this stops while
    the GPU still runs up to a whole step the CPU queued ahead (measured: a Wan step reported 0.3 s of 0.6)."""
    sync = getattr(comfy.model_management, "synchronize", None)  # CUDA, XPU, nothing on the CPU; torch.cuda if absent
    if sync is not None:
        sync()
    elif torch.cuda.is_available():
        torch.cuda.synchronize()


class _StepTimer:
    """A SAMPLER_SAMPLE wrapper: adds up the seconds spent inside the sampler's loop (the steps only), from an
    idle device to the end of the last step's work on it."""

    def __init__(self) -> None:
        self.seconds, self.calls = 0.0, 0

    def __call__(self, executor, *args, **kwargs):
        _sync()
        start = time.perf_counter()
        try:
            return executor(*args, **kwargs)
        finally:
            _sync()
            self.seconds += time.perf_counter() - start
            self.calls += 1


def report(per_step: float, peak_gib: float | None, kernels: dict, device_type: str = "cuda") -> str:
    """One line: seconds per sampling step (loading and LoRA patching excluded), peak VRAM (or the device, e.g.
    "CPU", when there is no VRAM figure), kernels (calls each)."""
    ran = ", ".join(f"{k} x{n}" if n else k for k, n in sorted(kernels.items())) or "none (unquantized)"
    memory = f"peak VRAM {peak_gib:.2f} GiB" if peak_gib is not None else device_type.upper()
    return f"{per_step:.3f} s/step, {memory}, kernels: {ran}"


class QuantizedSample:
    """KSampler with a report; works with any MODEL (quantized or not)."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {
            "model": ("MODEL",),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True}),
            "steps": ("INT", {"default": 20, "min": 1, "max": 10000}),
            "cfg": ("FLOAT", {"default": 5.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}),
            "sampler_name": (comfy.samplers.KSampler.SAMPLERS,),
            "scheduler": (comfy.samplers.KSampler.SCHEDULERS,),
            "positive": ("CONDITIONING",),
            "negative": ("CONDITIONING",),
            "latent_image": ("LATENT",),
            "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}),
        }}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "sample"
    CATEGORY = CATEGORY
    DESCRIPTION = "KSampler that reports seconds per step, peak VRAM and which quantized and attention kernels ran."

    def sample(self, model, seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str,
               positive, negative, latent_image: dict, denoise: float = 1.0) -> dict:
        device = comfy.model_management.get_torch_device()
        _peak_reset(device)
        RAN.clear()
        ATTENTION_RAN.clear()
        timer = _StepTimer()
        timed = _SAMPLER_SAMPLE is not None and hasattr(model, "add_wrapper_with_key")
        if timed:
            model.add_wrapper_with_key(_SAMPLER_SAMPLE, _WRAPPER_KEY, timer)
        start = time.perf_counter()
        try:
            (latent,) = comfy_nodes.common_ksampler(model, seed, steps, cfg, sampler_name, scheduler, positive,
                                                    negative, latent_image, denoise=denoise)
        finally:
            _sync()
            total = time.perf_counter() - start
            if timed:
                model.remove_wrappers_with_key(_SAMPLER_SAMPLE, _WRAPPER_KEY)
        seconds = timer.seconds if timer.calls else total  # no wrapper support: the whole node's time
        # Nothing counted but quantized layers present: they ran compiled (counting stays out of compiled code).
        kernels = dict(RAN) or uncounted(model.model, model.load_device)
        per_step, peak = seconds / max(steps, 1), _peak_gib(device)
        attention = dict(ATTENTION_RAN)
        text = report(per_step, peak, kernels, device.type) + attention_report(attention)
        log.info("[quantized] Sample: %s", text)
        ui = {"text": [text], "seconds_per_step": [per_step], "seconds_total": [total], "peak_vram_gb": [peak],
              "device": [device.type], "kernels": sorted(kernels), "attention": sorted(attention)}
        return {"ui": ui, "result": (latent,)}
